//! The discrete-event simulator: instances running the shipped pure steps
//! (`quantshift_lease::driver::Driver`, the machine and the lease thread's rules together)
//! and executing their actions as `src/lease/driver.rs` does (connect, send one command,
//! sleep until a time or a kick, exit), each on its own drifting clock, against one [`Model`]
//! server, through a network that delays and loses, with faults and host stalls drawn from a
//! seed. Nothing of the driver is re-typed here: this file only executes. Everything is a
//! pure function of the [`Schedule`], so a seed replays exactly.
//!
//! The parts, as raft's `rafttest/` splits them: `sim/schedule.rs` (clocks, faults and
//! their times, drawn from a seed), `sim/network.rs` (connections, messages in flight,
//! delays, cuts and notices), `sim/faults.rs` (what each fault does as it strikes),
//! `sim/invariants.rs` (the checks below); this file runs the instances and the events.
//!
//! Host stalls: a whole process descheduled (`Freeze`: none of its threads runs, replies
//! wait for it), the lease thread woken late (`LateWake`), a reply read late (`LateRead`:
//! it arrived in time, so the read timeout does not fire), at lengths drawn on both sides of
//! the tolerance (`deadline − renew_interval`).
//!
//! # Invariants, checked as the run goes
//!
//! (a) **One primary.** An instance is primary at real time `t` iff its last published view
//!     `V` (published after every step, as the driver does) satisfies
//!     `shared::is_primary(V.deadline, V.primary_from, clock(t))`. Each view is turned into a
//!     real-time interval `[first t with clock(t) >= primary_from, first t with clock(t) >=
//!     deadline)`, cut at the instant the next view is published (or the process crashes).
//!     No two instances' intervals may intersect.
//! (b) **Fencing.** A fenced write (`fenced_set.lua`) carrying instance `i`'s token that Redis
//!     executes (acknowledged, whether or not the reply reaches `i`) at real time `t` while
//!     some other instance `j != i` is primary at `t` is a violation. (With (a) this is the
//!     brief's "acknowledged for an instance that is not primary while another one is".)
//! (c) **Liveness.** Once no fault is in effect (no freeze, partition, storm or Redis
//!     downtime running; instant faults end at once) and some instance is alive and not
//!     frozen, every window `[q + kB, q + (k+1)B]` after the quiet start `q` contains an
//!     instant at which some instance is primary, with
//!     `B = 2·W + 4·poll + 2·timeout + 50 ms` (`W` = `machine::takeover_wait(deadline)`,
//!     `timeout` = the ordinary command timeout; normal message delays are ≤ 2 ms): a
//!     half-closed connection or a connect that started in a partition costs one timeout
//!     and one reconnect pause (≤ poll) before the usual `observe → wait W → take`, and a
//!     claim lost to another claimant can cost one more `W`.
//! (d) The driver never spins: a sleep until the past with nothing sent, 1 000 times in a row.
//! (e) **Short stalls cost nothing.** In a schedule of only host stalls shorter than the
//!     tolerance less a round trip, at most one a second, the lease is taken once (at the
//!     start) and never again: a stall costs the stall, not a failover. (Longer stalls may
//!     cost a failover; a late holder whose record nobody took gets it back at once, counted
//!     as a regain.)
//! (f) **No flapping.** Once no fault has been in effect for `B`, no take happens until the
//!     next fault: a leader chosen after a fault keeps the lease.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;

use quantshift_core::lease::protocol::parse_reply;
use quantshift_lease::driver::{Action, Driver, DriverParams, Happened, Ready, Redirect};
use quantshift_lease::machine::{self, Event, Input, Notice, Params, DRIFT_PPM};
use quantshift_lease::protocol::{
    Call, CallContext, Command, LeaseKeys, LeaseScript, Nanos, Reply,
};
use quantshift_lease::shared::View;

use super::model::{Entry, Model, Resp, Script};

#[path = "sim/faults.rs"]
mod faults;
#[path = "sim/invariants.rs"]
mod invariants;
#[path = "sim/network.rs"]
mod network;
#[path = "sim/schedule.rs"]
mod schedule;

pub use invariants::{Kind, Stats, Violation};
use network::{Conn, Msg, MsgKind};
pub use schedule::{Clock, Dir, Fault, LeaseKey, Restart, Schedule};

