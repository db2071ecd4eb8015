//! `StateManager` for Python: converts arguments, releases the GIL around every call that
//! may touch Redis or wait for a lock of the core, and runs Python callbacks on the core's
//! threads with the GIL taken there.
//!
//! Deadlock rule: a thread holding the GIL never waits for a lock of the core (every such
//! call runs in `detached` or `py.detach`), so the core's threads, which may need the GIL to
//! log or to run a callback while holding one of their locks, can always make progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::PyTypeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use pyo3::PyTraverseError;

use super::callbacks::{call_logged, check_callable, format_exception, Slot};
use super::client::redis_py_options;
use super::convert::{fast_object_to_py, fast_objects_to_py, object_from_py, object_to_py};
use super::detach::{detached, with_python_signal_mask};
use super::errors::{self, invalid, IntoPy};
use super::json::Decoder;
use super::stalls::PyLeaseStalls;
use crate::config::{redact_url, Config};
use crate::keys::KeyLayout;
use crate::manager::StateManager;
use crate::positions::{decode_object, JsonObject, LoadedPositions};

/// How long `wait_until_primary` waits between two looks at pending signals (Ctrl-C).
const SIGNAL_CHECK_SLICE: Duration = Duration::from_millis(100);

/// State, positions and the primary/standby role of one bot instance, kept in Redis.
///
/// The compiled class never installs signal handlers; `quantshift_core.StateManager`
/// (a subclass) installs them with Python's `signal` module.
#[pyclass(
    frozen,
    subclass,
    name = "StateManager",
    module = "quantshift_core._quantshift_core"
)]
pub struct PyStateManager {
    /// `Some` until the object is dropped (taken there to close it without the GIL).
    core: Option<StateManager>,
    /// The configuration as given (the core's keeps no copy of the environment's values).
    client_config: Config,
    redacted_url: String,
    /// The process that made it: a forked child must not use the parent's lease or
    /// connections (it would write with the parent's fencing token).
    pid: u32,
    /// The Python callables given to the core (callbacks, shutdown handlers).
    slots: Mutex<Vec<Slot>>,
    /// The positions of the last load as decoded, by the core's id of that load: while Redis
    /// says nothing changed, loads hand out copies of it instead of decoding again. Never
    /// handed out itself (callers may change what they get).
    decoded_positions: Mutex<Option<Arc<DecodedPositions>>>,
}

fn seconds(py: Python<'_>, name: &str, value: f64) -> PyResult<Duration> {
    if !(value.is_finite() && value > 0.0) {
        return Err(invalid(
            py,
            format!("{name} must be a positive, finite number of seconds, got {value}"),
        ));
    }
    Duration::try_from_secs_f64(value)
        .map_err(|_| invalid(py, format!("{name} of {value} seconds is out of range")))
}

impl PyStateManager {
    fn core(&self) -> &StateManager {
        self.core
            .as_ref()
            .expect("the state manager is only taken when dropped")
    }

    /// Keeps `f` in a new slot of this manager.
    fn slot(&self, f: &Bound<'_, PyAny>, what: &str) -> PyResult<Slot> {
        check_callable(f, what)?;
        let slot = Slot(Arc::new(Mutex::new(Some(f.clone().unbind()))));
        self.slots.lock().push(slot.clone());
        Ok(slot)
    }

    /// Lets go of the Python objects the manager holds (after close): its callables, which
    /// will not run again, and the positions kept for copies.
    fn clear_slots(&self) {
        let decoded = self.decoded_positions.lock().take();
        drop(decoded);
        let slots = std::mem::take(&mut *self.slots.lock());
        for slot in slots {
            // Released outside the lock: dropping a callable may run Python code.
            let callable = slot.0.lock().take();
            drop(callable);
        }
    }

    fn in_forked_child(&self) -> bool {
        self.pid != super::fork::current_pid()
    }

    /// The core, unless this is a forked child of the process that made the manager.
    fn usable(&self, py: Python<'_>) -> PyResult<&StateManager> {
        if self.in_forked_child() {
            return Err(errors::to_py(
                py,
                crate::error::Error::not_primary(format!(
                    "this StateManager belongs to process {}; a forked child cannot use its \
                     lease or connections (create a new StateManager in the child)",
                    self.pid
                )),
            ));
        }
        Ok(self.core())
    }
}

