//! The primary lease (CONTRACT §2): acquisition with a fencing epoch, renewal with the
//! heartbeat in one round trip, self-demotion on the monotonic clock, the standby watcher
//! (poll + pub/sub release notices), release, and the promoted / demoted callbacks.
//!
//! Safety rests on one inequality: the lease key expires on the server no earlier than
//! `lock_ttl` after the *start* of our last successful renewal, while we stop calling
//! ourselves primary `renew_deadline < lock_ttl` after that same start. Another instance
//! can only take the key after it expired, so the two periods never overlap.
//!
//! Across a Redis failover (Sentinel) the key may be lost, or replaced by an older copy, on
//! the promoted replica. Hence: after any change of master the primary is not primary until
//! it has renewed its token on the new master (and is demoted if the token is gone); with
//! `wait_replicas` > 0 an acquisition or renewal counts only once that many replicas
//! confirmed it (`WAIT`), so the promoted replica holds the key at least as long as we call
//! ourselves primary; with `wait_replicas` = 0 an instance without the lease waits `lock_ttl`
//! after a change of master before taking the lease. The epoch never goes backwards:
//! each acquisition passes the highest epoch this instance has seen, and the script moves
//! the counter past it when the promoted replica missed the last `INCR` (docs/deployment.md).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};
use redis::Connection;

use crate::clock::{millis, monotonic_nanos, now_nanos, utc_now_iso};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::store::{describe, Store, SCRIPTS};

/// Message prefixes on the lease channel.
pub const RELEASED_NOTICE: &str = "released";
pub const HANDOVER_REQUEST: &str = "handover";
/// The demotion reason of a graceful shutdown (logged at info, not as a warning).
pub const SHUTTING_DOWN: &str = "shutting down";

pub type PromotedCallback = Arc<dyn Fn(u64) + Send + Sync>;
pub type DemotedCallback = Arc<dyn Fn(&str) + Send + Sync>;

/// A change of role, delivered to callbacks on the lease's event thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    Promoted { epoch: u64 },
    Demoted { reason: String },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub lock_ttl: Duration,
    pub renew_deadline: Duration,
    pub renew_interval: Duration,
    pub poll_interval: Duration,
    pub heartbeat_ttl: Duration,
    /// Bound on one renewal or acquisition: a renewal slower than the slack between the
    /// renewal period and the deadline could not keep us primary anyway.
    pub lease_command_timeout: Duration,
}

impl Timing {
    pub fn from_config(config: &Config) -> Self {
        let renew_deadline = config.effective_renew_deadline();
        let renew_interval = config.renew_interval();
        Timing {
            lock_ttl: config.lock_ttl,
            renew_deadline,
            renew_interval,
            poll_interval: config.effective_poll_interval(),
            heartbeat_ttl: config.heartbeat_ttl,
            lease_command_timeout: config
                .command_timeout
                .min(renew_deadline - renew_interval)
                .max(Duration::from_millis(1)),
        }
    }
}

#[derive(Default)]
struct Held {
    token: Option<String>,
    epoch: Option<u64>,
}

pub(crate) struct Lease {
    store: Arc<Store>,
    keys: Keys,
    timing: Timing,
    instance_id: String,
    /// Monotonic nanoseconds until which we are primary; 0 when standby. Read without a
    /// lock so `is_primary()` never blocks.
    deadline: AtomicU64,
    held: Mutex<Held>,
    /// Writes hold it shared for their round trip; a graceful release takes it exclusively,
    /// so the lease is given up only after the writes in flight have landed.
    write_gate: RwLock<()>,
    role_changed: Condvar,
    stopping: AtomicBool,
    wake_lock: Mutex<()>,
    wake: Condvar,
    events: Mutex<Option<mpsc::Sender<LeaseEvent>>>,
    promoted_callbacks: RwLock<Vec<PromotedCallback>>,
    demoted_callbacks: RwLock<Vec<DemotedCallback>>,
    /// The Redis master generation on which the lease was last acquired or renewed; while the
    /// store's generation differs, we are not primary.
    confirmed_generation: AtomicU64,
    /// The highest fencing epoch this instance has seen (held or observed).
    highest_epoch: AtomicU64,
    /// The generation a standby last acquired or watched on, and until when it keeps off the
    /// lease after a change of master (`wait_replicas` = 0).
    watched_generation: AtomicU64,
    failover_hold_off: Mutex<Option<Instant>>,
    /// One acquisition at a time (the lease thread's and a caller's `heartbeat()`): the
    /// loser of a race would otherwise report "not primary" while the winner, this same
    /// instance, is still recording the lease it just took.
    acquiring: Mutex<()>,
}

