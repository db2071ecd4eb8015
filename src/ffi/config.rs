//! The options of a manager: the frozen v1 struct of `quantshift_manager_new` and its
//! defaults, and the growable options builder of `quantshift_manager_new_with_builder`.

use std::ffi::c_char;
use std::time::Duration;

use super::{boundary, try_opt_str, try_ref, try_str, write_out, FfiError, FfiResult};
use crate::config::Config;
use crate::ffi::{ensure_non_null, quantshift_status};
use crate::keys::KeyLayout;

/// Options of a manager, version 1: frozen. Its layout never changes (a program built
/// against an older header keeps working); options added after it are set on a
/// `quantshift_options_builder`. Fill it with `quantshift_options_default`, then set `bot_name`
/// and what else differs. Durations are in milliseconds; a duration of 0 where a default is
/// derived from others (`renew_deadline_ms`, `poll_interval_ms`) means "derive it".
///
/// The strings are only read during `quantshift_manager_new`: they may be freed after it.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct quantshift_options {
    /// The bot's name (required): not empty, at most 256 bytes, no control characters, no
    /// `:`. Keys are `bot:{bot_name}:...`.
    pub bot_name: *const c_char,
    /// `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS) or
    /// `unix:///path`. NULL: `QUANTSHIFT_REDIS_URL`, else `REDIS_URL`, else
    /// `redis://127.0.0.1:6379/0`. A password not in the URL is taken from
    /// `REDIS_PASSWORD`.
    pub redis_url: *const c_char,
    /// TTL of `bot:{bot}:state` (default 3 600 000 = 1 h).
    pub state_ttl_ms: u64,
    /// TTL of each `bot:{bot}:position:{symbol}` (default 86 400 000 = 24 h).
    pub position_ttl_ms: u64,
    /// TTL of `bot:{bot}:heartbeat` (default 60 000).
    pub heartbeat_ttl_ms: u64,
    /// TTL of the primary lease `bot:{bot}:primary_lock` (default 30 000); it is renewed
    /// every `lock_ttl_ms / 3`.
    pub lock_ttl_ms: u64,
    /// Without a successful renewal for this long the instance demotes itself. 0 (the
    /// default): two thirds of `lock_ttl_ms`. Must satisfy
    /// `lock_ttl_ms > renew_deadline_ms > lock_ttl_ms / 3`.
    pub renew_deadline_ms: u64,
    /// How often a standby tries to take the lease. 0 (the default):
    /// `min(1000, lock_ttl_ms / 10)`.
    pub poll_interval_ms: u64,
    /// Bound on connecting to Redis (default 2000).
    pub connect_timeout_ms: u64,
    /// Bound on one Redis command (default 2000).
    pub command_timeout_ms: u64,
    /// Bound on all shutdown handlers together (default 20 000).
    pub shutdown_timeout_ms: u64,
    /// Serialized states and positions above this size are refused before anything is sent
    /// (default 16 MiB).
    pub max_payload_bytes: u64,
    /// Replicas that must confirm the lease and every fenced write (Redis `WAIT`); 0 (the
    /// default) waits for none. A write not confirmed within `wait_timeout_ms` fails with
    /// `QUANTSHIFT_STATUS_NOT_REPLICATED` (the master has applied it).
    pub wait_replicas: u32,
    /// Bound on waiting for the replicas (default 1000).
    pub wait_timeout_ms: u64,
    /// PEM file of the CA that signed the server certificate (`rediss://`). NULL:
    /// `QUANTSHIFT_TLS_CA_FILE`, else the system's roots.
    pub tls_ca_file: *const c_char,
    /// Client certificate and key (PEM) for servers that require them; both or neither.
    /// NULL: `QUANTSHIFT_TLS_CERT_FILE` / `QUANTSHIFT_TLS_KEY_FILE`.
    pub tls_cert_file: *const c_char,
    pub tls_key_file: *const c_char,
    /// Credentials for the Sentinels of a `redis+sentinel://` URL. NULL:
    /// `QUANTSHIFT_SENTINEL_USERNAME` / `QUANTSHIFT_SENTINEL_PASSWORD`, else no `AUTH`.
    pub sentinel_username: *const c_char,
    pub sentinel_password: *const c_char,
    /// true (the default): on SIGTERM / SIGINT the library runs the shutdown handlers,
    /// saves the last state, releases the lease and exits the process with status 0.
    /// false: the host handles signals itself and calls `quantshift_manager_shutdown`.
    pub install_signal_handlers: bool,
}

