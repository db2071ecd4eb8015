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

use pyo3::prelude::*;

/// Rust `log` records go to Python `logging`, under the logger `quantshift_core` (and its
/// children, e.g. `quantshift_core.lease`). Levels are not cached, so logging configured
/// after import is honoured. pyo3-log takes the GIL for every record, so records made on
/// the lease's threads are relayed from another thread (`crate::relay::Deferring`).
fn install_logging(py: Python<'_>) {
    match pyo3_log::Logger::new(py, pyo3_log::Caching::Loggers) {
        Ok(logger) => {
            let level = log::LevelFilter::Debug;
            let logger = crate::relay::Deferring::new(logger.filter(level));
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
    errors::register(py, module)?;
    module.add_class::<manager::PyStateManager>()?;
    module.add_class::<stalls::PyLeaseStalls>()?;
    module.add_class::<stalls::PyStallHistogram>()?;
    module.add_function(wrap_pyfunction!(cli::run_cli, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("MAX_DEPTH", convert::MAX_DEPTH)?;
    Ok(())
}