impl Lease {
    pub fn new(store: Arc<Store>, keys: Keys, timing: Timing, instance_id: String) -> Self {
        Lease {
            store,
            keys,
            timing,
            instance_id,
            deadline: AtomicU64::new(0),
            held: Mutex::new(Held::default()),
            write_gate: RwLock::new(()),
            role_changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
            events: Mutex::new(None),
            promoted_callbacks: RwLock::new(Vec::new()),
            demoted_callbacks: RwLock::new(Vec::new()),
            confirmed_generation: AtomicU64::new(0),
            highest_epoch: AtomicU64::new(0),
            watched_generation: AtomicU64::new(0),
            failover_hold_off: Mutex::new(None),
            acquiring: Mutex::new(()),
        }
    }

    /// Local state only: the lease is held, the monotonic deadline has not passed, and it was
    /// confirmed on the current Redis master.
    pub fn is_primary(&self) -> bool {
        self.within_deadline()
            && self.confirmed_generation.load(Ordering::Acquire) == self.store.generation()
    }

    fn within_deadline(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Acquire);
        deadline != 0 && now_nanos() < deadline
    }

    /// Held, but not confirmed on the master we talk to now (it changed).
    fn unconfirmed(&self) -> bool {
        self.confirmed_generation.load(Ordering::Acquire) != self.store.generation()
    }

    /// The highest fencing epoch seen by this instance.
    pub fn highest_epoch(&self) -> u64 {
        self.highest_epoch.load(Ordering::Acquire)
    }

    /// The epoch of the lease we hold, while we are primary.
    pub fn epoch(&self) -> Option<u64> {
        if !self.is_primary() {
            return None;
        }
        self.held.lock().epoch
    }

    /// The token to fence a write with, or `NotPrimary` without touching the network. Keep
    /// the returned value alive until the write's round trip is over.
    pub fn fencing_token(&self) -> Result<Fence<'_>> {
        let gate = self.write_gate.read();
        let held = self.held.lock();
        match &held.token {
            Some(token) if self.is_primary() => Ok(Fence {
                token: token.clone(),
                _gate: gate,
            }),
            _ => Err(Error::not_primary(format!(
                "{} is not the primary of bot {:?}; the write was refused and nothing changed",
                self.instance_id,
                self.keys
                    .lock
                    .trim_start_matches("bot:")
                    .trim_end_matches(":primary_lock")
            ))),
        }
    }

    /// Blocks until this instance is primary, or `timeout` passes; returns whether it is.
    pub fn wait_until_primary(&self, timeout: Option<Duration>) -> bool {
        let give_up = timeout.map(|t| Instant::now() + t);
        let mut held = self.held.lock();
        while !self.is_primary() {
            if self.stopping.load(Ordering::Acquire) {
                return false;
            }
            // Wake at least every poll interval: a stop does not always notify.
            let mut until =
                Instant::now() + self.timing.poll_interval.max(Duration::from_millis(50));
            if let Some(give_up) = give_up {
                if Instant::now() >= give_up {
                    return false;
                }
                until = until.min(give_up);
            }
            self.role_changed.wait_until(&mut held, until);
        }
        true
    }

    pub fn on_promoted(&self, callback: PromotedCallback) {
        self.promoted_callbacks.write().push(callback);
    }

    pub fn on_demoted(&self, callback: DemotedCallback) {
        self.demoted_callbacks.write().push(callback);
    }

    fn new_token(&self) -> String {
        let mut nonce = [0u8; 8];
        // A failing OS random source still leaves tokens distinct per process and time.
        if getrandom::fill(&mut nonce).is_err() {
            nonce = (now_nanos() ^ u64::from(std::process::id())).to_le_bytes();
        }
        let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{hex}", self.instance_id)
    }

    /// One acquisition attempt; on success this instance is primary when it returns.
    pub fn try_acquire(&self, conn: &mut Connection) -> redis::RedisResult<bool> {
        self.try_acquire_at(conn, None)
    }

    /// `generation`: the master generation `conn` belongs to, when known; only then can
    /// the acquisition confirm the lease on a new master.
    fn try_acquire_at(
        &self,
        conn: &mut Connection,
        generation: Option<u64>,
    ) -> redis::RedisResult<bool> {
        let _one_at_a_time = self.acquiring.lock();
        if self.held.lock().token.is_some() {
            return Ok(true);
        }
        if self.stopping.load(Ordering::Acquire) || self.holding_off(generation) {
            return Ok(false);
        }
        let token = self.new_token();
        let started = Instant::now();
        let epoch: Option<i64> = SCRIPTS
            .lease_acquire
            .key(&self.keys.lock)
            .key(&self.keys.epoch)
            .key(&self.keys.heartbeat)
            .key(&self.keys.instances)
            .arg(&token)
            .arg(millis(self.timing.lock_ttl))
            .arg(utc_now_iso())
            .arg(millis(self.timing.heartbeat_ttl))
            .arg(&self.instance_id)
            .arg(self.highest_epoch())
            .invoke(conn)?;
        // Positive: ours, with that epoch; otherwise minus the epoch of the current holder.
        let epoch = match epoch {
            Some(epoch) if epoch > 0 => epoch as u64,
            other => {
                let seen = other.unwrap_or(0).unsigned_abs();
                self.highest_epoch.fetch_max(seen, Ordering::AcqRel);
                return Ok(false);
            }
        };
        self.highest_epoch.fetch_max(epoch, Ordering::AcqRel);
        if !self
            .store
            .lease_replicated(conn, self.command_timeout_of(generation))?
        {
            log::warn!(
                "{} took the lease but fewer than wait_replicas replicas confirmed it in time; \
                 giving it back",
                self.instance_id
            );
            // Quietly: a notice would wake the standbys into the same unconfirmed attempt.
            self.release(conn, &token, "")?;
            return Ok(false);
        }
        {
            let mut held = self.held.lock();
            if self.is_stopping() {
                // Closed while the attempt was in flight: hand the lease straight back.
                drop(held);
                self.release_token(conn, &token)?;
                return Ok(false);
            }
            held.token = Some(token);
            held.epoch = Some(epoch);
            if let Some(generation) = generation {
                self.confirmed_generation
                    .fetch_max(generation, Ordering::AcqRel);
            }
            self.deadline.store(
                monotonic_nanos(started + self.timing.renew_deadline),
                Ordering::Release,
            );
        }
        self.role_changed.notify_all();
        log::info!("{} is now primary (epoch {epoch})", self.instance_id);
        self.emit(LeaseEvent::Promoted { epoch });
        Ok(true)
    }

    /// One renewal attempt. `Ok(false)` means the lease is no longer ours, and we have
    /// demoted ourselves.
    pub fn renew(&self, conn: &mut Connection) -> redis::RedisResult<bool> {
        self.renew_at(conn, None)
    }

    /// `generation`: the master generation `conn` belongs to, when known; only then can a
    /// renewal confirm the lease on a new master.
    fn renew_at(&self, conn: &mut Connection, generation: Option<u64>) -> redis::RedisResult<bool> {
        let Some(token) = self.held.lock().token.clone() else {
            return Ok(false);
        };
        if let Some(generation) = generation {
            // Seen while holding the lease: no hold-off for this change once standby.
            self.watched_generation
                .fetch_max(generation, Ordering::AcqRel);
        }
        let started = Instant::now();
        let renewed: i64 = SCRIPTS
            .lease_renew
            .key(&self.keys.lock)
            .key(&self.keys.heartbeat)
            .key(&self.keys.instances)
            .arg(&token)
            .arg(millis(self.timing.lock_ttl))
            .arg(utc_now_iso())
            .arg(millis(self.timing.heartbeat_ttl))
            .arg(&self.instance_id)
            .invoke(conn)?;
        if renewed == 1 {
            if !self
                .store
                .lease_replicated(conn, self.command_timeout_of(generation))?
            {
                // Not counted: the replica Sentinel may promote could hold an older expiry.
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "the renewal was not confirmed by wait_replicas replicas in time",
                )));
            }
            let held = self.held.lock();
            // Only the renewal of the lease still held may move its deadline, and only forward.
            if held.token.as_deref() == Some(token.as_str())
                && self.deadline.load(Ordering::Acquire) != 0
            {
                self.deadline.fetch_max(
                    monotonic_nanos(started + self.timing.renew_deadline),
                    Ordering::AcqRel,
                );
                if let Some(generation) = generation {
                    if self.confirmed_generation.load(Ordering::Acquire) != generation {
                        log::info!(
                            "{} still holds the lease on the new Redis master",
                            self.instance_id
                        );
                    }
                    self.confirmed_generation
                        .fetch_max(generation, Ordering::AcqRel);
                }
            }
            Ok(true)
        } else {
            let reason = if self.unconfirmed() {
                "the lease was lost in a Redis failover (not on the new master)"
            } else {
                "the lease was taken by another instance"
            };
            self.demote_if_holding(&token, reason);
            Ok(false)
        }
    }

    /// The read timeout `conn` runs with: the lease thread's own connections carry their
    /// generation, the shared connection (`heartbeat()`) does not.
    fn command_timeout_of(&self, generation: Option<u64>) -> Duration {
        match generation {
            Some(_) => self.timing.lease_command_timeout,
            None => self.store.command_timeout(),
        }
    }

    /// After a change of master, an instance without the lease keeps off it for `lock_ttl`
    /// when no replica confirms lease writes (`wait_replicas` = 0): the former primary's key
    /// may not have reached the promoted replica, and that primary calls itself primary
    /// until its renew deadline, which is less than `lock_ttl` after its last renewal on the
    /// former master. (An instance whose token is on the new master keeps it: renewals are
    /// not held off.)
    fn holding_off(&self, generation: Option<u64>) -> bool {
        let now = Instant::now();
        let mut hold_off = self.failover_hold_off.lock();
        if let Some(generation) = generation {
            let watched = self.watched_generation.swap(generation, Ordering::AcqRel);
            if generation > watched && self.store.wait_replicas() == 0 {
                log::warn!(
                    "{}: the Redis master changed; keeping off the lease for lock_ttl ({:?}) \
                     in case the former primary's lease did not reach the new master",
                    self.instance_id,
                    self.timing.lock_ttl
                );
                *hold_off = Some(now + self.timing.lock_ttl);
            }
        }
        match *hold_off {
            Some(until) if now < until => true,
            _ => {
                *hold_off = None;
                false
            }
        }
    }

    /// Gives up the lease (if held) once the writes in flight have landed: standby from
    /// that instant. Returns the token to delete with [`release_token`](Self::release_token);
    /// no connection is held while waiting for the writes, which may need it.
    pub fn step_down(&self, reason: &str) -> Option<String> {
        let _no_writes_in_flight = self.write_gate.write();
        let token = self.held.lock().token.clone()?;
        self.demote_if_holding(&token, reason);
        Some(token)
    }

    /// Deletes the lease key if it still carries `token`, and announces the release so a
    /// standby takes over at once.
    pub fn release_token(&self, conn: &mut Connection, token: &str) -> redis::RedisResult<bool> {
        self.release(conn, token, &self.keys.lease_channel)
    }

    /// Deletes the lease key if it still carries `token`; announces it on `channel` unless
    /// that is empty.
    fn release(
        &self,
        conn: &mut Connection,
        token: &str,
        channel: &str,
    ) -> redis::RedisResult<bool> {
        let released: i64 = SCRIPTS
            .lease_release
            .key(&self.keys.lock)
            .arg(token)
            .arg(channel)
            .arg(format!("{RELEASED_NOTICE} {}", self.instance_id))
            .invoke(conn)?;
        Ok(released == 1)
    }

    fn demote_if_holding(&self, token: &str, reason: &str) -> bool {
        {
            let mut held = self.held.lock();
            if held.token.as_deref() != Some(token) {
                return false;
            }
            self.deadline.store(0, Ordering::Release);
            held.token = None;
            held.epoch = None;
        }
        self.role_changed.notify_all();
        if reason == SHUTTING_DOWN {
            log::info!("{} is now standby: {reason}", self.instance_id);
        } else {
            log::warn!("{} is now standby: {reason}", self.instance_id);
        }
        self.emit(LeaseEvent::Demoted {
            reason: reason.to_owned(),
        });
        true
    }

    fn emit(&self, event: LeaseEvent) {
        if let Some(sender) = self.events.lock().as_ref() {
            let _ = sender.send(event);
        }
    }

    /// Starts the event thread (callbacks) and the lease thread (renewal / watching).
    pub fn start(self: &Arc<Self>) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        let (sender, receiver) = mpsc::channel();
        *self.events.lock() = Some(sender);
        let for_events = Arc::clone(self);
        let events = std::thread::Builder::new()
            .name("quantshift-events".into())
            .spawn(move || for_events.dispatch_events(receiver))?;
        let for_lease = Arc::clone(self);
        let lease = std::thread::Builder::new()
            .name("quantshift-lease".into())
            .spawn(move || for_lease.run())?;
        Ok(vec![lease, events])
    }

    /// Stops the background threads; they exit within one poll interval or command timeout.
    pub fn stop(&self) {
        {
            // Under the lock, so an acquisition in flight sees it before promoting us.
            let _held = self.held.lock();
            self.stopping.store(true, Ordering::Release);
        }
        {
            let _guard = self.wake_lock.lock();
            self.wake.notify_all();
        }
        self.role_changed.notify_all();
        // Closing the channel ends the event thread once queued callbacks ran.
        self.events.lock().take();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Callbacks run here, never on the lease thread, so a slow callback cannot delay a
    /// renewal; no lock of ours is held while they run.
    fn dispatch_events(&self, receiver: mpsc::Receiver<LeaseEvent>) {
        for event in receiver {
            match &event {
                LeaseEvent::Promoted { epoch } => {
                    let callbacks = self.promoted_callbacks.read().clone();
                    for callback in callbacks {
                        run_isolated("on_promoted", || callback(*epoch));
                    }
                }
                LeaseEvent::Demoted { reason } => {
                    let callbacks = self.demoted_callbacks.read().clone();
                    for callback in callbacks {
                        run_isolated("on_demoted", || callback(reason));
                    }
                }
            }
        }
    }

    fn sleep(&self, duration: Duration) {
        let mut guard = self.wake_lock.lock();
        if !self.is_stopping() {
            self.wake.wait_for(&mut guard, duration);
        }
    }

    fn handover_grace(&self) -> Duration {
        self.timing
            .poll_interval
            .clamp(Duration::from_millis(50), self.timing.lock_ttl / 2)
    }

    fn run(&self) {
        let mut lease_conn: Option<(u64, Connection)> = None;
        let mut seen_generation = self.store.generation();
        let mut next_renewal = Instant::now();
        let mut failing = false;
        // After handing the lease over on request, leave the standby (woken by the release
        // notice within a millisecond or so) one poll interval to take it. If nobody has by
        // then, this instance competes again like any standby, so a handover with no live
        // standby costs at most that interval, and a hand-back soon after works.
        let mut hold_off_until: Option<Instant> = None;
        while !self.is_stopping() {
            // The subscription lives in this frame; a broken one is rebuilt on the next pass.
            let subscribed_generation = self.store.generation();
            let mut subscriber = self
                .store
                .connect_with_timeout(self.timing.poll_interval)
                .ok();
            let mut pubsub = subscriber.as_mut().and_then(|conn| {
                let mut pubsub = conn.as_pubsub();
                pubsub.subscribe(&self.keys.lease_channel).ok()?;
                Some(pubsub)
            });
            while !self.is_stopping() {
                let now = Instant::now();
                let holding = self.held.lock().token.clone();
                let generation = self.store.generation();
                if generation != seen_generation {
                    // A new Redis master: re-check the lease there now.
                    seen_generation = generation;
                    next_renewal = now;
                }
                let wait = if let Some(token) = holding {
                    if !self.within_deadline() {
                        // Deadline passed without a renewal (Redis slow or unreachable, or this
                        // process was frozen): standby now, and free the key if it is still ours.
                        if self.demote_if_holding(
                            &token,
                            "no renewal succeeded before the renew deadline",
                        ) {
                            if let Some((_, conn)) = lease_conn.as_mut() {
                                let _ = self.release_token(conn, &token);
                            }
                        }
                        continue;
                    }
                    if now >= next_renewal {
                        match self.with_lease_conn(&mut lease_conn, |lease, conn, generation| {
                            lease.renew_at(conn, Some(generation))
                        }) {
                            Ok(_) => {
                                failing = false;
                                next_renewal = now + self.timing.renew_interval;
                            }
                            Err(err) => {
                                if !failing {
                                    log::warn!(
                                        "lease renewal failed, retrying until the deadline: {err}"
                                    );
                                }
                                failing = true;
                                next_renewal = Instant::now() + self.timing.poll_interval;
                            }
                        }
                        continue;
                    }
                    let deadline_in = Duration::from_nanos(
                        self.deadline
                            .load(Ordering::Acquire)
                            .saturating_sub(now_nanos()),
                    );
                    (next_renewal - now).min(deadline_in)
                } else {
                    if hold_off_until.is_some_and(|until| now < until) {
                        self.timing.poll_interval
                    } else {
                        hold_off_until = None;
                        match self.with_lease_conn(&mut lease_conn, |lease, conn, generation| {
                            lease.try_acquire_at(conn, Some(generation))
                        }) {
                            Ok(true) => {
                                failing = false;
                                next_renewal = Instant::now() + self.timing.renew_interval;
                                continue;
                            }
                            Ok(false) => failing = false,
                            Err(err) => {
                                if !failing {
                                    log::warn!(
                                        "standby cannot reach Redis to watch the lease: {err}"
                                    );
                                }
                                failing = true;
                            }
                        }
                        self.timing.poll_interval
                    }
                };
                // Wait for a notice on the lease channel, at most one poll interval so that a
                // stop is seen soon even when Redis is unreachable.
                let wait = wait
                    .min(self.timing.poll_interval)
                    .max(Duration::from_millis(1));
                let Some(pubsub) = pubsub.as_mut() else {
                    self.sleep(wait);
                    break;
                };
                let _ = pubsub.set_read_timeout(Some(wait));
                match pubsub.get_message() {
                    Ok(message) => {
                        let payload: String = message.get_payload().unwrap_or_default();
                        if payload.starts_with(HANDOVER_REQUEST) && self.is_primary() {
                            log::info!("handover requested ({payload}): stepping down");
                            let released =
                                self.step_down("handover requested by an operator")
                                    .map(|token| {
                                        self.with_lease_conn(&mut lease_conn, |lease, conn, _| {
                                            lease.release_token(conn, &token)
                                        })
                                    });
                            if let Some(Err(err)) = released {
                                log::warn!("could not release the lease for the handover: {err}");
                            }
                            hold_off_until = Some(Instant::now() + self.handover_grace());
                        }
                    }
                    // Listen on the new master after a change of master.
                    Err(err) if err.is_timeout() => {
                        if self.store.generation() != subscribed_generation {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        // Stopping: whoever stops us releases the lease; a frozen thread must not renew it.
    }

    /// Runs `op` on the lease's own connection with the master generation it belongs to;
    /// a connection from before a change of master is replaced first.
    fn with_lease_conn<T>(
        &self,
        slot: &mut Option<(u64, Connection)>,
        op: impl FnOnce(&Self, &mut Connection, u64) -> redis::RedisResult<T>,
    ) -> Result<T> {
        if slot
            .as_ref()
            .is_some_and(|(generation, _)| *generation != self.store.generation())
        {
            *slot = None;
        }
        let (generation, conn) = match slot {
            Some((generation, conn)) => (*generation, conn),
            None => {
                let (generation, conn) = slot.insert(
                    self.store
                        .connect_tagged(self.timing.lease_command_timeout)?,
                );
                (*generation, conn)
            }
        };
        op(self, conn, generation).map_err(|err| {
            *slot = None;
            Error::unavailable(format!("lease round trip failed: {}", describe(&err)))
        })
    }
}

/// Proof that this instance held the lease when a write started; the lease cannot be
/// released gracefully while one is alive.
pub(crate) struct Fence<'a> {
    pub token: String,
    _gate: RwLockReadGuard<'a, ()>,
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