pub const MS: u64 = 1_000_000;
/// The keys of a simulated bot, named by the library's own schema, and the key the
/// simulation's fenced writes set.
pub struct SimKeys {
    pub lock: String,
    pub epoch: String,
    pub record: String,
    pub heartbeat: String,
    pub instances: String,
    pub channel: String,
    pub fenced: String,
}

impl SimKeys {
    pub fn of(bot: &str) -> Self {
        let keys = quantshift_core::Keys::with_layout(bot, quantshift_core::KeyLayout::HashTagged);
        SimKeys {
            fenced: format!("bot:{{{bot}}}:fenced"),
            lock: keys.lock,
            epoch: keys.epoch,
            record: keys.lease_record,
            heartbeat: keys.heartbeat,
            instances: keys.instances,
            channel: keys.lease_channel,
        }
    }
}

static KEYS: std::sync::LazyLock<SimKeys> = std::sync::LazyLock::new(|| SimKeys::of("s"));
/// Server time (µs since the Unix epoch) at real time 0.
const BASE_US: i64 = 1_700_000_000_000_000;
const MAX_NORMAL_DELAY: u64 = 2 * MS;

/// Where the instance's lease thread is in executing its last action.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Drv {
    /// Running a step (between two actions).
    Stepping,
    Sleeping,
    Connecting,
    Waiting {
        msg: usize,
    },
    Exited,
}

struct Inst {
    id: String,
    /// The shipped pure steps: the machine and the lease thread's rules.
    driver: Driver,
    clock: Clock,
    born: u64,
    alive: bool,
    frozen: bool,
    deferred: Vec<Ev>,
    conn: Option<Conn>,
    drv: Drv,
    wake_gen: u64,
    kicked: bool,
    spins: u32,
    stopping: bool,
    view: View,
    /// The current primary interval in real time, [start, end).
    open: Option<(u64, u64)>,
    writer_busy: bool,
    writer_gen: Option<u64>,
    partitions: Vec<(u64, Dir)>,
    /// The next timer wake-up of the lease thread comes this much late (a host stall).
    late_wake: Option<u64>,
    /// The next reply is read this much after it arrived (a host stall).
    late_read: Option<u64>,
    /// The epoch of its last promotion.
    promoted_epoch: Option<u64>,
}

impl Inst {
    fn local(&self, t: u64) -> Nanos {
        let d = u128::from(t.saturating_sub(self.born));
        self.clock.offset + (d * u128::from(self.clock.num) / u128::from(self.clock.den)) as u64
    }

    /// The first real instant at which the local clock reads at least `l`.
    fn real(&self, l: Nanos) -> u64 {
        if l <= self.clock.offset {
            return self.born;
        }
        let x = u128::from(l - self.clock.offset);
        let num = u128::from(self.clock.num);
        let d = (x * u128::from(self.clock.den)).div_ceil(num);
        self.born
            .saturating_add(d.min(u128::from(u64::MAX / 2)) as u64)
    }

    fn blocked(&self, dir: Dir) -> bool {
        self.partitions
            .iter()
            .any(|(_, d)| *d == Dir::Both || *d == dir)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Wake { inst: usize, gen: u64 },
    ConnectDone { inst: usize, ok: bool },
    Arrive { msg: usize },
    Back { msg: usize },
    Timeout { msg: usize },
    Reset { msg: usize },
    WriterTick { inst: usize },
    Notice { inst: usize },
    Fault(usize),
    Unfreeze { inst: usize },
    PartitionEnd { inst: usize },
    ServerUp,
    StormEnd,
    OrphanEnd,
    StallEnd,
    Snapshot,
    Liveness { epoch: u64 },
}

impl Ev {
    fn inst(&self) -> Option<usize> {
        match self {
            Ev::Wake { inst, .. }
            | Ev::ConnectDone { inst, .. }
            | Ev::WriterTick { inst }
            | Ev::Notice { inst } => Some(*inst),
            _ => None,
        }
    }
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub struct Sim<'a> {
    s: &'a Schedule,
    model: &'a mut Model,
    rng: fastrand::Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    insts: Vec<Inst>,
    msgs: Vec<Msg>,
    server_up: bool,
    server_gen: u64,
    snapshots: VecDeque<(u64, std::collections::HashMap<String, Entry>)>,
    storms: Vec<(u64, u8, u8)>,
    active: u32,
    quiet_epoch: u64,
    /// Since when no fault is in effect (and none happened).
    quiet_from: Option<u64>,
    finals: Vec<(usize, u64, u64)>,
    last_final_end: u64,
    violation: Option<Violation>,
    pub trace: Option<Vec<String>>,
    stats: Stats,
}

impl<'a> Sim<'a> {
    pub fn new(s: &'a Schedule, model: &'a mut Model, trace: bool) -> Self {
        model.reset();
        model.set_time_us(BASE_US);
        Sim {
            s,
            model,
            rng: fastrand::Rng::with_seed(s.seed ^ 0x00C0_FFEE),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            insts: Vec::new(),
            msgs: Vec::new(),
            server_up: true,
            server_gen: 1,
            snapshots: VecDeque::new(),
            storms: Vec::new(),
            active: 0,
            quiet_epoch: 0,
            quiet_from: None,
            finals: Vec::new(),
            last_final_end: 0,
            violation: None,
            trace: trace.then(Vec::new),
            stats: Stats::default(),
        }
    }

