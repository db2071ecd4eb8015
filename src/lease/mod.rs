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
//!
//! A lease can also vanish without expiring (a restart without persistence, an old snapshot, a
//! flush, an eviction). A missing key is evidence of expiry only if nothing else could remove
//! it, so the lease record (`bot:{bot}:lease_record`, no TTL) keeps the server time of each
//! renewal and the server run it was written on: an instance that did not hold the lease takes
//! a free one only when the record says the last renewal is at least `lock_ttl` old on this
//! server run; where the record is gone or from an earlier run, everyone holds off `lock_ttl`
//! from when the loss was first seen (the script leaves a marker, so new instances do too). An
//! instance that has seen no record, holder or epoch has seen no loss: on an empty Redis the
//! first instance is primary at once. The holder itself may take a vanished lease back at
//! once while inside its deadline: nobody else can have taken it by expiry or after a hold-off
//! before then, nor on seen death unless its liveness connection broke. After such a break it
//! may not take a vanished lease back on the same server run (someone may lead there now);
//! on another run (a restart, a change of master) it may: every lease taken on seen death is
//! itself vouched for, so its holder demoted the moment that server went away. Left open: a
//! brand-new instance that is the first to meet a Redis that just lost its data, while an old
//! holder with fast failover off is still inside its deadline (docs/failover.md).
//!
//! Seen death (fast failover) is in [`liveness`].

mod liveness;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};
use redis::Connection;

use self::liveness::{Liveness, LIVENESS_CHECK_INTERVAL, SEEN_DEATH_GRACE};
use crate::clock::{millis, monotonic_nanos, now_nanos, utc_now_iso};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::store::{describe, Store, SCRIPTS};

/// The longest pause between two attempts to register a liveness connection.
const LIVENESS_RETRY_CAP: Duration = Duration::from_millis(250);
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
    pub fast_failover: bool,
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
            fast_failover: config.fast_failover,
        }
    }
}

#[derive(Default)]
struct Held {
    token: Option<String>,
    epoch: Option<u64>,
    /// The server run (`run_id`) of the last successful acquisition or renewal.
    run_id: String,
    /// The server run on which the connection vouching for our lease broke: someone may have
    /// taken the lease over there on seen death, so a vanished lease is not taken back on it.
    break_run: Option<String>,
    /// Set while suspended (standby, token kept to reclaim): monotonic nanoseconds until which
    /// the token may be reclaimed or the vanished lease taken back.
    suspended_until: Option<u64>,
}

/// The outcome of one acquisition script call.
enum Attempt {
    Acquired,
    /// Held by `holder`; `liveness`: 1 alive, 0 seen dead on this server run, -1 unknown.
    Held {
        holder: String,
        liveness: i64,
        channel: String,
    },
    /// Free, but nobody may take it for this long yet (it vanished without expiring).
    HoldOff(Duration),
    /// Not attempted (stopping, or a change of master is being waited out).
    Skipped,
}

/// A holder seen without liveness, and since when.
struct SeenDead {
    holder: String,
    channel: String,
    since: Instant,
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
    liveness: Liveness,
    /// The liveness registration that vouches for the lease we hold (0: none).
    vouched_serial: AtomicU64,
    /// This instance has seen this bot's lease (a holder, a record or an epoch): a missing
    /// record is a loss, not a first start.
    seen_lease: AtomicBool,
    /// Something happened that wants the lease thread to look at the lease now.
    kicked: AtomicBool,
    /// When an acquisition attempt last recorded us among the live instances.
    presence_recorded: Mutex<Option<Instant>>,
    /// The lease thread has made its first attempt to subscribe to the lease channel.
    listening: (Mutex<bool>, Condvar),
}

