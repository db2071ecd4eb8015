//! The current process id, kept up to date across `fork()` without a system call per check
//! (`is_primary()` must stay cheap): a manager made before a fork is refused in the child.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

static PID: AtomicU32 = AtomicU32::new(0);
static INSTALL: Once = Once::new();

#[cfg(unix)]
extern "C" fn after_fork_in_child() {
    // getpid is async-signal-safe, as is an atomic store.
    PID.store(std::process::id(), Ordering::Relaxed);
}

/// Records the process id and registers the fork hook (once).
pub fn install() {
    INSTALL.call_once(|| {
        PID.store(std::process::id(), Ordering::Relaxed);
        #[cfg(unix)]
        // SAFETY: registers a plain function with no captured state as the child handler.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

pub fn current_pid() -> u32 {
    PID.load(Ordering::Relaxed)
}
