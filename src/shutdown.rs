//! Graceful shutdown (docs/contract.md §5): shutdown handlers run in order, each isolated, all
//! bounded by one timeout; SIGTERM / SIGINT for Rust and C hosts through `ctrlc`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Once, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// A shutdown handler: an `Err` is logged and the next handler still runs.
pub type ShutdownHandler = Arc<dyn Fn() -> std::result::Result<(), String> + Send + Sync>;

#[derive(Default)]
pub(crate) struct ShutdownHandlers {
    handlers: Mutex<Vec<ShutdownHandler>>,
}

impl ShutdownHandlers {
    pub fn register(&self, handler: ShutdownHandler) {
        self.handlers.lock().push(handler);
    }

    /// Runs the handlers in registration order on a helper thread, so a handler that hangs
    /// cannot hold the shutdown past `timeout`; returns how many did not finish in time.
    pub fn run_all(&self, timeout: Duration) -> usize {
        let handlers = self.handlers.lock().clone();
        if handlers.is_empty() {
            return 0;
        }
        let total = handlers.len();
        let (done, finished) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("quantshift-shutdown-handlers".into())
            .spawn(move || {
                for (index, handler) in handlers.iter().enumerate() {
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler()));
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(message)) => {
                            log::error!("shutdown handler {index} failed: {message}")
                        }
                        Err(_) => log::error!("shutdown handler {index} panicked"),
                    }
                    let _ = done.send(());
                }
            });
        if let Err(err) = spawned {
            log::error!("cannot start the shutdown handlers: {err}");
            return total;
        }
        let give_up = Instant::now() + timeout;
        let mut completed = 0;
        while completed < total {
            let left = give_up.saturating_duration_since(Instant::now());
            match finished.recv_timeout(left) {
                Ok(()) => completed += 1,
                Err(_) => break,
            }
        }
        if completed < total {
            log::error!(
                "shutdown handlers exceeded shutdown_timeout ({timeout:?}); {} did not finish",
                total - completed
            );
        }
        total - completed
    }
}

/// Something the process-wide signal handler shuts down.
pub(crate) trait Shutdown: Send + Sync {
    fn shutdown_for_signal(&self);
}

static REGISTERED: Mutex<Vec<Weak<dyn Shutdown>>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Registers `target` to be shut down on SIGTERM / SIGINT, installing the process handler
/// on first use. The first signal shuts every live target down in order and exits 0;
/// a second signal during that exits at once.
pub(crate) fn shut_down_on_signal(target: Weak<dyn Shutdown>) -> Result<()> {
    let mut install_error = None;
    INSTALL.call_once(|| {
        if let Err(err) = ctrlc::set_handler(on_signal) {
            install_error = Some(err);
        }
    });
    if let Some(err) = install_error {
        return Err(Error::invalid(format!(
            "cannot install SIGTERM/SIGINT handlers ({err}); pass install_signal_handlers=false \
             and call shutdown() yourself"
        )));
    }
    let mut registered = REGISTERED.lock();
    registered.retain(|weak| weak.strong_count() > 0);
    registered.push(target);
    Ok(())
}

fn on_signal() {
    if SHUTTING_DOWN.swap(true, Ordering::SeqCst) {
        log::warn!("second signal during shutdown: exiting now");
        std::process::exit(130);
    }
    // ctrlc calls us on its own thread and waits for us before reading the next signal,
    // so the shutdown runs elsewhere and a second signal can still end the process.
    let spawned = std::thread::Builder::new()
        .name("quantshift-signal-shutdown".into())
        .spawn(|| {
            log::info!("termination signal received: shutting down");
            let targets: Vec<_> = REGISTERED.lock().iter().filter_map(Weak::upgrade).collect();
            for target in targets {
                target.shutdown_for_signal();
            }
            std::process::exit(0);
        });
    if spawned.is_err() {
        std::process::exit(1);
    }
}
