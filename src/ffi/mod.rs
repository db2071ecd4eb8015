//! The C ABI of quantshift-core (the generated header is `include/quantshift_core.h`).
//!
//! Conventions, after rustls-ffi and wasmtime's c-api:
//!
//! * Opaque handles: a `quantshift_manager` is made by `quantshift_manager_new` and freed by
//!   `quantshift_manager_free` (which accepts NULL).
//! * Every fallible function returns a `quantshift_status`; `QUANTSHIFT_STATUS_OK` (0) is
//!   success. The numbers are stable: new statuses are only ever appended.
//! * After a failure, `quantshift_last_error_message()` gives its message, on the thread that
//!   made the call (a thread-local "last error", as in libgit2 and wasmtime).
//! * Results are written through out-parameters, and only on success: on failure they keep
//!   whatever the caller put there.
//! * Every `char *` the library returns is owned by the caller and freed with
//!   `quantshift_string_free`. `const char *` results are borrowed, never freed.
//! * JSON crosses the boundary as NUL-terminated UTF-8 text.
//! * No Rust panic unwinds into C: each function catches it and returns
//!   `QUANTSHIFT_STATUS_PANIC`.

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::Value;

use crate::error::{Error as CoreError, ErrorKind};
use crate::positions::JsonObject;

mod config;
mod error;
mod log;
mod manager;
mod positions;

pub use config::{
    quantshift_options, quantshift_options_builder, quantshift_options_builder_free,
    quantshift_options_builder_new, quantshift_options_builder_set_failover_tolerance_ms,
    quantshift_options_builder_set_fast_failover, quantshift_options_builder_set_key_layout,
    quantshift_options_default,
};
pub use error::quantshift_last_error_message;
pub use log::{quantshift_log_callback, quantshift_set_log_callback};
pub use manager::*;
pub use positions::*;

/// The outcome of a call. The numbers are part of the ABI and never change; new statuses
/// are only ever appended. The first ones mirror the library's error kinds (docs/contract.md §7).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum quantshift_status {
    /// Success.
    Ok = 0,
    /// A write was attempted by an instance that does not hold the primary lease (nothing
    /// changed), or the manager was shut down.
    NotPrimary = 1,
    /// Redis could not be reached, timed out, or dropped the connection.
    RedisUnavailable = 2,
    /// An argument was refused: a name, a number, JSON that does not parse or is not the
    /// object expected, an option.
    InvalidInput = 3,
    /// A value stored in Redis is not the JSON object expected.
    CorruptData = 4,
    /// A write applied on the master was not confirmed by the requested replicas in time.
    NotReplicated = 5,
    /// Any other failure reported by the Redis server.
    RedisError = 6,
    /// A pointer argument that must not be NULL was NULL.
    NullArgument = 7,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = 8,
    /// A bug: the library panicked. The call was abandoned; the message says where.
    Panic = 9,
}

impl quantshift_status {
    fn name(self) -> &'static CStr {
        match self {
            quantshift_status::Ok => c"OK",
            quantshift_status::NotPrimary => c"NOT_PRIMARY",
            quantshift_status::RedisUnavailable => c"REDIS_UNAVAILABLE",
            quantshift_status::InvalidInput => c"INVALID_INPUT",
            quantshift_status::CorruptData => c"CORRUPT_DATA",
            quantshift_status::NotReplicated => c"NOT_REPLICATED",
            quantshift_status::RedisError => c"REDIS_ERROR",
            quantshift_status::NullArgument => c"NULL_ARGUMENT",
            quantshift_status::InvalidUtf8 => c"INVALID_UTF8",
            quantshift_status::Panic => c"PANIC",
        }
    }
}

impl From<ErrorKind> for quantshift_status {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NotPrimary => quantshift_status::NotPrimary,
            ErrorKind::RedisUnavailable => quantshift_status::RedisUnavailable,
            ErrorKind::InvalidInput => quantshift_status::InvalidInput,
            ErrorKind::CorruptData => quantshift_status::CorruptData,
            ErrorKind::NotReplicated => quantshift_status::NotReplicated,
            ErrorKind::Redis => quantshift_status::RedisError,
        }
    }
}

/// The caller's `void *userdata`, handed back to its callback on a library thread.
#[derive(Clone, Copy)]
pub(crate) struct UserData(pub(crate) *mut std::ffi::c_void);

// SAFETY: the library never dereferences the pointer; it only passes it back to the
// caller's callback, which the header documents as running on a library thread. Making
// what it points to safe to use from there is the caller's part of the contract.
unsafe impl Send for UserData {}
// SAFETY: as above; the pointer value itself is only copied.
unsafe impl Sync for UserData {}

