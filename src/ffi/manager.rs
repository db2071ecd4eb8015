//! The manager handle: creation, role, lease, callbacks, state, shutdown.

use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;

use super::config::{quantshift_options, quantshift_options_builder};
use super::{
    boundary, ensure_non_null, object_to_string, owned_c_string, parse_object, quantshift_status,
    try_ref, try_str, write_opt_string, write_out, FfiError, UserData,
};
use crate::manager::StateManager;

/// A state manager: one bot instance's state, positions and primary/standby role in Redis.
///
/// Made by `quantshift_manager_new`, freed by `quantshift_manager_free`. Every function
/// taking a `const quantshift_manager *` may be called from any thread, concurrently;
/// `quantshift_manager_free` must be the last call on the handle.
#[allow(non_camel_case_types)]
pub struct quantshift_manager {
    pub(crate) inner: StateManager,
}

/// Called with the new fencing epoch each time this instance becomes primary.
#[allow(non_camel_case_types)]
pub type quantshift_promoted_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, epoch: u64)>;

/// Called with the reason each time this instance stops being primary. `reason` is
/// borrowed for the duration of the call.
#[allow(non_camel_case_types)]
pub type quantshift_demoted_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, reason: *const c_char)>;

/// A shutdown handler: returns 0 on success; any other value is logged as a failure and
/// the next handler still runs.
#[allow(non_camel_case_types)]
pub type quantshift_shutdown_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void) -> c_int>;

/// Creates a manager: connects to Redis, checks the server's eviction policy and persistence
/// (see `quantshift_manager_startup_warnings`), starts the lease thread and makes one
/// attempt to take the lease. An instance that finds the lease free is normally primary when
/// this returns (the lease thread's own first attempt can win the race by a moment); one
/// that does not is standby and the lease thread keeps trying. Before the first write, use
/// `quantshift_manager_wait_until_primary` (or `quantshift_manager_on_promoted`).
///
/// On success `*out` is the new handle, to free with `quantshift_manager_free`.
/// Errors: `NULL_ARGUMENT` (`options`, `options->bot_name`, `out`), `INVALID_UTF8` (any
/// string of `options`), `INVALID_INPUT` (bad bot name, URL or timing:
/// `lock_ttl > renew_deadline > lock_ttl / 3`), `REDIS_UNAVAILABLE`, `REDIS_ERROR`.
///
/// # Safety
/// `options` is NULL or points to a `quantshift_options` whose strings are NULL or
/// NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_new(
    options: *const quantshift_options,
    out: *mut *mut quantshift_manager,
) -> quantshift_status {
    boundary(|| {
        let options = try_ref!(options);
        ensure_non_null!(out);
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { new_manager(options.core_config()?, out) }
    })
}

/// Creates a manager from growable options (`quantshift_options_builder`), as
/// `quantshift_manager_new` does from the v1 struct; the builder is only read and may be
/// freed after this call. Same errors, with `NULL_ARGUMENT` for `builder` and `out`.
///
/// # Safety
/// `builder` is NULL or a live builder from `quantshift_options_builder_new`; `out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_new_with_builder(
    builder: *const quantshift_options_builder,
    out: *mut *mut quantshift_manager,
) -> quantshift_status {
    boundary(|| {
        let builder = try_ref!(builder);
        ensure_non_null!(out);
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { new_manager(builder.config.clone(), out) }
    })
}

/// # Safety
/// `out` is non-NULL and writable.
unsafe fn new_manager(
    config: crate::config::Config,
    out: *mut *mut quantshift_manager,
) -> super::FfiResult {
    {
        let inner = StateManager::new(config)?;
        // As the Python face does: a first acquisition attempt now, so that the seed's usage
        // (save state right after construction) works for the only instance. A failure is
        // the lease thread's to retry.
        if let Err(err) = inner.heartbeat() {
            log::debug!("first acquisition attempt failed: {err}");
        }
        let handle = Box::into_raw(Box::new(quantshift_manager { inner }));
        // SAFETY: non-NULL and writable (this function's contract).
        unsafe { write_out(out, handle) };
        Ok(())
    }
}

/// Shuts the manager down if it is not already (as `quantshift_manager_shutdown`, errors
/// ignored), waits for its threads, and frees it. NULL is accepted and ignored. No callback
/// of this manager runs after it returns; it must not be called from one of them.
///
/// # Safety
/// `manager` is NULL or a handle from `quantshift_manager_new`, not freed before and not in
/// use by another thread.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_free(manager: *mut quantshift_manager) {
    let _ = boundary(|| {
        if manager.is_null() {
            return Ok(());
        }
        // SAFETY: a live handle made by `Box::into_raw` in `quantshift_manager_new`, freed
        // once (the caller's contract).
        drop(unsafe { Box::from_raw(manager) });
        Ok(())
    });
}

