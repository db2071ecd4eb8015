//! The primary lease (docs/contract.md §2): one primary per bot, decided by pure steps (the
//! `quantshift-lease` crate in `crates/lease/`: the machine and the lease thread's rules,
//! with no IO and no dependencies) that a thin thread (`driver.rs`) executes against Redis.
//!
//! # The lease thread waits for nothing but Redis and its clock
//!
//! A holder that misses its renewal deadline demotes itself, so whatever the lease thread
//! waits for decides whether a live primary stays primary. The rule: on the lease thread
//! and on the notice thread (both marked `crate::relay::mark_time_critical`) no log
//! record is written, no role event delivered, no callback run, no Python object or user
//! lock touched. What they produce — role events, warnings, log records — goes into the
//! lease's `Outbox`, a bounded queue that never blocks its sender (what it drops is
//! counted: `Lease::dropped_records`), and the event thread (`quantshift-events`) alone
//! logs it and runs the callbacks. The store's records made on those threads go through
//! `crate::relay::log_own!` (a relay thread hands them to whatever logger the host
//! installed); other crates' (rustls) reach the Python and C loggers through
//! `crate::relay::Deferring`. The only locks these threads take are the lease's own, held
//! by other threads for a few instructions and never across a call out, with one exception
//! off the lease thread: on a planned handover the notice thread takes the write gate
//! exclusively, so it waits for the fenced writes in flight (a round trip each) before the
//! holder steps down; the lease thread never takes it.
//!
//! # Why there are never two primaries
//!
//! The lease record (`bot:{bot}:lease_record`, no TTL) holds the holder's token and a
//! renewal counter `seq`; the lock key `primary_lock` carries the same token for the fenced
//! writes. Safety rests only on keys, atomic scripts and each instance's monotonic clock:
//!
//! 1. **The holder's deadline.** A holder renews every `renew_interval` with a script that
//!    moves `seq` on only while the lock key *and* the record carry its token. It is primary
//!    until `D` after the *start* of its last successful renewal (its declared deadline,
//!    written into the record). Once a renewal or fenced write was refused the token is
//!    retired (a new take makes a new token); once the deadline passed, the token is renewed
//!    again only on a connection open since before that last renewal started (6).
//! 2. **Taking over a holder.** A standby that sees the same record `(token, seq)` on one
//!    connection for `W = D·(1+ρ)² + margin` on its own clock, counted from the reply that
//!    first showed it, may replace it with a compare-and-set on `(token, seq)`. The holder's
//!    last successful renewal ran before that first reply (a later one would have moved
//!    `seq`, failing the compare), so the holder stopped being primary at most `D·(1+ρ)`
//!    real time after it; the taker waited at least `W/(1+ρ)` real time. `ρ` bounds how far
//!    any instance's clock rate is from real time (`machine::DRIFT_PPM`).
//! 3. **A record that is gone** (empty Redis, `FLUSHALL`, eviction, a restart without
//!    persistence) is claimed with the same compare-and-set, but the claimant is primary only
//!    `W` after the claim's reply: any holder whose record vanished could not renew after
//!    the loss, so its deadline passed before that. A brand-new instance is no exception
//!    (docs/contract.md §2: it leads within the fast-failover bound, not at once).
//! 4. **A released record** (a holder that demoted first, then gave the lease up) is taken at
//!    once, by a standby whose connection is at least `W` old.
//! 5. **Data brought back from the past** (a restart from an older snapshot, a promoted
//!    replica that lagged) closes every connection to the server, and observations count only
//!    on the connection they were made on (2, 4), so every watch starts again after it. With
//!    `wait_replicas` ≥ 1 every take and renewal counts only once replicas confirmed it.
//! 6. **A late holder** (the host stalled it past its deadline) is standby from its deadline
//!    on, and renews the same token at once if the lease thread's connection has been open
//!    since before its last successful renewal started. Data from the past would have closed
//!    that connection (5), so a renewal that succeeds on it proves nobody took the lease
//!    meanwhile (a take replaces the token; tokens are never reused), and 1 applies from that
//!    renewal's start: primary again, same epoch. Any other outcome retires the token. (The
//!    simulator finds two primaries when the connection condition is dropped.)
//!
//! `seq` values are never reused for one token, tokens are never reused, and a record
//! replaced by a take never comes back except from the past (5): so "unchanged" really means
//! no renewal happened. Nothing here trusts `CONFIG`, `INFO`, subscriber counts or
//! connection closes that a proxy could fake; the fast failover is this same rule with a
//! short `D` (`renew_interval` + `failover_tolerance`). The fencing epoch handed out by a
//! take is above the stored counter, above any epoch the taker has seen and at least the
//! server's time in ms, so it never goes backwards even when every key was lost.

