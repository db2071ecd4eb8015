//! Read-only views of bots for operators (the `quantshift-state` tool), and the planned
//! handover request. Nothing here holds or takes a lease.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::{validate_bot_name, Keys};
use crate::lease::HANDOVER_REQUEST;
use crate::positions::{decode_object, JsonObject, PositionStore};
pub use crate::store::{warning_kind, ServerWarning};
use crate::store::{Store, SCRIPTS};

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

/// One MULTI ... EXEC per bot, all sent as one pipeline: the keys of a bot and its
/// positions (the positions-load script) as of one moment. Only the EXEC replies are kept,
/// with the errors inside them, so that one bot's `WRONGTYPE` is that bot's error.
fn status_pipeline(reads: &[(&Keys, redis::ScriptInvocation<'static>)]) -> redis::Pipeline {
    let now_ms = crate::clock::unix_millis();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (keys, load_positions) in reads {
        pipe.cmd("MULTI")
            .ignore()
            .get(&keys.lock)
            .ignore()
            .pttl(&keys.lock)
            .ignore()
            .get(&keys.epoch)
            .ignore()
            .get(&keys.heartbeat)
            .ignore()
            .get(&keys.state)
            .ignore()
            .cmd("ZRANGEBYSCORE")
            .arg(&keys.instances)
            .arg(now_ms)
            .arg("+inf")
            .ignore()
            .invoke_script(load_positions)
            .ignore()
            .cmd("EXEC");
    }
    pipe
}

/// A transaction's reply holding a `NOSCRIPT` error.
fn is_no_script(reply: &redis::Value) -> bool {
    let redis::Value::Array(items) = reply else {
        return false;
    };
    items.iter().any(|item| match item {
        redis::Value::ServerError(err) => {
            redis::RedisError::from(err.clone()).kind()
                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        }
        _ => false,
    })
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
        self.statuses(&[bot])?
            .pop()
            .expect("one status per bot asked for")
    }

    /// The status of several bots, each read in its own transaction as by
    /// [`status`](Self::status), all in one round trip. The outer error: Redis could not be
    /// read. The inner ones, one per bot in the order asked: that bot's name or data (an
    /// invalid name, a key of another Redis type, a state that is not JSON).
    pub fn statuses<S: AsRef<str>>(&self, bots: &[S]) -> Result<Vec<Result<BotStatus>>> {
        let keys: Vec<Result<Keys>> = bots
            .iter()
            .map(|bot| validate_bot_name(bot.as_ref()).map(|()| Keys::new(bot.as_ref())))
            .collect();
        let reads: Vec<(&Keys, redis::ScriptInvocation<'static>)> = keys
            .iter()
            .filter_map(|keys| keys.as_ref().ok())
            .map(|keys| (keys, self.positions_store(keys).load_invocation(&[])))
            .collect();
        let mut replies = if reads.is_empty() {
            Vec::new()
        } else {
            self.store.read(|conn| {
                let pipe = status_pipeline(&reads);
                let replies: Vec<redis::Value> = pipe.query(conn)?;
                if replies.iter().any(is_no_script) {
                    // Inside a transaction the script is not loaded on demand: load it, and
                    // read again (a restarted Redis, a SCRIPT FLUSH).
                    SCRIPTS.positions_load.load(conn)?;
                    return pipe.query(conn);
                }
                Ok(replies)
            })?
        }
        .into_iter();
        Ok(bots
            .iter()
            .zip(keys)
            .map(|(bot, keys)| {
                let keys = keys?;
                let reply = replies
                    .next()
                    .ok_or_else(|| Error::corrupt("Redis answered fewer transactions than sent"))?;
                self.status_of(bot.as_ref(), &keys, reply)
            })
            .collect())
    }

    /// A bot's status from the reply of its transaction (see [`status_pipeline`]).
    fn status_of(&self, bot: &str, keys: &Keys, reply: redis::Value) -> Result<BotStatus> {
        #[allow(clippy::type_complexity)]
        let read: redis::RedisResult<(
            Option<String>,
            i64,
            Option<u64>,
            Option<String>,
            Option<Vec<u8>>,
            Vec<String>,
            Vec<Vec<u8>>,
        )> = reply
            .extract_error()
            .and_then(|reply| Ok(redis::from_redis_value(reply)?));
        let (lock, pttl, epoch, heartbeat, state, instances, loaded) = read.map_err(|err| {
            self.positions_store(keys).name_load_wrong_type(
                Error::from(err),
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
