//! The stall meter for Python: `StateManager.lease_stalls()` returns a frozen
//! `LeaseStalls` with two `StallHistogram`s, durations in seconds.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::lease::meter::{HistogramSnapshot, LeaseStalls, BUCKET_BOUNDS_MS};

/// A histogram of the stall meter as read at one instant: counts since the manager started,
/// durations in seconds. The quantiles are upper bounds (the bound of the bucket they fall
/// in, or the maximum); `buckets` are `(upper bound, count)` pairs, not cumulative, the last
/// bound `inf`.
#[pyclass(
    frozen,
    name = "StallHistogram",
    module = "quantshift_core._quantshift_core"
)]
pub struct PyStallHistogram {
    #[pyo3(get)]
    count: u64,
    #[pyo3(get)]
    sum_s: f64,
    #[pyo3(get)]
    max_s: f64,
    #[pyo3(get)]
    p50_s: f64,
    #[pyo3(get)]
    p99_s: f64,
    #[pyo3(get)]
    buckets: Vec<(f64, u64)>,
}

impl PyStallHistogram {
    fn new(h: &HistogramSnapshot) -> Self {
        let bounds = BUCKET_BOUNDS_MS
            .iter()
            .map(|ms| *ms as f64 / 1000.0)
            .chain([f64::INFINITY]);
        PyStallHistogram {
            count: h.count,
            sum_s: h.sum.as_secs_f64(),
            max_s: h.max.as_secs_f64(),
            p50_s: h.quantile(0.5).as_secs_f64(),
            p99_s: h.quantile(0.99).as_secs_f64(),
            buckets: bounds.zip(h.buckets.iter().copied()).collect(),
        }
    }
}

#[pymethods]
impl PyStallHistogram {
    /// The fields as a dict (e.g. for a JSON log line).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        out.set_item("count", self.count)?;
        out.set_item("sum_s", self.sum_s)?;
        out.set_item("max_s", self.max_s)?;
        out.set_item("p50_s", self.p50_s)?;
        out.set_item("p99_s", self.p99_s)?;
        out.set_item("buckets", self.buckets.clone())?;
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "StallHistogram(count={}, sum_s={}, max_s={}, p50_s={}, p99_s={})",
            self.count, self.sum_s, self.max_s, self.p50_s, self.p99_s
        )
    }
}

/// The lease thread's stall meter: how late it woke (`wake_late`) and how long its lease
/// round trips took (`round_trip`), beside the tolerance they eat into (`tolerance_s`: how
/// late a renewal may come before the holder demotes itself) and the role events and log
/// records its threads dropped (`dropped_records`).
#[pyclass(
    frozen,
    name = "LeaseStalls",
    module = "quantshift_core._quantshift_core"
)]
pub struct PyLeaseStalls {
    #[pyo3(get)]
    wake_late: Py<PyStallHistogram>,
    #[pyo3(get)]
    round_trip: Py<PyStallHistogram>,
    #[pyo3(get)]
    tolerance_s: f64,
    #[pyo3(get)]
    dropped_records: u64,
}

impl PyLeaseStalls {
    pub fn new(py: Python<'_>, stalls: &LeaseStalls) -> PyResult<Self> {
        Ok(PyLeaseStalls {
            wake_late: Py::new(py, PyStallHistogram::new(&stalls.wake_late))?,
            round_trip: Py::new(py, PyStallHistogram::new(&stalls.round_trip))?,
            tolerance_s: stalls.tolerance.as_secs_f64(),
            dropped_records: stalls.dropped_records,
        })
    }
}

#[pymethods]
impl PyLeaseStalls {
    /// The fields as a dict, the histograms as dicts too.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        out.set_item("wake_late", self.wake_late.get().to_dict(py)?)?;
        out.set_item("round_trip", self.round_trip.get().to_dict(py)?)?;
        out.set_item("tolerance_s", self.tolerance_s)?;
        out.set_item("dropped_records", self.dropped_records)?;
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "LeaseStalls(wake_late={}, round_trip={}, tolerance_s={}, dropped_records={})",
            self.wake_late.get().__repr__(),
            self.round_trip.get().__repr__(),
            self.tolerance_s,
            self.dropped_records
        )
    }
}
