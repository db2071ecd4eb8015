//! What goes into the machine and what comes out of a step.

use crate::lease::protocol::{Nanos, Reply};
use crate::lease::shared::View;

/// A change of role, for the callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Promoted { epoch: u64 },
    Demoted { reason: String },
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
    pub view: View,
}
