//! The lease's decisions as a pure state machine: time, replies, notices and refusals go
//! in ([`Machine::handle`]); role events, warnings, the view that `is_primary()` reads, a
//! caller's renewal or a token to release come out ([`Ready`]). The lease thread's next
//! command and wake-up are asked for only by [`crate::driver`], which wraps the machine and
//! is what the lease thread and the simulator run.
//!
//! The safety argument it implements is at the top of `src/lease/mod.rs` of quantshift-core.
//!
//! # A late holder
//!
//! A holder whose deadline passed before a renewal succeeded (the host stalled it) is not
//! primary from that instant. If the lease thread's connection has been open since before its
//! last successful renewal started, it renews the same token at once: data brought back from
//! the past closes every connection (argument 5), so on that connection a renewal that
//! succeeds proves nobody took the lease meanwhile (a take replaces the token, and tokens are
//! never reused), and the holder is primary again until `D` after that renewal's start
//! (argument 1) with the same epoch: a stall costs the stall, not a failover. Any other
//! outcome, or a broken connection, retires the token as before.

use std::collections::HashMap;

mod interface;
mod timing;

pub use self::interface::{Demotion, Event, Input, Notice, Ready, Warning};
use self::timing::MILLI;
pub use self::timing::{
    takeover_wait, Params, Periods, DRIFT_PPM, PRESENCE_INTERVAL, PRESENCE_LIFETIMES,
    TAKEOVER_MARGIN,
};
use crate::protocol::{Command, Expect, Nanos, Record, Reply};
use crate::shared::View;

#[derive(Debug, Clone)]
struct Holding {
    token: String,
    epoch: u64,
    /// Not primary at or after this instant; the token is retired then.
    deadline: Nanos,
    /// Not primary before this instant (a claim of an absent record waits).
    primary_from: Nanos,
    promoted: bool,
    /// Past its deadline, renewing the same token at once (see "A late holder").
    lapsed: bool,
    /// The start of the last successful take or renewal.
    renewed_from: Nanos,
    next_renew: Nanos,
    last_refresh: Nanos,
    last_presence: Nanos,
}

/// A take the standby intends, once `due`.
#[derive(Debug, Clone)]
struct Plan {
    record: Record,
    due: Nanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Observe,
    Renew,
    Take,
    Release,
}

pub struct Machine {
    params: Params,
    instance_id: String,
    nonce: u64,
    next_id: u64,
    holding: Option<Holding>,
    /// The record last seen unchanged on the current connection, and since when.
    watch: Option<(Record, Nanos)>,
    plan: Option<Plan>,
    /// Since when the current connection is open; `None`: no connection.
    connected_at: Option<Nanos>,
    /// The driver's command in flight.
    busy: Option<(u64, Pending)>,
    /// Renewals in flight (driver's and callers'): id → (token, refresh).
    renewals: HashMap<u64, (String, bool)>,
    /// Takes in flight: id → (token, claim of an absent record).
    takes: HashMap<u64, (String, bool)>,
    /// Releases to send: (token, quiet, lock key only).
    releases: Vec<(String, bool, bool)>,
    next_look: Nanos,
    last_presence: Option<Nanos>,
    hold_off_until: Nanos,
    highest_epoch: u64,
    events: Vec<Event>,
    warnings: Vec<Warning>,
    stopping: bool,
    warned_mixed: bool,
    warned_foreign: bool,
    /// The record of the last look, if any.
    last_seen: Option<Record>,
    /// The current connection has shown a held record: a release seen after it happened
    /// while we watched, not in data brought back from the past.
    saw_held_on_connection: bool,
}

impl Machine {
    /// `nonce` seeds the lease tokens (`{instance_id}:{16 hex}`), unique per take.
    pub fn new(params: Params, instance_id: String, nonce: u64) -> Self {
        Machine {
            params,
            instance_id,
            nonce,
            next_id: 1,
            holding: None,
            watch: None,
            plan: None,
            connected_at: None,
            busy: None,
            renewals: HashMap::new(),
            takes: HashMap::new(),
            releases: Vec::new(),
            next_look: 0,
            last_presence: None,
            hold_off_until: 0,
            highest_epoch: 0,
            events: Vec::new(),
            warnings: Vec::new(),
            stopping: false,
            warned_mixed: false,
            warned_foreign: false,
            last_seen: None,
            saw_held_on_connection: false,
        }
    }

    /// The token held (primary or on its way), for fencing and release.
    pub fn token(&self) -> Option<&str> {
        self.holding.as_ref().map(|h| h.token.as_str())
    }

    pub fn view(&self) -> View {
        match &self.holding {
            Some(h) => View {
                deadline: h.deadline,
                primary_from: h.primary_from,
                epoch: h.epoch,
            },
            None => View::default(),
        }
    }

