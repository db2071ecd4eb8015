//! Read-only views of bots for operators (the `quantshift-state` tool), and the planned
//! handover request. Nothing here holds or takes a lease.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::{validate_bot_name, Keys};
use crate::lease::HANDOVER_REQUEST;
use crate::positions::{decode_object, JsonObject, PositionStore};
use crate::store::Store;
pub use crate::store::{warning_kind, ServerWarning};

/// What an operator wants to know about one bot.
#[derive(Debug, Clone, PartialEq)]
pub struct BotStatus {
    pub bot: String,
    /// Instance id of the lease holder (its token without the nonce).
    pub holder: Option<String>,
    /// Time left on the lease as the server counts it.
    pub lease_ttl: Option<Duration>,
    pub epoch: Option<u64>,
    /// The heartbeat stamp and its age against this machine's UTC clock.
    pub heartbeat: Option<String>,
    pub heartbeat_age: Option<Duration>,
    pub state_last_update: Option<String>,
    pub state_age: Option<Duration>,
    pub positions: usize,
    /// Live instances (primary and standbys) that touched the lease recently.
    pub instances: Vec<String>,
}

impl BotStatus {
    pub fn standbys(&self) -> Vec<&str> {
        self.instances
            .iter()
            .map(String::as_str)
            .filter(|id| Some(*id) != self.holder.as_deref())
            .collect()
    }

    pub fn to_json(&self) -> JsonObject {
        let secs = |d: Option<Duration>| d.map_or(Value::Null, |d| Value::from(d.as_secs_f64()));
        let mut out = Map::new();
        out.insert("bot".into(), Value::from(self.bot.clone()));
        out.insert(
            "primary".into(),
            self.holder.clone().map_or(Value::Null, Value::from),
        );
        out.insert("lease_ttl_seconds".into(), secs(self.lease_ttl));
        out.insert("epoch".into(), self.epoch.map_or(Value::Null, Value::from));
        out.insert(
            "heartbeat".into(),
            self.heartbeat.clone().map_or(Value::Null, Value::from),
        );
        out.insert("heartbeat_age_seconds".into(), secs(self.heartbeat_age));
        out.insert(
            "state_last_update".into(),
            self.state_last_update
                .clone()
                .map_or(Value::Null, Value::from),
        );
        out.insert("state_age_seconds".into(), secs(self.state_age));
        out.insert("positions".into(), Value::from(self.positions));
        out.insert("instances".into(), Value::from(self.instances.clone()));
        out.insert(
            "standbys".into(),
            Value::from(
                self.standbys()
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            ),
        );
        out
    }
}

/// The Redis node the inspector is connected to.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStatus {
    pub role: String,
    pub warnings: Vec<String>,
    /// The kind of each warning ([`warning_kind`]), in the order of `warnings`.
    pub warning_kinds: Vec<&'static str>,
}

/// A read-only connection to the Redis of one or more bots.
pub struct Inspector {
    store: Store,
}

/// Age of an ISO-8601 UTC stamp (`2025-12-24T22:00:00.123456`) against the local UTC clock.
pub fn age_of(stamp: &str) -> Option<Duration> {
    let parsed = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    let age = chrono::Utc::now().naive_utc() - parsed;
    age.to_std().ok().or(Some(Duration::ZERO))
}

/// The instance id in a lease token (`hostname:pid:nonce` without the nonce).
fn instance_of(token: String) -> String {
    match token.rsplit_once(':') {
        Some((id, _nonce)) => id.to_owned(),
        None => token,
    }
}

impl Inspector {
    /// Connects with the library's URL and environment rules (CONTRACT §6).
    pub fn connect(redis_url: Option<&str>, timeout: Duration) -> Result<Self> {
        let inspector = Self::open(redis_url, timeout)?;
        inspector
            .store
            .run(|conn| redis::cmd("PING").query::<String>(conn))?;
        Ok(inspector)
    }

    /// Like [`connect`](Self::connect), but without connecting yet: the URL is checked, and
    /// the first read connects (a monitor that starts while Redis is down).
    pub fn open(redis_url: Option<&str>, timeout: Duration) -> Result<Self> {
        let mut config = Config::new("quantshift-state")
            .connect_timeout(timeout)
            .command_timeout(timeout);
        if let Some(url) = redis_url {
            config = config.redis_url(url);
        }
        config.validate()?;
        Ok(Inspector {
            store: Store::open(&config)?,
        })
    }

    pub fn redacted_url(&self) -> &str {
        self.store.redacted_url()
    }

