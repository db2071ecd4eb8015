//! What goes into the machine and what comes out of a step.

use crate::meter::Stall;
use crate::protocol::{Command, Nanos, Reply};
use crate::shared::View;

/// A change of role, for the callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Promoted { epoch: u64 },
    Demoted { reason: Demotion },
}

/// Why an instance stopped being primary. The text (`as_str`) is what the callbacks and the
/// logs are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Demotion {
    /// A graceful stop (`close()`, a signal): logged at info, not as a warning.
    ShuttingDown,
    /// An operator asked for a planned handover.
    HandoverRequested,
    /// A fenced write found another token on the lock.
    WriteRefused,
    /// A renewal found the record or the lock key without this instance's token.
    TakenOver,
    /// No renewal succeeded before the deadline, and the connection it renewed on is gone.
    DeadlinePassed,
    /// No renewal succeeded before the deadline; the holder renews its token at once on the
    /// connection it renewed on (primary again with the same epoch if nobody took over).
    DeadlinePassedRenewing,
}

impl Demotion {
    pub const fn as_str(self) -> &'static str {
        match self {
            Demotion::ShuttingDown => crate::SHUTTING_DOWN,
            Demotion::HandoverRequested => "handover requested by an operator",
            Demotion::WriteRefused => "a fenced write was refused: the lease is no longer ours",
            Demotion::TakenOver => {
                "the lease was taken over or lost (the record or the lock key no longer \
                 carries this instance's token)"
            }
            Demotion::DeadlinePassed => "no renewal succeeded before the renew deadline",
            Demotion::DeadlinePassedRenewing => {
                "no renewal succeeded before the renew deadline; renewing at once"
            }
        }
    }
}

impl core::fmt::Display for Demotion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something an operator should hear of, as data: the lease thread hands it to the event
/// thread, which logs it (`Warning::text`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The lock key carries a token the lease record does not name.
    ForeignLock,
    /// The holder declares a longer deadline than this instance's.
    LongerDeadline { declared_ms: u64, own_ms: u64 },
    /// The lease thread cannot open a connection (said once per outage).
    Unreachable { error: String },
    /// A lease round trip failed (said once per run of failures).
    RoundTripFailed { error: String },
    /// The host stalled the lease thread for close to the tolerance.
    Stalled {
        stall: Stall,
        value_ms: u64,
        tolerance_ms: u64,
    },
}

impl Warning {
    pub fn text(&self, instance_id: &str) -> String {
        match self {
            Warning::ForeignLock => format!(
                "{instance_id}: the lock key is held by a token the lease record does not name \
                 (an instance of the predecessor, or a lock set by hand): waiting for it to \
                 expire"
            ),
            Warning::LongerDeadline {
                declared_ms,
                own_ms,
            } => format!(
                "{instance_id}: the lease holder declares a deadline of {declared_ms} ms, longer \
                 than this instance's {own_ms} ms: run every instance of a bot with the same \
                 lease settings, or a lease lost with its record (a flush) is only safe after \
                 the longest deadline"
            ),
            Warning::Unreachable { error } => {
                format!("{instance_id}: the lease thread cannot reach Redis: {error}")
            }
            Warning::RoundTripFailed { error } => {
                format!("{instance_id}: lease round trip failed: {error}")
            }
            Warning::Stalled {
                stall,
                value_ms,
                tolerance_ms,
            } => {
                let what = match stall {
                    Stall::WokeLate => format!(
                        "the lease thread woke {value_ms} ms late (the process was not scheduled)"
                    ),
                    Stall::RoundTrip => format!("a lease round trip took {value_ms} ms"),
                };
                format!(
                    "{instance_id}: {what}, against a failover_tolerance of {tolerance_ms} ms: a \
                     stall past the tolerance demotes a live primary. Raise failover_tolerance \
                     (docs/failover.md, \"Tolerance profiles\": 500 ms in a container with CPU \
                     limits), or give the bot CPU it is not throttled on (no CFS quota, fewer \
                     busy processes than cores)"
                )
            }
        }
    }
}

/// Messages from the lease channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Released,
    HandoverRequested,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed.
    Tick,
    /// The driver opened a new connection for observations and takes (at `now`).
    Connected,
    /// That connection broke: observations made on it no longer count.
    Disconnected,
    /// The outcome of command `id`, sent at `sent_at` (measured just before sending).
    Reply {
        id: u64,
        sent_at: Nanos,
        reply: Reply,
    },
    Notice(Notice),
    /// A fenced write carrying `token` was refused by Redis.
    WriteRefused {
        token: String,
    },
    Stop,
    /// A caller asks for a renewal on its own connection now (`heartbeat()`): the renewal
    /// comes back in [`Ready::renewal`] (its reply is a [`Input::Reply`]); a standby looks now.
    Heartbeat,
    /// Give the lease up at once (graceful stop, handover): standby from this step on. The
    /// token to release comes back in [`Ready::released`] when it was primary up to now
    /// (otherwise only its lock key is freed, by the driver).
    StepDown {
        reason: Demotion,
    },
}

/// What a step of the machine produced. The lease thread's next command and wake-up are
/// the driver's to ask for (`crate::driver`, one command at a time on its connection).
#[derive(Debug, Default)]
pub struct Ready {
    pub events: Vec<Event>,
    pub warnings: Vec<Warning>,
    pub view: View,
    /// The renewal asked for by [`Input::Heartbeat`], to run on the caller's connection.
    pub renewal: Option<Command>,
    /// The token [`Input::StepDown`] gave up, to release.
    pub released: Option<String>,
    /// The lease record has been read at least once.
    pub looked: bool,
    /// The first look settled the role: primary, or someone else holds the lease.
    pub settled: bool,
}