/// Runs the shutdown handlers in registration order (each isolated, all bounded by
/// `shutdown_timeout_ms`), saves the last state this instance saved with `shutdown_time`
/// added (if primary), releases the lease and announces it so a standby takes over at
/// once. Does not exit the process and does not free the handle. A second call does nothing.
/// Afterwards writes fail with `NOT_PRIMARY`; reads still work.
///
/// # Safety
/// `manager` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_shutdown(
    manager: *const quantshift_manager,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        manager.inner.shutdown()?;
        Ok(())
    })
}

/// Whether `quantshift_manager_shutdown` has run (or a signal-triggered shutdown started):
/// writes then fail with `NOT_PRIMARY`.
///
/// # Safety
/// `manager` is NULL or a live handle; `out_closed` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_is_closed(
    manager: *const quantshift_manager,
    out_closed: *mut bool,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        ensure_non_null!(out_closed);
        let closed = manager.inner.is_closed();
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_out(out_closed, closed) };
        Ok(())
    })
}

/// Whether this instance holds the primary lease now. Local state only: no network, never
/// blocks, and correct right after the process was frozen past its lease.
///
/// # Safety
/// `manager` is NULL or a live handle; `out_primary` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_is_primary(
    manager: *const quantshift_manager,
    out_primary: *mut bool,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        ensure_non_null!(out_primary);
        let primary = manager.inner.is_primary();
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_out(out_primary, primary) };
        Ok(())
    })
}

/// Blocks until this instance is primary or `timeout_ms` milliseconds pass; a negative
/// `timeout_ms` waits for ever. `*out_primary` says whether it is primary on return.
///
/// # Safety
/// `manager` is NULL or a live handle; `out_primary` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_wait_until_primary(
    manager: *const quantshift_manager,
    timeout_ms: i64,
    out_primary: *mut bool,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        ensure_non_null!(out_primary);
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let primary = manager.inner.wait_until_primary(timeout);
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_out(out_primary, primary) };
        Ok(())
    })
}

/// The fencing epoch of the lease held: it grows with every acquisition of the lease by
/// any instance, so orders or rows tagged with it can be fenced. `NOT_PRIMARY` when this
/// instance is not primary (`*out_epoch` untouched).
///
/// # Safety
/// `manager` is NULL or a live handle; `out_epoch` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_epoch(
    manager: *const quantshift_manager,
    out_epoch: *mut u64,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        ensure_non_null!(out_epoch);
        let epoch = manager.inner.epoch().ok_or_else(|| {
            FfiError::new(
                quantshift_status::NotPrimary,
                "this instance is not primary: it holds no epoch",
            )
        })?;
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_out(out_epoch, epoch) };
        Ok(())
    })
}

/// This instance's id, `hostname:pid` (with `.n` for the n-th manager of a process).
/// `*out` is a new string: free it with `quantshift_string_free`.
///
/// # Safety
/// `manager` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_instance_id(
    manager: *const quantshift_manager,
    out: *mut *mut c_char,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        ensure_non_null!(out);
        let id = owned_c_string(manager.inner.instance_id())?;
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_out(out, id) };
        Ok(())
    })
}

/// The bot's name. `*out` is a new string: free it with `quantshift_string_free`.
///
/// # Safety
/// `manager` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_bot_name(
    manager: *const quantshift_manager,
    out: *mut *mut c_char,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        ensure_non_null!(out);
        let name = owned_c_string(manager.inner.bot_name())?;
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_out(out, name) };
        Ok(())
    })
}

/// Problems found at start (a `maxmemory-policy` other than `noeviction`), as a JSON array
/// of strings, `[]` when none. `*out_json` is a new string: free it with
/// `quantshift_string_free`.
///
/// # Safety
/// `manager` is NULL or a live handle; `out_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_startup_warnings(
    manager: *const quantshift_manager,
    out_json: *mut *mut c_char,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        ensure_non_null!(out_json);
        let text = serde_json::to_string(manager.inner.startup_warnings())
            .map_err(|err| FfiError::invalid(err.to_string()))?;
        let text = owned_c_string(text)?;
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_out(out_json, text) };
        Ok(())
    })
}