    /// Names of every bot with a key in this Redis, sorted (a SCAN: operator use only).
    pub fn bots(&self) -> Result<Vec<String>> {
        let keys: Vec<String> = self.store.read(|conn| {
            let mut found = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg("bot:*")
                    .arg("COUNT")
                    .arg(1000)
                    .query(conn)?;
                found.extend(batch);
                if next == 0 {
                    return Ok(found);
                }
                cursor = next;
            }
        })?;
        let mut bots: Vec<String> = keys
            .iter()
            .filter_map(|key| key.strip_prefix("bot:")?.split_once(':'))
            .filter(|(_, rest)| {
                matches!(
                    *rest,
                    "state"
                        | "heartbeat"
                        | "primary_lock"
                        | "epoch"
                        | "positions"
                        | "instances"
                        | "lease_record"
                ) || rest.starts_with("position:")
            })
            .map(|(bot, _)| bot.to_owned())
            .collect();
        bots.sort();
        bots.dedup();
        Ok(bots)
    }

    /// One consistent read of the bot: its keys and its positions are read in one
    /// transaction (MULTI/EXEC, one round trip), so the lease, the instances and the
    /// position count belong to the same moment.
    pub fn status(&self, bot: &str) -> Result<BotStatus> {
        validate_bot_name(bot)?;
        let keys = Keys::new(bot);
        let positions_store = self.positions_store(&keys);
        let load_positions = positions_store.load_invocation(&[]);
        #[allow(clippy::type_complexity)]
        let read: Result<(
            Option<String>,
            i64,
            Option<u64>,
            Option<String>,
            Option<Vec<u8>>,
            Vec<String>,
            Vec<Vec<u8>>,
        )> = self.store.read(|conn| {
            let now_ms = crate::clock::unix_millis();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .get(&keys.lock)
                .pttl(&keys.lock)
                .get(&keys.epoch)
                .get(&keys.heartbeat)
                .get(&keys.state)
                .cmd("ZRANGEBYSCORE")
                .arg(&keys.instances)
                .arg(now_ms)
                .arg("+inf")
                .invoke_script(&load_positions);
            match pipe.query(conn) {
                // Inside a transaction the script is not loaded on demand: load it, and
                // read again.
                Err(err)
                    if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    load_positions.load(conn)?;
                    pipe.query(conn)
                }
                other => other,
            }
        });
        let (lock, pttl, epoch, heartbeat, state, instances, loaded) = read.map_err(|err| {
            positions_store.name_load_wrong_type(
                err,
                &[],
                &[
                    (&keys.lock, "string"),
                    (&keys.epoch, "string"),
                    (&keys.heartbeat, "string"),
                    (&keys.state, "string"),
                    (&keys.instances, "zset"),
                ],
            )
        })?;
        let state_last_update = match state {
            Some(raw) => decode_object(&keys.state, &raw)?
                .get("last_update")
                .and_then(Value::as_str)
                .map(str::to_owned),
            None => None,
        };
        // Counted through the index alone: `watch` calls this every second, and a SCAN of a
        // large keyspace that often is no operator's friend. Positions of the predecessor
        // join the index as soon as an instance of this library is primary; `positions()`
        // scans for them.
        let positions = PositionStore::pairs_of_load(loaded)?.len();
        let holder = lock.map(instance_of);
        Ok(BotStatus {
            bot: bot.to_owned(),
            lease_ttl: holder
                .as_ref()
                .and_then(|_| u64::try_from(pttl).ok())
                .map(Duration::from_millis),
            holder,
            epoch,
            heartbeat_age: heartbeat.as_deref().and_then(age_of),
            heartbeat,
            state_age: state_last_update.as_deref().and_then(age_of),
            state_last_update,
            positions,
            instances,
        })
    }

    /// Who holds the bot's lease (instance id) and the current epoch, in one round trip and
    /// without a scan: cheap enough to poll while a handover is under way.
    pub fn lease_holder(&self, bot: &str) -> Result<(Option<String>, Option<u64>)> {
        validate_bot_name(bot)?;
        let keys = Keys::new(bot);
        let (lock, epoch): (Option<String>, Option<u64>) = self
            .store
            .read(|conn| redis::pipe().get(&keys.lock).get(&keys.epoch).query(conn))?;
        Ok((lock.map(instance_of), epoch))
    }

    fn positions_store<'a>(&'a self, keys: &'a Keys) -> PositionStore<'a> {
        PositionStore {
            store: &self.store,
            keys,
            position_ttl_ms: 0,
        }
    }

    /// A bot's positions, the unindexed ones of the predecessor included.
    pub fn positions(&self, bot: &str) -> Result<Vec<(String, JsonObject)>> {
        validate_bot_name(bot)?;
        let keys = Keys::new(bot);
        let positions = self.positions_store(&keys);
        let legacy = positions.scan_symbols()?;
        let mut loaded = positions.load(&legacy)?;
        loaded.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(loaded)
    }

    /// Asks the bot's primary to step down (after its in-flight write) so a standby takes
    /// over; returns how many instances heard the request.
    pub fn request_handover(&self, bot: &str) -> Result<u64> {
        validate_bot_name(bot)?;
        let keys = Keys::new(bot);
        let message = format!("{HANDOVER_REQUEST} quantshift-state");
        self.store.run(|conn| {
            redis::cmd("PUBLISH")
                .arg(&keys.lease_channel)
                .arg(&message)
                .query(conn)
        })
    }

    pub fn server(&self) -> Result<ServerStatus> {
        let role: Vec<redis::Value> = self.store.read(|conn| redis::cmd("ROLE").query(conn))?;
        let role = match role.first() {
            Some(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(redis::Value::SimpleString(text)) => text.clone(),
            _ => return Err(Error::corrupt("unexpected reply to ROLE")),
        };
        let (warnings, warning_kinds) = self
            .store
            .server_warnings_by_kind()?
            .into_iter()
            .map(|warning| (warning.message, warning.kind))
            .unzip();
        Ok(ServerStatus {
            role,
            warnings,
            warning_kinds,
        })
    }
}