mod driver;
pub mod protocol;
pub use quantshift_lease::{driver as steps, machine, meter, shared};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};

use self::machine::{Event, Input, Notice, Params, Periods, Warning};
use self::meter::Stall;
use self::protocol::{Command, Reply};
use self::shared::SharedView;
use self::steps::{Action, Driver, DriverParams, Happened, Ready};
use crate::clock::now_nanos;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::relay::Outbox;
use crate::store::Store;

/// How many role events and records the lease's threads may have queued for the event
/// thread before more are dropped (and counted).
const OUTBOX_CAPACITY: usize = 1024;

/// What the lease's threads hand to the event thread.
enum Outgoing {
    Role(Event),
    Log(log::Level, String),
}

pub use quantshift_lease::machine::Demotion;
pub use quantshift_lease::SHUTTING_DOWN;

/// How often a holder renews when fast failover is on.
pub const FAST_RENEW_INTERVAL: Duration =
    Duration::from_nanos(machine::Periods::FAST_DEFAULT.renew_interval);
/// How often a standby looks at the lease when fast failover is on.
pub const FAST_POLL_INTERVAL: Duration =
    Duration::from_nanos(machine::Periods::FAST_DEFAULT.poll_interval);
/// How often an instance records itself among the live ones (at least): status and metrics
/// count an instance live within about a second of now.
pub const PRESENCE_INTERVAL: Duration = Duration::from_nanos(machine::PRESENCE_INTERVAL);

pub type PromotedCallback = Arc<dyn Fn(u64) + Send + Sync>;
pub type DemotedCallback = Arc<dyn Fn(&str) + Send + Sync>;

/// A change of role, as text (the lease's own events are [`Event`], their reasons a
/// [`Demotion`]); kept for programs that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    Promoted { epoch: u64 },
    Demoted { reason: String },
}

