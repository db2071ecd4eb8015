//! Positions (docs/contract.md §4): save / load / clear, fills with weighted entry price and realized
//! P&L, and reconciliation with the broker. The arithmetic is pure (and fuzzed); every write
//! is one fenced compare-and-set script, so a change computed from a stale read is retried,
//! never applied over a newer value.

use std::collections::BTreeSet;

use serde_json::{Map, Number, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::keys::{validate_symbol, Keys, FILL_SEPARATOR};
use crate::store::{scan, Store, SCRIPTS};

mod load;
mod update;

pub(crate) use load::LastLoad;
pub use load::LoadedPositions;

pub type JsonObject = Map<String, Value>;

/// How many times a compare-and-set write is retried when the position moved under it.
const MAX_CAS_ATTEMPTS: usize = 16;

/// Quantities this close to zero, relative to the sizes involved, are flat.
const FLAT_EPSILON: f64 = 1e-9;

/// What `sync_positions` did to one symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Inserted,
    Updated,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Inserted => "inserted",
            Change::Updated => "updated",
            Change::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PositionDifference {
    pub symbol: String,
    pub change: Change,
    pub before: Option<JsonObject>,
    pub after: Option<JsonObject>,
}

/// The outcome of [`sync_positions`](crate::StateManager::sync_positions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    pub inserted: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub differences: Vec<PositionDifference>,
}

impl SyncReport {
    /// `{"inserted": n, "updated": n, "deleted": n, "unchanged": n,
    ///   "differences": {symbol: {"change": ..., "before": ..., "after": ...}}}`
    pub fn to_json(&self) -> JsonObject {
        let mut differences = Map::new();
        for diff in &self.differences {
            let mut entry = Map::new();
            entry.insert("change".into(), Value::from(diff.change.as_str()));
            entry.insert(
                "before".into(),
                diff.before.clone().map_or(Value::Null, Value::Object),
            );
            entry.insert(
                "after".into(),
                diff.after.clone().map_or(Value::Null, Value::Object),
            );
            differences.insert(diff.symbol.clone(), Value::Object(entry));
        }
        let mut out = Map::new();
        out.insert("inserted".into(), self.inserted.into());
        out.insert("updated".into(), self.updated.into());
        out.insert("deleted".into(), self.deleted.into());
        out.insert("unchanged".into(), self.unchanged.into());
        out.insert("differences".into(), Value::Object(differences));
        out
    }
}

/// A number as JSON, integral values as integers so `10` stays `10` for the bots.
pub fn json_number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Value::from(value as i64)
    } else {
        Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

fn number_field(position: &JsonObject, field: &str, symbol: &str) -> Result<Option<f64>> {
    match position.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "position {symbol:?}: {field} is not a finite number"
                ))
            }),
        Some(other) => Err(Error::corrupt(format!(
            "position {symbol:?}: {field} is {other}, not a number"
        ))),
    }
}

