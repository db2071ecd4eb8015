//! Loading every position of a bot: an atomic read through the symbol index, never a scan,
//! one round trip when nothing changed since the manager's last load, two otherwise.
//!
//! The ways, cheapest first:
//! - Unchanged positions. A manager reads its positions on a dedicated connection with
//!   `CLIENT TRACKING` on (server-assisted client-side caching), so Redis pushes an
//!   invalidation on that connection when any key the read covered (the index, every
//!   position key, present or not) is changed, deleted, expired or flushed. The next load
//!   sends one `EXISTS` of the positions it holds there: a reply with no invalidation before
//!   it that counts every one of them means nothing changed since, and the last load's
//!   positions are the answer, nothing transferred again. Redis announces an expiry only
//!   when it reclaims the key, which can come long after the TTL ran out when many keys have
//!   TTLs; `EXISTS` counts no key past its TTL, reclaimed or not. For more than
//!   [`COUNTED_CHECK_MAX`] positions, where that `EXISTS` costs Redis a millisecond and more
//!   on every load, the read also takes every key's TTL (a command per position, on changes
//!   only), and the check is a `PING` until the first of those TTLs may have run out.
//! - Known index. The symbols of the last load are read in one MULTI/EXEC: SMEMBERS of the
//!   index, MGET and EXISTS of every position key. When the index still has exactly those
//!   members and every existing key was read as a string (no key of another type), that is
//!   exactly what the load script would have returned at that instant. With tracking, these
//!   plain commands (unlike keys a script builds for itself) are what Redis tracks.
//! - The load script, for the first load, a changed index and one-off readers: it reads the
//!   index and every value atomically and names a key of another type, but its Lua work
//!   costs the server several times what plain commands cost.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{ConnectionLike, FromRedisValue, Value};

use super::PositionStore;
use crate::error::{Error, ErrorKind, Result};
use crate::store::{Invalidated, TrackedConnection, TrackingRefused, SCRIPTS};

/// Up to this many positions, unchanged ones are confirmed by counting them (`EXISTS`); above
/// it, by their TTLs read when they were (a `PING` until the first may have run out).
pub(crate) const COUNTED_CHECK_MAX: usize = 1000;

/// How long loads go without the tracked connection after it failed.
const TRACKING_RETRY: Duration = Duration::from_secs(1);

/// What a manager keeps between loads of its bot's positions.
pub(crate) type LastLoad = Mutex<LoadCache>;

/// (symbol, stored bytes) of each position.
type RawPositions = Vec<(String, Vec<u8>)>;

#[derive(Default)]
pub(crate) struct LoadCache {
    /// The connection whose reads Redis tracks, opened by the first load.
    tracked: Option<TrackedConnection>,
    /// Positions read on it, current until an invalidation arrives.
    cached: Option<CachedLoad>,
    /// Redis refused RESP3 or tracking to this user: loads go through the shared connection.
    tracking_unsupported: bool,
    /// After the tracked connection failed or could not be opened: not before this instant
    /// again (meanwhile loads go through the shared connection, so an unreachable Redis costs
    /// a load one connect timeout, not two).
    retry_tracking_at: Option<Instant>,
    /// The symbols the last load read.
    known: Option<Arc<KnownIndex>>,
}

struct CachedLoad {
    /// How many positions were found, and the command that counts them (`EXISTS` of their
    /// keys), packed once.
    present: usize,
    count: Vec<u8>,
    /// With the TTLs read: monotonic nanoseconds from which one of them may have run out
    /// (`u64::MAX` when none has a TTL); until then a `PING` is the check.
    first_expiry: Option<u64>,
    positions: Arc<LoadedPositions>,
    /// The symbols that read covered.
    known: Arc<KnownIndex>,
}

/// The symbols a load read: the index's members and the unindexed ones asked for.
pub(crate) struct KnownIndex {
    members: HashSet<Vec<u8>>,
    extra: Vec<String>,
    /// Members and extra symbols without repeats, and their position keys.
    symbols: Vec<String>,
    keys: Vec<String>,
}