    fn log(&mut self, what: impl FnOnce() -> String) {
        if let Some(trace) = self.trace.as_mut() {
            trace.push(format!("{:>10.3} ms  {}", self.now as f64 / 1e6, what()));
        }
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    fn normal_delay(&mut self) -> u64 {
        self.rng.u64(50_000..MAX_NORMAL_DELAY)
    }

    pub fn run(mut self) -> (Option<Violation>, Stats, Option<Vec<String>>) {
        for clock in self.s.clocks.clone() {
            self.join(clock);
        }
        for (i, (at, _)) in self.s.faults.iter().enumerate() {
            let at = *at;
            self.at(at, Ev::Fault(i));
        }
        self.at(0, Ev::Snapshot);
        self.quiet_changed();
        while let Some(Reverse(q)) = self.queue.pop() {
            if q.at > self.s.duration || self.violation.is_some() {
                break;
            }
            self.now = q.at;
            self.dispatch(q.ev);
        }
        if self.violation.is_none() {
            self.now = self.s.duration;
            for i in 0..self.insts.len() {
                self.cut(i);
            }
        }
        (self.violation, self.stats, self.trace)
    }

    fn join(&mut self, clock: Clock) {
        let n = self.insts.len();
        let nonce = self.rng.u64(..);
        let id = format!("i{n}");
        let timeouts = DriverParams {
            lease_command_timeout: self.s.timeout,
            command_timeout: self.s.command_timeout,
        };
        self.insts.push(Inst {
            id: id.clone(),
            driver: Driver::new(self.s.params, timeouts, id, nonce),
            clock,
            born: self.now,
            alive: true,
            frozen: false,
            deferred: Vec::new(),
            conn: None,
            drv: Drv::Stepping,
            wake_gen: 0,
            kicked: false,
            spins: 0,
            stopping: false,
            view: View::default(),
            open: None,
            writer_busy: false,
            writer_gen: None,
            partitions: Vec::new(),
            late_wake: None,
            late_read: None,
            promoted_epoch: None,
        });
        self.log(|| format!("i{n} joins with {clock:?}"));
        self.happen(n, Happened::Woke { timed_out: false });
        let first = self.rng.u64(..self.s.write_period);
        self.at(self.now + first, Ev::WriterTick { inst: n });
    }

    fn dispatch(&mut self, ev: Ev) {
        // Messages whose client is frozen wait for it; the server side never does.
        let owner = match &ev {
            Ev::Back { msg } | Ev::Timeout { msg } | Ev::Reset { msg } => {
                Some(self.msgs[*msg].inst)
            }
            other => other.inst(),
        };
        if let Some(i) = owner {
            if !self.insts[i].alive {
                return;
            }
            if self.insts[i].frozen {
                self.insts[i].deferred.push(ev);
                return;
            }
        }
        match ev {
            Ev::Wake { inst, gen } => {
                let s = &mut self.insts[inst];
                if gen == s.wake_gen && s.drv == Drv::Sleeping {
                    if let Some(late) = s.late_wake.take() {
                        self.log(|| format!("i{inst}: the lease thread wakes {late} ns late"));
                        let at = self.now + late;
                        self.at(at, Ev::Wake { inst, gen });
                    } else {
                        self.happen(inst, Happened::Woke { timed_out: true });
                    }
                }
            }
            Ev::ConnectDone { inst, ok } => self.connect_done(inst, ok),
            Ev::Arrive { msg } => self.arrive(msg),
            Ev::Back { msg } => {
                let i = self.msgs[msg].inst;
                let late = match self.msgs[msg].kind {
                    MsgKind::Driver(_) if !self.msgs[msg].read => self.insts[i].late_read.take(),
                    _ => None,
                };
                self.msgs[msg].read = true;
                match late {
                    Some(late) => {
                        self.log(|| format!("i{i}: the reply is read {late} ns late"));
                        let at = self.now + late;
                        self.at(at, Ev::Back { msg });
                    }
                    None => self.back(msg),
                }
            }
            // A reply that arrived is read, however late: the read timeout did not fire.
            Ev::Timeout { msg } if self.msgs[msg].read => {}
            Ev::Timeout { msg } | Ev::Reset { msg } => self.broken(msg),
            Ev::StallEnd => {
                self.active -= 1;
                self.quiet_changed();
            }
            Ev::WriterTick { inst } => self.writer_tick(inst),
            Ev::Notice { inst } => self.handle(inst, Input::Notice(Notice::Released)),
            Ev::Fault(i) => self.fault(i),
            Ev::Unfreeze { inst } => {
                self.active -= 1;
                let s = &mut self.insts[inst];
                s.frozen = false;
                let deferred = std::mem::take(&mut s.deferred);
                self.log(|| format!("i{inst} resumes"));
                for ev in deferred {
                    let now = self.now;
                    self.at(now, ev);
                }
                self.quiet_changed();
            }
            Ev::PartitionEnd { inst } => {
                self.active -= 1;
                let now = self.now;
                self.insts[inst]
                    .partitions
                    .retain(|(until, _)| *until > now);
                self.log(|| format!("i{inst}: partition over"));
                self.quiet_changed();
            }
            Ev::ServerUp => {
                self.active -= 1;
                self.server_up = true;
                self.log(|| "redis is up".into());
                self.quiet_changed();
            }
            Ev::StormEnd => {
                self.active -= 1;
                let now = self.now;
                self.storms.retain(|(until, _, _)| *until > now);
                self.quiet_changed();
            }
            Ev::OrphanEnd => {
                self.active -= 1;
                self.quiet_changed();
            }
            Ev::Snapshot => {
                self.set_server_time();
                let keys = self.model.space.borrow().keys.clone();
                self.snapshots.push_back((self.now, keys));
                while self.snapshots.len() > 60 {
                    self.snapshots.pop_front();
                }
                let next = self.now + 50 * MS;
                self.at(next, Ev::Snapshot);
            }
            Ev::Liveness { epoch } => self.liveness(epoch),
        }
    }

    // ---- the instance: the shipped steps, executed as src/lease/driver.rs does ----

    fn local(&self, i: usize) -> Nanos {
        self.insts[i].local(self.now)
    }

    /// An input from another thread (a notice, a refused write, a stop): the shipped step,
    /// then the lease thread is kicked, as `Lease::handle` does.
    fn handle(&mut self, i: usize, input: Input) {
        let now = self.local(i);
        let ready = self.insts[i].driver.handle(now, input);
        self.stepped(i, &ready);
        self.kick(i);
    }

    /// What happened to instance `i`'s lease thread: the shipped step, then its action.
    fn happen(&mut self, i: usize, happened: Happened) {
        if !self.insts[i].alive || self.insts[i].frozen {
            return;
        }
        self.insts[i].drv = Drv::Stepping;
        let now = self.local(i);
        // The store's master generation: one server here (a promoted replica resets every
        // connection, as a restart does).
        let ready = self.insts[i].driver.step(now, 1, happened);
        self.stepped(i, &ready);
        match ready.action.expect("the lease thread's step has an action") {
            Action::Connect { timeout } => {
                self.insts[i].conn = None;
                self.start_connect(i, timeout);
            }
            Action::Send {
                command, timeout, ..
            } => match self.insts[i].conn {
                Some(conn) => {
                    self.insts[i].spins = 0;
                    self.send(i, conn, command, timeout);
                }
                None => {
                    let failed = Happened::Failed {
                        error: "no connection".into(),
                        drops_connection: true,
                        redirect: Redirect::None,
                    };
                    self.happen(i, failed);
                }
            },
            Action::Sleep { until } => {
                if std::mem::take(&mut self.insts[i].kicked) {
                    self.happen(i, Happened::Woke { timed_out: false });
                    return;
                }
                let s = &mut self.insts[i];
                s.drv = Drv::Sleeping;
                s.wake_gen += 1;
                let gen = s.wake_gen;
                let at = if until <= now {
                    s.spins += 1;
                    if s.spins > 1_000 {
                        let what = format!(
                            "i{i}: sleeps until {until} <= now {now} with nothing sent, 1 000 times"
                        );
                        self.fail(Kind::Spin, what);
                    }
                    self.now + 1_000
                } else {
                    s.spins = 0;
                    s.real(until)
                };
                self.at(at, Ev::Wake { inst: i, gen });
            }
            Action::Exit => self.exit(i, "stopped"),
        }
    }

    /// What every step's output means for the checks: the view published, regains counted.
    fn stepped(&mut self, i: usize, ready: &Ready) {
        self.publish(i, ready.view);
        self.stats.stalls += ready.stalls.len() as u64;
        for event in &ready.events {
            if let Event::Promoted { epoch } = event {
                if self.insts[i].promoted_epoch == Some(*epoch) {
                    self.stats.regains += 1;
                    self.log(|| format!("i{i} is primary again (epoch {epoch}): a late holder"));
                }
                self.insts[i].promoted_epoch = Some(*epoch);
            }
        }
    }

    /// Wakes the lease thread if it sleeps; otherwise its next sleep ends at once.
    fn kick(&mut self, i: usize) {
        let s = &mut self.insts[i];
        match s.drv {
            Drv::Sleeping => {
                s.wake_gen += 1;
                self.happen(i, Happened::Woke { timed_out: false });
            }
            Drv::Exited => {}
            _ => s.kicked = true,
        }
    }

    fn exit(&mut self, i: usize, why: &str) {
        self.log(|| format!("i{i} exits: {why}"));
        self.cut(i);
        let s = &mut self.insts[i];
        s.alive = false;
        s.drv = Drv::Exited;
        s.deferred.clear();
        self.quiet_changed();
    }

    fn writer_tick(&mut self, i: usize) {
        let period = self.s.write_period;
        let next = self.now + period / 2 + self.rng.u64(..period);
        self.at(next, Ev::WriterTick { inst: i });
        let now = self.local(i);
        let s = &self.insts[i];
        if s.writer_busy || !s.view.is_primary_at(now) {
            return;
        }
        let Some(token) = s.driver.token().map(str::to_owned) else {
            return;
        };
        let gen = match s.writer_gen {
            Some(gen) => gen,
            None if self.server_up && !s.blocked(Dir::Both) => self.server_gen,
            None => return,
        };
        self.insts[i].writer_gen = Some(gen);
        self.insts[i].writer_busy = true;
        let msg = self.msgs.len();
        self.msgs.push(Msg {
            inst: i,
            kind: MsgKind::Write(token),
            gen,
            reply: None,
            write_ok: false,
            read: false,
        });
        let timeout_at = self.insts[i].real(now + self.s.timeout);
        self.at(timeout_at, Ev::Timeout { msg });
        if let Some(d) = self.net(i, Dir::Requests) {
            let at = self.now + d;
            self.at(at, Ev::Arrive { msg });
        }
    }

    // ---- the server ----

    fn set_server_time(&mut self) {
        self.model.set_time_us(BASE_US + (self.now / 1_000) as i64);
    }

    fn execute(&mut self, i: usize, command: &Command) -> Reply {
        let id = self.insts[i].id.clone();
        let lock_ttl_ms = 3 * self.s.params.refresh_interval / MS;
        let m = &mut *self.model;
        // The same call the driver makes (protocol::Command::call): the model runs the
        // shipped script with the driver's KEYS and ARGV.
        let keys = LeaseKeys {
            lock: KEYS.lock.as_str(),
            epoch: KEYS.epoch.as_str(),
            record: KEYS.record.as_str(),
            heartbeat: KEYS.heartbeat.as_str(),
            instances: KEYS.instances.as_str(),
            channel: KEYS.channel.as_str(),
        };
        let context = CallContext {
            instance_id: &id,
            lock_ttl_ms,
            heartbeat_ttl_ms: lock_ttl_ms,
            presence_ttl_ms: self.s.params.presence_ttl() / MS,
            heartbeat: "2024-01-01T00:00:00Z",
        };
        let resp = match command.call(&keys, &context) {
            Call::Script { script, keys, args } => {
                let script = match script {
                    LeaseScript::Take => Script::Take,
                    LeaseScript::Renew => Script::Renew,
                    LeaseScript::Release => Script::Release,
                    LeaseScript::Observe => Script::Observe,
                };
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                m.eval(script, &keys, &args)
            }
            Call::Plain(args) => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                m.command(&args)
            }
        };
        let parsed = match &resp {
            Resp::Error { .. } => Err(resp.clone()),
            _ => parse_reply(command, resp.to_value()).map_err(|_| resp.clone()),
        };
        match parsed {
            Ok(reply) => {
                if matches!(reply, Reply::Taken { .. }) {
                    self.stats.takes += 1;
                    if let Some(q) = self.quiet_from {
                        if self.now >= q + self.s.liveness_bound() {
                            let what = format!(
                                "i{i} took the lease {:.3} ms into a quiet stretch (no fault since \
                                 {:.3} ms): the lease flapped",
                                (self.now - q) as f64 / 1e6,
                                q as f64 / 1e6
                            );
                            self.fail(Kind::Flap, what);
                        }
                    }
                    if self.s.short_stalls_only && self.stats.takes > 1 {
                        let what = format!(
                            "i{i} took the lease (take {}) though only stalls shorter than the \
                             tolerance happened",
                            self.stats.takes
                        );
                        self.fail(Kind::StallMovedLease, what);
                    }
                }
                reply
            }
            Err(resp) => {
                self.fail(Kind::ScriptError, format!("{command:?} replied {resp:?}"));
                Reply::Failed
            }
        }
    }

