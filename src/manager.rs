//! `StateManager`: the one facade every front end wraps.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

use crate::clock::{millis, utc_now_iso};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::keys::{validate_fill_id, validate_symbol, Keys};
use crate::lease::meter::LeaseStalls;
use crate::lease::{Lease, Timing};
use crate::positions::{
    apply_fill_to, decode_object, Expected, JsonObject, LastLoad, LoadedPositions, PositionStore,
    PositionWrite, SyncReport, WriteOutcome,
};
use crate::shutdown::{shut_down_on_signal, Shutdown, ShutdownHandler, ShutdownHandlers};
use crate::stalls::Publisher;
use crate::store::{Store, SCRIPTS};

/// State, positions and the primary/standby role of one bot instance, kept in Redis.
///
/// Construction connects, reads the server's eviction policy, finds positions written
/// before the symbol index existed, and starts the background lease thread: the instance
/// starts as standby and becomes primary as soon as nobody else holds the lease.
pub struct StateManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    keys: Keys,
    store: Arc<Store>,
    lease: Arc<Lease>,
    instance_id: String,
    handlers: ShutdownHandlers,
    /// What this instance last saved, re-saved with `shutdown_time` at shutdown.
    last_state: Mutex<Option<JsonObject>>,
    /// Serializes read-modify-write cycles of this instance (other instances are fenced out).
    state_update: Mutex<()>,
    position_update: Mutex<()>,
    /// Position symbols found by the start-up scan and not yet in the index.
    unindexed_symbols: Mutex<Vec<String>>,
    last_load: LastLoad,
    warnings: Vec<String>,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Publishes the lease's stall meter for operators (`crate::stalls`), on its own thread.
    publisher: Mutex<Option<Arc<Publisher>>>,
}

static MANAGERS_IN_PROCESS: AtomicUsize = AtomicUsize::new(0);

fn new_instance_id() -> String {
    let host = gethostname::gethostname()
        .to_string_lossy()
        .replace(':', "_");
    let pid = std::process::id();
    match MANAGERS_IN_PROCESS.fetch_add(1, Ordering::Relaxed) {
        0 => format!("{host}:{pid}"),
        n => format!("{host}:{pid}.{n}"),
    }
}

/// Once per process, the open-files soft limit raised to the hard limit (as the Go runtime
/// and the JVM do): each manager holds four or five connections, and a process hosting many
/// bots would otherwise meet the usual soft limit of 1 024 at about 200 managers.
fn allow_many_connections() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        {
            let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
                return;
            };
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(now) if now > soft => {
                    log::info!("raised the open-files limit of this process from {soft} to {now}")
                }
                Ok(_) => {}
                Err(err) => log::debug!("could not raise the open-files limit: {err}"),
            }
        }
    });
}