impl From<&Event> for LeaseEvent {
    fn from(event: &Event) -> Self {
        match event {
            Event::Promoted { epoch } => LeaseEvent::Promoted { epoch: *epoch },
            Event::Demoted { reason } => LeaseEvent::Demoted {
                reason: reason.as_str().to_owned(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lock_ttl: Duration,
    pub heartbeat_ttl: Duration,
    pub renew_interval: Duration,
    pub deadline: Duration,
    pub poll_interval: Duration,
    /// Bound on one lease round trip: one slower than the slack between the renewal period
    /// and the deadline could not keep us primary anyway.
    pub lease_command_timeout: Duration,
}

impl Timing {
    pub fn from_config(config: &Config) -> Self {
        let (renew_interval, deadline, poll_interval) = lease_periods(config);
        Timing {
            lock_ttl: config.lock_ttl,
            heartbeat_ttl: config.heartbeat_ttl,
            renew_interval,
            deadline,
            poll_interval,
            lease_command_timeout: config
                .command_timeout
                .min(deadline.saturating_sub(renew_interval))
                .max(Duration::from_millis(1)),
        }
    }

    /// How often an instance records itself among the live ones: every look when looks
    /// are rarer than [`PRESENCE_INTERVAL`].
    pub fn presence_interval(&self) -> Duration {
        Duration::from_nanos(self.params().presence_interval)
    }

    /// How long one presence entry counts an instance as live.
    pub fn presence_ttl(&self) -> Duration {
        self.presence_interval() * machine::PRESENCE_LIFETIMES as u32
    }

    fn params(&self) -> Params {
        let nanos = |d: Duration| d.as_nanos() as u64;
        Params::from_periods(Periods {
            renew_interval: nanos(self.renew_interval),
            deadline: nanos(self.deadline),
            poll_interval: nanos(self.poll_interval),
            lock_ttl: nanos(self.lock_ttl),
        })
    }

    fn driver_params(&self, command_timeout: Duration) -> DriverParams {
        DriverParams {
            lease_command_timeout: self.lease_command_timeout.as_nanos() as u64,
            command_timeout: command_timeout.as_nanos() as u64,
        }
    }
}

/// (renewal period, holder's deadline, standby's look period) for a configuration.
pub fn lease_periods(config: &Config) -> (Duration, Duration, Duration) {
    let renew_deadline = config.effective_renew_deadline();
    if config.fast_failover {
        let renew_interval = FAST_RENEW_INTERVAL.min(config.renew_interval());
        let deadline = (renew_interval + config.failover_tolerance).min(renew_deadline);
        let poll = config.effective_poll_interval().min(FAST_POLL_INTERVAL);
        (renew_interval, deadline, poll)
    } else {
        (
            config.renew_interval(),
            renew_deadline,
            config.effective_poll_interval(),
        )
    }
}

/// How long after a primary stops renewing a standby takes over (the take-over wait), for a
/// configuration: what the failover time is made of, besides one look period.
pub fn takeover_wait(config: &Config) -> Duration {
    let (_, deadline, _) = lease_periods(config);
    Duration::from_nanos(machine::takeover_wait(deadline.as_nanos() as u64))
}

pub(crate) struct Lease {
    store: Arc<Store>,
    keys: Keys,
    timing: Timing,
    instance_id: String,
    /// The pure steps; held only for a step, never across a call out.
    core: Mutex<Driver>,
    /// Signalled on every change of role or settling, and to wake the lease thread.
    changed: Condvar,
    view: SharedView,
    /// The first look ended / the role is settled (from the last step).
    looked: AtomicBool,
    settled: AtomicBool,
    /// The master generation of the driver's last successful take or renewal: while the
    /// store's generation differs, we are not primary (a Sentinel master change).
    confirmed_generation: AtomicU64,
    /// Writes hold it shared for their round trip; a graceful release takes it exclusively,
    /// so the lease is given up only after the writes in flight have landed.
    write_gate: RwLock<()>,
    stopping: AtomicBool,
    kicked: AtomicBool,
    outbox: Outbox<Outgoing>,
    /// The outbox's receiving end, until the event thread takes it.
    inbox: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    promoted_callbacks: RwLock<Vec<PromotedCallback>>,
    demoted_callbacks: RwLock<Vec<DemotedCallback>>,
    /// The notice thread has made its first attempt to subscribe to the lease channel.
    listening: (Mutex<bool>, Condvar),
    stalls: meter::StallMeter,
}

impl Lease {
    pub fn new(store: Arc<Store>, keys: Keys, timing: Timing, instance_id: String) -> Self {
        let mut seed = [0u8; 8];
        // A failing OS random source still leaves tokens distinct per process and time.
        if getrandom::fill(&mut seed).is_err() {
            seed = (now_nanos() ^ u64::from(std::process::id())).to_le_bytes();
        }
        let core = Driver::new(
            timing.params(),
            timing.driver_params(store.command_timeout()),
            instance_id.clone(),
            u64::from_le_bytes(seed),
        );
        let (outbox, inbox) = Outbox::new(OUTBOX_CAPACITY);
        Lease {
            store,
            keys,
            timing,
            instance_id,
            core: Mutex::new(core),
            changed: Condvar::new(),
            view: SharedView::default(),
            looked: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            confirmed_generation: AtomicU64::new(0),
            write_gate: RwLock::new(()),
            stopping: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            outbox,
            inbox: Mutex::new(Some(inbox)),
            promoted_callbacks: RwLock::new(Vec::new()),
            demoted_callbacks: RwLock::new(Vec::new()),
            listening: (Mutex::new(false), Condvar::new()),
            stalls: meter::StallMeter::default(),
        }
    }

    /// How late renewals may come before a holder demotes itself.
    pub fn tolerance(&self) -> Duration {
        self.timing
            .deadline
            .saturating_sub(self.timing.renew_interval)
    }

    /// The stall meter of the lease thread.
    pub fn stalls(&self) -> meter::LeaseStalls {
        meter::LeaseStalls {
            wake_late: self.stalls.wake_late.snapshot(),
            round_trip: self.stalls.round_trip.snapshot(),
            tolerance: self.tolerance(),
            dropped_records: self.dropped_records() + crate::relay::deferred_dropped(),
        }
    }

    /// Local state only: the shared predicate on the published view, on the current master.
    pub fn is_primary(&self) -> bool {
        self.confirmed_generation.load(Ordering::Acquire) == self.store.generation()
            && self.view.is_primary_at(now_nanos())
    }

    /// The epoch of the lease we hold, while we are primary.
    pub fn epoch(&self) -> Option<u64> {
        self.is_primary().then(|| self.view.epoch())
    }

    /// The token to fence a write with, or `NotPrimary` without touching the network. Keep
    /// the returned value alive until the write's round trip is over.
    pub fn fencing_token(&self) -> Result<Fence<'_>> {
        let gate = self.write_gate.read();
        let token = self.core.lock().token().map(str::to_owned);
        match token {
            Some(token) if self.is_primary() => Ok(Fence {
                token,
                lease: self,
                _gate: gate,
            }),
            _ => Err(Error::not_primary(format!(
                "{} is not the primary of bot {:?}; the write was refused and nothing changed",
                self.instance_id,
                self.keys.bot_name()
            ))),
        }
    }

    /// Blocks until this instance is primary, or `timeout` passes; returns whether it is.
    pub fn wait_until_primary(&self, timeout: Option<Duration>) -> bool {
        let give_up = timeout.map(|t| Instant::now() + t);
        let mut core = self.core.lock();
        while !self.is_primary() {
            if self.stopping.load(Ordering::Acquire) {
                return false;
            }
            // Wake at least every look period: becoming primary at `primary_from` is a
            // matter of time, not of a notification.
            let mut until =
                Instant::now() + self.timing.poll_interval.min(Duration::from_millis(50));
            if let Some(give_up) = give_up {
                if Instant::now() >= give_up {
                    return false;
                }
                until = until.min(give_up);
            }
            self.changed.wait_until(&mut core, until);
        }
        true
    }

    /// Waits (bounded) until the first look at the lease settled this instance's role: it
    /// is primary, or another instance holds the lease. An instance that claims a lease
    /// nobody holds is primary only after the take-over wait, which this covers, so a sole
    /// instance can write as soon as it is built.
    /// With `wait_for_claim` false it only waits for the first look (a long take-over wait,
    /// fast failover off).
    pub fn settle(&self, timeout: Duration, wait_for_claim: bool) {
        let give_up = Instant::now() + timeout;
        let mut core = self.core.lock();
        let done = || {
            if wait_for_claim {
                self.settled.load(Ordering::Acquire)
            } else {
                self.looked.load(Ordering::Acquire)
            }
        };
        while !done() && !self.stopping.load(Ordering::Acquire) {
            if Instant::now() >= give_up {
                return;
            }
            let until = give_up.min(Instant::now() + Duration::from_millis(10));
            self.changed.wait_until(&mut core, until);
        }
    }

    pub fn on_promoted(&self, callback: PromotedCallback) {
        self.promoted_callbacks.write().push(callback);
    }

    pub fn on_demoted(&self, callback: DemotedCallback) {
        self.demoted_callbacks.write().push(callback);
    }

    /// Renews the lease now on the caller's connection (primary), or has the lease thread
    /// look at it now (standby).
    pub fn heartbeat(&self) -> Result<()> {
        let Some(command) = self.handle(Input::Heartbeat).renewal else {
            return Ok(());
        };
        let sent_at = now_nanos();
        let timeout = self.store.command_timeout();
        let outcome = self
            .store
            .run(|conn| driver::execute(self, conn, timeout, &command));
        let reply = match &outcome {
            Ok(reply) => reply.clone(),
            Err(_) => Reply::Failed,
        };
        self.handle(Input::Reply {
            id: command.id(),
            sent_at,
            reply,
        });
        outcome.map(|_| ())
    }

    /// A fenced write was refused by Redis although we thought we held the lease: standby
    /// before this returns, and the lease thread looks at the lease now.
    pub fn write_refused(&self, token: &str) {
        self.handle(Input::WriteRefused {
            token: token.to_owned(),
        });
    }

    /// Gives up the lease (if held) once the writes in flight have landed: standby from
    /// that instant. Returns the token to delete with [`release_token`](Self::release_token).
    pub fn step_down(&self, reason: Demotion) -> Option<String> {
        let _no_writes_in_flight = self.write_gate.write();
        self.handle(Input::StepDown { reason }).released
    }

    /// Deletes the lease if it still carries `token`, and announces the release so a standby
    /// takes over at once.
    pub fn release_token(
        &self,
        conn: &mut redis::Connection,
        token: &str,
    ) -> redis::RedisResult<bool> {
        let command = Command::Release {
            id: 0,
            token: token.to_owned(),
            quiet: false,
            lock_only: false,
        };
        match driver::execute(self, conn, self.store.command_timeout(), &command)? {
            Reply::Released { released } => Ok(released),
            _ => Ok(false),
        }
    }

    /// Starts the event thread (callbacks), the lease thread and the notice thread.
    pub fn start(self: &Arc<Self>) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        let receiver = self.inbox.lock().take().expect("the lease starts once");
        let spawn = |name: &str, run: fn(&Lease)| {
            let lease = Arc::clone(self);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&lease))
        };
        let for_events = Arc::clone(self);
        let events = std::thread::Builder::new()
            .name("quantshift-events".into())
            .spawn(move || for_events.dispatch_events(receiver))?;
        Ok(vec![
            spawn("quantshift-lease", driver::run)?,
            spawn("quantshift-notices", driver::listen)?,
            events,
        ])
    }