/// Every position of a bot as one load found them, (symbol, stored bytes) each. Loads that
/// found nothing changed return the same one (same [`id`](Self::id)), so a front end may
/// reuse what it decoded from it.
#[derive(Debug)]
pub struct LoadedPositions {
    id: u64,
    items: RawPositions,
}

impl LoadedPositions {
    fn new(items: RawPositions) -> Arc<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Arc::new(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            items,
        })
    }

    /// Unique to the read that produced these positions (in this process).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn items(&self) -> &[(String, Vec<u8>)] {
        &self.items
    }
}

impl PositionStore<'_> {
    /// Every position: the indexed ones plus `extra` (symbols found at start-up, not yet
    /// indexed), as (symbol, stored bytes), read atomically.
    pub fn load_raw(&self, extra: &[String]) -> Result<RawPositions> {
        self.load_shared(extra).map(|loaded| loaded.items.clone())
    }

    /// Like [`load_raw`](Self::load_raw); unchanged positions come back as the same shared
    /// value.
    pub fn load_shared(&self, extra: &[String]) -> Result<Arc<LoadedPositions>> {
        let Some(last) = self.last_load else {
            let (found, _) = self.load_by_script(extra)?;
            return Ok(LoadedPositions::new(found));
        };
        let mut cache = last.lock();
        let known = cache.known.clone().filter(|known| known.extra == extra);
        let mut spent_round_trip = false;
        if self.tracking(&mut cache) {
            match self.load_tracked(&mut cache, known.as_ref()) {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => spent_round_trip = true,
                Err(err) => {
                    log::debug!("the tracked connection failed, loading another way: {err}");
                    cache.tracked = None;
                    cache.cached = None;
                    cache.retry_tracking_at = Some(Instant::now() + TRACKING_RETRY);
                }
            }
        }
        // After a round trip on the tracked connection, the script: two at most.
        if let (Some(known), false) = (known, spent_round_trip) {
            match self
                .store
                .read(|conn| read_known(conn, self, &known, Tracking::Off, false))
            {
                Ok(Some(read)) => return Ok(LoadedPositions::new(read.found)),
                Ok(None) => {}
                Err(err) if err.kind() == ErrorKind::RedisUnavailable => return Err(err),
                // Anything else (a key of another type, say): the script names it.
                Err(_) => {}
            }
        }
        let (found, known) = self.load_by_script(extra)?;
        cache.known = Some(Arc::new(known));
        Ok(LoadedPositions::new(found))
    }

    /// Whether the tracked connection is there (opened now if needed).
    fn tracking(&self, cache: &mut LoadCache) -> bool {
        if cache.tracking_unsupported {
            return false;
        }
        if cache
            .tracked
            .as_ref()
            .is_some_and(|tracked| !tracked.is_current(self.store))
        {
            // Opened before the last change of master.
            cache.tracked = None;
        }
        if cache.tracked.is_none() {
            cache.cached = None;
            if cache
                .retry_tracking_at
                .is_some_and(|at| Instant::now() < at)
            {
                return false;
            }
            match self.store.connect_tracked() {
                Ok(tracked) => cache.tracked = Some(tracked),
                Err(TrackingRefused::Unavailable(err)) => {
                    log::debug!("no tracked connection now: {err}");
                    cache.retry_tracking_at = Some(Instant::now() + TRACKING_RETRY);
                    return false;
                }
                Err(TrackingRefused::Unsupported(err)) => {
                    log::info!("positions are loaded without server-assisted caching: {err}");
                    cache.tracking_unsupported = true;
                    return false;
                }
            }
        }
        true
    }

    /// On the tracked connection: the cached positions when nothing changed; else, unless the
    /// index changed, the known symbols read again (and cached). `None` when neither answers
    /// (after one or two round trips: the caller runs the script).
    fn load_tracked(
        &self,
        cache: &mut LoadCache,
        known: Option<&Arc<KnownIndex>>,
    ) -> Result<Option<Arc<LoadedPositions>>> {
        let Some(tracked) = cache.tracked.as_mut() else {
            return Ok(None);
        };
        let previous = cache
            .cached
            .take()
            .filter(|c| known.is_some_and(|k| Arc::ptr_eq(k, &c.known)));
        if let Some(previous) = previous {
            let ping = previous.present == 0
                || previous
                    .first_expiry
                    .is_some_and(|at| crate::clock::now_nanos() < at);
            let counted = tracked.run(|conn| {
                if ping {
                    return redis::cmd("PING")
                        .query::<()>(conn)
                        .map(|()| Some(previous.present));
                }
                match conn.req_packed_command(&previous.count)? {
                    Value::Int(count) => Ok(usize::try_from(count).ok()),
                    _ => Ok(None),
                }
            })?;
            let invalidated = tracked.take_invalidations(&self.keys.positions_index);
            if invalidated == Invalidated::Nothing && counted == Some(previous.present) {
                let positions = Arc::clone(&previous.positions);
                cache.cached = Some(previous);
                return Ok(Some(positions));
            }
            if invalidated == Invalidated::Key {
                // The index changed (or everything did): the script finds the new symbols.
                return Ok(None);
            }
            // Only positions changed: the same symbols read again, below.
        }
        let Some(known) = known else {
            return Ok(None);
        };
        let with_ttls = known.keys.len() > COUNTED_CHECK_MAX;
        let sent_at = crate::clock::now_nanos();
        let read = tracked.run(|conn| read_known(conn, self, known, Tracking::On, with_ttls))?;
        let invalidated = tracked.take_invalidations(&self.keys.positions_index);
        let Some(KnownRead {
            found,
            shortest_ttl,
        }) = read
        else {
            return Ok(None);
        };
        let positions = LoadedPositions::new(found);
        // Invalidations that came before the transaction's reply are of changes it read; with
        // the TTLs read behind it, one may also come after: then keep nothing.
        if !(with_ttls && invalidated != Invalidated::Nothing) {
            let mut count = redis::cmd("EXISTS");
            for (symbol, _) in &positions.items {
                count.arg(self.keys.position(symbol));
            }
            cache.cached = Some(CachedLoad {
                present: positions.items.len(),
                count: count.get_packed_command(),
                // Counted from before Redis read them: never after the real expiry.
                first_expiry: with_ttls.then(|| {
                    shortest_ttl.map_or(u64::MAX, |ttl| {
                        sent_at.saturating_add(ttl.saturating_mul(1_000_000))
                    })
                }),
                positions: Arc::clone(&positions),
                known: Arc::clone(known),
            });
        }
        Ok(Some(positions))
    }

    fn invoke_load_script(
        &self,
        conn: &mut redis::Connection,
        extra: &[String],
    ) -> redis::RedisResult<LoadReply> {
        let mut invocation = SCRIPTS.positions_load.key(&self.keys.positions_index);
        invocation.arg(self.keys.position_prefix());
        for symbol in extra {
            invocation.arg(symbol);
        }
        invocation.invoke(conn)
    }

    /// The positions read by the load script, and the symbols it read.
    fn load_by_script(&self, extra: &[String]) -> Result<(RawPositions, KnownIndex)> {
        let (indexed, symbols, flat) = self
            .store
            .read(|conn| self.invoke_load_script(conn, extra))
            .map_err(|err| {
                let mut symbols = extra.to_vec();
                if err.is_wrong_type() {
                    // The indexed symbols too, when the index itself is a set.
                    let indexed: Result<Vec<String>> = self.store.read(|conn| {
                        redis::cmd("SMEMBERS")
                            .arg(&self.keys.positions_index)
                            .query(conn)
                    });
                    symbols.extend(indexed.unwrap_or_default());
                }
                self.name_wrong_type(err, &symbols, &[])
            })?;
        let mut found = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(symbol), Some(value)) = (items.next(), items.next()) {
            found.push((utf8_symbol(symbol)?, value));
        }
        let symbols = symbols
            .into_iter()
            .map(utf8_symbol)
            .collect::<Result<Vec<_>>>()?;
        let known = KnownIndex {
            members: symbols[..indexed.min(symbols.len())]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            extra: extra.to_vec(),
            keys: symbols.iter().map(|s| self.keys.position(s)).collect(),
            symbols,
        };
        Ok((found, known))
    }
}