impl StateManager {
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        allow_many_connections();
        // Start the monotonic origin before any deadline is computed.
        crate::clock::now_nanos();
        let keys = Keys::with_layout(&config.bot_name, config.effective_key_layout()?);
        let store = Arc::new(Store::open(&config)?);
        store.check_wait_supported()?;
        let warnings = store.server_warnings()?;
        for warning in &warnings {
            log::warn!("{warning}");
        }
        let instance_id = new_instance_id();
        let lease = Arc::new(Lease::new(
            Arc::clone(&store),
            keys.clone(),
            Timing::from_config(&config),
            instance_id.clone(),
        ));
        let inner = Arc::new(Inner {
            keys,
            store,
            lease,
            instance_id,
            handlers: ShutdownHandlers::default(),
            last_state: Mutex::new(None),
            state_update: Mutex::new(()),
            position_update: Mutex::new(()),
            unindexed_symbols: Mutex::new(Vec::new()),
            last_load: LastLoad::default(),
            warnings,
            closed: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            publisher: Mutex::new(None),
            config,
        });
        let legacy = inner.positions().scan_symbols()?;
        *inner.unindexed_symbols.lock() = legacy;
        let weak = Arc::downgrade(&inner);
        inner.lease.on_promoted(Arc::new(move |_epoch| {
            if let Some(inner) = weak.upgrade() {
                inner.adopt_unindexed_positions();
            }
        }));
        let threads = inner
            .lease
            .start()
            .map_err(|err| Error::unavailable(format!("cannot start the lease thread: {err}")))?;
        *inner.threads.lock() = threads;
        // The stall meter reaches operators through Redis, from a thread of the manager's
        // own: the lease thread waits for nothing but its own commands.
        let lease = Arc::clone(&inner.lease);
        match Publisher::spawn(
            Arc::clone(&inner.store),
            &inner.keys,
            inner.instance_id.clone(),
            move || lease.stalls(),
        ) {
            Ok((publisher, thread)) => {
                *inner.publisher.lock() = Some(publisher);
                inner.threads.lock().push(thread);
            }
            // Only the operators' view of the meter is missing.
            Err(err) => log::warn!("cannot start the thread that publishes the stall meter: {err}"),
        }
        inner
            .lease
            .wait_listening(inner.config.connect_timeout + inner.config.command_timeout);
        // Settle the role before returning, so that a sole instance can write at once (the
        // seed's usage saves state right after construction): a lease nobody holds is
        // primary after the take-over wait. Not settled in time only means the lease thread
        // keeps trying.
        // With fast failover off that wait is `renew_deadline` long: only the first look then.
        let takeover_wait = crate::lease::takeover_wait(&inner.config);
        let short = takeover_wait <= Duration::from_secs(2);
        inner.lease.settle(
            inner.config.connect_timeout
                + 3 * inner.config.command_timeout.min(Duration::from_secs(1))
                + if short {
                    2 * takeover_wait
                } else {
                    Duration::ZERO
                },
            short,
        );
        if inner.config.install_signal_handlers {
            let target: Weak<dyn Shutdown> = Arc::downgrade(&inner) as Weak<dyn Shutdown>;
            shut_down_on_signal(target)?;
        }
        log::info!(
            "state manager for bot {:?} started as {} on {}",
            inner.config.bot_name,
            inner.instance_id,
            inner.store.redacted_url()
        );
        Ok(StateManager { inner })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn bot_name(&self) -> &str {
        &self.inner.config.bot_name
    }

    /// `hostname:pid` (with `.n` for the n-th manager of a process); lease tokens are this
    /// id followed by a fresh `:nonce` per acquisition.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// The fencing epoch of the lease held, while primary; tag orders and rows with it.
    pub fn epoch(&self) -> Option<u64> {
        self.inner.lease.epoch()
    }

    /// Problems found at start (eviction policy): also logged as warnings.
    pub fn startup_warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// One PING on the connection every operation uses: a health check, and the baseline
    /// of the benchmarks.
    pub fn ping(&self) -> Result<()> {
        self.inner
            .store
            .run(|conn| redis::cmd("PING").query::<String>(conn))?;
        Ok(())
    }

    /// Local state only: no network, never blocks.
    pub fn is_primary(&self) -> bool {
        self.inner.lease.is_primary()
    }

    /// Blocks until this instance is primary or `timeout` passes; `None` waits for ever.
    pub fn wait_until_primary(&self, timeout: Option<Duration>) -> bool {
        self.inner.lease.wait_until_primary(timeout)
    }

    /// Called with the new epoch on the event thread each time this instance becomes primary.
    pub fn on_promoted(&self, callback: impl Fn(u64) + Send + Sync + 'static) {
        self.inner.lease.on_promoted(Arc::new(callback));
    }

    /// Called with the reason on the event thread each time this instance stops being primary.
    pub fn on_demoted(&self, callback: impl Fn(&str) + Send + Sync + 'static) {
        self.inner.lease.on_demoted(Arc::new(callback));
    }

    pub fn register_shutdown_handler(
        &self,
        handler: impl Fn() -> std::result::Result<(), String> + Send + Sync + 'static,
    ) {
        let handler: ShutdownHandler = Arc::new(handler);
        self.inner.handlers.register(handler);
    }

    /// The lease thread's stall meter: how late it woke and how long its round trips took,
    /// beside the tolerance they eat into (`docs/failover.md`, "Tolerance profiles").
    pub fn lease_stalls(&self) -> LeaseStalls {
        self.inner.lease.stalls()
    }

