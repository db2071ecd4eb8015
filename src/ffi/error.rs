//! The thread-local last error message (the libgit2 / wasmtime pattern).

use std::cell::RefCell;
use std::ffi::{c_char, CString};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    // Messages come from Rust strings; an inner NUL (never expected) is replaced.
    let message = CString::new(message)
        .unwrap_or_else(|_| CString::new(message.replace('\0', "\\0")).unwrap_or_default());
    // During thread teardown the slot may be gone: the message is then dropped.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = message);
}

/// The message of the last call that failed on the calling thread, or `""` when none has.
///
/// Each failing call replaces it; successful calls leave it as it is, so read it right
/// after a status other than `QUANTSHIFT_STATUS_OK`. The string is borrowed: do not free
/// it; it stays valid until the next failing quantshift call on the same thread. Messages
/// never contain a Redis password.
#[no_mangle]
pub extern "C" fn quantshift_last_error_message() -> *const c_char {
    // The string lives in this thread's slot until it is replaced by a later failure;
    // during thread teardown, an empty static string.
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}