/// The lease thread's stall meter, as `quantshift_manager_lease_stalls` reads it: how late
/// the lease thread woke and how long its lease round trips took since the manager started,
/// beside the tolerance they eat into. Durations in microseconds; the p50 / p99 are upper
/// bounds (the bound of the histogram bucket they fall in: 1, 2, 5, 10, 20, 50, 100, 150,
/// 200, 300, 500, 1000, 5000 ms, or the maximum past the last). Like every struct of the ABI
/// it is frozen: its fields never change.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct quantshift_lease_stalls {
    /// Timer wake-ups of the lease thread measured.
    pub wake_late_count: u64,
    /// Their lateness, summed.
    pub wake_late_sum_us: u64,
    pub wake_late_max_us: u64,
    pub wake_late_p50_us: u64,
    pub wake_late_p99_us: u64,
    /// Lease commands measured (renewals, looks, takes, releases), send to reply.
    pub round_trip_count: u64,
    pub round_trip_sum_us: u64,
    pub round_trip_max_us: u64,
    pub round_trip_p50_us: u64,
    pub round_trip_p99_us: u64,
    /// How late a renewal may come before the holder demotes itself (the deadline less the
    /// renewal period: `failover_tolerance` with fast failover).
    pub tolerance_us: u64,
    /// Role events and log records the lease's threads dropped because the thread that
    /// delivers them was behind (a callback or a logger that blocks).
    pub dropped_records: u64,
}

/// Reads the lease thread's stall meter into `*out_stalls` (local: no network, never
/// blocks). A stall of half the tolerance is also logged as a warning.
/// Errors: `NULL_ARGUMENT`.
///
/// # Safety
/// `manager` is NULL or a live handle; `out_stalls` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_lease_stalls(
    manager: *const quantshift_manager,
    out_stalls: *mut quantshift_lease_stalls,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        ensure_non_null!(out_stalls);
        let stalls = manager.inner.lease_stalls();
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let (w, r) = (&stalls.wake_late, &stalls.round_trip);
        let value = quantshift_lease_stalls {
            wake_late_count: w.count,
            wake_late_sum_us: us(w.sum),
            wake_late_max_us: us(w.max),
            wake_late_p50_us: us(w.quantile(0.5)),
            wake_late_p99_us: us(w.quantile(0.99)),
            round_trip_count: r.count,
            round_trip_sum_us: us(r.sum),
            round_trip_max_us: us(r.max),
            round_trip_p50_us: us(r.quantile(0.5)),
            round_trip_p99_us: us(r.quantile(0.99)),
            tolerance_us: us(stalls.tolerance),
            dropped_records: stalls.dropped_records,
        };
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_out(out_stalls, value) };
        Ok(())
    })
}

/// Renews the lease now when primary (also writing the heartbeat key), or tries to take
/// it now when standby. The lease thread does both on its own; this is for bots that call
/// a heartbeat in their loop. Errors: `REDIS_UNAVAILABLE`, `REDIS_ERROR`, `NOT_PRIMARY`
/// after shutdown.
///
/// # Safety
/// `manager` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_heartbeat(
    manager: *const quantshift_manager,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        manager.inner.heartbeat()?;
        Ok(())
    })
}

/// Registers `callback(userdata, epoch)`, called each time this instance becomes primary.
///
/// Callbacks run on a library thread (never the caller's, never while the library holds a
/// lock), one at a time, in registration order; they may call any function of this
/// manager except `quantshift_manager_free`. A slow callback delays the next callbacks,
/// not the lease. `userdata` must stay valid until `quantshift_manager_free` returns.
///
/// # Safety
/// `manager` is NULL or a live handle; `callback` is NULL or a function safe to call from
/// another thread with `userdata`.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_on_promoted(
    manager: *const quantshift_manager,
    callback: quantshift_promoted_callback,
    userdata: *mut c_void,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        let callback = callback.ok_or_else(|| FfiError::null("callback"))?;
        let userdata = UserData(userdata);
        manager.inner.on_promoted(move |epoch| {
            // SAFETY: the caller's callback, called with its own userdata from a library
            // thread, as documented.
            unsafe { callback(userdata.get(), epoch) }
        });
        Ok(())
    })
}

/// Registers `callback(userdata, reason)`, called each time this instance stops being
/// primary while running (lease lost, expired or handed over; not at shutdown). Runs as
/// the promoted callbacks do.
///
/// # Safety
/// As `quantshift_manager_on_promoted`.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_on_demoted(
    manager: *const quantshift_manager,
    callback: quantshift_demoted_callback,
    userdata: *mut c_void,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        let callback = callback.ok_or_else(|| FfiError::null("callback"))?;
        let userdata = UserData(userdata);
        manager.inner.on_demoted(move |reason| {
            let reason = CString::new(reason.replace('\0', " ")).unwrap_or_default();
            // SAFETY: the caller's callback with its own userdata and a NUL-terminated reason
            // that outlives the call.
            unsafe { callback(userdata.get(), reason.as_ptr()) };
        });
        Ok(())
    })
}