    /// Renews the lease now (primary), or tries to take it now (standby). The lease thread
    /// does both on its own; this is for bots that call `heartbeat()` in their loop.
    pub fn heartbeat(&self) -> Result<()> {
        self.inner.ensure_open()?;
        self.inner.lease.heartbeat()
    }

    /// Saves the bot's state (fenced), adding `last_update` to `state` as the predecessor did.
    pub fn save_state(&self, state: &mut JsonObject) -> Result<()> {
        let _serial = self.inner.state_update.lock();
        self.inner.save_state(state)
    }

    /// Merges `changes` into the stored state and saves the result, returned.
    pub fn update_state(&self, changes: &JsonObject) -> Result<JsonObject> {
        let _serial = self.inner.state_update.lock();
        self.inner.lease.fencing_token()?;
        let mut state = self.inner.load_state()?.unwrap_or_default();
        state.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.inner.save_state(&mut state)?;
        Ok(state)
    }

    pub fn load_state(&self) -> Result<Option<JsonObject>> {
        self.inner.load_state()
    }

    /// The state's JSON bytes as stored, undecoded (for front ends that decode straight into
    /// their own objects, e.g. Python's dicts); `positions::decode_object` checks them.
    pub fn load_state_raw(&self) -> Result<Option<Vec<u8>>> {
        self.inner.load_state_raw()
    }

    /// Saves one position (fenced), adding `last_update` to `data`.
    pub fn save_position(&self, symbol: &str, data: &mut JsonObject) -> Result<()> {
        validate_symbol(symbol)?;
        let _serial = self.inner.position_update.lock();
        let token = self.inner.lease.fencing_token()?;
        data.insert("last_update".into(), Value::from(utc_now_iso()));
        let value = self.inner.encode(&format!("position {symbol:?}"), data)?;
        let write = PositionWrite {
            symbol: symbol.to_owned(),
            expected: Expected::Anything,
            new_value: Some(value),
        };
        token.observe(self.inner.positions().write(&token.token, &[write], None))?;
        Ok(())
    }

    /// Every position of the bot, in a constant number of round trips.
    pub fn load_positions(&self) -> Result<Vec<(String, JsonObject)>> {
        let unindexed = self.inner.unindexed_symbols.lock().clone();
        self.inner.positions().load(&unindexed)
    }

    /// Every position as stored (symbol, JSON bytes), undecoded, as [`load_positions`] reads
    /// them (for front ends that decode straight into their own objects).
    ///
    /// [`load_positions`]: StateManager::load_positions
    pub fn load_positions_raw(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let unindexed = self.inner.unindexed_symbols.lock().clone();
        self.inner.positions().load_raw(&unindexed)
    }

    /// Like [`load_positions_raw`], shared: while nothing changed in Redis, every load
    /// returns the same [`LoadedPositions`] (same id), so a front end can reuse what it
    /// decoded from it.
    ///
    /// [`load_positions_raw`]: StateManager::load_positions_raw
    pub fn load_positions_shared(&self) -> Result<Arc<LoadedPositions>> {
        let unindexed = self.inner.unindexed_symbols.lock().clone();
        self.inner.positions().load_shared(&unindexed)
    }

    /// Removes one position (fenced); whether it existed.
    pub fn clear_position(&self, symbol: &str) -> Result<bool> {
        validate_symbol(symbol)?;
        let _serial = self.inner.position_update.lock();
        let token = self.inner.lease.fencing_token()?;
        let write = PositionWrite {
            symbol: symbol.to_owned(),
            expected: Expected::Anything,
            new_value: None,
        };
        match token.observe(self.inner.positions().write(&token.token, &[write], None))? {
            WriteOutcome::Applied { changed } => Ok(changed > 0),
            _ => Ok(false),
        }
    }

    /// Applies a fill of signed `quantity` at `price` in one atomic step; a `fill_id` seen
    /// before is ignored. Returns the position after it, `None` when flat.
    pub fn apply_fill(
        &self,
        symbol: &str,
        quantity: f64,
        price: f64,
        fill_id: Option<&str>,
    ) -> Result<Option<JsonObject>> {
        validate_symbol(symbol)?;
        if let Some(fill_id) = fill_id {
            validate_fill_id(fill_id)?;
        }
        // Refuse bad numbers before any round trip.
        apply_fill_to(symbol, None, quantity, price)?;
        let _serial = self.inner.position_update.lock();
        let token = self.inner.lease.fencing_token()?;
        let positions = self.inner.positions();
        positions.fill(
            symbol,
            quantity,
            price,
            fill_id,
            &|what, value| self.inner.encode(what, value),
            &|changes, member| token.observe(positions.write(&token.token, changes, member)),
        )
    }

