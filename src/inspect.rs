//! Read-only views of bots for operators (the `quantshift-state` tool), and the planned
//! handover request. Nothing here holds or takes a lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::FromRedisValue;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::HANDOVER_REQUEST;
use crate::keys::{validate_bot_name_for, KeyLayout, Keys};
use crate::lease::meter::{HistogramSnapshot, LeaseStalls};
use crate::positions::{decode_object, JsonObject, PositionStore};
pub use crate::store::{warning_kind, ServerReport, ServerWarning, WarningKind};
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
    /// Live instances (primary and standbys): those whose presence has not lapsed at the
    /// server's time of the read (an instance records itself every 500 ms for 1.5 s; a
    /// closed one leaves at once).
    pub instances: Vec<String>,
    /// How long ago, by the server's clock, the holder last renewed the lease (its record's
    /// `renewed_at`); `None` without a holder or a record of its renewals.
    pub renewal_age: Option<Duration>,
    /// When the holder's deadline falls, in ms from the read (negative: it passed, and the
    /// holder is standby unless it renews at once): `renewed_at + deadline_ms` on the
    /// server's clock, at the latest (the holder counts from the start of its renewal).
    pub deadline_in_ms: Option<i64>,
    /// The stall meter of each live instance that published one, in the order of
    /// `instances`.
    pub lease_stalls: Vec<(String, LeaseStalls)>,
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
        out.insert("lease_renewal_age_seconds".into(), secs(self.renewal_age));
        out.insert(
            "lease_deadline_in_seconds".into(),
            self.deadline_in_ms
                .map_or(Value::Null, |ms| Value::from(ms as f64 / 1000.0)),
        );
        out.insert(
            "lease_deadline_passed".into(),
            self.deadline_in_ms
                .map_or(Value::Null, |ms| Value::from(ms <= 0)),
        );
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
        out.insert(
            "lease_stalls".into(),
            Value::Object(
                self.lease_stalls
                    .iter()
                    .map(|(id, stalls)| (id.clone(), stalls_json(stalls)))
                    .collect(),
            ),
        );
        out
    }
}

/// A stall meter as operators read it: counts, and durations in seconds (the quantiles are
/// the upper bounds of their buckets).
pub fn stalls_json(stalls: &LeaseStalls) -> Value {
    let histogram = |h: &HistogramSnapshot| {
        let mut out = Map::new();
        out.insert("count".into(), Value::from(h.count));
        out.insert("sum_seconds".into(), Value::from(h.sum.as_secs_f64()));
        out.insert("max_seconds".into(), Value::from(h.max.as_secs_f64()));
        out.insert(
            "p50_seconds".into(),
            Value::from(h.quantile(0.5).as_secs_f64()),
        );
        out.insert(
            "p99_seconds".into(),
            Value::from(h.quantile(0.99).as_secs_f64()),
        );
        out.insert("buckets".into(), Value::from(h.buckets.clone()));
        Value::Object(out)
    };
    let mut out = Map::new();
    out.insert("wake_late".into(), histogram(&stalls.wake_late));
    out.insert("round_trip".into(), histogram(&stalls.round_trip));
    out.insert(
        "tolerance_seconds".into(),
        Value::from(stalls.tolerance.as_secs_f64()),
    );
    out.insert(
        "dropped_records".into(),
        Value::from(stalls.dropped_records),
    );
    Value::Object(out)
}

/// The Redis node the inspector is connected to.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStatus {
    pub role: String,
    pub warnings: Vec<String>,
    /// The kind of each warning ([`warning_kind`]), in the order of `warnings`.
    pub warning_kinds: Vec<&'static str>,
}

/// Calls of the status script for one bot before giving up on an index that gains a symbol
/// between each call and the next.
const MAX_STATUS_CALLS: usize = 5;

/// A read-only connection to the Redis of one or more bots.
pub struct Inspector {
    store: Arc<Store>,
    layout: KeyLayout,
    /// The options each bot's own store is opened with on a cluster.
    config: Config,
    /// On a cluster, each bot is read from its slot's owner through a store of its own.
    bot_stores: Mutex<HashMap<String, Arc<Store>>>,
    /// The symbols each bot's last status declared (its index's members then, or more): the
    /// next declares them again, so a status repeated (`watch`, metrics) is one script call
    /// while the index gains no symbol.
    members: Mutex<HashMap<String, Vec<String>>>,
}