    /// Waits (bounded) until the notice thread has tried to subscribe to the lease channel,
    /// so that release notices and handover requests reach an instance as soon as it is built.
    pub fn wait_listening(&self, timeout: Duration) {
        let (listening, changed) = &self.listening;
        let give_up = Instant::now() + timeout;
        let mut done = listening.lock();
        while !*done && Instant::now() < give_up {
            changed.wait_until(&mut done, give_up);
        }
    }

    /// Stops the background threads; they exit within one look period or command timeout.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.handle(Input::Stop);
        // Closing the outbox ends the event thread once what was queued is delivered.
        self.outbox.close();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// A step for an input from a caller or the notice thread; the lease thread is woken
    /// after it, since its plans may have changed.
    fn handle(&self, input: Input) -> Ready {
        let mut core = self.core.lock();
        let mut ready = core.handle(now_nanos(), input);
        self.publish(&mut ready);
        drop(core);
        self.deliver_ready(&mut ready);
        self.kick();
        ready
    }

    /// A step of the lease thread (`driver::run`): its next action.
    fn thread_step(&self, happened: Happened) -> Action {
        let generation = self.store.generation();
        let mut core = self.core.lock();
        let mut ready = core.step(now_nanos(), generation, happened);
        self.publish(&mut ready);
        drop(core);
        self.deliver_ready(&mut ready);
        ready.action.take().unwrap_or(Action::Exit)
    }