    /// Makes the stored positions match the broker's, in one atomic step.
    pub fn sync_positions(&self, broker: &[(String, JsonObject)]) -> Result<SyncReport> {
        for (symbol, _) in broker {
            validate_symbol(symbol)?;
        }
        let _serial = self.inner.position_update.lock();
        let token = self.inner.lease.fencing_token()?;
        let positions = self.inner.positions();
        let unindexed = self.inner.unindexed_symbols.lock().clone();
        positions.sync(
            broker,
            &unindexed,
            &|what, value| self.inner.encode(what, value),
            &|changes, member| token.observe(positions.write(&token.token, changes, member)),
        )
    }

    /// Runs the shutdown handlers, saves the last state with `shutdown_time` (if primary),
    /// releases the lease and announces it. Does not exit. Calling it again does nothing.
    pub fn shutdown(&self) -> Result<()> {
        self.inner.shutdown()
    }

    /// The same as [`shutdown`](Self::shutdown).
    pub fn close(&self) -> Result<()> {
        self.inner.shutdown()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

impl Drop for StateManager {
    fn drop(&mut self) {
        if let Err(err) = self.inner.shutdown() {
            log::warn!("closing the state manager on drop: {err}");
        }
    }
}

impl std::fmt::Debug for StateManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateManager")
            .field("bot_name", &self.inner.config.bot_name)
            .field("instance_id", &self.inner.instance_id)
            .field("redis_url", &self.inner.store.redacted_url())
            .field("primary", &self.is_primary())
            .finish()
    }
}

impl Shutdown for Inner {
    fn shutdown_for_signal(&self) {
        if let Err(err) = self.shutdown() {
            log::error!("shutdown after a signal: {err}");
        }
    }
}