/// Registers a shutdown handler, run by `quantshift_manager_shutdown`,
/// `quantshift_manager_free` and on SIGTERM / SIGINT (when the library installs its signal
/// handlers), before the final state is saved: the place to close positions safely.
/// Handlers run in registration order on a library thread; one that returns non-zero is
/// logged and the next still runs; all together are bounded by `shutdown_timeout_ms`.
/// They may save state and positions. `userdata` must stay valid until
/// `quantshift_manager_free` returns; with the library's signal handlers installed, a
/// signal may start the handlers at any moment until the process exits, so keep it valid
/// for the life of the process (static or never freed).
///
/// # Safety
/// As `quantshift_manager_on_promoted`.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_register_shutdown_handler(
    manager: *const quantshift_manager,
    callback: quantshift_shutdown_callback,
    userdata: *mut c_void,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        let callback = callback.ok_or_else(|| FfiError::null("callback"))?;
        let userdata = UserData(userdata);
        manager.inner.register_shutdown_handler(move || {
            // SAFETY: the caller's callback with its own userdata, as documented.
            match unsafe { callback(userdata.get()) } {
                0 => Ok(()),
                code => Err(format!("returned {code}")),
            }
        });
        Ok(())
    })
}

/// Saves the bot's state: `state_json` must be a JSON object. The library adds
/// `last_update` (UTC, `2025-12-24T22:00:00.123456`). Fenced: only the primary's write
/// lands; a standby gets `NOT_PRIMARY` and nothing changes.
///
/// `out_saved_json` may be NULL; otherwise, on success, `*out_saved_json` is the object as
/// saved (with `last_update`), a new string to free with `quantshift_string_free`.
/// Errors: `NULL_ARGUMENT`, `INVALID_UTF8`, `INVALID_INPUT` (not JSON, not an object, over
/// `max_payload_bytes`), `NOT_PRIMARY`, `REDIS_UNAVAILABLE`, `REDIS_ERROR`.
///
/// # Safety
/// `manager` is NULL or a live handle; `state_json` is NULL or NUL-terminated;
/// `out_saved_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_save_state(
    manager: *const quantshift_manager,
    state_json: *const c_char,
    out_saved_json: *mut *mut c_char,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        let text = try_str!(state_json);
        let mut state = parse_object("state_json", text)?;
        manager.inner.save_state(&mut state)?;
        let saved = (!out_saved_json.is_null()).then(|| object_to_string(&state));
        // SAFETY: NULL or writable per the contract.
        unsafe { write_opt_string(out_saved_json, saved) }
    })
}

/// Merges the fields of `changes_json` (a JSON object) into the stored state and saves the
/// result (fenced). `out_state_json` may be NULL; otherwise `*out_state_json` is the state
/// as saved, a new string to free with `quantshift_string_free`. Errors as
/// `quantshift_manager_save_state`, plus `CORRUPT_DATA` when the stored state is not a JSON
/// object.
///
/// # Safety
/// As `quantshift_manager_save_state`.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_update_state(
    manager: *const quantshift_manager,
    changes_json: *const c_char,
    out_state_json: *mut *mut c_char,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        let text = try_str!(changes_json);
        let changes = parse_object("changes_json", text)?;
        let state = manager.inner.update_state(&changes)?;
        let saved = (!out_state_json.is_null()).then(|| object_to_string(&state));
        // SAFETY: NULL or writable per the contract.
        unsafe { write_opt_string(out_state_json, saved) }
    })
}

/// Loads the stored state (allowed on a standby). On success `*out_json` is the JSON
/// object, a new string to free with `quantshift_string_free`, or NULL when no state is
/// stored. Errors: `NULL_ARGUMENT`, `CORRUPT_DATA`, `REDIS_UNAVAILABLE`, `REDIS_ERROR`.
///
/// # Safety
/// `manager` is NULL or a live handle; `out_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_manager_load_state(
    manager: *const quantshift_manager,
    out_json: *mut *mut c_char,
) -> quantshift_status {
    boundary(|| {
        let manager = try_ref!(manager);
        ensure_non_null!(out_json);
        let state = manager.inner.load_state()?;
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_opt_string(out_json, state.as_ref().map(object_to_string)) }
    })
}
