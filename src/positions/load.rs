//! Loading every position of a bot: an atomic read through the symbol index, never a scan,
//! one round trip when nothing changed since the manager's last load, two when something did
//! (and for a first load), three when another writer added a symbol under tracking.
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
//!   plain commands are what Redis tracks.
//! - The load script, for the first load, a changed index and one-off readers: it reads the
//!   index and every value atomically and names a key of another type, but its Lua work
//!   costs the server several times what plain commands cost. It touches only keys it was
//!   given (docs/contract.md §1: cluster engines refuse any other), so it is given the position keys
//!   of the symbols the index is expected to hold: the last load's, those this manager wrote
//!   since, those a transaction just saw. When the index holds another, the script reads
//!   nothing and answers the index's members, and is called again with their keys (a first
//!   load, knowing nothing, always costs that second call).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{ConnectionLike, FromRedisValue, Value};

use super::{PositionStore, PositionWrite};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{Invalidated, TrackedConnection, TrackingRefused, SCRIPTS};

/// Up to this many positions, unchanged ones are confirmed by counting them (`EXISTS`); above
/// it, by their TTLs read when they were (a `PING` until the first may have run out).
pub(crate) const COUNTED_CHECK_MAX: usize = 1000;

/// How long loads go without the tracked connection after it failed.
const TRACKING_RETRY: Duration = Duration::from_secs(1);

/// Calls of the load script before giving up on an index that gains a symbol between each
/// call and the next.
const MAX_SCRIPT_CALLS: usize = 5;

