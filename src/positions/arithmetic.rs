//! The positions' arithmetic, pure and fuzzed: a fill's effect on a position (weighted entry
//! price, realized P&L, flips, flat), and the changes that make the stored positions match
//! the broker's.

use std::collections::BTreeSet;

use serde_json::{Number, Value};

use super::{Change, JsonObject, PositionDifference, SyncReport};
use crate::error::{Error, Result};
use crate::keys::validate_symbol;

/// Quantities this close to zero, relative to the sizes involved, are flat.
const FLAT_EPSILON: f64 = 1e-9;

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
