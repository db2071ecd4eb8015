//! Positions (docs/contract.md §4): save / load / clear, fills with weighted entry price and realized
//! P&L, and reconciliation with the broker. The arithmetic is pure (and fuzzed); every write
//! is one fenced compare-and-set script, so a change computed from a stale read is retried,
//! never applied over a newer value.
//!
//! The parts: `arithmetic` (fills and the broker diff, pure), `codec` (stored bytes to JSON
//! objects), `store` (the Redis side: the write script, reads, adoption of old positions),
//! `load` (every position in one round trip, cached), `update` (the read-modify-writes).

use serde_json::{Map, Value};

mod arithmetic;
mod codec;
mod load;
mod store;
mod update;

pub use arithmetic::{apply_fill_to, diff_positions, json_number};
pub use codec::decode_object;
pub(crate) use store::{
    fill_member, name_wrong_type, Expected, PositionStore, PositionWrite, WriteOutcome,
};

pub(crate) use load::LastLoad;
pub use load::LoadedPositions;

pub type JsonObject = Map<String, Value>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
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
