//! The timing of one instance and the take-over wait: the inequality the lease's safety rests
//! on (the top of `src/lease/mod.rs`), in numbers.

use crate::protocol::Nanos;

/// Bound on how much faster or slower one instance's monotonic clock may run than real time
/// (or another's), in parts per million: 1 %, far above what NTP-disciplined or free-running
/// quartz clocks do (tens of ppm), so a frequency error never shortens a wait.
pub const DRIFT_PPM: u64 = 10_000;
/// Added to every take-over wait: the scheduling of the take itself.
pub const TAKEOVER_MARGIN: Nanos = 10_000_000;

pub(super) const MILLI: Nanos = 1_000_000;

/// A presence entry lasts this many presence intervals: one late look does not make a live
/// instance look dead, and a dead one is gone soon after (1.5 s at the default 500 ms).
pub const PRESENCE_LIFETIMES: u64 = 3;

/// How long a standby must see a holder's record unchanged (on its own clock, from the
/// reply that first showed it) before replacing it, when the holder demotes itself
/// `deadline` after the start of its last successful renewal: `deadline · (1+ρ)² + margin`.
pub fn takeover_wait(deadline: Nanos) -> Nanos {
    let rate = u128::from(1_000_000 + DRIFT_PPM);
    let scaled = u128::from(deadline) * rate * rate / 1_000_000_000_000;
    (scaled as Nanos).saturating_add(TAKEOVER_MARGIN)
}

/// The timing one instance runs with (all on its own monotonic clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// How often the holder renews.
    pub renew_interval: Nanos,
    /// The holder is primary until this long after the start of its last successful
    /// renewal (its declared deadline).
    pub deadline: Nanos,
    /// How often a standby reads the lease record.
    pub poll_interval: Nanos,
    /// How often a renewal also resets the lock key's TTL and writes the heartbeat.
    pub refresh_interval: Nanos,
    /// How often a look or a renewal also records this instance among the live ones (each
    /// entry counts for [`PRESENCE_LIFETIMES`] of these).
    pub presence_interval: Nanos,
    /// The pause after a failed round trip.
    pub retry_interval: Nanos,
    /// After handing the lease over on request, how long this instance leaves it to others.
    pub handover_grace: Nanos,
}

/// What a configuration decides of the lease's timing (on the instance's own clock); every
/// other setting of [`Params`] follows from these ([`Params::from_periods`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    pub renew_interval: Nanos,
    pub deadline: Nanos,
    pub poll_interval: Nanos,
    /// The lock key's TTL (`lock_ttl`).
    pub lock_ttl: Nanos,
}

impl Periods {
    /// The default configuration's: fast failover (renewals and looks every 100 ms, a
    /// deadline of 100 ms + the 200 ms tolerance) and a 30 s `lock_ttl`.
    pub const FAST_DEFAULT: Periods = Periods {
        renew_interval: 100 * MILLI,
        deadline: 300 * MILLI,
        poll_interval: 100 * MILLI,
        lock_ttl: 30_000 * MILLI,
    };
}

/// How often an instance records itself among the live ones, at least (its looks, when
/// rarer): status and metrics count an instance live within about a second of now.
pub const PRESENCE_INTERVAL: Nanos = 500 * MILLI;

impl Params {
    /// Every setting of the machine, derived from the periods a configuration gives: the
    /// one place they are derived.
    pub fn from_periods(periods: Periods) -> Self {
        let Periods {
            renew_interval,
            deadline,
            poll_interval,
            lock_ttl,
        } = periods;
        Params {
            renew_interval,
            deadline,
            poll_interval,
            refresh_interval: lock_ttl / 3,
            presence_interval: PRESENCE_INTERVAL.max(poll_interval),
            retry_interval: poll_interval.min(50 * MILLI),
            handover_grace: poll_interval.clamp(50 * MILLI, lock_ttl / 2),
        }
    }

    pub fn takeover_wait(&self) -> Nanos {
        takeover_wait(self.deadline)
    }

    /// How long one presence entry counts an instance as live.
    pub fn presence_ttl(&self) -> Nanos {
        self.presence_interval.saturating_mul(PRESENCE_LIFETIMES)
    }
}