/// Reads (and, for operators, names) a bot's positions on `store`.
fn positions_store<'a>(store: &'a Store, keys: &'a Keys) -> PositionStore<'a> {
    PositionStore {
        store,
        keys,
        position_ttl_ms: 0,
        last_load: None,
    }
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

/// One call of the read-only status script per bot, all sent as one pipeline, each declaring
/// the position keys of the symbols its bot's index is expected to hold. The errors are kept
/// in the replies, so that one bot's `WRONGTYPE` is that bot's error.
fn status_pipeline(bots: &[(&Keys, &[String])]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (keys, expected) in bots {
        let mut invocation = SCRIPTS.bot_status.key(&keys.lock);
        invocation
            .key(&keys.epoch)
            .key(&keys.heartbeat)
            .key(&keys.state)
            .key(&keys.instances)
            .key(&keys.positions_index)
            .key(&keys.lease_record)
            .key(&keys.lease_stalls);
        for symbol in *expected {
            invocation.key(keys.position(symbol)).arg(symbol);
        }
        pipe.invoke_script(&invocation);
    }
    pipe
}

/// The status script's reply, once it is not an error.
enum StatusReply {
    Read(redis::Value),
    /// The index holds a symbol whose key was not declared: its members.
    Undeclared(Vec<Vec<u8>>),
}

fn status_reply(reply: redis::Value) -> redis::RedisResult<StatusReply> {
    let mut items = Vec::<redis::Value>::from_redis_value(reply.extract_error()?)?;
    if items.is_empty() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "empty reply from the status script",
        )));
    }
    let complete = i64::from_redis_value(items.remove(0))? == 1;
    Ok(if complete {
        StatusReply::Read(redis::Value::Array(items))
    } else {
        let members = items.into_iter().next().unwrap_or(redis::Value::Nil);
        StatusReply::Undeclared(Vec::<Vec<u8>>::from_redis_value(members)?)
    })
}

/// A reply that is Redis' `NOSCRIPT`.
fn is_no_script(reply: &redis::Value) -> bool {
    match reply {
        redis::Value::ServerError(err) => {
            redis::RedisError::from(err.clone()).kind()
                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        }
        _ => false,
    }
}