/// Symbols written since the last load kept as hints for the next, at most (a bot that writes
/// and never loads must not grow them forever).
const MAX_WRITTEN_HINTS: usize = 1000;

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
    /// Symbols this manager wrote since the last load and the last load did not know: the
    /// load script declares their keys too, so a position this manager added does not cost
    /// the script a second call.
    written: HashSet<String>,
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
            let (found, _) = self.load_by_script(extra, Vec::new())?;
            return Ok(LoadedPositions::new(found));
        };
        let mut cache = last.lock();
        let known = cache.known.clone().filter(|known| known.extra == extra);
        // The index's members as a transaction below saw them, when it could not answer.
        let mut seen_members = None;
        let mut spent_round_trip = false;
        if self.tracking(&mut cache) {
            match self.load_tracked(&mut cache, known.as_ref()) {
                Ok(Tracked::Found(found)) => {
                    // What was written before this load began is in what it read.
                    cache.written.clear();
                    return Ok(found);
                }
                Ok(Tracked::NotFound(members)) => {
                    spent_round_trip = true;
                    seen_members = members;
                }
                Err(err) => {
                    log::debug!("the tracked connection failed, loading another way: {err}");
                    cache.tracked = None;
                    cache.cached = None;
                    cache.retry_tracking_at = Some(Instant::now() + TRACKING_RETRY);
                }
            }
        }
        // After a round trip on the tracked connection, the script: two at most (three when
        // another writer added a symbol: the script's second call).
        if let (Some(known), false) = (&known, spent_round_trip) {
            match self
                .store
                .read(|conn| read_known(conn, self, known, Tracking::Off, false))
            {
                Ok(Known::Read(read)) => {
                    cache.written.clear();
                    return Ok(LoadedPositions::new(read.found));
                }
                Ok(Known::Unanswered(members)) => seen_members = Some(members),
                Err(err) if err.kind() == ErrorKind::RedisUnavailable => return Err(err),
                // Anything else (a key of another type, say): the script names it.
                Err(_) => {}
            }
        }
        let expected = expected_symbols(&cache, seen_members);
        let (found, known) = self.load_by_script(extra, expected)?;
        cache.known = Some(Arc::new(known));
        cache.written.clear();
        Ok(LoadedPositions::new(found))
    }

    /// Notes the symbols `writes` gave a value, for the next load's script to declare.
    pub(super) fn note_written(&self, writes: &[PositionWrite]) {
        let Some(last) = self.last_load else {
            return;
        };
        // Never wait for a load under way: the hint only saves a round trip.
        let Some(mut cache) = last.try_lock() else {
            return;
        };
        for write in writes.iter().filter(|write| write.new_value.is_some()) {
            let known = cache
                .known
                .as_ref()
                .is_some_and(|known| known.members.contains(write.symbol.as_bytes()));
            if !known && cache.written.len() < MAX_WRITTEN_HINTS {
                cache.written.insert(write.symbol.clone());
            }
        }
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
                    // Said once per manager: every later load goes untracked without asking.
                    log::warn!(
                        "this Redis refuses RESP3 or CLIENT TRACKING ({err}): positions are \
                         loaded without server-assisted caching (always current, one round \
                         trip more when nothing changed)"
                    );
                    cache.tracking_unsupported = true;
                    return false;
                }
            }
        }
        true
    }

    /// On the tracked connection: the cached positions when nothing changed; else, unless the
    /// index changed, the known symbols read again (and cached). [`Tracked::NotFound`] when
    /// neither answers (after one or two round trips: the caller runs the script).
    ///
    /// Any error reply (on a cluster, `MOVED`, `ASK`, `TRYAGAIN` or `CLUSTERDOWN` once the
    /// bot's slot moved: this node no longer sees its writes, nor invalidates them) is an
    /// error: the caller drops the connection and its cache, never answers from them.
    fn load_tracked(
        &self,
        cache: &mut LoadCache,
        known: Option<&Arc<KnownIndex>>,
    ) -> Result<Tracked> {
        let Some(tracked) = cache.tracked.as_mut() else {
            return Ok(Tracked::NotFound(None));
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
                // A raw request returns an error reply as a value: made an error here.
                let reply = conn.req_packed_command(&previous.count)?.extract_error()?;
                Ok(usize::try_from(i64::from_redis_value(reply)?).ok())
            })?;
            let invalidated = tracked.take_invalidations(&self.keys.positions_index);
            if invalidated == Invalidated::Nothing && counted == Some(previous.present) {
                let positions = Arc::clone(&previous.positions);
                cache.cached = Some(previous);
                return Ok(Tracked::Found(positions));
            }
            if invalidated == Invalidated::Key {
                // The index changed (or everything did): the script finds the new symbols.
                return Ok(Tracked::NotFound(None));
            }
            // Only positions changed: the same symbols read again, below.
        }
        let Some(known) = known else {
            return Ok(Tracked::NotFound(None));
        };
        let with_ttls = known.keys.len() > COUNTED_CHECK_MAX;
        let sent_at = crate::clock::now_nanos();
        let read = tracked.run(|conn| read_known(conn, self, known, Tracking::On, with_ttls))?;
        let invalidated = tracked.take_invalidations(&self.keys.positions_index);
        let KnownRead {
            found,
            shortest_ttl,
        } = match read {
            Known::Read(read) => read,
            Known::Unanswered(members) => return Ok(Tracked::NotFound(Some(members))),
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
        Ok(Tracked::Found(positions))
    }

    /// One call of the load script, declaring the keys of the `extra` symbols and of those
    /// `expected` in the index.
    fn invoke_load_script(
        &self,
        conn: &mut redis::Connection,
        extra: &[String],
        expected: &[String],
    ) -> redis::RedisResult<LoadReply> {
        let mut declared = HashSet::new();
        let extra: Vec<&str> = extra
            .iter()
            .map(String::as_str)
            .filter(|symbol| declared.insert(*symbol))
            .collect();
        let mut invocation = SCRIPTS.positions_load.key(&self.keys.positions_index);
        invocation.arg(extra.len());
        for symbol in &extra {
            invocation.key(self.keys.position(symbol)).arg(*symbol);
        }
        for symbol in expected {
            if declared.insert(symbol) {
                invocation.key(self.keys.position(symbol)).arg(symbol);
            }
        }
        let reply: Vec<Value> = invocation.invoke(conn)?;
        let mut reply = reply.into_iter();
        let mut next = || reply.next().unwrap_or(Value::Nil);
        let complete = i64::from_redis_value(next())? == 1;
        let members = Vec::<Vec<u8>>::from_redis_value(next())?;
        Ok(if complete {
            LoadReply::Loaded {
                members,
                pairs: Vec::<Vec<u8>>::from_redis_value(next())?,
            }
        } else {
            LoadReply::Undeclared(members)
        })
    }

    /// The positions read by the load script, and the symbols it read; `expected`: the
    /// symbols the index probably holds.
    fn load_by_script(
        &self,
        extra: &[String],
        mut expected: Vec<String>,
    ) -> Result<(RawPositions, KnownIndex)> {
        for _ in 0..MAX_SCRIPT_CALLS {
            let reply = self
                .store
                .read(|conn| self.invoke_load_script(conn, extra, &expected))
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
            let (members, flat) = match reply {
                LoadReply::Loaded { members, pairs } => (members, pairs),
                LoadReply::Undeclared(members) => {
                    expected = members
                        .into_iter()
                        .map(utf8_symbol)
                        .collect::<Result<_>>()?;
                    continue;
                }
            };
            let mut found = Vec::with_capacity(flat.len() / 2);
            let mut items = flat.into_iter();
            while let (Some(symbol), Some(value)) = (items.next(), items.next()) {
                found.push((utf8_symbol(symbol)?, value));
            }
            // The members, then the extra symbols not among them: the order the script read.
            let mut symbols = members
                .iter()
                .cloned()
                .map(utf8_symbol)
                .collect::<Result<Vec<_>>>()?;
            let mut listed: HashSet<&[u8]> = members.iter().map(Vec::as_slice).collect();
            for symbol in extra {
                if listed.insert(symbol.as_bytes()) {
                    symbols.push(symbol.clone());
                }
            }
            let known = KnownIndex {
                keys: symbols.iter().map(|s| self.keys.position(s)).collect(),
                symbols,
                extra: extra.to_vec(),
                members: members.into_iter().collect(),
            };
            return Ok((found, known));
        }
        Err(Error::new(
            ErrorKind::Redis,
            format!(
                "{} gained symbols each time its positions were about to be read; gave up after \
                 {MAX_SCRIPT_CALLS} attempts",
                self.keys.positions_index
            ),
        ))
    }
}