impl UserData {
    pub(crate) fn get(self) -> *mut std::ffi::c_void {
        self.0
    }
}

/// A failure on its way to C: a status and the message kept as the thread's last error.
#[derive(Debug)]
pub(crate) struct FfiError {
    status: quantshift_status,
    message: String,
}

impl FfiError {
    fn new(status: quantshift_status, message: impl Into<String>) -> Self {
        FfiError {
            status,
            message: message.into(),
        }
    }

    fn null(name: &str) -> Self {
        Self::new(
            quantshift_status::NullArgument,
            format!("argument {name} is NULL"),
        )
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(quantshift_status::InvalidInput, message)
    }
}

impl From<CoreError> for FfiError {
    fn from(err: CoreError) -> Self {
        FfiError::new(err.kind().into(), err.message())
    }
}

type FfiResult<T = ()> = Result<T, FfiError>;

/// The panic boundary every exported function goes through: runs `body`, turns its error
/// or its panic into a status and the thread's last error message.
fn boundary(body: impl FnOnce() -> FfiResult) -> quantshift_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => quantshift_status::Ok,
        Ok(Err(err)) => {
            error::set_last_error(&err.message);
            err.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            error::set_last_error(&format!("quantshift-core panicked (a bug): {what}"));
            quantshift_status::Panic
        }
    }
}

/// `Err(NULL_ARGUMENT)` unless the pointer argument is non-NULL.
macro_rules! ensure_non_null {
    ($($ptr:ident),+ $(,)?) => {
        $(
            if $ptr.is_null() {
                return Err($crate::ffi::FfiError::null(stringify!($ptr)));
            }
        )+
    };
}

/// The `&T` behind a handle argument, or `Err(NULL_ARGUMENT)`.
macro_rules! try_ref {
    ($ptr:ident) => {{
        $crate::ffi::ensure_non_null!($ptr);
        // SAFETY: non-NULL (checked above); the caller passes a live handle (the documented
        // contract of every function taking one).
        unsafe { &*$ptr }
    }};
}

/// A `&str` from a NUL-terminated argument, or `Err(NULL_ARGUMENT / INVALID_UTF8)`.
macro_rules! try_str {
    ($ptr:ident) => {{
        $crate::ffi::ensure_non_null!($ptr);
        // SAFETY: non-NULL (checked above); the caller passes a NUL-terminated string that
        // stays valid for the call (the documented contract).
        unsafe { $crate::ffi::str_arg(stringify!($ptr), $ptr)? }
    }};
}

/// `Some(&str)` from a nullable NUL-terminated argument (NULL is `None`).
macro_rules! try_opt_str {
    ($ptr:ident) => {{
        if $ptr.is_null() {
            None
        } else {
            // SAFETY: non-NULL (checked above); the caller passes a NUL-terminated string
            // that stays valid for the call (the documented contract).
            Some(unsafe { $crate::ffi::str_arg(stringify!($ptr), $ptr)? })
        }
    }};
}

pub(crate) use {ensure_non_null, try_opt_str, try_ref, try_str};

/// # Safety
/// `ptr` is non-NULL and points to a NUL-terminated string valid for `'a`.
unsafe fn str_arg<'a>(name: &str, ptr: *const c_char) -> FfiResult<&'a str> {
    // SAFETY: guaranteed by this function's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map_err(|err| {
        FfiError::new(
            quantshift_status::InvalidUtf8,
            format!(
                "argument {name} is not valid UTF-8 (invalid byte at offset {})",
                err.valid_up_to()
            ),
        )
    })
}

/// A string for C, owned by the caller until `quantshift_string_free`. Text with an inner
/// NUL (impossible for JSON and for the names the library accepts) is refused.
fn owned_c_string(text: impl Into<Vec<u8>>) -> FfiResult<*mut c_char> {
    CString::new(text)
        .map(CString::into_raw)
        .map_err(|_| FfiError::new(quantshift_status::CorruptData, "text contains a NUL byte"))
}

/// Writes `value` through an out-parameter. Call only once everything else succeeded.
///
/// # Safety
/// `out` is non-NULL and valid for one write of `T`.
unsafe fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: guaranteed by this function's contract.
    unsafe { out.write(value) }
}

