//! The one conversion of the core [`Error`](crate::Error) into Python exceptions (docs/contract.md §7).
//!
//! The classes are created once, at module import, with `type(name, bases, namespace)` so that
//! `RedisUnavailableError` is also a `ConnectionError` and `InvalidInputError` /
//! `CorruptDataError` are also `ValueError`s (multiple bases, which `create_exception!` cannot
//! express).

use pyo3::exceptions::{PyConnectionError, PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::error::{Error, ErrorKind};

struct Classes {
    base: Py<PyType>,
    not_primary: Py<PyType>,
    unavailable: Py<PyType>,
    invalid: Py<PyType>,
    corrupt: Py<PyType>,
    not_replicated: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn new_class<'py>(
    py: Python<'py>,
    name: &str,
    bases: Vec<Bound<'py, PyType>>,
    doc: &str,
) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "quantshift_core")?;
    namespace.set_item("__doc__", doc)?;
    let class = py
        .get_type::<PyType>()
        .call1((name, PyTuple::new(py, bases)?, namespace))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let base = new_class(
            py,
            "StateManagerError",
            vec![py.get_type::<PyException>()],
            "Base class of every error raised by quantshift_core.",
        )?;
        let sub = |name: &str, extra: Option<Bound<'_, PyType>>, doc: &str| {
            let mut bases = vec![base.bind(py).clone()];
            bases.extend(extra);
            new_class(py, name, bases, doc)
        };
        Ok::<_, PyErr>(Classes {
            not_primary: sub(
                "NotPrimaryError",
                None,
                "A write by an instance that does not hold the primary lease; nothing changed.",
            )?,
            unavailable: sub(
                "RedisUnavailableError",
                Some(py.get_type::<PyConnectionError>()),
                "Redis could not be reached, timed out, or dropped the connection.",
            )?,
            invalid: sub(
                "InvalidInputError",
                Some(py.get_type::<PyValueError>()),
                "An argument the library refuses (names, values, options).",
            )?,
            corrupt: sub(
                "CorruptDataError",
                Some(py.get_type::<PyValueError>()),
                "A value stored in Redis is not the JSON object expected.",
            )?,
            not_replicated: sub(
                "NotReplicatedError",
                None,
                "A write applied on the master but not confirmed by the requested replicas in time.",
            )?,
            base,
        })
    })
}

/// Adds the exception classes to the module.
pub fn register(py: Python<'_>, module: &Bound<'_, PyModule>) -> PyResult<()> {
    let c = classes(py)?;
    for class in [
        &c.base,
        &c.not_primary,
        &c.unavailable,
        &c.invalid,
        &c.corrupt,
        &c.not_replicated,
    ] {
        let class = class.bind(py);
        module.add(class.name()?, class)?;
    }
    Ok(())
}

/// The Python exception for a core error.
pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let c = match classes(py) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let class = match err.kind() {
        ErrorKind::NotPrimary => &c.not_primary,
        ErrorKind::RedisUnavailable => &c.unavailable,
        ErrorKind::InvalidInput => &c.invalid,
        ErrorKind::CorruptData => &c.corrupt,
        ErrorKind::NotReplicated => &c.not_replicated,
        ErrorKind::Redis => &c.base,
    };
    PyErr::from_type(class.bind(py).clone(), err.message().to_owned())
}

/// An `InvalidInputError` raised by this front end itself.
pub fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    to_py(py, Error::invalid(message))
}

/// `result` with its error converted.
pub trait IntoPy<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for crate::error::Result<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|err| to_py(py, err))
    }
}