/// What the tracked connection answered.
enum Tracked {
    Found(Arc<LoadedPositions>),
    /// Nothing: the positions are to be read another way. With the index's members when a
    /// read on the tracked connection saw they changed.
    NotFound(Option<Vec<Vec<u8>>>),
}

/// The symbols the index is expected to hold: the last load's (whatever extra symbols it
/// read), those written since, and the members a transaction just saw.
fn expected_symbols(cache: &LoadCache, seen_members: Option<Vec<Vec<u8>>>) -> Vec<String> {
    let mut expected: HashSet<String> = cache.written.iter().cloned().collect();
    if let Some(known) = &cache.known {
        expected.extend(known.symbols.iter().cloned());
    }
    // A symbol that is not UTF-8 is left to the script, which answers it as a member.
    expected.extend(
        seen_members
            .into_iter()
            .flatten()
            .filter_map(|member| String::from_utf8(member).ok()),
    );
    expected.into_iter().collect()
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

/// What [`read_known`] answered.
enum Known {
    Read(KnownRead),
    /// The index no longer has exactly the known members (these are its members now), or a
    /// position key holds another type.
    Unanswered(Vec<Vec<u8>>),
}

/// The positions of the `known` symbols in one MULTI/EXEC, when the index still has exactly
/// those members and no position key holds another type; with `ttls`, the keys' TTLs too,
/// read right behind the transaction in the same round trip.
fn read_known(
    conn: &mut redis::Connection,
    positions: &PositionStore<'_>,
    known: &KnownIndex,
    tracking: Tracking,
    ttls: bool,
) -> redis::RedisResult<Known> {
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
        return Ok(Known::Unanswered(members));
    }
    if known.keys.is_empty() {
        return Ok(Known::Read(KnownRead {
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
    Ok(if existing == found.len() {
        Known::Read(KnownRead {
            found,
            shortest_ttl,
        })
    } else {
        Known::Unanswered(members)
    })
}

/// The load script's reply.
enum LoadReply {
    /// The index's members, and the flat symbol, value pairs of the positions found.
    Loaded {
        members: Vec<Vec<u8>>,
        pairs: Vec<Vec<u8>>,
    },
    /// The index holds a symbol whose key was not declared: nothing was read; its members.
    Undeclared(Vec<Vec<u8>>),
}

fn utf8_symbol(symbol: Vec<u8>) -> Result<String> {
    String::from_utf8(symbol)
        .map_err(|_| Error::corrupt("a symbol in the positions index is not UTF-8"))
}