impl Inspector {
    /// Connects with the library's URL and environment rules (docs/contract.md §6).
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
            store: Arc::new(Store::open(&config)?),
            layout: config.effective_key_layout()?,
            config,
            bot_stores: Mutex::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
        })
    }

    /// Reads bots whose keys are named in `layout` (by default the URL's: hash-tagged for a
    /// cluster URL, plain otherwise).
    pub fn key_layout(mut self, layout: KeyLayout) -> Self {
        self.layout = layout;
        self
    }

    /// The keys of `bot` in this inspector's layout, once its name is valid there.
    fn keys(&self, bot: &str) -> Result<Keys> {
        validate_bot_name_for(bot, self.layout)?;
        Ok(Keys::with_layout(bot, self.layout))
    }

    /// The store that serves `bot`: the one store, or on a cluster the bot's own, which
    /// follows its slot's owner.
    fn store_for(&self, bot: &str) -> Result<Arc<Store>> {
        if !self.store.is_cluster() {
            return Ok(Arc::clone(&self.store));
        }
        let mut stores = self.bot_stores.lock();
        if let Some(store) = stores.get(bot) {
            return Ok(Arc::clone(store));
        }
        let mut config = self.config.clone();
        config.bot_name = bot.to_owned();
        config.key_layout = Some(self.layout);
        let store = Arc::new(Store::open(&config)?);
        stores.insert(bot.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    pub fn redacted_url(&self) -> &str {
        self.store.redacted_url()
    }

    /// Names of every bot with a key in this Redis in the inspector's layout, sorted (a SCAN,
    /// of every primary on a cluster: operator use only).
    pub fn bots(&self) -> Result<Vec<String>> {
        let keys = self.store.scan_keys("bot:*")?;
        let mut bots: Vec<String> = keys
            .iter()
            .filter_map(|key| self.layout.bot_of(key))
            .map(str::to_owned)
            .collect();
        bots.sort();
        bots.dedup();
        Ok(bots)
    }

    /// One consistent read of the bot: its keys and the number of its positions are read by
    /// one read-only script (`bot_status.lua`), so they belong to the same moment.
    ///
    /// Positions are counted through the index alone: `watch` calls this every second, and a
    /// SCAN of a large keyspace that often is no operator's friend. Positions of the
    /// predecessor join the index as soon as an instance of this library is primary;
    /// [`positions`](Self::positions) scans for them.
    pub fn status(&self, bot: &str) -> Result<BotStatus> {
        self.statuses(&[bot])?
            .pop()
            .expect("one status per bot asked for")
    }

    /// The status of several bots, each read as by [`status`](Self::status), all in one
    /// round trip; two when a bot's index gained a symbol since this inspector last read its
    /// status, or on the first read of a bot with positions (the script touches only the
    /// keys it is given, and learns the symbols in the first). The outer error: Redis could
    /// not be read. The inner ones, one per bot in the order asked: that bot's name or data
    /// (an invalid name, a key of another Redis type, a state that is not JSON).
    pub fn statuses<S: AsRef<str>>(&self, bots: &[S]) -> Result<Vec<Result<BotStatus>>> {
        if !self.store.is_cluster() {
            return self.statuses_on(&self.store, bots);
        }
        // On a cluster the bots are on different nodes: each is read on its own, and a node
        // that cannot be reached is the error of the bots it serves.
        Ok(bots
            .iter()
            .map(|bot| {
                let bot = bot.as_ref();
                self.keys(bot)?;
                let store = self.store_for(bot)?;
                self.statuses_on(&store, &[bot])?
                    .pop()
                    .expect("one status per bot asked for")
            })
            .collect())
    }

    /// [`statuses`](Self::statuses) of bots all served by `store`.
    fn statuses_on<S: AsRef<str>>(
        &self,
        store: &Store,
        bots: &[S],
    ) -> Result<Vec<Result<BotStatus>>> {
        let keys: Vec<Result<Keys>> = bots.iter().map(|bot| self.keys(bot.as_ref())).collect();
        let mut statuses: Vec<Option<Result<BotStatus>>> = keys
            .iter()
            .map(|keys| keys.as_ref().err().map(|err| Err(err.clone())))
            .collect();
        // The symbols each bot's index is expected to hold: those the last status found (none
        // at first: a bot with positions then costs a second call, which declares what the
        // first found).
        let mut expected: Vec<Vec<String>> = {
            let members = self.members.lock();
            bots.iter()
                .map(|bot| members.get(bot.as_ref()).cloned().unwrap_or_default())
                .collect()
        };
        let mut pending: Vec<usize> = (0..bots.len()).filter(|&i| statuses[i].is_none()).collect();
        for _ in 0..MAX_STATUS_CALLS {
            if pending.is_empty() {
                break;
            }
            let calls: Vec<(&Keys, &[String])> = pending
                .iter()
                .filter_map(|&i| Some((keys[i].as_ref().ok()?, expected[i].as_slice())))
                .collect();
            let pipe = status_pipeline(&calls);
            let replies = store.read(|conn| {
                let replies: Vec<redis::Value> = pipe.query(conn)?;
                if replies.iter().any(is_no_script) {
                    // A pipelined script is not loaded on demand: load it, and read again
                    // (a restarted Redis, a SCRIPT FLUSH).
                    SCRIPTS.bot_status.load(conn)?;
                    return pipe.query(conn);
                }
                Ok(replies)
            })?;
            if replies.len() != pending.len() {
                return Err(Error::corrupt("Redis answered fewer reads than sent"));
            }
            let mut again = Vec::new();
            for (i, reply) in pending.into_iter().zip(replies) {
                let (bot, Ok(keys)) = (bots[i].as_ref(), &keys[i]) else {
                    continue;
                };
                statuses[i] = match status_reply(reply) {
                    Ok(StatusReply::Read(read)) => Some(self.status_of(store, bot, keys, read)),
                    Ok(StatusReply::Undeclared(members)) => {
                        match members.into_iter().map(String::from_utf8).collect() {
                            Ok(members) => {
                                expected[i] = members;
                                again.push(i);
                                None
                            }
                            Err(_) => Some(Err(Error::corrupt(format!(
                                "a symbol in {} is not UTF-8",
                                keys.positions_index
                            )))),
                        }
                    }
                    Err(err) => Some(Err(self.name_wrong_type(store, keys, Error::from(err)))),
                };
            }
            pending = again;
        }
        {
            let mut members = self.members.lock();
            for ((bot, status), expected) in bots.iter().zip(&statuses).zip(expected) {
                if matches!(status, Some(Ok(_))) {
                    members.insert(bot.as_ref().to_owned(), expected);
                }
            }
        }
        Ok(statuses
            .into_iter()
            .zip(&keys)
            .map(|(status, keys)| {
                status.unwrap_or_else(|| {
                    let index = keys.as_ref().map_or("", |keys| &keys.positions_index);
                    Err(Error::new(
                        crate::error::ErrorKind::Redis,
                        format!(
                            "{index} gained symbols each time the bot's status was about to be \
                             read; gave up after {MAX_STATUS_CALLS} attempts"
                        ),
                    ))
                })
            })
            .collect())
    }

    /// A bot's status from the reply of `bot_status.lua`, its leading flag taken off.
    fn status_of(
        &self,
        store: &Store,
        bot: &str,
        keys: &Keys,
        reply: redis::Value,
    ) -> Result<BotStatus> {
        #[allow(clippy::type_complexity)]
        let read: redis::RedisResult<(
            (
                Option<String>,
                i64,
                Option<u64>,
                Option<String>,
                Option<Vec<u8>>,
                Vec<String>,
                usize,
            ),
            (u64, (Option<String>, Option<u64>, Option<u64>), Vec<String>),
        )> = match reply {
            // Two tuples: redis-rs reads tuples of up to 12 items.
            redis::Value::Array(mut items) if items.len() == 10 => {
                let rest = items.split_off(7);
                redis::from_redis_value(redis::Value::Array(items))
                    .and_then(|first| {
                        Ok((first, redis::from_redis_value(redis::Value::Array(rest))?))
                    })
                    .map_err(redis::RedisError::from)
            }
            other => Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected reply from the status script",
                format!("{other:?}"),
            ))),
        };
        let (
            (lock, pttl, epoch, heartbeat, state, instances, positions),
            (now_ms, (record_token, renewed_at, deadline_ms), stall_entries),
        ) = read.map_err(|err| self.name_wrong_type(store, keys, Error::from(err)))?;
        let state_last_update = match state {
            Some(raw) => decode_object(&keys.state, &raw)?
                .get("last_update")
                .and_then(Value::as_str)
                .map(str::to_owned),
            None => None,
        };
        // The holder's renewals, when the record names the lock's token.
        let renewed = match (&lock, record_token, renewed_at, deadline_ms) {
            (Some(lock), Some(token), Some(renewed_at), Some(deadline_ms)) if *lock == token => {
                Some((renewed_at, deadline_ms))
            }
            _ => None,
        };
        let renewal_age = renewed.map(|(at, _)| Duration::from_millis(now_ms.saturating_sub(at)));
        let deadline_in_ms = renewed.map(|(at, deadline)| {
            i64::try_from(at.saturating_add(deadline)).unwrap_or(i64::MAX)
                - i64::try_from(now_ms).unwrap_or(i64::MAX)
        });
        let mut published: HashMap<&str, LeaseStalls> = stall_entries
            .chunks_exact(2)
            .filter_map(|pair| {
                Some((
                    pair[0].as_str(),
                    crate::stalls::parse_entry(&pair[1], now_ms)?,
                ))
            })
            .collect();
        let lease_stalls = instances
            .iter()
            .filter_map(|id| Some((id.clone(), published.remove(id.as_str())?)))
            .collect();
        let holder = lock.map(instance_of);
        Ok(BotStatus {
            renewal_age,
            deadline_in_ms,
            lease_stalls,
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
        let keys = self.keys(bot)?;
        let (lock, epoch): (Option<String>, Option<u64>) = self
            .store_for(bot)?
            .read(|conn| redis::pipe().get(&keys.lock).get(&keys.epoch).query(conn))?;
        Ok((lock.map(instance_of), epoch))
    }

    /// A `WRONGTYPE` in a status read names the key: one of the bot's keys, or one of its
    /// indexed positions.
    fn name_wrong_type(&self, store: &Store, keys: &Keys, err: Error) -> Error {
        if !err.is_wrong_type() {
            return err;
        }
        let indexed: Result<Vec<String>> = store.read(|conn| {
            redis::cmd("SMEMBERS")
                .arg(&keys.positions_index)
                .query(conn)
        });
        positions_store(store, keys).name_wrong_type(
            err,
            &indexed.unwrap_or_default(),
            &[
                (&keys.lock, "string"),
                (&keys.epoch, "string"),
                (&keys.heartbeat, "string"),
                (&keys.state, "string"),
                (&keys.instances, "zset"),
                (&keys.lease_record, "hash"),
                (&keys.lease_stalls, "hash"),
            ],
        )
    }

    /// A bot's positions, the unindexed ones of the predecessor included.
    pub fn positions(&self, bot: &str) -> Result<Vec<(String, JsonObject)>> {
        let keys = self.keys(bot)?;
        let store = self.store_for(bot)?;
        let positions = positions_store(&store, &keys);
        let legacy = positions.scan_symbols()?;
        let mut loaded = positions.load(&legacy)?;
        loaded.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(loaded)
    }

    /// Asks the bot's primary to step down (after its in-flight write) so a standby takes
    /// over; returns how many instances heard the request.
    pub fn request_handover(&self, bot: &str) -> Result<u64> {
        let keys = self.keys(bot)?;
        let message = format!("{HANDOVER_REQUEST} quantshift-state");
        self.store_for(bot)?.run(|conn| {
            redis::cmd("PUBLISH")
                .arg(&keys.lease_channel)
                .arg(&message)
                .query(conn)
        })
    }

    /// The node's role and warnings, in one round trip.
    pub fn server(&self) -> Result<ServerStatus> {
        let report = self.store.server_report()?;
        let (warnings, warning_kinds) = report
            .warnings
            .into_iter()
            .map(|warning| (warning.message, warning.kind))
            .unzip();
        // Refused (an ACL without `role`): said among the warnings.
        let role = report.role.unwrap_or_else(|| "unknown".to_owned());
        Ok(ServerStatus {
            role,
            warnings,
            warning_kinds,
        })
    }
}