/// The position after a fill of signed `quantity` (buy > 0, sell < 0) at `price`; `None`
/// when the fill leaves it flat. Other fields of the position are kept.
pub fn apply_fill_to(
    symbol: &str,
    current: Option<&JsonObject>,
    quantity: f64,
    price: f64,
) -> Result<Option<JsonObject>> {
    if !quantity.is_finite() || quantity == 0.0 {
        return Err(Error::invalid(format!(
            "fill quantity must be a finite non-zero number, got {quantity}"
        )));
    }
    if !price.is_finite() {
        return Err(Error::invalid(format!(
            "fill price must be finite, got {price}"
        )));
    }
    let mut position = current.cloned().unwrap_or_default();
    let held = match current {
        Some(p) => number_field(p, "quantity", symbol)?.unwrap_or(0.0),
        None => 0.0,
    };
    let entry = match current {
        Some(p) => number_field(p, "entry_price", symbol)?.unwrap_or(price),
        None => price,
    };
    let mut realized = match current {
        Some(p) => number_field(p, "realized_pnl", symbol)?.unwrap_or(0.0),
        None => 0.0,
    };
    let new_quantity = held + quantity;
    let scale = held.abs().max(quantity.abs());
    let flat = new_quantity.abs() <= FLAT_EPSILON * scale;
    let new_entry = if held == 0.0 {
        // Opening: the fill's price (the weighted formula below underflows to 0 when
        // quantity × price is below the smallest normal number).
        price
    } else if held.signum() == quantity.signum() {
        // Adding to a position: volume-weighted entry price.
        (held.abs() * entry + quantity.abs() * price) / (held.abs() + quantity.abs())
    } else {
        // Reducing: the closed part realizes P&L against the entry price.
        let closed = quantity.abs().min(held.abs());
        realized += closed * (price - entry) * held.signum();
        if !flat && new_quantity.signum() != held.signum() {
            price
        } else {
            entry
        }
    };
    if flat {
        return Ok(None);
    }
    if !new_entry.is_finite() || !realized.is_finite() || !new_quantity.is_finite() {
        return Err(Error::invalid(format!(
            "fill on {symbol:?} overflows: quantity {new_quantity}, entry price {new_entry}"
        )));
    }
    position.insert("quantity".into(), json_number(new_quantity));
    position.insert("entry_price".into(), json_number(new_entry));
    if realized != 0.0 || position.contains_key("realized_pnl") {
        position.insert("realized_pnl".into(), json_number(realized));
    }
    Ok(Some(position))
}

fn fields_equal(broker: &JsonObject, stored: &JsonObject) -> bool {
    broker
        .iter()
        .filter(|(key, _)| key.as_str() != "last_update")
        .all(|(key, value)| match (value, stored.get(key)) {
            (Value::Number(a), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
            (a, Some(b)) => a == b,
            (_, None) => false,
        })
}

fn is_flat(position: &JsonObject, symbol: &str) -> Result<bool> {
    Ok(number_field(position, "quantity", symbol)? == Some(0.0))
}

/// The changes that make `stored` match `broker`: a broker position absent here is inserted,
/// one whose fields differ is updated (broker fields over ours, ours kept otherwise), ours
/// absent at the broker or flat there is deleted.
pub fn diff_positions(
    stored: &[(String, JsonObject)],
    broker: &[(String, JsonObject)],
    now_iso: &str,
) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    let mut broker_symbols = BTreeSet::new();
    for (symbol, data) in broker {
        validate_symbol(symbol)?;
        if !broker_symbols.insert(symbol.as_str()) {
            return Err(Error::invalid(format!("symbol {symbol:?} appears twice")));
        }
        let before = stored.iter().find(|(s, _)| s == symbol).map(|(_, p)| p);
        if is_flat(data, symbol).map_err(|e| Error::invalid(e.message().to_owned()))? {
            if let Some(before) = before {
                report.deleted += 1;
                report.differences.push(PositionDifference {
                    symbol: symbol.clone(),
                    change: Change::Deleted,
                    before: Some(before.clone()),
                    after: None,
                });
            }
            continue;
        }
        match before {
            Some(before) if fields_equal(data, before) => report.unchanged += 1,
            Some(before) => {
                let mut after = before.clone();
                after.extend(data.iter().map(|(k, v)| (k.clone(), v.clone())));
                after.insert("last_update".into(), Value::from(now_iso));
                report.updated += 1;
                report.differences.push(PositionDifference {
                    symbol: symbol.clone(),
                    change: Change::Updated,
                    before: Some(before.clone()),
                    after: Some(after),
                });
            }
            None => {
                let mut after = data.clone();
                after.insert("last_update".into(), Value::from(now_iso));
                report.inserted += 1;
                report.differences.push(PositionDifference {
                    symbol: symbol.clone(),
                    change: Change::Inserted,
                    before: None,
                    after: Some(after),
                });
            }
        }
    }
    for (symbol, before) in stored {
        if !broker_symbols.contains(symbol.as_str()) {
            report.deleted += 1;
            report.differences.push(PositionDifference {
                symbol: symbol.clone(),
                change: Change::Deleted,
                before: Some(before.clone()),
                after: None,
            });
        }
    }
    Ok(report)
}