/// Fills `options` with the defaults (docs/contract.md §1, §2): `bot_name` and `redis_url` NULL,
/// the TTLs, timeouts and limits of the library, signal handlers installed.
///
/// Returns `QUANTSHIFT_STATUS_NULL_ARGUMENT` when `options` is NULL.
///
/// # Safety
/// `options` is NULL or points to writable memory for a `quantshift_options`.
#[no_mangle]
pub unsafe extern "C" fn quantshift_options_default(
    options: *mut quantshift_options,
) -> quantshift_status {
    boundary(|| {
        ensure_non_null!(options);
        let defaults = Config::new("");
        let filled = quantshift_options {
            bot_name: std::ptr::null(),
            redis_url: std::ptr::null(),
            state_ttl_ms: millis(defaults.state_ttl),
            position_ttl_ms: millis(defaults.position_ttl),
            heartbeat_ttl_ms: millis(defaults.heartbeat_ttl),
            lock_ttl_ms: millis(defaults.lock_ttl),
            renew_deadline_ms: defaults.renew_deadline.map_or(0, millis),
            poll_interval_ms: defaults.poll_interval.map_or(0, millis),
            connect_timeout_ms: millis(defaults.connect_timeout),
            command_timeout_ms: millis(defaults.command_timeout),
            shutdown_timeout_ms: millis(defaults.shutdown_timeout),
            max_payload_bytes: defaults.max_payload_bytes as u64,
            wait_replicas: defaults.wait_replicas,
            wait_timeout_ms: millis(defaults.wait_timeout),
            tls_ca_file: std::ptr::null(),
            tls_cert_file: std::ptr::null(),
            tls_key_file: std::ptr::null(),
            sentinel_username: std::ptr::null(),
            sentinel_password: std::ptr::null(),
            install_signal_handlers: defaults.install_signal_handlers,
        };
        // SAFETY: non-NULL (checked above) and writable (the caller's contract).
        unsafe { options.write(filled) };
        Ok(())
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl quantshift_options {
    /// The core configuration; validation of values is the core's (`Config::validate`).
    pub(crate) fn core_config(&self) -> FfiResult<Config> {
        let quantshift_options {
            bot_name,
            redis_url,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            sentinel_username,
            sentinel_password,
            ..
        } = *self;
        let bot_name = try_str!(bot_name);
        let redis_url = try_opt_str!(redis_url);
        let tls_ca_file = try_opt_str!(tls_ca_file);
        let tls_cert_file = try_opt_str!(tls_cert_file);
        let tls_key_file = try_opt_str!(tls_key_file);
        let sentinel_username = try_opt_str!(sentinel_username);
        let sentinel_password = try_opt_str!(sentinel_password);
        let ms = Duration::from_millis;
        let mut config = Config::new(bot_name)
            .state_ttl(ms(self.state_ttl_ms))
            .position_ttl(ms(self.position_ttl_ms))
            .heartbeat_ttl(ms(self.heartbeat_ttl_ms))
            .lock_ttl(ms(self.lock_ttl_ms))
            .connect_timeout(ms(self.connect_timeout_ms))
            .command_timeout(ms(self.command_timeout_ms))
            .shutdown_timeout(ms(self.shutdown_timeout_ms))
            .wait_replicas(self.wait_replicas)
            .wait_timeout(ms(self.wait_timeout_ms))
            .install_signal_handlers(self.install_signal_handlers);
        config.tls_ca_file = tls_ca_file.map(Into::into);
        config.tls_cert_file = tls_cert_file.map(Into::into);
        config.tls_key_file = tls_key_file.map(Into::into);
        config.sentinel_username = sentinel_username.map(Into::into);
        config.sentinel_password = sentinel_password.map(Into::into);
        if let Some(url) = redis_url {
            config = config.redis_url(url);
        }
        if self.renew_deadline_ms != 0 {
            config = config.renew_deadline(ms(self.renew_deadline_ms));
        }
        if self.poll_interval_ms != 0 {
            config = config.poll_interval(ms(self.poll_interval_ms));
        }
        let max_payload = usize::try_from(self.max_payload_bytes).map_err(|_| {
            FfiError::invalid(format!(
                "max_payload_bytes {} does not fit this platform",
                self.max_payload_bytes
            ))
        })?;
        Ok(config.max_payload_bytes(max_payload))
    }
}

/// Growable options of a manager: an opaque object made from a `quantshift_options` (the
/// v1 options) and changed with `quantshift_options_builder_set_*` setters. Options added
/// after v1 only ever get a new setter, so its size is never part of the ABI.
///
/// Made by `quantshift_options_builder_new`, freed by `quantshift_options_builder_free`;
/// passed to `quantshift_manager_new_with_builder`. Not thread-safe: one thread at a time.
#[allow(non_camel_case_types)]
pub struct quantshift_options_builder {
    pub(crate) config: Config,
}

/// Creates an options builder from `base` (filled by `quantshift_options_default`, then
/// `bot_name` and what else differs). The strings of `base` are copied: they may be freed
/// after this call. Options not in `base` start at their defaults (`fast_failover` true).
///
/// On success `*out` is the new builder, to free with `quantshift_options_builder_free`.
/// Errors: `NULL_ARGUMENT` (`base`, `base->bot_name`, `out`), `INVALID_UTF8` (any string of
/// `base`), `INVALID_INPUT` (`max_payload_bytes` does not fit the platform). The values are
/// checked by `quantshift_manager_new_with_builder`, as by `quantshift_manager_new`.
///
/// # Safety
/// `base` is NULL or points to a `quantshift_options` whose strings are NULL or
/// NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn quantshift_options_builder_new(
    base: *const quantshift_options,
    out: *mut *mut quantshift_options_builder,
) -> quantshift_status {
    boundary(|| {
        let base = try_ref!(base);
        ensure_non_null!(out);
        let config = base.core_config()?;
        let builder = Box::into_raw(Box::new(quantshift_options_builder { config }));
        // SAFETY: non-NULL (checked above), writable per the contract.
        unsafe { write_out(out, builder) };
        Ok(())
    })
}

/// Fast failover (docs/contract.md §2), default true: the primary renews every 100 ms and a
/// standby takes over about 0.3-0.5 s after it stops renewing, on any Redis. false:
/// renewals every `lock_ttl_ms / 3`, and a standby takes over `renew_deadline_ms` (plus a
/// clock margin) after the last one. Managers made with `quantshift_manager_new` (v1
/// options) get the default.
///
/// Errors: `NULL_ARGUMENT` (`builder`).
///
/// # Safety
/// `builder` is NULL or a live builder from `quantshift_options_builder_new`.
#[no_mangle]
pub unsafe extern "C" fn quantshift_options_builder_set_fast_failover(
    builder: *mut quantshift_options_builder,
    enabled: bool,
) -> quantshift_status {
    boundary(|| {
        ensure_non_null!(builder);
        // SAFETY: non-NULL (checked above); a live builder used by one thread (the contract).
        let builder = unsafe { &mut *builder };
        builder.config.fast_failover = enabled;
        Ok(())
    })
}

/// With fast failover: how long (ms, default 200) a Redis stall or network blip may last
/// without moving the lease; failover takes as much longer.
///
/// Errors: `NULL_ARGUMENT` (`builder`), `INVALID_INPUT` (0).
///
/// # Safety
/// `builder` is NULL or a live builder from `quantshift_options_builder_new`.
#[no_mangle]
pub unsafe extern "C" fn quantshift_options_builder_set_failover_tolerance_ms(
    builder: *mut quantshift_options_builder,
    tolerance_ms: u64,
) -> quantshift_status {
    boundary(|| {
        ensure_non_null!(builder);
        if tolerance_ms == 0 {
            return Err(FfiError::invalid(
                "failover_tolerance_ms must be positive".to_owned(),
            ));
        }
        // SAFETY: non-NULL (checked above); a live builder used by one thread (the contract).
        let builder = unsafe { &mut *builder };
        builder.config.failover_tolerance = std::time::Duration::from_millis(tolerance_ms);
        Ok(())
    })
}

/// How the bot's keys are named: `"plain"` (`bot:<name>:state`, the layout of earlier
/// versions) or `"hash_tagged"` (`bot:{<name>}:state`: every key of the bot in one Redis
/// Cluster hash slot); `"hash-tagged"` and `"tagged"` are accepted too. NULL (the default,
/// and what managers made with `quantshift_manager_new` get): hash-tagged with a
/// `redis+cluster://` or `rediss+cluster://` URL, plain otherwise. `"plain"` with a cluster
/// URL, and a bot name with `{` or `}` in the hash-tagged layout, are refused by
/// `quantshift_manager_new_with_builder` (`INVALID_INPUT`). Keys written in one layout are
/// not seen in the other: move them first with `quantshift-state layout move`.
///
/// Errors: `NULL_ARGUMENT` (`builder`), `INVALID_UTF8` (`layout`), `INVALID_INPUT` (an
/// unknown layout; the builder is unchanged).
///
/// # Safety
/// `builder` is NULL or a live builder from `quantshift_options_builder_new`; `layout` is
/// NULL or a NUL-terminated string (only read during the call).
#[no_mangle]
pub unsafe extern "C" fn quantshift_options_builder_set_key_layout(
    builder: *mut quantshift_options_builder,
    layout: *const c_char,
) -> quantshift_status {
    boundary(|| {
        ensure_non_null!(builder);
        let layout = try_opt_str!(layout).map(KeyLayout::parse).transpose()?;
        // SAFETY: non-NULL (checked above); a live builder used by one thread (the contract).
        let builder = unsafe { &mut *builder };
        builder.config.key_layout = layout;
        Ok(())
    })
}

/// Frees a builder. NULL is accepted and ignored. Managers made from it are unaffected.
///
/// # Safety
/// `builder` is NULL or a builder from `quantshift_options_builder_new`, not freed before.
#[no_mangle]
pub unsafe extern "C" fn quantshift_options_builder_free(builder: *mut quantshift_options_builder) {
    let _ = boundary(|| {
        if !builder.is_null() {
            // SAFETY: made by `Box::into_raw` in `quantshift_options_builder_new`, freed once.
            drop(unsafe { Box::from_raw(builder) });
        }
        Ok(())
    });
}
