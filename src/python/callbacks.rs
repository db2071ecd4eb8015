//! Python callables run by the core (promoted / demoted callbacks, shutdown handlers): kept in
//! slots the garbage collector can see, called on the core's threads with the GIL taken
//! there and Python's signal mask, their exceptions logged with the traceback.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::detach::with_python_signal_mask;

pub fn check_callable(fn_: &Bound<'_, PyAny>, what: &str) -> PyResult<()> {
    if !fn_.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "{what} expects a callable, got {}",
            fn_.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// A Python callable handed to the core. The manager keeps every slot, so that the garbage
/// collector sees these references (`__traverse__`) and can break a cycle through a callback
/// that refers to its own manager (`__clear__`); `close()` empties them.
#[derive(Clone)]
pub struct Slot(pub Arc<Mutex<Option<Py<PyAny>>>>);

impl Slot {
    /// The callable, if still set. Taken with the GIL held, so never contended with
    /// `__traverse__` (which also runs with the GIL).
    pub fn get(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.0.lock().as_ref().map(|f| f.clone_ref(py))
    }

    /// Calls it; `None` when it was cleared.
    pub fn call(&self, py: Python<'_>) -> Option<PyResult<()>> {
        let f = self.get(py)?;
        Some(f.call0(py).map(drop))
    }
}

/// The exception with its traceback, as text.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let value = err.value(py);
        let lines = py.import("traceback")?.call_method1(
            "format_exception",
            (value.get_type(), value, err.traceback(py)),
        )?;
        Ok(lines
            .try_iter()?
            .filter_map(|line| line.ok()?.extract::<String>().ok())
            .collect::<String>())
    })();
    formatted.unwrap_or_else(|_| err.to_string())
}

/// Runs a user callback on a core thread; an exception is logged with its traceback.
pub fn call_logged(what: &'static str, callback: &Slot) {
    // Not at all once the interpreter is shutting down.
    with_python_signal_mask(|| {
        super::try_attach(|py| {
            if let Some(Err(err)) = callback.call(py) {
                log::error!(
                    "{what} callback raised: {}",
                    format_exception(py, &err).trim_end()
                );
            }
        })
    });
}