/// The options' defaults as the Rust [`Config`] has them, in the Python units (seconds as
/// floats; `None` where the core derives the value): `_quantshift_core.CONFIG_DEFAULTS`. The
/// Python wrappers take their defaults from it, and a test holds the compiled signature of
/// [`PyStateManager::new`] and the stubs to it.
pub(super) fn config_defaults<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let config = Config::new("defaults");
    let secs = |d: Duration| d.as_secs_f64();
    let defaults = PyDict::new(py);
    defaults.set_item("redis_url", config.redis_url)?;
    defaults.set_item("state_ttl", secs(config.state_ttl))?;
    defaults.set_item("position_ttl", secs(config.position_ttl))?;
    defaults.set_item("heartbeat_ttl", secs(config.heartbeat_ttl))?;
    defaults.set_item("lock_ttl", secs(config.lock_ttl))?;
    defaults.set_item("renew_deadline", config.renew_deadline.map(secs))?;
    defaults.set_item("poll_interval", config.poll_interval.map(secs))?;
    defaults.set_item("install_signal_handlers", config.install_signal_handlers)?;
    defaults.set_item("shutdown_timeout", secs(config.shutdown_timeout))?;
    defaults.set_item("wait_replicas", config.wait_replicas)?;
    defaults.set_item("wait_timeout", secs(config.wait_timeout))?;
    defaults.set_item("connect_timeout", secs(config.connect_timeout))?;
    defaults.set_item("command_timeout", secs(config.command_timeout))?;
    defaults.set_item("fast_failover", config.fast_failover)?;
    defaults.set_item("failover_tolerance", secs(config.failover_tolerance))?;
    defaults.set_item("key_layout", config.key_layout.map(|l| l.as_str()))?;
    Ok(defaults)
}

