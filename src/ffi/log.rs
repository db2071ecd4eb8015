//! Routing the library's log records (warnings, handler failures, role changes) to the host.

use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use parking_lot::RwLock;

use super::{boundary, quantshift_status, FfiError, UserData};
use crate::relay::Deferring;

/// Receives one log record: `level` is 1 (error), 2 (warning), 3 (info), 4 (debug) or
/// 5 (trace); `target` is the Rust module (`quantshift_core::lease`, ...); both strings are
/// borrowed for the duration of the call.
#[allow(non_camel_case_types)]
pub type quantshift_log_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        level: u32,
        target: *const c_char,
        message: *const c_char,
    ),
>;

#[derive(Clone, Copy)]
struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, u32, *const c_char, *const c_char),
    userdata: UserData,
}

/// The host's callback; process-wide like the `log` logger itself. (Statics live inside
/// functions here so that cbindgen, which reads this module, does not list them.)
fn sink() -> &'static RwLock<Option<Sink>> {
    static SINK: RwLock<Option<Sink>> = RwLock::new(None);
    &SINK
}

/// Records made on the lease's threads reach the callback from a relay thread, so a
/// callback that blocks never delays a renewal.
fn logger() -> &'static Deferring<HostLogger> {
    static LOGGER: OnceLock<Deferring<HostLogger>> = OnceLock::new();
    LOGGER.get_or_init(|| Deferring::new(HostLogger))
}

fn installed() -> &'static AtomicBool {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    &INSTALLED
}

struct HostLogger;

fn c_text(text: &str) -> CString {
    CString::new(text.replace('\0', " ")).unwrap_or_default()
}

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Held while the callback runs, so that once quantshift_set_log_callback returns
        // the previous callback is never called again.
        let sink = sink().read();
        if let Some(sink) = *sink {
            let target = c_text(record.target());
            let message = c_text(&record.args().to_string());
            // SAFETY: the host's callback with its own userdata and two NUL-terminated
            // strings that outlive the call, as documented.
            unsafe {
                (sink.callback)(
                    sink.userdata.get(),
                    record.level() as u32,
                    target.as_ptr(),
                    message.as_ptr(),
                )
            };
        }
    }

    fn flush(&self) {}
}

/// Sends the library's log records up to `max_level` (1 error ... 5 trace; 0 none) to
/// `callback(userdata, level, target, message)`; a NULL `callback` stops them. Without a
/// call, nothing is logged: problems found at start are also in
/// `quantshift_manager_startup_warnings`.
///
/// The callback may run on any thread, including while the library holds internal locks:
/// it must not call quantshift functions, and it must be safe to call from several threads
/// at once. It never runs on the lease's own threads: their records are queued (a bounded
/// queue; what it drops is counted and reported) and delivered from another thread, so a
/// callback that blocks delays log records, never a renewal. Once this function returns, the previous callback is no longer called, and
/// `userdata` must live until the callback is replaced.
///
/// The library installs itself as the process's Rust `log` logger on the first call with a
/// callback; `INVALID_INPUT` if another Rust logger was installed first (e.g. by another
/// Rust library in the same process).
///
/// # Safety
/// `callback` is NULL or a function safe to call from any thread with `userdata`.
#[no_mangle]
pub unsafe extern "C" fn quantshift_set_log_callback(
    callback: quantshift_log_callback,
    userdata: *mut c_void,
    max_level: u32,
) -> quantshift_status {
    boundary(|| {
        let filter = match max_level {
            0 => log::LevelFilter::Off,
            1 => log::LevelFilter::Error,
            2 => log::LevelFilter::Warn,
            3 => log::LevelFilter::Info,
            4 => log::LevelFilter::Debug,
            5 => log::LevelFilter::Trace,
            other => {
                return Err(FfiError::invalid(format!(
                    "max_level must be 0 (none) to 5 (trace), got {other}"
                )))
            }
        };
        let Some(callback) = callback else {
            *sink().write() = None;
            // Only our own logger's level: another installed logger is not ours to silence.
            if installed().load(Ordering::Acquire) {
                log::set_max_level(log::LevelFilter::Off);
            }
            return Ok(());
        };
        if !installed().load(Ordering::Acquire) {
            log::set_logger(logger()).map_err(|_| {
                FfiError::invalid(
                    "another Rust logger is installed in this process; its records cannot be \
                     routed to a C callback",
                )
            })?;
            installed().store(true, Ordering::Release);
        }
        *sink().write() = Some(Sink {
            callback,
            userdata: UserData(userdata),
        });
        log::set_max_level(filter);
        Ok(())
    })
}
