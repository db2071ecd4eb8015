//! Positions: save, load, clear, fills and reconciliation with the broker.

use std::ffi::c_char;

use serde_json::{Map, Value};

use super::manager::quantshift_manager;
use super::{
    boundary, ensure_non_null, object_to_string, parse_object, quantshift_status, try_opt_str,
    try_ref, try_str, write_opt_string, write_out, FfiError,
};
use crate::positions::JsonObject;

/// Saves one position (fenced): `data_json` must be a JSON object; the library adds
/// `last_update`. Symbols round-trip exactly (`BTC/USD`, `ES:FUT`, non-ASCII); empty ones,
/// control characters and over 256 bytes are refused.
///
/// `out_saved_json` may be NULL; otherwise `*out_saved_json` is the position as saved, a new
/// string to free with `quantshift_string_free`. Errors: `NULL_ARGUMENT`, `INVALID_UTF8`,
/// `INVALID_INPUT`, `NOT_PRIMARY`, `REDIS_UNAVAILABLE`, `REDIS_ERROR`.
///
/// # Safety
/// `manager` is NULL or a live handle; `symbol` and `data_json` are NULL or NUL-terminated;
/// `out_saved_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_save_position(
    manager: *const quantshift_manager,
    symbol: *const c_char,
    data_json: *const c_char,
    out_saved_json: *mut *mut c_char,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        let symbol = try_str!(symbol);
        let text = try_str!(data_json);
        let mut data = parse_object("data_json", text)?;
        manager.inner.save_position(symbol, &mut data)?;
        let saved = (!out_saved_json.is_null()).then(|| object_to_string(&data));
        // SAFETY: NULL or writable per the contract.
        unsafe { write_opt_string(out_saved_json, saved) }
    })
}

/// Every position of the bot as one JSON object `{symbol: position, ...}` (allowed on a
/// standby), in a constant number of Redis round trips. `*out_json` is a new string to
/// free with `quantshift_string_free`. Errors: `NULL_ARGUMENT`, `CORRUPT_DATA`,
/// `REDIS_UNAVAILABLE`, `REDIS_ERROR`.
///
/// # Safety
/// `manager` is NULL or a live handle; `out_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_load_positions(
    manager: *const quantshift_manager,
    out_json: *mut *mut c_char,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        ensure_non_null!(out_json);
        let positions = manager.inner.load_positions()?;
        let object: Map<String, Value> = positions
            .into_iter()
            .map(|(symbol, data)| (symbol, Value::Object(data)))
            .collect();
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_opt_string(out_json, Some(object_to_string(&object))) }
    })
}

/// Removes one position (fenced). `out_existed` may be NULL; otherwise `*out_existed` says
/// whether it existed. Errors: `NULL_ARGUMENT`, `INVALID_UTF8`, `INVALID_INPUT`,
/// `NOT_PRIMARY`, `REDIS_UNAVAILABLE`, `REDIS_ERROR`.
///
/// # Safety
/// `manager` is NULL or a live handle; `symbol` is NULL or NUL-terminated; `out_existed` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_clear_position(
    manager: *const quantshift_manager,
    symbol: *const c_char,
    out_existed: *mut bool,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        let symbol = try_str!(symbol);
        let existed = manager.inner.clear_position(symbol)?;
        if !out_existed.is_null() {
            // SAFETY: non-NULL (checked above), writable per the contract.
            unsafe { write_out(out_existed, existed) };
        }
        Ok(())
    })
}

/// Applies a fill in one atomic, fenced step: signed `quantity` (buy > 0, sell < 0) at
/// `price` updates `quantity` and the volume-weighted `entry_price`, keeps `realized_pnl`
/// when reducing, flips side when crossing zero and removes the position when flat. A
/// `fill_id` (may be NULL) already applied is ignored, so a fill delivered twice counts once.
///
/// `out_position_json` may be NULL; otherwise `*out_position_json` is the position after
/// the fill, a new string to free with `quantshift_string_free`, or NULL when flat.
/// Errors: `NULL_ARGUMENT`, `INVALID_UTF8`, `INVALID_INPUT` (zero, NaN or infinite
/// quantity, NaN or infinite price, bad symbol or fill id), `CORRUPT_DATA` (the stored
/// position's numbers are not numbers), `NOT_PRIMARY`, `REDIS_UNAVAILABLE`, `REDIS_ERROR`.
///
/// # Safety
/// `manager` is NULL or a live handle; `symbol` is NULL or NUL-terminated; `fill_id` is
/// NULL or NUL-terminated; `out_position_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_apply_fill(
    manager: *const quantshift_manager,
    symbol: *const c_char,
    quantity: f64,
    price: f64,
    fill_id: *const c_char,
    out_position_json: *mut *mut c_char,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        let symbol = try_str!(symbol);
        let fill_id = try_opt_str!(fill_id);
        let position = manager.inner.apply_fill(symbol, quantity, price, fill_id)?;
        let text = if out_position_json.is_null() {
            None
        } else {
            position.as_ref().map(object_to_string)
        };
        // SAFETY: NULL or writable per the contract.
        unsafe { write_opt_string(out_position_json, text) }
    })
}

/// Makes the stored positions match the broker's in one atomic, fenced step.
/// `broker_json` is a JSON object `{symbol: position, ...}` of every position the broker
/// holds (a position with `"quantity": 0` counts as absent). A stored position absent at
/// the broker is deleted; one whose fields differ is updated (broker fields over ours);
/// a new one is inserted.
///
/// `out_report_json` may be NULL; otherwise `*out_report_json` is
/// `{"inserted": n, "updated": n, "deleted": n, "unchanged": n,
///   "differences": {symbol: {"change": "inserted"|"updated"|"deleted", "before": ...,
///   "after": ...}}}`, a new string to free with `quantshift_string_free`.
/// Errors: `NULL_ARGUMENT`, `INVALID_UTF8`, `INVALID_INPUT` (not a JSON object of objects,
/// bad symbol or quantity), `CORRUPT_DATA`, `NOT_PRIMARY`, `REDIS_UNAVAILABLE`,
/// `REDIS_ERROR`.
///
/// # Safety
/// `manager` is NULL or a live handle; `broker_json` is NULL or NUL-terminated;
/// `out_report_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_sync_positions(
    manager: *const quantshift_manager,
    broker_json: *const c_char,
    out_report_json: *mut *mut c_char,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        let text = try_str!(broker_json);
        let broker = parse_object("broker_json", text)?;
        let mut positions: Vec<(String, JsonObject)> = Vec::with_capacity(broker.len());
        for (symbol, data) in broker {
            match data {
                Value::Object(data) => positions.push((symbol, data)),
                other => {
                    return Err(FfiError::invalid(format!(
                        "broker_json: position {symbol:?} must be a JSON object, got {}",
                        super::json_type(&other)
                    )))
                }
            }
        }
        let report = manager.inner.sync_positions(&positions)?;
        let text = (!out_report_json.is_null()).then(|| object_to_string(&report.to_json()));
        // SAFETY: NULL or writable per the contract.
        unsafe { write_opt_string(out_report_json, text) }
    })
}