    // ---- faults ----

    fn pick(&self, inst: usize) -> usize {
        inst % self.insts.len()
    }

    // ---- the invariants ----
}

fn name(command: &Command) -> String {
    match command {
        Command::Observe { .. } => "observe".into(),
        Command::Renew { token, .. } => format!("renew({token})"),
        Command::Take { expect, token, .. } => format!("take({expect:?} → {token})"),
        Command::Release { token, .. } => format!("release({token})"),
    }
}

/// Runs one schedule.
pub fn run(
    s: &Schedule,
    model: &mut Model,
    trace: bool,
) -> (Option<Violation>, Stats, Option<Vec<String>>) {
    Sim::new(s, model, trace).run()
}

/// Shrinks a failing schedule: cut after the failure, drop faults, drop instances, while it
/// still fails the same way.
pub fn shrink(s: &Schedule, model: &mut Model, kind: Kind) -> Schedule {
    let fails = |c: &Schedule, model: &mut Model| -> Option<u64> {
        match run(c, model, false).0 {
            Some(v) if v.kind == kind => Some(v.at),
            _ => None,
        }
    };
    let mut best = s.clone();
    let Some(at) = fails(&best, model) else {
        return best;
    };
    let cut = |c: &mut Schedule, at: u64| {
        c.duration = c.duration.min(at + MS);
        c.faults.retain(|(t, _)| *t <= at);
    };
    cut(&mut best, at);
    for _ in 0..4 {
        let mut progress = false;
        let mut i = best.faults.len();
        while i > 0 {
            i -= 1;
            let mut c = best.clone();
            c.faults.remove(i);
            if let Some(at) = fails(&c, model) {
                cut(&mut c, at);
                best = c;
                progress = true;
            }
        }
        let mut i = best.clocks.len();
        while i > 1 {
            i -= 1;
            let mut c = best.clone();
            c.clocks.remove(i);
            if let Some(at) = fails(&c, model) {
                cut(&mut c, at);
                best = c;
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    best
}

/// The report printed for a failing seed.
pub fn report(seed: u64, original: &Schedule, shrunk: &Schedule, model: &mut Model) -> String {
    let (violation, _, trace) = run(shrunk, model, true);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lease simulator: seed {seed} fails; replay with LEASE_SIM_SEED={seed} cargo test --release --test lease_sim lease_simulation -- --nocapture"
    );
    if let Some(v) = &violation {
        let _ = writeln!(
            out,
            "violation: {:?} at {:.6} ms: {}",
            v.kind,
            v.at as f64 / 1e6,
            v.what
        );
    }
    let _ = writeln!(
        out,
        "original: {} faults, {} instances; shrunk schedule:\n{shrunk:#?}",
        original.faults.len(),
        original.clocks.len()
    );
    let trace = trace.unwrap_or_default();
    let skip = trace.len().saturating_sub(400);
    let _ = writeln!(
        out,
        "trace (last {} of {} lines):",
        trace.len() - skip,
        trace.len()
    );
    for line in &trace[skip..] {
        let _ = writeln!(out, "{line}");
    }
    out
}