    /// Whether the lease record has been read at least once.
    pub fn looked(&self) -> bool {
        self.last_seen.is_some()
    }

    /// Whether the first look settled the role: primary, or someone else holds the lease.
    pub fn settled(&self) -> bool {
        match &self.holding {
            Some(h) => h.promoted,
            None => matches!(self.last_seen, Some(Record::Held { .. })),
        }
    }

    /// Whether it stopped (after [`Input::Stop`]): the driver exits once nothing is left to send.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping
    }

    /// One step: apply `input` at `now`, then say what came of it.
    pub fn handle(&mut self, now: Nanos, input: Input) -> Ready {
        let (renewal, released) = self.apply(now, input);
        let mut ready = self.advance(now);
        ready.renewal = renewal;
        ready.released = released;
        ready
    }

    /// A renewal for a caller's own connection (`heartbeat()`), while holding; otherwise
    /// the driver is asked to look at the lease now.
    fn heartbeat(&mut self, now: Nanos) -> Option<Command> {
        match &self.holding {
            Some(h) if now < h.deadline && !h.lapsed && !self.stopping => {
                let token = h.token.clone();
                Some(self.renew_command(token, true, true))
            }
            _ => {
                self.next_look = now;
                None
            }
        }
    }

    /// Gives the lease up at once (graceful stop, handover): standby from this call on.
    /// Returns the token to release when it was primary up to this call (otherwise only its
    /// lock key is freed, by the driver).
    fn step_down(&mut self, now: Nanos, reason: Demotion) -> Option<String> {
        match self.retire(now, reason)? {
            (token, true) => Some(token),
            (token, false) => {
                self.releases.push((token, true, true));
                None
            }
        }
    }

    /// Applies `input`; returns a caller's renewal and a token to release, if it made one.
    fn apply(&mut self, now: Nanos, input: Input) -> (Option<Command>, Option<String>) {
        match input {
            Input::Heartbeat => return (self.heartbeat(now), None),
            Input::StepDown { reason } => return (None, self.step_down(now, reason)),
            Input::Tick => {}
            Input::Connected => {
                self.connected_at = Some(now);
                self.saw_held_on_connection = false;
                self.watch = None;
                self.plan = None;
                self.next_look = now;
            }
            Input::Disconnected => {
                if self.holding.as_ref().is_some_and(|h| h.lapsed) {
                    // Only the connection it renewed on could prove the lease still its own.
                    let retired = self.retire(now, Demotion::DeadlinePassed);
                    self.release_retired(retired, true);
                }
                self.connected_at = None;
                self.saw_held_on_connection = false;
                self.watch = None;
                self.plan = None;
                self.busy = None;
            }
            Input::Reply { id, sent_at, reply } => self.on_reply(now, id, sent_at, reply),
            Input::Notice(Notice::Released) => self.next_look = now,
            Input::Notice(Notice::HandoverRequested) => {
                if let Some(token) = self.step_down(now, Demotion::HandoverRequested) {
                    self.releases.push((token, false, false));
                    self.hold_off_until = now + self.params.handover_grace;
                }
            }
            Input::WriteRefused { token } => {
                if self.token() == Some(token.as_str()) {
                    let released = self.retire(now, Demotion::WriteRefused);
                    self.release_retired(released, true);
                    self.next_look = now;
                }
            }
            Input::Stop => {
                self.stopping = true;
                if let Some(token) = self.step_down(now, Demotion::ShuttingDown) {
                    self.releases.push((token, false, false));
                }
            }
        }
        (None, None)
    }

    fn on_reply(&mut self, now: Nanos, id: u64, sent_at: Nanos, reply: Reply) {
        let pending = match self.busy {
            Some((busy, pending)) if busy == id => {
                self.busy = None;
                Some(pending)
            }
            _ => None,
        };
        if let Some((token, refresh)) = self.renewals.remove(&id) {
            self.on_renewed(now, sent_at, &token, refresh, reply);
            return;
        }
        if let Some((token, claim)) = self.takes.remove(&id) {
            self.plan = None;
            match reply {
                Reply::Taken { epoch } if !self.stopping => {
                    self.highest_epoch = self.highest_epoch.max(epoch);
                    let wait = if claim {
                        self.params.takeover_wait()
                    } else {
                        0
                    };
                    self.holding = Some(Holding {
                        token,
                        epoch,
                        deadline: sent_at + self.params.deadline,
                        primary_from: now + wait,
                        promoted: false,
                        lapsed: false,
                        renewed_from: sent_at,
                        next_renew: now + self.params.renew_interval,
                        last_refresh: sent_at,
                        last_presence: sent_at,
                    });
                    self.watch = None;
                }
                // Taken while stopping: it was never primary, only its lock key is freed.
                Reply::Taken { .. } => self.releases.push((token, true, true)),
                Reply::TakeBlocked => {
                    if !self.warned_foreign {
                        self.warned_foreign = true;
                        self.warnings.push(Warning::ForeignLock);
                    }
                    self.next_look = now + self.params.poll_interval;
                }
                Reply::Failed => {
                    // Whatever failed (a restart behind a proxy?) may have touched the data.
                    self.watch = None;
                    self.next_look = now + self.params.retry_interval;
                }
                _ => self.next_look = now,
            }
            return;
        }
        match (pending, reply) {
            (Some(Pending::Observe), Reply::Observed(record)) => self.on_observed(now, record),
            (Some(Pending::Observe), _) => {
                self.watch = None;
                self.plan = None;
                self.saw_held_on_connection = false;
                self.next_look = now + self.params.retry_interval;
            }
            _ => {}
        }
    }

    fn on_renewed(&mut self, now: Nanos, sent_at: Nanos, token: &str, refresh: bool, reply: Reply) {
        let Some(h) = self.holding.as_mut().filter(|h| h.token == token) else {
            return;
        };
        match reply {
            // Primary until D after the start of this renewal (argument 1), even when its
            // reply was read late; a late holder (only ever renewing on the connection it
            // renewed on before) is primary again.
            Reply::Renewed { .. } => {
                h.deadline = h.deadline.max(sent_at + self.params.deadline);
                h.renewed_from = h.renewed_from.max(sent_at);
                if refresh {
                    h.last_refresh = h.last_refresh.max(sent_at);
                }
                if h.lapsed {
                    if now < h.deadline {
                        h.lapsed = false;
                    } else {
                        h.next_renew = now;
                    }
                }
            }
            _ if h.lapsed => {
                let retired = self.retire(now, Demotion::DeadlinePassed);
                self.release_retired(retired, true);
                self.next_look = now;
            }
            Reply::RenewRefused => {
                let released = self.retire(now, Demotion::TakenOver);
                // Whichever of the two keys still carries the token is freed (a lock key left
                // alone would keep everyone off it until its TTL).
                self.release_retired(released, true);
                self.next_look = now;
            }
            _ => {
                let h = self.holding.as_mut().expect("checked above");
                h.next_renew = h.next_renew.min(now + self.params.retry_interval);
            }
        }
    }

    fn on_observed(&mut self, now: Nanos, record: Record) {
        self.highest_epoch = self.highest_epoch.max(record.epoch());
        self.last_seen = Some(record.clone());
        if self.holding.is_some() || self.connected_at.is_none() {
            return;
        }
        self.next_look = now + self.params.poll_interval;
        let own_wait = self.params.takeover_wait();
        let due = match &record {
            // Nothing to watch: claim it, and wait out any holder whose record vanished
            // after the claim is in.
            Record::Absent => now,
            // Given up by a holder that had demoted first. Only an older copy brought back
            // (a restart) could lie: not if this connection saw it held before, nor once
            // the connection is older than a wait.
            Record::Released { .. } if self.saw_held_on_connection => now,
            Record::Released { .. } => {
                now.max(self.connected_at.unwrap_or(now).saturating_add(own_wait))
            }
            Record::Held { deadline_ms, .. } => {
                self.saw_held_on_connection = true;
                let declared = deadline_ms.saturating_mul(MILLI);
                if declared > self.params.deadline && !self.warned_mixed {
                    self.warned_mixed = true;
                    self.warnings.push(Warning::LongerDeadline {
                        declared_ms: *deadline_ms,
                        own_ms: self.params.deadline / MILLI,
                    });
                }
                let declared = if declared == 0 {
                    self.params.deadline
                } else {
                    declared
                };
                let since = match &self.watch {
                    Some((seen, since)) if *seen == record => *since,
                    _ => now,
                };
                self.watch = Some((record.clone(), since));
                since.saturating_add(takeover_wait(declared))
            }
        };
        if !matches!(record, Record::Held { .. }) {
            self.watch = None;
        }
        self.plan = Some(Plan { record, due });
    }

    /// Standby from now on; the token is never renewed again.
    /// Returns the token and whether it was primary up to this instant: only then may the
    /// record be released (a released record is taken at once). A claim still inside its
    /// wait would hand the wait's obligation (outlast any holder whose record vanished) to
    /// nobody, and a token past its deadline or refused may have been replaced already (the
    /// record seen then could even be an older copy brought back): their records are left to
    /// go stale, and only the lock key is freed.
    fn retire(&mut self, now: Nanos, reason: Demotion) -> Option<(String, bool)> {
        let h = self.holding.take()?;
        if h.promoted {
            self.events.push(Event::Demoted { reason });
        }
        let primary = now >= h.primary_from && now < h.deadline;
        Some((h.token, primary))
    }

    /// Queues the release a retirement allows.
    fn release_retired(&mut self, retired: Option<(String, bool)>, quiet: bool) {
        if let Some((token, primary)) = retired {
            self.releases.push((token, quiet, !primary));
        }
    }

    fn advance(&mut self, now: Nanos) -> Ready {
        let connected_at = self.connected_at;
        if let Some(h) = self
            .holding
            .as_mut()
            .filter(|h| now >= h.deadline && !h.lapsed)
        {
            if h.promoted && connected_at.is_some_and(|at| at <= h.renewed_from) {
                h.lapsed = true;
                h.promoted = false;
                h.next_renew = now;
                self.events.push(Event::Demoted {
                    reason: Demotion::DeadlinePassedRenewing,
                });
            } else {
                let released = self.retire(now, Demotion::DeadlinePassed);
                self.release_retired(released, true);
                self.next_look = now;
            }
        }
        if let Some(h) = self.holding.as_mut() {
            if !h.promoted && now >= h.primary_from && now < h.deadline {
                h.promoted = true;
                self.events.push(Event::Promoted { epoch: h.epoch });
            }
        }
        Ready {
            events: std::mem::take(&mut self.events),
            warnings: std::mem::take(&mut self.warnings),
            view: self.view(),
            renewal: None,
            released: None,
            looked: self.looked(),
            settled: self.settled(),
        }
    }

    /// The driver's next command, if it should send one now (none while one is in flight).
    pub(crate) fn next_command(&mut self, now: Nanos) -> Option<Command> {
        if self.busy.is_some() {
            return None;
        }
        if let Some((token, quiet, lock_only)) = self.releases.pop() {
            let id = self.issue(Pending::Release);
            return Some(Command::Release {
                id,
                token,
                quiet,
                lock_only,
            });
        }
        if self.stopping {
            return None;
        }
        if let Some(h) = &self.holding {
            if now < h.next_renew || self.renewals.values().any(|(t, _)| *t == h.token) {
                return None;
            }
            let refresh = now >= h.last_refresh + self.params.refresh_interval;
            let presence = now >= h.last_presence + self.params.presence_interval;
            let token = h.token.clone();
            let command = self.renew_command(token, refresh, presence);
            self.busy = Some((command.id(), Pending::Renew));
            let h = self.holding.as_mut().expect("held");
            h.next_renew = now + self.params.renew_interval;
            if refresh || presence {
                h.last_presence = now;
            }
            return Some(command);
        }
        if self.connected_at.is_none() || now < self.hold_off_until {
            return None;
        }
        if let Some(plan) = self.plan.as_ref().filter(|plan| now >= plan.due) {
            let expect = plan.record.expectation();
            let claim = expect == Expect::Absent;
            let token = self.new_token();
            let id = self.issue(Pending::Take);
            self.takes.insert(id, (token.clone(), claim));
            return Some(Command::Take {
                id,
                expect,
                token,
                floor_epoch: self.highest_epoch,
                deadline_ms: self.params.deadline.div_ceil(MILLI),
            });
        }
        if now >= self.next_look {
            let id = self.issue(Pending::Observe);
            let presence = self
                .last_presence
                .is_none_or(|at| now >= at + self.params.presence_interval);
            if presence {
                self.last_presence = Some(now);
            }
            return Some(Command::Observe { id, presence });
        }
        None
    }

    fn renew_command(&mut self, token: String, refresh: bool, presence: bool) -> Command {
        let id = self.next_id();
        self.renewals.insert(id, (token.clone(), refresh));
        Command::Renew {
            id,
            token,
            refresh,
            presence,
        }
    }

    fn issue(&mut self, pending: Pending) -> u64 {
        let id = self.next_id();
        self.busy = Some((id, pending));
        id
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn new_token(&mut self) -> String {
        // splitmix64: distinct tokens from one random seed per instance.
        self.nonce = self.nonce.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.nonce;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        format!("{}:{:016x}", self.instance_id, z ^ (z >> 31))
    }

    /// When the machine next wants a [`Input::Tick`], as of `now`.
    pub(crate) fn wake_at(&self, now: Nanos) -> Nanos {
        let far = now + self.params.poll_interval.max(self.params.renew_interval);
        let mut at = far;
        if let Some(h) = &self.holding {
            // A renewal of the token in flight (a caller's) holds the next one back.
            if !self.renewals.values().any(|(t, _)| *t == h.token) {
                at = at.min(h.next_renew);
            }
            if !h.lapsed {
                at = at.min(h.deadline);
            }
            if !h.promoted {
                at = at.min(h.primary_from);
            }
        } else if !self.stopping {
            at = at.min(self.next_look.max(self.hold_off_until));
            if let Some(plan) = &self.plan {
                at = at.min(plan.due.max(self.hold_off_until));
            }
        }
        at.max(now)
    }
}

#[cfg(test)]
mod tests;
