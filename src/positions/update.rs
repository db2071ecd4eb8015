//! The positions' read-modify-writes: a fill, and a reconciliation with the broker. Each is
//! a read, a computation and one compare-and-set write of what was read, retried while
//! another writer got there first. The caller supplies the encoding (its payload limit) and
//! the fenced write (so a refusal is checked against its lease).

use serde_json::Value;

use super::{
    apply_fill_to, decode_object, diff_positions, fill_member, Expected, JsonObject, PositionStore,
    PositionWrite, SyncReport, WriteOutcome,
};
use crate::clock::utc_now_iso;
use crate::error::{Error, Result};

/// Encodes a value for Redis: `what` names it in an error.
pub(crate) type Encode<'e> = &'e dyn Fn(&str, &JsonObject) -> Result<String>;
/// One fenced positions write with the fill id member it records, if any.
pub(crate) type FencedWrite<'w> =
    &'w dyn Fn(&[PositionWrite], Option<&str>) -> Result<WriteOutcome>;

impl PositionStore<'_> {
    /// Applies one fill to `symbol` (see [`apply_fill_to`]); a fill id already recorded is
    /// ignored. Returns the position after it (`None` when flat).
    pub fn fill(
        &self,
        symbol: &str,
        quantity: f64,
        price: f64,
        fill_id: Option<&str>,
        encode: Encode<'_>,
        write: FencedWrite<'_>,
    ) -> Result<Option<JsonObject>> {
        let member = fill_id.map(|id| fill_member(symbol, id));
        let key = self.keys.position(symbol);
        Self::retry_on_conflict(|| {
            let (raw, seen) = self.read_for_fill(symbol, member.as_deref())?;
            let current = raw
                .as_deref()
                .map(|raw| decode_object(&key, raw))
                .transpose()?;
            if seen {
                return Ok(Some(current));
            }
            let mut next = apply_fill_to(symbol, current.as_ref(), quantity, price)?;
            let new_value = match next.as_mut() {
                Some(position) => {
                    position.insert("last_update".into(), Value::from(utc_now_iso()));
                    Some(encode(&format!("position {symbol:?}"), position)?)
                }
                None => None,
            };
            let change = PositionWrite {
                symbol: symbol.to_owned(),
                expected: expected_of(&key, raw.as_deref())?,
                new_value,
            };
            match write(&[change], member.as_deref())? {
                WriteOutcome::Applied { .. } => Ok(Some(next)),
                WriteOutcome::DuplicateFill | WriteOutcome::Conflict => Ok(None),
            }
        })
    }

    /// Makes the stored positions match `broker`'s in one atomic write (`unindexed`: the
    /// predecessor's positions the index does not name yet).
    pub fn sync(
        &self,
        broker: &[(String, JsonObject)],
        unindexed: &[String],
        encode: Encode<'_>,
        write: FencedWrite<'_>,
    ) -> Result<SyncReport> {
        Self::retry_on_conflict(|| {
            let loaded = self.load_shared(unindexed)?;
            let raw = loaded.items();
            let mut stored = Vec::with_capacity(raw.len());
            for (symbol, value) in raw {
                stored.push((
                    symbol.clone(),
                    decode_object(&self.keys.position(symbol), value)?,
                ));
            }
            let report = diff_positions(&stored, broker, &utc_now_iso())?;
            if report.differences.is_empty() {
                return Ok(Some(report));
            }
            let mut changes = Vec::with_capacity(report.differences.len());
            for diff in &report.differences {
                let key = self.keys.position(&diff.symbol);
                let was = raw
                    .iter()
                    .find(|(s, _)| *s == diff.symbol)
                    .map(|(_, value)| value.as_slice());
                let new_value = match &diff.after {
                    Some(after) => Some(encode(&format!("position {:?}", diff.symbol), after)?),
                    None => None,
                };
                changes.push(PositionWrite {
                    symbol: diff.symbol.clone(),
                    expected: expected_of(&key, was)?,
                    new_value,
                });
            }
            match write(&changes, None)? {
                WriteOutcome::Applied { .. } => Ok(Some(report)),
                _ => Ok(None),
            }
        })
    }
}

/// What a stored value must still be for a write computed from it to land. Stored values
/// are the JSON text the library wrote: bytes that are not UTF-8 are corrupt, never
/// compared lossily.
fn expected_of(key: &str, raw: Option<&[u8]>) -> Result<Expected> {
    Ok(match raw {
        Some(raw) => Expected::Exactly(
            String::from_utf8(raw.to_vec())
                .map_err(|_| Error::corrupt(format!("{key} is not UTF-8")))?,
        ),
        None => Expected::Absent,
    })
}