    /// What a step says everyone may read: published while the core is still locked, so
    /// views are published in the order of the steps.
    fn publish(&self, ready: &mut Ready) {
        self.confirmed_generation
            .fetch_max(ready.confirmed_generation, Ordering::AcqRel);
        self.view.publish(ready.view);
        let looked = self.looked.swap(ready.looked, Ordering::AcqRel) != ready.looked;
        let settled = self.settled.swap(ready.settled, Ordering::AcqRel) != ready.settled;
        if looked || settled || !ready.events.is_empty() {
            self.changed.notify_all();
        }
    }

    /// The rest of a step's output, handed on without blocking: the stall meter, and the
    /// events and warnings for the event thread.
    fn deliver_ready(&self, ready: &mut Ready) {
        for (stall, value) in ready.stalls.drain(..) {
            let histogram = match stall {
                Stall::WokeLate => &self.stalls.wake_late,
                Stall::RoundTrip => &self.stalls.round_trip,
            };
            histogram.record(Duration::from_nanos(value));
        }
        self.emit(std::mem::take(&mut ready.events));
        for warning in ready.warnings.drain(..) {
            self.warn(&warning);
        }
    }

    fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
        let _core = self.core.lock();
        self.changed.notify_all();
    }

    /// Hands role events to the event thread, which logs them and runs the callbacks.
    fn emit(&self, events: Vec<Event>) {
        for event in events {
            self.outbox.push(Outgoing::Role(event));
        }
    }

    /// A record for the event thread to log: never logged here, since the caller may be
    /// the lease thread.
    fn report(&self, level: log::Level, message: String) {
        self.outbox.push(Outgoing::Log(level, message));
    }

    fn warn(&self, warning: &Warning) {
        self.report(log::Level::Warn, warning.text(&self.instance_id));
    }

    /// Role events and records the lease's threads dropped because the event thread was
    /// behind (a callback or a logger that blocks).
    pub fn dropped_records(&self) -> u64 {
        self.outbox.dropped()
    }

    fn notice(&self, notice: Notice) {
        if notice == Notice::HandoverRequested {
            if !self.is_primary() {
                return;
            }
            self.report(
                log::Level::Info,
                format!("{}: handover requested: stepping down", self.instance_id),
            );
            // The writes in flight land first.
            let _no_writes_in_flight = self.write_gate.write();
            self.handle(Input::Notice(notice));
        } else {
            self.handle(Input::Notice(notice));
        }
    }

    /// Records are logged and callbacks run here, never on the lease thread, so a slow
    /// logger or callback cannot delay a renewal; no lock of ours is held while they run.
    fn dispatch_events(&self, receiver: mpsc::Receiver<Outgoing>) {
        let mut reported_drops = 0;
        for outgoing in receiver {
            match outgoing {
                Outgoing::Log(level, message) => log::log!(level, "{message}"),
                Outgoing::Role(event) => self.deliver(&event),
            }
            let dropped = self.outbox.dropped();
            if dropped != reported_drops {
                log::warn!(
                    "{}: {} role events or log records of the lease thread were dropped (the \
                     callbacks or the logger are slower than they come)",
                    self.instance_id,
                    dropped - reported_drops
                );
                reported_drops = dropped;
            }
        }
    }

    fn deliver(&self, event: &Event) {
        match event {
            Event::Promoted { epoch } => {
                log::info!("{} is now primary (epoch {epoch})", self.instance_id);
                let callbacks = self.promoted_callbacks.read().clone();
                for callback in callbacks {
                    run_isolated("on_promoted", || callback(*epoch));
                }
            }
            Event::Demoted { reason } => {
                if *reason == Demotion::ShuttingDown {
                    log::info!("{} is now standby: {reason}", self.instance_id);
                } else {
                    log::warn!("{} is now standby: {reason}", self.instance_id);
                }
                let callbacks = self.demoted_callbacks.read().clone();
                for callback in callbacks {
                    run_isolated("on_demoted", || callback(reason.as_str()));
                }
            }
        }
    }
}