impl Lease {
    pub fn new(store: Arc<Store>, keys: Keys, timing: Timing, instance_id: String) -> Self {
        let liveness_prefix = keys.liveness_prefix.clone();
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
            liveness: Liveness::new(liveness_prefix, timing.fast_failover, timing.renew_deadline),
            vouched_serial: AtomicU64::new(0),
            seen_lease: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            presence_recorded: Mutex::new(None),
            listening: (Mutex::new(false), Condvar::new()),
        }
    }

    /// Local state only: the lease is held, the monotonic deadline has not passed, and it was
    /// confirmed on the current Redis master.
    pub fn is_primary(&self) -> bool {
        // The liveness poll first and the clock last: a process stopped (SIGSTOP) on its way
        // out of the poll system call must not come back with a deadline checked before it
        // stopped.
        !self.vouching_lost()
            && self.confirmed_generation.load(Ordering::Acquire) == self.store.generation()
            && self.within_deadline()
    }

    /// The connection that vouches for our lease was closed (the close may already sit in
    /// our socket buffer while no thread of ours has run yet: a frozen process).
    fn vouching_lost(&self) -> bool {
        let serial = self.vouched_serial.load(Ordering::Acquire);
        serial != 0 && self.liveness.lost(serial)
    }

    /// Registers the liveness connection (fast failover) before the first acquisition, so the
    /// first lease is vouched for; why fast failover is off, when the server's settings keep
    /// it off.
    pub fn register_liveness(&self) -> Option<String> {
        if self.liveness.wanted() && !self.liveness.registered() {
            if let Err(err) = self
                .liveness
                .register(&self.store, self.timing.lease_command_timeout)
            {
                log::debug!("liveness connection not registered yet: {err}");
            }
        }
        self.liveness.warning()
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
                lease: self,
                _gate: gate,
            }),
            // Standby only because Redis closed our connection: say what happened.
            Some(_)
                if (held.break_run.is_some() && held.suspended_until.is_some())
                    || self.vouching_lost() =>
            {
                Err(Error::unavailable(format!(
                    "Redis closed the connection of {} (restarted, or the connection was \
                     killed); it is standby until it has the lease again, and the write was \
                     refused and nothing changed",
                    self.instance_id
                )))
            }
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
        let attempt = self.try_acquire_at(conn, None, None)?;
        Ok(matches!(attempt, Attempt::Acquired) || self.held.lock().token.is_some())
    }

    /// `generation`: the master generation `conn` belongs to, when known; only then can
    /// the acquisition confirm the lease on a new master. `dead`: a holder seen without
    /// liveness for at least the grace, to take the lease from.
    fn try_acquire_at(
        &self,
        conn: &mut Connection,
        generation: Option<u64>,
        dead: Option<(&str, &str)>,
    ) -> redis::RedisResult<Attempt> {
        let _one_at_a_time = self.acquiring.lock();
        if self.held.lock().token.is_some() {
            return Ok(Attempt::Acquired);
        }
        if self.stopping.load(Ordering::Acquire) || self.holding_off(generation) {
            return Ok(Attempt::Skipped);
        }
        self.acquire_script(conn, generation, None, dead)
    }

    /// Runs the acquisition script; `take_back`: our own token of a lease that vanished
    /// while we held it, to take it back at once, unless on `break_run` (see [`Held`]).
    fn acquire_script(
        &self,
        conn: &mut Connection,
        generation: Option<u64>,
        take_back: Option<(&str, Option<&str>)>,
        dead: Option<(&str, &str)>,
    ) -> redis::RedisResult<Attempt> {
        let token = self.new_token();
        let liveness = self.live_registration();
        let started = Instant::now();
        let reply: Vec<redis::Value> = SCRIPTS
            .lease_acquire
            .key(&self.keys.lock)
            .key(&self.keys.epoch)
            .key(&self.keys.heartbeat)
            .key(&self.keys.instances)
            .key(&self.keys.lease_record)
            .arg(&token)
            .arg(millis(self.timing.lock_ttl))
            .arg(utc_now_iso())
            .arg(millis(self.timing.heartbeat_ttl))
            .arg(&self.instance_id)
            .arg(self.highest_epoch())
            .arg(
                liveness
                    .as_ref()
                    .map_or("", |(_, channel)| channel.as_str()),
            )
            .arg(take_back.map_or("", |(token, _)| token))
            .arg(if self.seen_lease.load(Ordering::Acquire) {
                "1"
            } else {
                "0"
            })
            .arg(dead.map_or("", |(holder, _)| holder))
            .arg(dead.map_or("", |(_, channel)| channel))
            .arg(take_back.and_then(|(_, run)| run).unwrap_or(""))
            .arg(if self.presence_due() { "1" } else { "0" })
            .invoke(conn)?;
        let reply = AcquireReply::parse(&reply)?;
        self.seen_lease.store(true, Ordering::Release);
        self.highest_epoch.fetch_max(reply.epoch, Ordering::AcqRel);
        match reply.code {
            1 => {}
            0 => {
                return Ok(Attempt::Held {
                    holder: reply.holder,
                    liveness: reply.liveness,
                    channel: reply.channel,
                })
            }
            _ => return Ok(Attempt::HoldOff(Duration::from_millis(reply.wait_ms))),
        }
        let epoch = reply.epoch;
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
            return Ok(Attempt::Skipped);
        }
        {
            let mut held = self.held.lock();
            if self.is_stopping() {
                // Closed while the attempt was in flight: hand the lease straight back.
                drop(held);
                self.release_token(conn, &token)?;
                return Ok(Attempt::Skipped);
            }
            *held = Held {
                token: Some(token),
                epoch: Some(epoch),
                run_id: reply.run_id,
                break_run: None,
                suspended_until: None,
            };
            self.vouched_serial.store(
                match (&liveness, reply.recorded) {
                    (Some((serial, _)), true) => *serial,
                    _ => 0,
                },
                Ordering::Release,
            );
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
        match (take_back, dead) {
            (Some(_), _) => log::warn!(
                "{} took back the lease that vanished while it held it (epoch {epoch})",
                self.instance_id
            ),
            (_, Some((holder, _))) => log::warn!(
                "{} is now primary (epoch {epoch}): Redis saw the connection of the former \
                 holder {holder} close",
                self.instance_id
            ),
            _ => log::info!("{} is now primary (epoch {epoch})", self.instance_id),
        }
        self.emit(LeaseEvent::Promoted { epoch });
        Ok(Attempt::Acquired)
    }

    /// Whether this attempt should record us among the live instances (once per poll
    /// interval; renewals always do).
    fn presence_due(&self) -> bool {
        let mut last = self.presence_recorded.lock();
        let due = last.is_none_or(|at| at.elapsed() >= self.timing.poll_interval);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Our liveness registration, while its connection is open.
    fn live_registration(&self) -> Option<(u64, String)> {
        self.liveness
            .current()
            .filter(|(serial, _)| !self.liveness.lost(*serial))
    }

    /// One renewal attempt. `Ok(false)` means the lease is no longer ours, and we have
    /// demoted ourselves.
    pub fn renew(&self, conn: &mut Connection) -> redis::RedisResult<bool> {
        self.renew_at(conn, None)
    }

    /// `generation`: the master generation `conn` belongs to, when known; only then can a
    /// renewal confirm the lease on a new master. A suspended lease is reclaimed here.
    fn renew_at(&self, conn: &mut Connection, generation: Option<u64>) -> redis::RedisResult<bool> {
        let Some(token) = self.held.lock().token.clone() else {
            return Ok(false);
        };
        if self.vouching_lost() {
            // It broke while the registration was being recorded, after the liveness thread
            // looked.
            let serial = self.vouched_serial.load(Ordering::Acquire);
            self.liveness_broke(serial);
        }
        if let Some(generation) = generation {
            // Seen while holding the lease: no hold-off for this change once standby.
            self.watched_generation
                .fetch_max(generation, Ordering::AcqRel);
        }
        let liveness = self.live_registration();
        let started = Instant::now();
        let reply: Vec<redis::Value> = SCRIPTS
            .lease_renew
            .key(&self.keys.lock)
            .key(&self.keys.heartbeat)
            .key(&self.keys.instances)
            .key(&self.keys.lease_record)
            .arg(&token)
            .arg(millis(self.timing.lock_ttl))
            .arg(utc_now_iso())
            .arg(millis(self.timing.heartbeat_ttl))
            .arg(&self.instance_id)
            .arg(
                liveness
                    .as_ref()
                    .map_or("", |(_, channel)| channel.as_str()),
            )
            .invoke(conn)?;
        let (renewed, flag, server_run) = parse_renew_reply(&reply)?;
        if !renewed {
            let reason = if self.unconfirmed() {
                "the lease was lost in a Redis failover (not on the new master)"
            } else if flag {
                "the lease was taken by another instance"
            } else {
                "the lease key is gone (Redis lost it: a restart without persistence, a flush \
                 or an eviction)"
            };
            let take_back = if flag {
                None
            } else {
                self.may_take_back(&token)
            };
            self.demote_if_holding(&token, reason);
            if let Some(break_run) = take_back {
                log::warn!("{}: taking back the lease that vanished", self.instance_id);
                let _one_at_a_time = self.acquiring.lock();
                if self.held.lock().token.is_none() && !self.is_stopping() {
                    self.acquire_script(
                        conn,
                        generation,
                        Some((&token, break_run.as_deref())),
                        None,
                    )?;
                }
            }
            return Ok(false);
        }
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
        let mut reclaimed = None;
        {
            let mut held = self.held.lock();
            // Only the renewal of the lease still held may move its deadline, and only forward.
            if held.token.as_deref() != Some(token.as_str()) {
                return Ok(false);
            }
            let deadline = monotonic_nanos(started + self.timing.renew_deadline);
            if held.suspended_until.take().is_some() {
                self.deadline.store(deadline, Ordering::Release);
                reclaimed = held.epoch;
            } else if self.deadline.load(Ordering::Acquire) != 0 {
                self.deadline.fetch_max(deadline, Ordering::AcqRel);
            } else {
                return Ok(false);
            }
            held.run_id = server_run;
            self.vouched_serial.store(
                match (&liveness, flag) {
                    (Some((serial, _)), true) => *serial,
                    _ => 0,
                },
                Ordering::Release,
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
        if let Some(epoch) = reclaimed {
            self.role_changed.notify_all();
            log::info!("{} is primary again (epoch {epoch} kept)", self.instance_id);
            self.emit(LeaseEvent::Promoted { epoch });
        }
        Ok(true)
    }

    /// Whether a lease that vanished while we held `token` may be taken back now: `Some` with
    /// the server run it may not be taken back on, if any.
    fn may_take_back(&self, token: &str) -> Option<Option<String>> {
        let held = self.held.lock();
        if held.token.as_deref() != Some(token) {
            return None;
        }
        let until = held
            .suspended_until
            .unwrap_or_else(|| self.deadline.load(Ordering::Acquire));
        (now_nanos() < until).then(|| held.break_run.clone())
    }

    /// A fenced write was refused by Redis although we thought we held the lease: standby at
    /// once (the token is kept to take a vanished lease back), and look at the lease now.
    pub fn write_refused(&self, token: &str) {
        if self.suspend(
            token,
            "a fenced write was refused: the lease is no longer ours",
        ) {
            self.kick();
        }
    }

    /// Standby now, keeping the token until the current deadline to reclaim it.
    fn suspend(&self, token: &str, reason: &str) -> bool {
        {
            let mut held = self.held.lock();
            if held.token.as_deref() != Some(token) || held.suspended_until.is_some() {
                return false;
            }
            let deadline = self.deadline.swap(0, Ordering::AcqRel);
            if deadline == 0 {
                return false;
            }
            held.suspended_until = Some(deadline);
        }
        self.role_changed.notify_all();
        log::warn!("{} is now standby: {reason}", self.instance_id);
        self.emit(LeaseEvent::Demoted {
            reason: reason.to_owned(),
        });
        true
    }

    /// The liveness connection registered as `serial` broke. If it vouched for our lease we
    /// are standby from now on, keeping the token to reclaim it.
    fn liveness_broke(&self, serial: u64) {
        if serial == 0
            || self
                .vouched_serial
                .compare_exchange(serial, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let token = {
            let mut held = self.held.lock();
            held.break_run = Some(held.run_id.clone());
            held.token.clone()
        };
        if let Some(token) = token {
            self.suspend(
                &token,
                "the connection that vouches for this primary to Redis was closed",
            );
        }
        self.kick();
    }

    fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
        let _guard = self.wake_lock.lock();
        self.wake.notify_all();
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
            .key(&self.keys.lease_record)
            .arg(token)
            .arg(channel)
            .arg(format!("{RELEASED_NOTICE} {}", self.instance_id))
            .invoke(conn)?;
        Ok(released == 1)
    }

    fn demote_if_holding(&self, token: &str, reason: &str) -> bool {
        let was_active = {
            let mut held = self.held.lock();
            if held.token.as_deref() != Some(token) {
                return false;
            }
            let active = held.suspended_until.is_none();
            self.deadline.store(0, Ordering::Release);
            self.vouched_serial.store(0, Ordering::Release);
            *held = Held::default();
            active
        };
        self.role_changed.notify_all();
        if !was_active {
            // Standby already (suspended); the token we kept is given up.
            log::info!("{} gave up its lease: {reason}", self.instance_id);
            return true;
        }
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
        let mut threads = vec![events];
        if self.liveness.wanted() {
            self.register_liveness();
            let for_liveness = Arc::clone(self);
            threads.push(
                std::thread::Builder::new()
                    .name("quantshift-liveness".into())
                    .spawn(move || for_liveness.watch_liveness())?,
            );
        }
        let for_lease = Arc::clone(self);
        threads.insert(
            0,
            std::thread::Builder::new()
                .name("quantshift-lease".into())
                .spawn(move || for_lease.run())?,
        );
        Ok(threads)
    }

    /// Waits (bounded) until the lease thread has tried to subscribe to the lease channel, so
    /// that release notices and handover requests reach an instance as soon as it is built.
    pub fn wait_listening(&self, timeout: Duration) {
        let (listening, changed) = &self.listening;
        let give_up = Instant::now() + timeout;
        let mut done = listening.lock();
        while !*done && Instant::now() < give_up {
            changed.wait_until(&mut done, give_up);
        }
    }

    /// The liveness thread: keeps a liveness connection registered on the current master and
    /// reacts the instant it breaks.
    fn watch_liveness(&self) {
        let mut retry = Duration::from_millis(50);
        while !self.is_stopping() {
            let generation = self.store.generation();
            // A registration on a former master never vouches (we are unconfirmed there).
            self.liveness
                .retire_if_generation_before(generation, self.timing.lock_ttl);
            if !self.liveness.registered() {
                match self
                    .liveness
                    .register(&self.store, self.timing.lease_command_timeout)
                {
                    Ok(true) => {
                        retry = Duration::from_millis(50);
                        // Record the new channel with a renewal now, if we hold the lease.
                        self.kick();
                        continue;
                    }
                    Ok(false) | Err(_) => {
                        self.sleep(retry);
                        // Capped as the lease thread's reconnections are: after a restart of
                        // Redis, a holder is vouched for again (and fast failover possible)
                        // within about this much of Redis answering.
                        retry = (retry * 2).min(LIVENESS_RETRY_CAP.min(self.timing.poll_interval));
                        if self.liveness.warning().is_some() {
                            // The server's settings keep the fast path off: look again later.
                            self.sleep(self.timing.lock_ttl);
                        }
                        continue;
                    }
                }
            }
            if let Some(serial) = self.liveness.watch() {
                self.liveness_broke(serial);
            }
        }
        self.liveness.drop_registration();
    }

    /// Stops the background threads; they exit within one poll interval or command timeout.
    pub fn stop(&self) {
        {
            // Under the lock, so an acquisition in flight sees it before promoting us.
            let _held = self.held.lock();
            self.stopping.store(true, Ordering::Release);
        }
        self.liveness.wake();
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
        let mut seen_dead: Option<SeenDead> = None;
        // While Redis cannot be reached, look again this often (a restart is noticed soon).
        let reconnect_every = self.timing.poll_interval.min(Duration::from_millis(250));
        let mut reconnections = self.store.reconnections();
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
            // A new subscription after a broken one is a reconnection: look at the lease now.
            next_renewal = next_renewal.min(Instant::now());
            {
                let (listening, changed) = &self.listening;
                *listening.lock() = true;
                changed.notify_all();
            }
            while !self.is_stopping() {
                let now = Instant::now();
                // The shared connection was opened again after an error: whatever broke it
                // may have touched the lease too (a restart, a flush), so look now.
                let reconnected = self.store.reconnections();
                if reconnected != reconnections {
                    reconnections = reconnected;
                    self.kicked.store(true, Ordering::Release);
                }
                if self.kicked.swap(false, Ordering::AcqRel) {
                    next_renewal = now;
                    hold_off_until = None;
                }
                let (holding, suspended) = {
                    let held = self.held.lock();
                    (held.token.clone(), held.suspended_until)
                };
                let generation = self.store.generation();
                if generation != seen_generation {
                    // A new Redis master: re-check the lease there now.
                    seen_generation = generation;
                    next_renewal = now;
                }
                let wait = if let Some(token) = holding {
                    if let Some(until) = suspended {
                        if now_nanos() >= until {
                            if self.demote_if_holding(
                                &token,
                                "the lease could not be reclaimed before its deadline",
                            ) {
                                if let Some((_, conn)) = lease_conn.as_mut() {
                                    let _ = self.release_token(conn, &token);
                                }
                            }
                            continue;
                        }
                    } else if !self.within_deadline() {
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
                                next_renewal = Instant::now() + reconnect_every;
                            }
                        }
                        continue;
                    }
                    if suspended.is_some() {
                        // Reclaiming: look again soon.
                        next_renewal = next_renewal.min(now + LIVENESS_CHECK_INTERVAL);
                    }
                    let deadline_in = Duration::from_nanos(
                        self.deadline
                            .load(Ordering::Acquire)
                            .saturating_sub(now_nanos()),
                    );
                    let until_renewal = next_renewal.saturating_duration_since(now);
                    if suspended.is_some() {
                        until_renewal
                    } else {
                        until_renewal.min(deadline_in)
                    }
                } else if hold_off_until.is_some_and(|until| now < until) {
                    self.timing.poll_interval
                } else {
                    hold_off_until = None;
                    let dead = seen_dead
                        .as_ref()
                        .filter(|seen| now >= seen.since + SEEN_DEATH_GRACE)
                        .filter(|_| self.live_registration().is_some())
                        .map(|seen| (seen.holder.clone(), seen.channel.clone()));
                    let attempt =
                        self.with_lease_conn(&mut lease_conn, |lease, conn, generation| {
                            lease.try_acquire_at(
                                conn,
                                Some(generation),
                                dead.as_ref().map(|(h, c)| (h.as_str(), c.as_str())),
                            )
                        });
                    match attempt {
                        Ok(Attempt::Acquired) => {
                            failing = false;
                            seen_dead = None;
                            next_renewal = Instant::now() + self.timing.renew_interval;
                            continue;
                        }
                        Ok(Attempt::Held {
                            holder,
                            liveness,
                            channel,
                        }) => {
                            failing = false;
                            self.next_look(&mut seen_dead, holder, liveness, channel)
                        }
                        Ok(Attempt::HoldOff(wait)) => {
                            failing = false;
                            seen_dead = None;
                            wait.max(Duration::from_millis(1))
                        }
                        Ok(Attempt::Skipped) => {
                            failing = false;
                            self.timing.poll_interval
                        }
                        Err(err) => {
                            if !failing {
                                log::warn!("standby cannot reach Redis to watch the lease: {err}");
                            }
                            failing = true;
                            seen_dead = None;
                            reconnect_every
                        }
                    }
                };
                // Wait for a notice on the lease channel, at most one poll interval so that a
                // stop is seen soon even when Redis is unreachable, and at most the liveness
                // check interval so that a kick (a refused write, a liveness break) is acted on.
                let wait = wait
                    .min(self.timing.poll_interval)
                    .min(LIVENESS_CHECK_INTERVAL)
                    .max(Duration::from_millis(1));
                let Some(pubsub) = pubsub.as_mut() else {
                    self.sleep(wait.min(reconnect_every));
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
                        } else if payload.starts_with(RELEASED_NOTICE) {
                            seen_dead = None;
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

    /// How long a standby waits before its next look at a lease held by `holder`, and which
    /// holder it has seen without liveness since when.
    fn next_look(
        &self,
        seen_dead: &mut Option<SeenDead>,
        holder: String,
        liveness: i64,
        channel: String,
    ) -> Duration {
        let fast = self.liveness.wanted();
        match liveness {
            1 if fast => {
                *seen_dead = None;
                LIVENESS_CHECK_INTERVAL
            }
            0 if fast => {
                let now = Instant::now();
                match seen_dead {
                    Some(seen) if seen.holder == holder && seen.channel == channel => {
                        (seen.since + SEEN_DEATH_GRACE).saturating_duration_since(now)
                    }
                    _ => {
                        log::info!(
                            "{}: Redis no longer has the connection of the primary {holder}; \
                             taking over in {:?} unless it comes back",
                            self.instance_id,
                            SEEN_DEATH_GRACE
                        );
                        *seen_dead = Some(SeenDead {
                            holder,
                            channel,
                            since: now,
                        });
                        SEEN_DEATH_GRACE
                    }
                }
            }
            _ => {
                *seen_dead = None;
                self.timing.poll_interval
            }
        }
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
    lease: &'a Lease,
    _gate: RwLockReadGuard<'a, ()>,
}

impl Fence<'_> {
    /// Passes a fenced write's outcome through; a refusal by Redis (the lease key no longer
    /// carries our token) demotes at once and starts a look at the lease.
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

/// The acquisition script's reply (src/scripts/lease_acquire.lua).
struct AcquireReply {
    code: i64,
    epoch: u64,
    holder: String,
    liveness: i64,
    channel: String,
    wait_ms: u64,
    recorded: bool,
    run_id: String,
}

impl AcquireReply {
    fn parse(reply: &[redis::Value]) -> redis::RedisResult<Self> {
        let int = |i: usize| -> redis::RedisResult<i64> {
            match reply.get(i) {
                Some(value) => Ok(redis::from_redis_value_ref::<i64>(value)?),
                None => Ok(0),
            }
        };
        let text = |i: usize| -> redis::RedisResult<String> {
            match reply.get(i) {
                Some(value) => Ok(redis::from_redis_value_ref::<String>(value)?),
                None => Ok(String::new()),
            }
        };
        if reply.len() < 7 {
            return Err(unexpected_reply("lease acquisition"));
        }
        let code = int(0)?;
        let last = text(6)?;
        let (channel, run_id) = if code == 0 {
            (last, String::new())
        } else {
            (String::new(), last)
        };
        Ok(AcquireReply {
            code,
            epoch: int(1)?.unsigned_abs(),
            holder: text(2)?,
            liveness: int(3)?,
            wait_ms: int(4)?.max(0).unsigned_abs(),
            recorded: int(5)? == 1,
            run_id,
            channel,
        })
    }
}

/// The renewal script's reply: (renewed, recorded-or-held-by-another, server run id).
fn parse_renew_reply(reply: &[redis::Value]) -> redis::RedisResult<(bool, bool, String)> {
    let [code, flag, run_id] = reply else {
        return Err(unexpected_reply("lease renewal"));
    };
    Ok((
        redis::from_redis_value_ref::<i64>(code)? == 1,
        redis::from_redis_value_ref::<i64>(flag)? == 1,
        redis::from_redis_value_ref::<String>(run_id)?,
    ))
}

fn unexpected_reply(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "unexpected reply from a lease script",
        what.to_owned(),
    ))
}