/// Parses a stored value, which must be a JSON object.
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

pub fn decode_object(what: &str, raw: &[u8]) -> Result<JsonObject> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::corrupt(format!(
            "{what} holds a JSON {}, not an object",
            json_type(&other)
        ))),
        Err(err) => Err(Error::corrupt(format!("{what} is not valid JSON: {err}"))),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn fills_weight_entry_price_realize_pnl_and_flip() {
        let p = apply_fill_to("X", None, 10.0, 100.0).unwrap().unwrap();
        assert_eq!(p["quantity"], json!(10));
        let p = apply_fill_to("X", Some(&p), 10.0, 110.0).unwrap().unwrap();
        assert_eq!(p["entry_price"], json!(105));
        let p = apply_fill_to("X", Some(&p), -5.0, 115.0).unwrap().unwrap();
        assert_eq!(p["quantity"], json!(15));
        assert_eq!(p["entry_price"], json!(105));
        assert_eq!(p["realized_pnl"], json!(50));
        let p = apply_fill_to("X", Some(&p), -20.0, 100.0).unwrap().unwrap();
        assert_eq!(p["quantity"], json!(-5));
        assert_eq!(p["entry_price"], json!(100));
        assert_eq!(p["realized_pnl"], json!(-25));
        assert_eq!(apply_fill_to("X", Some(&p), 5.0, 90.0).unwrap(), None);
        let keep = obj(json!({"quantity": 1, "entry_price": 2.5, "stop_loss": 1.0}));
        let p = apply_fill_to("X", Some(&keep), 1.0, 2.5).unwrap().unwrap();
        assert_eq!(p["stop_loss"], json!(1.0));
        assert!(apply_fill_to("X", None, f64::NAN, 1.0).is_err());
        assert!(apply_fill_to("X", None, 0.0, 1.0).is_err());
        let bad = obj(json!({"quantity": "ten"}));
        assert_eq!(
            apply_fill_to("X", Some(&bad), 1.0, 1.0).unwrap_err().kind(),
            ErrorKind::CorruptData
        );
    }

    #[test]
    fn opening_enters_at_the_fill_price_even_for_tiny_sizes() {
        // Found by fuzzing: (0 × entry + q × price) / q is not price after rounding:
        // 3 @ 0.1 gave 0.10000000000000002, and 5e-324 @ 9.4e-7 gave 0.
        let p = apply_fill_to("X", None, 3.0, 0.1).unwrap().unwrap();
        assert_eq!(p["entry_price"], json!(0.1));
        let p = apply_fill_to("X", None, 5e-324, 9.4e-7).unwrap().unwrap();
        assert_eq!(p["entry_price"], json!(9.4e-7));
        let p = apply_fill_to("X", None, 1e-200, 1e-200).unwrap().unwrap();
        assert_eq!(p["entry_price"], json!(1e-200));
    }

    #[test]
    fn sync_diff_counts_each_kind() {
        let stored = vec![
            (
                "A".to_owned(),
                obj(json!({"quantity": 1, "entry_price": 2, "stop_loss": 1})),
            ),
            (
                "B".to_owned(),
                obj(json!({"quantity": 3, "entry_price": 4})),
            ),
            (
                "C".to_owned(),
                obj(json!({"quantity": 5, "entry_price": 6})),
            ),
        ];
        let broker = vec![
            (
                "A".to_owned(),
                obj(json!({"quantity": 1.0, "entry_price": 2})),
            ),
            (
                "B".to_owned(),
                obj(json!({"quantity": 7, "entry_price": 4})),
            ),
            (
                "D".to_owned(),
                obj(json!({"quantity": 8, "entry_price": 9})),
            ),
        ];
        let report = diff_positions(&stored, &broker, "t").unwrap();
        assert_eq!(
            (
                report.inserted,
                report.updated,
                report.deleted,
                report.unchanged
            ),
            (1, 1, 1, 1)
        );
        let b = report.differences.iter().find(|d| d.symbol == "B").unwrap();
        assert_eq!(b.after.as_ref().unwrap()["quantity"], json!(7));
    }
}