/// Proof that this instance held the lease when a write started; the lease cannot be
/// released gracefully while one is alive.
pub(crate) struct Fence<'a> {
    pub token: String,
    lease: &'a Lease,
    _gate: RwLockReadGuard<'a, ()>,
}

impl Fence<'_> {
    /// Passes a fenced write's outcome through; a refusal by Redis (the lease key no longer
    /// carries our token) demotes before this returns and starts a look at the lease.
    pub fn observe<T>(&self, outcome: Result<T>) -> Result<T> {
        if let Err(err) = &outcome {
            if err.kind() == crate::error::ErrorKind::NotPrimary {
                self.lease.write_refused(&self.token);
            }
        }
        outcome
    }
}

/// Runs user code so that a panic in it is logged, not spread to our threads.
pub(crate) fn run_isolated(what: &str, f: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".to_owned());
        log::error!("{what} callback panicked: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_runs_the_machine_on_its_default_periods() {
        let timing = Timing::from_config(&Config::new("defaults"));
        assert_eq!(
            timing.params(),
            Params::from_periods(machine::Periods::FAST_DEFAULT)
        );
        assert_eq!(timing.presence_interval(), PRESENCE_INTERVAL);
        let slow = Timing::from_config(&Config::new("slow").fast_failover(false));
        assert_eq!(slow.renew_interval, Duration::from_secs(10));
        assert_eq!(slow.params().refresh_interval, 10_000_000_000);
    }
}
