//! The positions on the Redis side: the fenced write script (every change a compare-and-set
//! of the value it was computed from), the reads it is computed from, the adoption of the
//! predecessor's positions into the index, and naming the key behind a `WRONGTYPE`.

use super::{decode_object, JsonObject, LastLoad};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::{Keys, FILL_SEPARATOR};
use crate::store::{scan, Store, SCRIPTS};

/// How many times a compare-and-set write is retried when the position moved under it.
const MAX_CAS_ATTEMPTS: usize = 16;

/// The `WRONGTYPE` error `err`, naming which of `keys` (each with the Redis type this library
/// stores there) holds another type; `err` itself when it is another error.
pub(crate) fn name_wrong_type(store: &Store, err: Error, keys: &[(&str, &str)]) -> Error {
    if !err.is_wrong_type() {
        return err;
    }
    let types: Result<Vec<String>> = store.read(|conn| {
        let mut pipe = redis::pipe();
        for (key, _) in keys {
            pipe.cmd("TYPE").arg(*key);
        }
        pipe.query(conn)
    });
    let culprit = types.ok().and_then(|types| {
        keys.iter()
            .zip(types)
            .find(|((_, expected), found)| found != "none" && found != expected)
            .map(|((key, expected), found)| (*key, *expected, found))
    });
    match culprit {
        Some((key, expected, found)) => Error::corrupt(format!(
            "{key} holds a Redis {found}, not the {expected} this library stores there \
             (WRONGTYPE); it was not written by quantshift_core: delete or rename it"
        )),
        None => err,
    }
}

/// One change for the positions write script.
pub(crate) struct PositionWrite {
    pub symbol: String,
    pub expected: Expected,
    /// `None` deletes the position.
    pub new_value: Option<String>,
}

pub(crate) enum Expected {
    Anything,
    Absent,
    Exactly(String),
}

pub(crate) enum WriteOutcome {
    Applied { changed: u64 },
    Conflict,
    DuplicateFill,
}

/// Positions as the Redis-facing half of the manager sees them.
pub(crate) struct PositionStore<'a> {
    pub store: &'a Store,
    pub keys: &'a Keys,
    pub position_ttl_ms: u64,
    /// What this manager's previous load found, for the next to confirm cheaply (none for
    /// one-off readers).
    pub last_load: Option<&'a LastLoad>,
}