/// Whether a read is to be tracked (on the tracked connection).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tracking {
    On,
    Off,
}

/// What [`read_known`] found: the positions, and with `ttls` the shortest TTL of a position
/// key in milliseconds (`None` when none has one).
struct KnownRead {
    found: RawPositions,
    shortest_ttl: Option<u64>,
}

/// The positions of the `known` symbols in one MULTI/EXEC, when the index still has exactly
/// those members and no position key holds another type (`None` otherwise); with `ttls`, the
/// keys' TTLs too, read right behind the transaction in the same round trip.
fn read_known(
    conn: &mut redis::Connection,
    positions: &PositionStore<'_>,
    known: &KnownIndex,
    tracking: Tracking,
    ttls: bool,
) -> redis::RedisResult<Option<KnownRead>> {
    // MULTI and EXEC written out (not an atomic pipe) so that CLIENT CACHING YES, which
    // makes Redis track the whole transaction, goes in the same round trip.
    let mut pipe = redis::pipe();
    if tracking == Tracking::On {
        pipe.cmd("CLIENT").arg("CACHING").arg("YES").ignore();
    }
    pipe.cmd("MULTI").ignore();
    pipe.cmd("SMEMBERS")
        .arg(&positions.keys.positions_index)
        .ignore();
    if !known.keys.is_empty() {
        pipe.cmd("MGET").arg(&known.keys).ignore();
        pipe.cmd("EXISTS").arg(&known.keys).ignore();
    }
    pipe.cmd("EXEC");
    if ttls {
        for key in &known.keys {
            pipe.cmd("PTTL").arg(key);
        }
    }
    let mut replies = pipe.query::<Vec<Value>>(conn)?.into_iter();
    let transaction = Vec::<Value>::from_redis_value(replies.next().unwrap_or(Value::Nil))?;
    // PTTL is -1 for a key without TTL, -2 for a missing one.
    let shortest_ttl = replies
        .filter_map(|ttl| i64::from_redis_value(ttl).ok())
        .filter_map(|ttl| u64::try_from(ttl).ok())
        .min();
    let mut transaction = transaction.into_iter();
    let mut next = || transaction.next().unwrap_or(Value::Nil);
    let members = Vec::<Vec<u8>>::from_redis_value(next())?;
    if members.len() != known.members.len() || !members.iter().all(|m| known.members.contains(m)) {
        return Ok(None);
    }
    if known.keys.is_empty() {
        return Ok(Some(KnownRead {
            found: Vec::new(),
            shortest_ttl,
        }));
    }
    let values = Vec::<Option<Vec<u8>>>::from_redis_value(next())?;
    let existing = usize::from_redis_value(next())?;
    let found: RawPositions = known
        .symbols
        .iter()
        .zip(values)
        .filter_map(|(symbol, value)| value.map(|value| (symbol.clone(), value)))
        .collect();
    // MGET reads a key of another type as missing; EXISTS counts it.
    Ok((existing == found.len()).then_some(KnownRead {
        found,
        shortest_ttl,
    }))
}

/// The load script's reply: how many of the symbols are the index's, the symbols, and the
/// flat symbol, value pairs of the positions found.
type LoadReply = (usize, Vec<Vec<u8>>, Vec<Vec<u8>>);

fn utf8_symbol(symbol: Vec<u8>) -> Result<String> {
    String::from_utf8(symbol)
        .map_err(|_| Error::corrupt("a symbol in the positions index is not UTF-8"))
}