#[pymethods]
impl PyStateManager {
    #[new]
    #[pyo3(signature = (
        bot_name,
        redis_url = None,
        *,
        state_ttl = 3600.0,
        position_ttl = 86400.0,
        heartbeat_ttl = 60.0,
        lock_ttl = 30.0,
        renew_deadline = None,
        poll_interval = None,
        install_signal_handlers = true,
        shutdown_timeout = 20.0,
        wait_replicas = 0,
        wait_timeout = 1.0,
        connect_timeout = 2.0,
        command_timeout = 2.0,
        fast_failover = true,
        failover_tolerance = 0.2,
        key_layout = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        bot_name: String,
        redis_url: Option<String>,
        state_ttl: f64,
        position_ttl: f64,
        heartbeat_ttl: f64,
        lock_ttl: f64,
        renew_deadline: Option<f64>,
        poll_interval: Option<f64>,
        install_signal_handlers: bool,
        shutdown_timeout: f64,
        wait_replicas: u32,
        wait_timeout: f64,
        connect_timeout: f64,
        command_timeout: f64,
        fast_failover: bool,
        failover_tolerance: f64,
        key_layout: Option<String>,
    ) -> PyResult<Self> {
        // Signals are Python's business here (the subclass in quantshift_core installs them).
        let _ = install_signal_handlers;
        let mut config = Config::new(bot_name)
            .state_ttl(seconds(py, "state_ttl", state_ttl)?)
            .position_ttl(seconds(py, "position_ttl", position_ttl)?)
            .heartbeat_ttl(seconds(py, "heartbeat_ttl", heartbeat_ttl)?)
            .lock_ttl(seconds(py, "lock_ttl", lock_ttl)?)
            .shutdown_timeout(seconds(py, "shutdown_timeout", shutdown_timeout)?)
            .wait_replicas(wait_replicas)
            .wait_timeout(seconds(py, "wait_timeout", wait_timeout)?)
            .connect_timeout(seconds(py, "connect_timeout", connect_timeout)?)
            .command_timeout(seconds(py, "command_timeout", command_timeout)?)
            .install_signal_handlers(false)
            .fast_failover(fast_failover)
            .failover_tolerance(seconds(py, "failover_tolerance", failover_tolerance)?);
        if let Some(url) = redis_url {
            config = config.redis_url(url);
        }
        if let Some(layout) = key_layout {
            config = config.key_layout(KeyLayout::parse(&layout).py_err(py)?);
        }
        if let Some(deadline) = renew_deadline {
            config = config.renew_deadline(seconds(py, "renew_deadline", deadline)?);
        }
        if let Some(interval) = poll_interval {
            config = config.poll_interval(seconds(py, "poll_interval", interval)?);
        }
        let redacted_url = redact_url(&config.effective_url());
        let client_config = config.clone();
        // The core settles the role before returning (a free lease is primary after the
        // take-over wait), so the seed's usage can save state right away.
        let core = detached(py, || {
            let core = StateManager::new(config)?;
            Ok(core)
        })
        .py_err(py)?;
        Ok(PyStateManager {
            core: Some(core),
            client_config,
            redacted_url,
            pid: super::fork::current_pid(),
            slots: Mutex::new(Vec::new()),
            decoded_positions: Mutex::new(None),
        })
    }

    #[getter]
    fn bot_name(&self) -> &str {
        self.core().bot_name()
    }

    #[getter]
    fn instance_id(&self) -> &str {
        self.core().instance_id()
    }

    /// How the bot's keys are named: `plain` (`bot:<name>:state`) or `hash_tagged`
    /// (`bot:{<name>}:state`, the layout of a Redis Cluster).
    #[getter]
    fn key_layout(&self) -> &'static str {
        // Checked by the constructor, so it cannot fail here.
        self.core()
            .config()
            .effective_key_layout()
            .unwrap_or_default()
            .as_str()
    }

    /// The fencing epoch of the lease held, while primary; else None.
    #[getter]
    fn epoch(&self, py: Python<'_>) -> Option<u64> {
        if self.in_forked_child() {
            return None;
        }
        // A lock of the core, held only briefly and never while waiting for the GIL; no
        // I/O, so no need to block signals.
        py.detach(|| self.core().epoch())
    }

    /// Problems found at start (e.g. an eviction policy other than noeviction).
    #[getter]
    fn startup_warnings(&self) -> Vec<String> {
        self.core().startup_warnings().to_vec()
    }

    /// Keyword arguments for a redis-py client on the same server (see `redis_client`),
    /// with the same URL, password, TLS files and Sentinel rules as this manager.
    fn _redis_py_options<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        redis_py_options(
            py,
            &self.client_config,
            self.core().config().command_timeout,
        )
    }

    fn register_shutdown_handler(
        &self,
        py: Python<'_>,
        handler: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let core = self.usable(py)?;
        let handler = self.slot(handler, "register_shutdown_handler")?;
        detached(py, || {
            core.register_shutdown_handler(move || {
                with_python_signal_mask(|| {
                    super::try_attach(|py| match handler.call(py) {
                        Some(outcome) => {
                            outcome.map_err(|err| format_exception(py, &err).trim_end().to_owned())
                        }
                        None => Ok(()),
                    })
                })
                .unwrap_or_else(|| Err("the Python interpreter is shutting down".into()))
            })
        });
        Ok(())
    }

    /// Called with no arguments each time this instance becomes primary (read `epoch` there),
    /// on a background thread. When the instance is primary already, it is also called once
    /// right away, in the caller's thread, so that no promotion is missed (the constructor
    /// takes a free lease before returning): exactly once per promotion (per epoch).
    fn on_promoted(&self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> PyResult<()> {
        let core = self.usable(py)?;
        let callback = self.slot(callback, "on_promoted")?;
        // The highest epoch the callback ran for.
        let last_epoch = Arc::new(AtomicU64::new(0));
        let (cb, last) = (callback.clone(), Arc::clone(&last_epoch));
        let current = detached(py, || {
            core.on_promoted(move |epoch| {
                if last.fetch_max(epoch, Ordering::AcqRel) < epoch {
                    call_logged("on_promoted", &cb);
                }
            });
            core.epoch()
        });
        if let Some(epoch) = current {
            if last_epoch.fetch_max(epoch, Ordering::AcqRel) < epoch {
                if let Some(Err(err)) = callback.call(py) {
                    log::error!(
                        "on_promoted callback raised: {}",
                        format_exception(py, &err).trim_end()
                    );
                }
            }
        }
        Ok(())
    }

    /// Called with no arguments on a background thread each time this instance stops
    /// being primary.
    fn on_demoted(&self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> PyResult<()> {
        let core = self.usable(py)?;
        let callback = self.slot(callback, "on_demoted")?;
        detached(py, || {
            core.on_demoted(move |_reason| call_logged("on_demoted", &callback))
        });
        Ok(())
    }

    /// The lease thread's stall meter (local, no network): how late it woke and how long
    /// its lease round trips took since the manager started, beside the tolerance.
    fn lease_stalls(&self, py: Python<'_>) -> PyResult<PyLeaseStalls> {
        let stalls = self.core().lease_stalls();
        PyLeaseStalls::new(py, &stalls)
    }

    fn heartbeat(&self, py: Python<'_>) -> PyResult<()> {
        let core = self.usable(py)?;
        detached(py, || core.heartbeat()).py_err(py)
    }

    /// Saves the state (fenced) and sets `last_update` on the dict passed, as before.
    fn save_state(&self, py: Python<'_>, state: &Bound<'_, PyAny>) -> PyResult<()> {
        let core = self.usable(py)?;
        let mut map = object_from_py(py, state, "state")?;
        let saved = detached(py, || core.save_state(&mut map));
        set_last_update(state, &map)?;
        saved.py_err(py)
    }

    /// Merges `changes` into the stored state, saves it (fenced) and returns it.
    fn update_state<'py>(
        &self,
        py: Python<'py>,
        changes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let core = self.usable(py)?;
        let changes = object_from_py(py, changes, "changes")?;
        let merged = detached(py, || core.update_state(&changes)).py_err(py)?;
        object_to_py(py, &merged)
    }

    fn load_state<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let core = self.usable(py)?;
        let raw = detached(py, || core.load_state_raw()).py_err(py)?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        if let Some(state) = Decoder::new(py).object(&raw) {
            return Ok(Some(state));
        }
        // Python's decoder takes what serde_json refuses but json.loads reads (deeper nesting).
        if let Some(state) = fast_object_to_py(py, &raw) {
            return Ok(Some(state));
        }
        // Not one valid JSON object: the Rust decoder names the problem.
        let state = decode_object(&core.keys().state, &raw).py_err(py)?;
        object_to_py(py, &state).map(Some)
    }

    /// Saves one position (fenced) and sets `last_update` on the dict passed, as before.
    fn save_position(
        &self,
        py: Python<'_>,
        symbol: String,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let core = self.usable(py)?;
        let mut map = object_from_py(py, data, "position")?;
        let saved = detached(py, || core.save_position(&symbol, &mut map));
        set_last_update(data, &map)?;
        saved.py_err(py)
    }

    fn load_positions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let core = self.usable(py)?;
        let loaded = detached(py, || core.load_positions_shared()).py_err(py)?;
        let previous = self.decoded_positions.lock().clone();
        let decoded = match previous {
            Some(decoded) if decoded.raw.id() == loaded.id() => decoded,
            previous => {
                let dicts = decode_positions(py, core, loaded.items(), previous.as_deref())?;
                let shallow = dicts
                    .values()
                    .iter()
                    .map(|position| is_shallow(&position))
                    .collect();
                let decoded = Arc::new(DecodedPositions {
                    raw: loaded,
                    dicts: dicts.unbind(),
                    shallow,
                });
                *self.decoded_positions.lock() = Some(Arc::clone(&decoded));
                decoded
            }
        };
        let out = PyDict::new(py);
        for ((symbol, position), shallow) in decoded.dicts.bind(py).iter().zip(&decoded.shallow) {
            let copy = match (shallow, position.cast::<PyDict>()) {
                (true, Ok(position)) => position.copy()?.into_any(),
                _ => copy_json(&position)?,
            };
            out.set_item(symbol, copy)?;
        }
        Ok(out)
    }

    fn clear_position(&self, py: Python<'_>, symbol: String) -> PyResult<bool> {
        let core = self.usable(py)?;
        detached(py, || core.clear_position(&symbol)).py_err(py)
    }

    #[pyo3(signature = (symbol, quantity, price, fill_id = None))]
    fn apply_fill<'py>(
        &self,
        py: Python<'py>,
        symbol: String,
        quantity: f64,
        price: f64,
        fill_id: Option<String>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let core = self.usable(py)?;
        let position = detached(py, || {
            core.apply_fill(&symbol, quantity, price, fill_id.as_deref())
        })
        .py_err(py)?;
        position.map(|p| object_to_py(py, &p)).transpose()
    }

    /// Makes Redis match the broker's positions in one atomic step; returns the counts
    /// `inserted`, `updated`, `deleted`, `unchanged` and the per-symbol `differences`.
    fn sync_positions<'py>(
        &self,
        py: Python<'py>,
        broker_positions: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let core = self.usable(py)?;
        let dict = broker_positions.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err("broker_positions must be a dict of symbol -> position dict")
        })?;
        let mut broker = Vec::with_capacity(dict.len());
        for (symbol, data) in dict.iter() {
            let symbol = symbol
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("broker_positions keys must be str symbols"))?
                .to_cow()?
                .into_owned();
            let data = object_from_py(py, &data, &format!("broker_positions[{symbol:?}]"))?;
            broker.push((symbol, data));
        }
        let report = detached(py, || core.sync_positions(&broker)).py_err(py)?;
        object_to_py(py, &report.to_json())
    }

    /// One PING on the connection every operation uses (health check, benchmark baseline).
    fn _ping(&self, py: Python<'_>) -> PyResult<()> {
        let core = self.usable(py)?;
        detached(py, || core.ping()).py_err(py)
    }

    /// Local state only: no network, never blocks.
    fn is_primary(&self) -> bool {
        !self.in_forked_child() && self.core().is_primary()
    }

    /// Blocks (GIL released) until this instance is primary or `timeout` seconds pass;
    /// `None` waits for ever. Pending signals (Ctrl-C) are handled while waiting.
    #[pyo3(signature = (timeout = None))]
    fn wait_until_primary(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        self.usable(py)?;
        let give_up = match timeout {
            None => None,
            Some(0.0) => Some(Instant::now()),
            Some(t) => Some(Instant::now() + seconds(py, "timeout", t)?),
        };
        loop {
            let slice = match give_up {
                Some(give_up) => give_up
                    .saturating_duration_since(Instant::now())
                    .min(SIGNAL_CHECK_SLICE),
                None => SIGNAL_CHECK_SLICE,
            };
            // Signals are not blocked here: the wait is a futex (EINTR-safe) and Ctrl-C must land.
            if py.detach(|| self.core().wait_until_primary(Some(slice))) {
                return Ok(true);
            }
            if self.core().is_closed() || give_up.is_some_and(|g| Instant::now() >= g) {
                return Ok(false);
            }
            py.check_signals()?;
        }
    }

    /// Runs the shutdown handlers, saves the last state with `shutdown_time` (if primary),
    /// releases the lease and announces it. Does not exit; a second call does nothing.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        // Signals stay deliverable: a second SIGTERM / SIGINT during a shutdown run from the
        // signal handler must end the process at once.
        if self.in_forked_child() {
            return Ok(()); // the parent's lease is not the child's to release
        }
        let outcome = py.detach(|| self.core().shutdown());
        self.clear_slots();
        outcome.py_err(py)
    }

    /// The same as `shutdown()`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.in_forked_child() {
            return Ok(());
        }
        let outcome = py.detach(|| self.core().close());
        self.clear_slots();
        outcome.py_err(py)
    }

    #[getter]
    fn closed(&self) -> bool {
        self.core().is_closed()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The slots are only locked by threads holding the GIL, as the collector does now.
        if let Some(slots) = self.slots.try_lock() {
            for slot in slots.iter() {
                if let Some(f) = slot.0.try_lock() {
                    visit.call(&*f)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.clear_slots();
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes (through `close()`, so a subclass's override runs); exceptions propagate.
    #[pyo3(signature = (*_exc_info))]
    fn __exit__(slf: &Bound<'_, Self>, _exc_info: &Bound<'_, PyTuple>) -> PyResult<bool> {
        slf.call_method0("close")?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let core = self.core();
        let role = if core.is_closed() {
            "closed"
        } else if core.is_primary() {
            "primary"
        } else {
            "standby"
        };
        Ok(format!(
            "<StateManager bot_name={} instance_id={} redis_url={} role={role}>",
            PyString::new(py, core.bot_name()).repr()?,
            PyString::new(py, core.instance_id()).repr()?,
            PyString::new(py, &self.redacted_url).repr()?,
        ))
    }
}

fn set_last_update(target: &Bound<'_, PyAny>, map: &JsonObject) -> PyResult<()> {
    if let (Ok(dict), Some(serde_json::Value::String(at))) =
        (target.cast::<PyDict>(), map.get("last_update"))
    {
        dict.set_item("last_update", at)?;
    }
    Ok(())
}

impl Drop for PyStateManager {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            if self.pid != super::fork::current_pid() {
                // A forked child: closing would release the parent's lease. Its threads do
                // not exist here; leave everything as it is.
                std::mem::forget(core);
                return;
            }
            if core.is_closed() {
                return;
            }
            // Closing joins the core's threads, which may be waiting for the GIL.
            let mut core = Some(core);
            Python::try_attach(|py| detached(py, || drop(core.take())));
            drop(core);
        }
    }
}

/// The positions of one load as decoded, kept to hand out copies of.
struct DecodedPositions {
    raw: Arc<LoadedPositions>,
    dicts: Py<PyDict>,
    /// Per position, in the dict's order: no dict or list inside (a shallow copy is a copy).
    shallow: Vec<bool>,
}

fn is_shallow(value: &Bound<'_, PyAny>) -> bool {
    value.cast::<PyDict>().is_ok_and(|dict| {
        dict.iter()
            .all(|(_, v)| !(v.is_instance_of::<PyDict>() || v.is_instance_of::<PyList>()))
    })
}

/// `{symbol: dict}` of the stored positions: each decoded straight from its bytes (or taken
/// from `previous`, the bytes and dicts of the last decode, when its bytes are the same),
/// else (a value serde_json refuses) all by Python's decoder, else the Rust decoder names the
/// value that is not a JSON object.
fn decode_positions<'py>(
    py: Python<'py>,
    core: &StateManager,
    positions: &[(String, Vec<u8>)],
    previous: Option<&DecodedPositions>,
) -> PyResult<Bound<'py, PyDict>> {
    let decoder = Decoder::new(py);
    let previous_raw: std::collections::HashMap<&str, &[u8]> = previous
        .map(|decoded| {
            decoded
                .raw
                .items()
                .iter()
                .map(|(symbol, raw)| (symbol.as_str(), raw.as_slice()))
                .collect()
        })
        .unwrap_or_default();
    let out = PyDict::new(py);
    let all_decoded = positions.iter().all(|(symbol, raw)| {
        let unchanged = previous
            .filter(|_| previous_raw.get(symbol.as_str()) == Some(&raw.as_slice()))
            .and_then(|decoded| decoded.dicts.bind(py).get_item(symbol).ok().flatten());
        let position = unchanged.or_else(|| decoder.object(raw).map(Bound::into_any));
        position.is_some_and(|position| out.set_item(symbol, position).is_ok())
    });
    if all_decoded {
        return Ok(out);
    }
    if let Some(out) = fast_objects_to_py(py, positions) {
        return Ok(out);
    }
    let out = PyDict::new(py);
    for (symbol, raw) in positions {
        let data = decode_object(&core.keys().position(symbol), raw).py_err(py)?;
        out.set_item(symbol, object_to_py(py, &data)?)?;
    }
    Ok(out)
}

/// A copy of a decoded JSON value that shares nothing mutable with it: dicts and lists are
/// copied all the way down, the rest (str, int, float, bool, None) is immutable.
fn copy_json<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(dict) = value.cast::<PyDict>() {
        if is_shallow(value) {
            return Ok(dict.copy()?.into_any());
        }
        let out = PyDict::new(value.py());
        for (key, item) in dict.iter() {
            out.set_item(key, copy_json(&item)?)?;
        }
        return Ok(out.into_any());
    }
    if let Ok(list) = value.cast::<PyList>() {
        let items = list
            .iter()
            .map(|item| copy_json(&item))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(PyList::new(value.py(), items)?.into_any());
    }
    Ok(value.clone())
}
