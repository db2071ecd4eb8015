//! The lease thread's own rules as a pure step: what the thread does next ([`Action`]: open a
//! connection, send a command, sleep, exit) given what just happened to it ([`Happened`]).
//! The thread in quantshift-core (`src/lease/driver.rs`) only executes the actions; the
//! simulator (`tests/lease_sim/`) executes the same ones against its model of Redis.
//!
//! The rules: one command at a time on one connection, opened with the lease command
//! timeout; a renewal reads its reply for at most the lease command timeout (one slower could
//! not keep the lease), a look or a take for the ordinary command timeout (a timeout drops the
//! connection, and with it the watch, so a loaded machine must not cut looks short); a
//! failed connect is retried after 10 ms, doubling up to the cap; a dropped connection, a
//! MOVED reply or a new master generation means a new connection, on which observations
//! start over; an ASK reply sends the command once to the node it names (the slot is moving
//! and the lease keys are already there); a take or renewal counts for the master generation
//! of the connection it ran on.

use crate::machine::{Event, Input as MachineInput, Machine, Params, Warning};
use crate::meter::{Stall, StallWatch};
use crate::protocol::{Command, Nanos, Reply};
use crate::shared::View;

const MILLI: Nanos = 1_000_000;
/// The first pause after a failed connect.
const FIRST_RETRY: Nanos = 10 * MILLI;
/// The longest pause between two connection attempts.
pub const RECONNECT_CAP: Nanos = 250 * MILLI;

/// The lease thread's timing, besides the machine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverParams {
    /// A renewal's (and a connect's) bound: the slack between the renewal period and the
    /// deadline.
    pub lease_command_timeout: Nanos,
    /// The ordinary command timeout, for looks, takes and releases.
    pub command_timeout: Nanos,
}

impl DriverParams {
    /// How late a renewal may come before the holder demotes itself.
    pub fn tolerance(params: &Params) -> Nanos {
        params.deadline.saturating_sub(params.renew_interval)
    }
}

/// What a failed round trip's error says about the connection and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    None,
    /// A new master or slot owner is recorded (the store's generation moves on).
    Moved,
    /// The slot is being migrated and the lease keys are already at this node.
    Ask {
        host: String,
        port: u16,
    },
}

/// What happened to the lease thread since its last step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// It woke from [`Action::Sleep`] (or started): by the timer, or early (a kick).
    Woke {
        timed_out: bool,
    },
    /// [`Action::Connect`] opened a connection to the master of this generation.
    Connected {
        generation: u64,
    },
    ConnectFailed {
        error: String,
    },
    /// The command sent got this reply.
    Replied(Reply),
    /// The command sent failed (an error or a timeout: it may or may not have run).
    Failed {
        error: String,
        /// The connection cannot be used again (a timeout, a reset, a closed socket).
        drops_connection: bool,
        redirect: Redirect,
    },
}

/// What the lease thread does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection (replacing any), bounded by `timeout`.
    Connect { timeout: Nanos },
    /// Send `command` on the connection, or once to the node `ask` names; read the reply for
    /// at most `timeout`.
    Send {
        command: Command,
        timeout: Nanos,
        ask: Option<(String, u16)>,
    },
    /// Sleep until `until` on the thread's clock, or until kicked.
    Sleep { until: Nanos },
    /// The lease stopped and nothing is left to send.
    Exit,
}

/// What one step produced: the only way out of the lease's decisions.
#[derive(Debug, Default)]
pub struct Ready {
    /// The lease thread's next action (only for its own steps, [`Driver::step`]).
    pub action: Option<Action>,
    /// The renewal a caller asked for ([`MachineInput::Heartbeat`]), for its own connection.
    pub renewal: Option<Command>,
    /// The token a step-down gave up, to release.
    pub released: Option<String>,
    pub events: Vec<Event>,
    pub warnings: Vec<Warning>,
    /// The lease as `is_primary()` reads it.
    pub view: View,
    /// The master generation of the last successful take or renewal: while the store's
    /// generation differs, this instance is not primary.
    pub confirmed_generation: u64,
    pub looked: bool,
    pub settled: bool,
    /// Stall meter samples (nanoseconds).
    pub stalls: Vec<(Stall, Nanos)>,
}

