//! What goes into the machine and what comes out of a step.

use crate::lease::protocol::{Nanos, Reply};
use crate::lease::shared::View;

/// A change of role, for the callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Promoted { epoch: u64 },
    Demoted { reason: String },
}

/// Something an operator should hear of, as data: the lease thread hands it to the event
/// thread, which logs it (`Warning::text`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The lock key carries a token the lease record does not name.
    ForeignLock,
    /// The holder declares a longer deadline than this instance's.
    LongerDeadline { declared_ms: u64, own_ms: u64 },
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
}

/// What a step produced. The driver's next command comes from
/// [`Machine::next_command`], asked only by the driver (one command at a time on its
/// connection).
#[derive(Debug, Default)]
pub struct Ready {
    pub events: Vec<Event>,
    pub warnings: Vec<Warning>,
    pub view: View,
}
