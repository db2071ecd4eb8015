//! The PyO3 module `quantshift_core._quantshift_core`: a thin front end over the core
//! (convert types, map errors, nothing else). `python/quantshift_core/__init__.py` re-exports
//! it and adds the pure-Python parts (signal handlers, the redis-py client).

mod callbacks;
mod cli;
mod client;
mod convert;
mod detach;
mod errors;
mod fork;
mod json;
mod manager;
mod stalls;

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;

/// Set by an `atexit` handler registered when the module is imported, so it runs after the
/// package's own exit handlers (which close the managers) and before the interpreter
/// finalizes. From then on no thread of ours attaches to Python: before 3.13 a thread that
/// waits for the GIL while the interpreter finalizes is ended by `pthread_exit` inside
/// `PyGILState_Ensure`, unwinding through Rust frames (a crash), and PyO3 can check
/// finalization only from 3.13 on (`Py_IsFinalizing`).
static PYTHON_EXITING: AtomicBool = AtomicBool::new(false);

#[pyfunction]
fn _mark_python_exiting() {
    PYTHON_EXITING.store(true, Ordering::Release);
}

/// [`Python::try_attach`] for threads Python did not start, unless the interpreter has begun
/// to exit (then `None`, as for an interpreter that is gone).
pub(crate) fn try_attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    if PYTHON_EXITING.load(Ordering::Acquire) {
        return None;
    }
    Python::try_attach(f)
}

/// The Python logger until the interpreter begins to exit; then warnings and errors go to
/// stderr as `quantshift_core: <target>: <message>` and the rest is dropped.
struct UntilExit<L>(L);

impl<L: log::Log> log::Log for UntilExit<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        if PYTHON_EXITING.load(Ordering::Acquire) {
            return metadata.level() <= log::Level::Warn;
        }
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !PYTHON_EXITING.load(Ordering::Acquire) {
            self.0.log(record);
        } else if record.level() <= log::Level::Warn {
            eprintln!("quantshift_core: {}: {}", record.target(), record.args());
        }
    }

    fn flush(&self) {
        if !PYTHON_EXITING.load(Ordering::Acquire) {
            self.0.flush();
        }
    }
}

/// Rust `log` records go to Python `logging`, under the logger `quantshift_core` (and its
/// children, e.g. `quantshift_core.lease`). Levels are not cached, so logging configured
/// after import is honoured. pyo3-log takes the GIL for every record, so records made on
/// the lease's threads are relayed from another thread (`crate::relay::Deferring`); none
/// reaches Python once it has begun to exit ([`UntilExit`]).
fn install_logging(py: Python<'_>) {
    match pyo3_log::Logger::new(py, pyo3_log::Caching::Loggers) {
        Ok(logger) => {
            let level = log::LevelFilter::Debug;
            let logger = crate::relay::Deferring::new(UntilExit(logger.filter(level)));
            if log::set_boxed_logger(Box::new(logger)).is_ok() {
                log::set_max_level(level);
            }
        }
        Err(err) => err.print(py),
    }
}

#[pymodule]
#[pyo3(name = "_quantshift_core")]
fn quantshift_core_module(py: Python<'_>, module: &Bound<'_, PyModule>) -> PyResult<()> {
    fork::install();
    install_logging(py);
    let mark = wrap_pyfunction!(_mark_python_exiting, module)?;
    py.import("atexit")?.call_method1("register", (mark,))?;
    errors::register(py, module)?;
    module.add_class::<manager::PyStateManager>()?;
    module.add_class::<stalls::PyLeaseStalls>()?;
    module.add_class::<stalls::PyStallHistogram>()?;
    module.add_function(wrap_pyfunction!(cli::run_cli, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("MAX_DEPTH", convert::MAX_DEPTH)?;
    module.add("CONFIG_DEFAULTS", manager::config_defaults(py)?)?;
    Ok(())
}