impl PositionStore<'_> {
    pub fn load(&self, extra: &[String]) -> Result<Vec<(String, JsonObject)>> {
        self.load_shared(extra)?
            .items()
            .iter()
            .map(|(symbol, raw)| {
                let key = self.keys.position(symbol);
                decode_object(&key, raw).map(|obj| (symbol.clone(), obj))
            })
            .collect()
    }

    /// The raw value of one position and whether `fill` was applied already, in one round trip.
    pub fn read_for_fill(
        &self,
        symbol: &str,
        fill: Option<&str>,
    ) -> Result<(Option<Vec<u8>>, bool)> {
        let key = self.keys.position(symbol);
        let (raw, score): (Option<Vec<u8>>, Option<f64>) = self
            .store
            .read(|conn| {
                redis::pipe()
                    .get(&key)
                    .zscore(&self.keys.fills, fill.unwrap_or(""))
                    .query(conn)
            })
            .map_err(|err| self.name_wrong_type(err, &[symbol.to_owned()], &[]))?;
        Ok((raw, fill.is_some() && score.is_some()))
    }

    pub fn write(
        &self,
        token: &str,
        writes: &[PositionWrite],
        fill: Option<&str>,
    ) -> Result<WriteOutcome> {
        let outcome = self.invoke_write(token, writes, fill).map_err(|err| {
            let symbols: Vec<String> = writes.iter().map(|w| w.symbol.clone()).collect();
            self.name_wrong_type(err, &symbols, &[(&self.keys.lock, "string")])
        })?;
        if let WriteOutcome::Applied { .. } = outcome {
            self.note_written(writes);
        }
        Ok(outcome)
    }

    /// A `WRONGTYPE` reply names no key: finds which of the keys a call touched (the index,
    /// the fills, the positions of `symbols`, and `more`) holds another type than the one we
    /// store there, with one `TYPE` round trip on this error path only.
    pub fn name_wrong_type(&self, err: Error, symbols: &[String], more: &[(&str, &str)]) -> Error {
        if !err.is_wrong_type() {
            return err;
        }
        let positions: Vec<String> = symbols.iter().map(|s| self.keys.position(s)).collect();
        let mut keys: Vec<(&str, &str)> = vec![
            (&self.keys.positions_index, "set"),
            (&self.keys.fills, "zset"),
        ];
        keys.extend(positions.iter().map(|k| (k.as_str(), "string")));
        keys.extend_from_slice(more);
        name_wrong_type(self.store, err, &keys)
    }

    fn invoke_write(
        &self,
        token: &str,
        writes: &[PositionWrite],
        fill: Option<&str>,
    ) -> Result<WriteOutcome> {
        let mut invocation = SCRIPTS.positions_write.key(&self.keys.lock);
        invocation
            .key(&self.keys.positions_index)
            .key(&self.keys.fills)
            .arg(token)
            .arg(self.position_ttl_ms)
            .arg(fill.unwrap_or(""))
            .arg(crate::clock::unix_millis());
        for write in writes {
            invocation.key(self.keys.position(&write.symbol));
            invocation.arg(&write.symbol);
            match &write.expected {
                Expected::Anything => invocation.arg("*"),
                Expected::Absent => invocation.arg("-"),
                Expected::Exactly(value) => invocation.arg(format!("={value}")),
            };
            match &write.new_value {
                Some(value) => invocation.arg(format!("+{value}")),
                None => invocation.arg("-"),
            };
        }
        let (status, detail): (String, redis::Value) = self.store.write_script(&invocation)?;
        Ok(match status.as_str() {
            "ok" => WriteOutcome::Applied {
                changed: redis::from_redis_value(detail).unwrap_or(0),
            },
            "duplicate" => WriteOutcome::DuplicateFill,
            _ => WriteOutcome::Conflict,
        })
    }

    pub fn adopt(&self, token: &str, symbols: &[String]) -> Result<u64> {
        if symbols.is_empty() {
            return Ok(0);
        }
        let mut invocation = SCRIPTS.positions_adopt.key(&self.keys.lock);
        invocation
            .key(&self.keys.positions_index)
            .arg(token)
            .arg(self.position_ttl_ms);
        for symbol in symbols {
            invocation.key(self.keys.position(symbol)).arg(symbol);
        }
        self.store
            .write_script(&invocation)
            .map_err(|err| self.name_wrong_type(err, symbols, &[(&self.keys.lock, "string")]))
    }

    /// This bot's position symbols, by a SCAN over the keyspace: only at start-up, to find
    /// positions written before the index existed.
    pub fn scan_symbols(&self) -> Result<Vec<String>> {
        let pattern = self.keys.position_pattern();
        let keys = self.store.read(|conn| scan(conn, &pattern))?;
        let mut found: Vec<String> = keys
            .iter()
            .filter_map(|key| self.keys.symbol_of(key).map(str::to_owned))
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Runs a read-compute-write cycle until the write lands on the value it was computed
    /// from (or gives up after a bounded number of attempts).
    pub fn retry_on_conflict<T>(mut attempt: impl FnMut() -> Result<Option<T>>) -> Result<T> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            if let Some(done) = attempt()? {
                return Ok(done);
            }
        }
        Err(Error::new(
            ErrorKind::Redis,
            "positions kept changing under a compare-and-set write; gave up after 16 attempts",
        ))
    }
}

/// The member recorded in the fills set for a fill id of a symbol.
pub(crate) fn fill_member(symbol: &str, fill_id: &str) -> String {
    format!("{symbol}{FILL_SEPARATOR}{fill_id}")
}