#[derive(Debug, Clone)]
struct InFlight {
    command: Command,
    sent_at: Nanos,
    generation: u64,
    asked: bool,
}

/// The machine and the lease thread's rules around it.
pub struct Driver {
    machine: Machine,
    params: DriverParams,
    tolerance: Nanos,
    reconnect_cap: Nanos,
    /// The generation of the open connection, if any.
    connection: Option<u64>,
    in_flight: Option<InFlight>,
    sleeping_until: Option<Nanos>,
    /// The pause before the next connect, once one failed.
    backoff: Option<Nanos>,
    retry: Nanos,
    failing: bool,
    watch: StallWatch,
    confirmed_generation: u64,
}

impl Driver {
    pub fn new(params: Params, driver: DriverParams, instance_id: String, nonce: u64) -> Self {
        Driver {
            tolerance: DriverParams::tolerance(&params),
            reconnect_cap: RECONNECT_CAP.min(params.poll_interval),
            machine: Machine::new(params, instance_id, nonce),
            params: driver,
            connection: None,
            in_flight: None,
            sleeping_until: None,
            backoff: None,
            retry: FIRST_RETRY,
            failing: false,
            watch: StallWatch::default(),
            confirmed_generation: 0,
        }
    }

    /// The token held (primary or on its way), for fencing and release.
    pub fn token(&self) -> Option<&str> {
        self.machine.token()
    }

    /// A step for an input from another thread (a caller, the notice thread); the lease
    /// thread, whose plans it may change, is to be woken after it.
    pub fn handle(&mut self, now: Nanos, input: MachineInput) -> Ready {
        let mut ready = Ready::default();
        self.feed(now, input, &mut ready);
        self.finish(ready)
    }

    /// A step of the lease thread: what happened to it, at `now`, with the store's current
    /// master `generation`; the answer holds its next action.
    pub fn step(&mut self, now: Nanos, generation: u64, happened: Happened) -> Ready {
        let mut ready = Ready::default();
        match happened {
            Happened::Woke { timed_out } => {
                if let Some(until) = self.sleeping_until.take().filter(|_| timed_out) {
                    let late = now.saturating_sub(until);
                    self.sample(now, Stall::WokeLate, late, &mut ready);
                }
                if self.connection.is_none() {
                    self.backoff = None;
                }
                self.feed(now, MachineInput::Tick, &mut ready);
            }
            Happened::Connected { generation } => {
                self.connection = Some(generation);
                self.retry = FIRST_RETRY;
                self.feed(now, MachineInput::Connected, &mut ready);
            }
            Happened::ConnectFailed { error } => {
                if !self.failing {
                    ready.warnings.push(Warning::Unreachable { error });
                }
                self.failing = true;
                self.backoff = Some(self.retry);
                self.retry = (self.retry * 2).min(self.reconnect_cap);
                // Deadlines still pass while Redis is away.
                self.feed(now, MachineInput::Tick, &mut ready);
            }
            Happened::Replied(reply) => {
                if let Some(sent) = self.in_flight.take() {
                    self.failing = false;
                    self.round_trip(now, &sent, &mut ready);
                    if matches!(reply, Reply::Renewed { .. } | Reply::Taken { .. }) {
                        self.confirmed_generation = self.confirmed_generation.max(sent.generation);
                    }
                    self.reply(now, &sent, reply, &mut ready);
                }
            }
            Happened::Failed {
                error,
                drops_connection,
                redirect,
            } => {
                if let Some(mut sent) = self.in_flight.take() {
                    if let (Redirect::Ask { host, port }, false) = (&redirect, sent.asked) {
                        // The command ran nowhere: it runs once where the keys are.
                        sent.asked = true;
                        let action = Action::Send {
                            command: sent.command.clone(),
                            timeout: self.timeout_of(&sent.command),
                            ask: Some((host.clone(), *port)),
                        };
                        self.in_flight = Some(sent);
                        self.feed(now, MachineInput::Tick, &mut ready);
                        ready.action = Some(action);
                        return self.finish(ready);
                    }
                    if !self.failing {
                        ready.warnings.push(Warning::RoundTripFailed { error });
                    }
                    self.failing = true;
                    self.round_trip(now, &sent, &mut ready);
                    if drops_connection || redirect == Redirect::Moved {
                        self.connection = None;
                    }
                    self.reply(now, &sent, Reply::Failed, &mut ready);
                    if self.connection.is_none() {
                        self.feed(now, MachineInput::Disconnected, &mut ready);
                    }
                }
            }
        }
        if self.connection.is_some_and(|current| current != generation) {
            // A new master: observations on the former one no longer count.
            self.connection = None;
            self.in_flight = None;
            self.feed(now, MachineInput::Disconnected, &mut ready);
        }
        ready.action = Some(self.next_action(now, &mut ready));
        self.finish(ready)
    }