/// Writes an owned string through an optional out-parameter (NULL: the result is not
/// wanted, nothing is allocated).
///
/// # Safety
/// `out` is NULL or valid for one write.
unsafe fn write_opt_string(out: *mut *mut c_char, text: Option<String>) -> FfiResult {
    if out.is_null() {
        return Ok(());
    }
    let value = match text {
        Some(text) => owned_c_string(text)?,
        None => std::ptr::null_mut(),
    };
    // SAFETY: non-NULL (checked above), valid per this function's contract.
    unsafe { write_out(out, value) };
    Ok(())
}

/// Parses a JSON argument that must be an object.
fn parse_object(name: &str, text: &str) -> FfiResult<JsonObject> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(FfiError::invalid(format!(
            "argument {name} must be a JSON object, got {}",
            json_type(&other)
        ))),
        Err(err) => Err(FfiError::invalid(format!(
            "argument {name} is not valid JSON: {err}"
        ))),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object_to_string(object: &JsonObject) -> String {
    // Serializing a Map<String, Value> cannot fail: keys are strings, numbers are finite.
    serde_json::to_string(object).unwrap_or_else(|_| "{}".to_owned())
}

/// Frees a string returned by the library. NULL is accepted and ignored.
///
/// # Safety
/// `text` is NULL or a `char *` returned by a quantshift function, not freed before.
#[no_mangle]
pub unsafe extern "C" fn quantshift_string_free(text: *mut c_char) {
    if text.is_null() {
        return;
    }
    // Dropping a CString cannot panic; no boundary needed beyond this.
    // SAFETY: `text` came from `CString::into_raw` in this library and is freed once
    // (the caller's contract).
    drop(unsafe { CString::from_raw(text) });
}

/// The name of a status (`"OK"`, `"NOT_PRIMARY"`, ...), or `"UNKNOWN"` for a number this
/// version does not know. The string is static: never free it.
#[no_mangle]
pub extern "C" fn quantshift_status_name(status: u32) -> *const c_char {
    let known = [
        quantshift_status::Ok,
        quantshift_status::NotPrimary,
        quantshift_status::RedisUnavailable,
        quantshift_status::InvalidInput,
        quantshift_status::CorruptData,
        quantshift_status::NotReplicated,
        quantshift_status::RedisError,
        quantshift_status::NullArgument,
        quantshift_status::InvalidUtf8,
        quantshift_status::Panic,
    ];
    known
        .iter()
        .find(|s| **s as u32 == status)
        .map_or(c"UNKNOWN".as_ptr(), |s| s.name().as_ptr())
}

/// The library's version, e.g. `"0.1.0"`. The string is static: never free it.
#[no_mangle]
pub extern "C" fn quantshift_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(version) => version,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_version_macros_match_cargo_toml() {
        let header = include_str!("../../include/quantshift_core.h");
        for (name, value) in [
            ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
            ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
            ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
            ("STRING", &format!("\"{}\"", env!("CARGO_PKG_VERSION"))),
        ] {
            let line = format!("#define QUANTSHIFT_VERSION_{name} {value}\n");
            assert!(
                header.contains(&line),
                "include/quantshift_core.h lacks {line:?}: update after_includes in cbindgen.toml"
            );
        }
    }

    #[test]
    fn every_error_kind_has_its_own_stable_status() {
        let pairs = [
            (ErrorKind::NotPrimary, 1),
            (ErrorKind::RedisUnavailable, 2),
            (ErrorKind::InvalidInput, 3),
            (ErrorKind::CorruptData, 4),
            (ErrorKind::NotReplicated, 5),
            (ErrorKind::Redis, 6),
        ];
        for (kind, number) in pairs {
            assert_eq!(quantshift_status::from(kind) as u32, number, "{kind:?}");
        }
        assert_eq!(quantshift_status::NullArgument as u32, 7);
        assert_eq!(quantshift_status::InvalidUtf8 as u32, 8);
        assert_eq!(quantshift_status::Panic as u32, 9);
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = boundary(|| panic!("boom {}", 42));
        assert_eq!(status, quantshift_status::Panic);
        // SAFETY: the pointer is valid until the next failing call on this thread.
        let message = unsafe { CStr::from_ptr(quantshift_last_error_message()) };
        assert!(message.to_str().unwrap().contains("boom 42"));
    }

    #[test]
    fn status_names_cover_every_status() {
        for (number, name) in [
            (0, "OK"),
            (7, "NULL_ARGUMENT"),
            (9, "PANIC"),
            (99, "UNKNOWN"),
        ] {
            // SAFETY: static strings.
            let got = unsafe { CStr::from_ptr(quantshift_status_name(number)) };
            assert_eq!(got.to_str().unwrap(), name);
        }
    }
}