impl Inner {
    fn positions(&self) -> PositionStore<'_> {
        PositionStore {
            store: &self.store,
            keys: &self.keys,
            position_ttl_ms: millis(self.config.position_ttl),
            last_load: Some(&self.last_load),
        }
    }

    fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::not_primary("the state manager is closed"));
        }
        Ok(())
    }

    /// Serializes a value to store, refusing it before sending when over the size limit.
    fn encode(&self, what: &str, value: &JsonObject) -> Result<String> {
        let text = serde_json::to_string(value)?;
        if text.len() > self.config.max_payload_bytes {
            return Err(Error::invalid(format!(
                "{what} is {} bytes as JSON, over the limit of {} bytes",
                text.len(),
                self.config.max_payload_bytes
            )));
        }
        Ok(text)
    }

    fn save_state(&self, state: &mut JsonObject) -> Result<()> {
        let token = self.lease.fencing_token()?;
        state.insert("last_update".into(), Value::from(utc_now_iso()));
        let value = self.encode("state", state)?;
        token.observe(self.write_state(&token.token, &value))?;
        *self.last_state.lock() = Some(state.clone());
        Ok(())
    }

    fn write_state(&self, token: &str, value: &str) -> Result<()> {
        let mut invocation = SCRIPTS.fenced_set.key(&self.keys.lock);
        invocation
            .key(&self.keys.state)
            .arg(token)
            .arg(value)
            .arg(millis(self.config.state_ttl));
        self.store.write_script::<i64>(&invocation)?;
        Ok(())
    }

    fn load_state(&self) -> Result<Option<JsonObject>> {
        self.load_state_raw()?
            .map(|raw| decode_object(&self.keys.state, &raw))
            .transpose()
    }

    fn load_state_raw(&self) -> Result<Option<Vec<u8>>> {
        self.store
            .read(|conn| redis::cmd("GET").arg(&self.keys.state).query(conn))
            .map_err(|err| {
                crate::positions::name_wrong_type(&self.store, err, &[(&self.keys.state, "string")])
            })
    }

    fn adopt_unindexed_positions(&self) {
        let symbols = self.unindexed_symbols.lock().clone();
        if symbols.is_empty() {
            return;
        }
        let Ok(token) = self.lease.fencing_token() else {
            return;
        };
        match token.observe(self.positions().adopt(&token.token, &symbols)) {
            Ok(added) => {
                if added > 0 {
                    log::info!("adopted {added} positions written before the symbol index");
                }
                self.unindexed_symbols
                    .lock()
                    .retain(|s| !symbols.contains(s));
            }
            Err(err) => log::warn!("could not index positions found at start-up yet: {err}"),
        }
    }

    fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let unfinished = self.handlers.run_all(self.config.shutdown_timeout);
        if unfinished > 0 {
            log::error!("{unfinished} shutdown handlers were abandoned after shutdown_timeout");
        }
        let mut outcome = Ok(());
        // No other save_state from here until the lease is given up: one landing after the
        // final save would drop its shutdown_time.
        let no_state_saves = self.state_update.lock();
        if let Ok(token) = self.lease.fencing_token() {
            let last = self.last_state.lock().clone();
            if let Some(mut state) = last {
                state.insert("shutdown_time".into(), Value::from(utc_now_iso()));
                let saved = self
                    .encode("state", &state)
                    .and_then(|value| token.observe(self.write_state(&token.token, &value)));
                if let Err(err) = saved {
                    log::error!("could not save the final state: {err}");
                    outcome = Err(err);
                }
            }
        }
        // Standby first (on_demoted callbacks are still delivered), then stop the lease
        // thread: it cannot take the lease again, which still carries our token until we
        // delete it; the release notice we publish also wakes it from its wait.
        let stepped_down = self.lease.step_down(crate::lease::Demotion::ShuttingDown);
        drop(no_state_saves);
        self.lease.stop();
        let released = match stepped_down {
            Some(token) => self
                .store
                .run(|conn| self.lease.release_token(conn, &token)),
            None => Ok(false),
        };
        // Redis unreachable just now: the presence lapses by itself, no second wait for it.
        let unreachable =
            matches!(&released, Err(err) if err.kind() == ErrorKind::RedisUnavailable);
        match released {
            Ok(true) => log::info!("{} released the primary lease", self.instance_id),
            Ok(false) => {}
            Err(err) => {
                log::error!("could not release the lease (it expires by itself): {err}");
                if outcome.is_ok() {
                    outcome = Err(err);
                }
            }
        }
        if let Some(publisher) = self.publisher.lock().take() {
            publisher.stop();
        }
        // The lease thread ends within a poll interval; once it cannot record this instance
        // again, the instance leaves the live instances (status, metrics) at once, and its
        // stall summary (one the stalls thread still writes after that is never shown: only
        // live instances' are). The stalls thread ends after the publish under way, the
        // event thread once queued callbacks ran: a callback that hangs is left behind after
        // `shutdown_timeout` rather than hanging the shutdown, and one that closes its own
        // manager runs on it.
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        let current = std::thread::current().id();
        let give_up = std::time::Instant::now() + self.config.shutdown_timeout;
        let (writers, others): (Vec<_>, Vec<_>) = threads
            .into_iter()
            .partition(|thread| thread.thread().name() == Some("quantshift-lease"));
        for thread in writers {
            join_until(thread, current, give_up, "the lease thread");
        }
        if !unreachable {
            crate::stalls::leave(&self.store, &self.keys, &self.instance_id);
        }
        for thread in others {
            let what = match thread.thread().name() {
                Some("quantshift-stalls") => "the stall meter's publisher",
                _ => "a callback",
            };
            join_until(thread, current, give_up, what);
        }
        outcome
    }
}

/// Joins `thread` unless it is the caller's own or still runs at `give_up` (then it is left
/// behind, logged as `what`).
fn join_until(
    thread: JoinHandle<()>,
    current: std::thread::ThreadId,
    give_up: std::time::Instant,
    what: &str,
) {
    if thread.thread().id() == current {
        return;
    }
    while !thread.is_finished() && std::time::Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(1));
    }
    if thread.is_finished() {
        let _ = thread.join();
    } else {
        log::error!("{what} is still running after shutdown_timeout; not waiting for it");
    }
}