    fn next_action(&mut self, now: Nanos, ready: &mut Ready) -> Action {
        if let Some(sent) = &self.in_flight {
            // Still waiting for a reply (a step that was not the lease thread's own).
            return Action::Send {
                command: sent.command.clone(),
                timeout: self.timeout_of(&sent.command),
                ask: None,
            };
        }
        loop {
            if self.connection.is_none() && !self.machine.stopping() {
                if let Some(pause) = self.backoff {
                    return self.sleep(now + pause);
                }
                return Action::Connect {
                    timeout: self.params.lease_command_timeout,
                };
            }
            let Some(command) = self.machine.next_command(now) else {
                if self.machine.stopping() {
                    return Action::Exit;
                }
                let until = self.machine.wake_at(now);
                return self.sleep(until);
            };
            let Some(generation) = self.connection else {
                // Stopping without a connection: what was left to send fails at once.
                let reply = MachineInput::Reply {
                    id: command.id(),
                    sent_at: now,
                    reply: Reply::Failed,
                };
                self.feed(now, reply, ready);
                continue;
            };
            let timeout = self.timeout_of(&command);
            self.in_flight = Some(InFlight {
                command: command.clone(),
                sent_at: now,
                generation,
                asked: false,
            });
            return Action::Send {
                command,
                timeout,
                ask: None,
            };
        }
    }

    fn sleep(&mut self, until: Nanos) -> Action {
        self.sleeping_until = Some(until);
        Action::Sleep { until }
    }

    fn timeout_of(&self, command: &Command) -> Nanos {
        match command {
            Command::Renew { .. } => self.params.lease_command_timeout,
            _ => self.params.command_timeout,
        }
    }

    fn round_trip(&mut self, now: Nanos, sent: &InFlight, ready: &mut Ready) {
        let took = now.saturating_sub(sent.sent_at);
        ready.stalls.push((Stall::RoundTrip, took));
        if matches!(sent.command, Command::Renew { .. }) {
            if let Some(warning) = self
                .watch
                .check(now, Stall::RoundTrip, took, self.tolerance)
            {
                ready.warnings.push(warning);
            }
        }
    }

    fn sample(&mut self, now: Nanos, stall: Stall, value: Nanos, ready: &mut Ready) {
        ready.stalls.push((stall, value));
        if let Some(warning) = self.watch.check(now, stall, value, self.tolerance) {
            ready.warnings.push(warning);
        }
    }

    fn reply(&mut self, now: Nanos, sent: &InFlight, reply: Reply, ready: &mut Ready) {
        let input = MachineInput::Reply {
            id: sent.command.id(),
            sent_at: sent.sent_at,
            reply,
        };
        self.feed(now, input, ready);
    }

    /// Steps the machine, gathering what it produced into `ready`.
    fn feed(&mut self, now: Nanos, input: MachineInput, ready: &mut Ready) {
        let stepped = self.machine.handle(now, input);
        ready.events.extend(stepped.events);
        ready.warnings.extend(stepped.warnings);
        ready.renewal = ready.renewal.take().or(stepped.renewal);
        ready.released = ready.released.take().or(stepped.released);
        ready.view = stepped.view;
        ready.looked = stepped.looked;
        ready.settled = stepped.settled;
    }

    fn finish(&self, mut ready: Ready) -> Ready {
        ready.confirmed_generation = self.confirmed_generation;
        ready
    }
}

#[cfg(test)]
mod tests;
