//! Running core calls without the GIL, shielded from signals.
//!
//! Python installs its signal handlers without `SA_RESTART`, so a SIGTERM, SIGINT or any
//! other handled signal that lands on a thread blocked in a socket read makes the read fail
//! with `EINTR`, which the Redis client reports as a lost connection: a spurious
//! `RedisUnavailableError`, and a write whose outcome is unknown. So every core call runs
//! with the asynchronous signals blocked in its thread; a signal that arrives meanwhile stays
//! pending and is delivered when the call returns (Python then runs its handler at the next
//! bytecode). Threads the core starts inside such a call (lease, events, shutdown handlers)
//! inherit the blocked mask, so signals are never delivered to them at all. Python code that
//! such a thread runs (callbacks, shutdown handlers) runs with the caller's mask instead
//! ([`with_python_signal_mask`]): a process it starts must not inherit blocked signals.

use pyo3::Python;

/// Runs `f` with the GIL released and asynchronous signals blocked in this thread.
pub fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    py.detach(|| {
        let _blocked = SignalsBlocked::new();
        f()
    })
}

/// Runs `f` (Python code, on a thread the core started) with the asynchronous signals
/// unblocked, as in any Python thread, then restores the thread's mask.
pub fn with_python_signal_mask<T>(f: impl FnOnce() -> T) -> T {
    let _unblocked = SignalsBlocked::change(Change::Unblock);
    f()
}

#[cfg(unix)]
enum Change {
    Block,
    Unblock,
}

#[cfg(unix)]
struct SignalsBlocked {
    previous: libc::sigset_t,
}

#[cfg(unix)]
impl SignalsBlocked {
    fn new() -> Self {
        Self::change(Change::Block)
    }

    fn change(change: Change) -> Self {
        // SAFETY: sigset_t is plain data initialised by sigemptyset / sigfillset before use,
        // and pthread_sigmask only changes the calling thread's mask.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut block);
            // Faults stay deliverable (blocking them is undefined behaviour when they happen).
            for sig in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGILL,
                libc::SIGTRAP,
                libc::SIGABRT,
                libc::SIGSYS,
            ] {
                libc::sigdelset(&mut block, sig);
            }
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut previous);
            let how = match change {
                Change::Block => libc::SIG_BLOCK,
                Change::Unblock => libc::SIG_UNBLOCK,
            };
            libc::pthread_sigmask(how, &block, &mut previous);
            SignalsBlocked { previous }
        }
    }
}

#[cfg(unix)]
impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on this same thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

#[cfg(not(unix))]
enum Change {
    Unblock,
}

#[cfg(not(unix))]
struct SignalsBlocked;

#[cfg(not(unix))]
impl SignalsBlocked {
    fn new() -> Self {
        SignalsBlocked
    }

    fn change(_: Change) -> Self {
        SignalsBlocked
    }
}
