//! A schedule: the instances' clocks, the faults and when they strike, drawn from a seed.

use super::*;

/// An instance's monotonic clock: `offset + (t - born) · num / den` at real time `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub num: u64,
    pub den: u64,
    pub offset: u64,
}

impl Clock {
    pub(super) fn random(rng: &mut fastrand::Rng) -> Self {
        // Legal rates: within [1/(1+ρ), 1+ρ] of real time (mod.rs, argument 2: the holder's
        // D lasts at most D(1+ρ) real, the taker's W at least W/(1+ρ)). Often at the bounds.
        let hi = 1_000_000 + DRIFT_PPM;
        let (num, den) = match rng.u8(..10) {
            0..=2 => (hi, 1_000_000),
            3..=5 => (1_000_000, hi),
            6 => (1_000_000, 1_000_000),
            _ => {
                let x = rng.u64(1_000_000..=hi);
                if rng.bool() {
                    (x, 1_000_000)
                } else {
                    (1_000_000, x)
                }
            }
        };
        Clock {
            num,
            den,
            offset: rng.u64(..1_000_000_000_000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Both,
    Requests,
    Replies,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Data kept (RDB/AOF).
    Persisted,
    /// No persistence: everything lost.
    Empty,
    /// Loaded from a snapshot this old.
    Snapshot { age: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseKey {
    Lock,
    Record,
    Epoch,
}

/// A fault (or a join). `inst` is taken modulo the instances existing at the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Join {
        clock: Clock,
    },
    Crash {
        inst: usize,
    },
    /// Graceful stop (`Input::Stop`: step down, release, exit).
    Stop {
        inst: usize,
    },
    /// The whole process descheduled for `dur` (no thread of it runs).
    Freeze {
        inst: usize,
        dur: u64,
    },
    /// The lease thread's next timer wake-up comes `dur` late (the host ran something else).
    LateWake {
        inst: usize,
        dur: u64,
    },
    /// The lease thread reads its next reply `dur` after it arrived.
    LateRead {
        inst: usize,
        dur: u64,
    },
    Restart {
        down: u64,
        mode: Restart,
    },
    /// A lagging replica promoted: data from `lag` ago, every connection reset.
    Promote {
        lag: u64,
    },
    FlushAll,
    Evict(LeaseKey),
    /// The driver's connection closed on the server side only: requests vanish silently.
    HalfClose {
        inst: usize,
    },
    Partition {
        inst: usize,
        dur: u64,
        dir: Dir,
    },
    /// Lossy, slow network for everyone: `loss` % of messages lost, `long` % delayed 50 ms–1.5 s.
    Storm {
        dur: u64,
        loss: u8,
        long: u8,
    },
}

impl Fault {
    pub(super) fn lasts(&self) -> bool {
        matches!(
            self,
            Fault::Freeze { .. }
                | Fault::LateWake { .. }
                | Fault::LateRead { .. }
                | Fault::Restart { .. }
                | Fault::Partition { .. }
                | Fault::Storm { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    pub params: Params,
    /// The lease command timeout (`Timing::lease_command_timeout`).
    pub timeout: u64,
    /// The ordinary command timeout (looks, takes, releases).
    pub command_timeout: u64,
    /// Only stalls shorter than the tolerance less a round trip, apart from each other: the
    /// lease must not move at all (invariant (e)).
    pub short_stalls_only: bool,
    pub clocks: Vec<Clock>,
    pub faults: Vec<(u64, Fault)>,
    pub duration: u64,
    pub write_period: u64,
}

pub fn fast_params() -> Params {
    Params::from_periods(machine::Periods::FAST_DEFAULT)
}

impl Schedule {
    pub fn generate(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (params, duration) = match rng.u8(..8) {
            0 => (
                // Slow settings scaled down: the lock key's TTL (3 × refresh) matters here.
                Params {
                    renew_interval: 250 * MS,
                    deadline: 750 * MS,
                    poll_interval: 200 * MS,
                    refresh_interval: 700 * MS,
                    presence_interval: 500 * MS,
                    retry_interval: 50 * MS,
                    handover_grace: 100 * MS,
                },
                6_000 * MS,
            ),
            1 => (
                // A short failover tolerance: renew 100, deadline 150.
                Params {
                    deadline: 150 * MS,
                    refresh_interval: 1_000 * MS,
                    ..fast_params()
                },
                3_000 * MS,
            ),
            _ => (fast_params(), 3_000 * MS),
        };
        let timeout = (200 * MS)
            .min(params.deadline.saturating_sub(params.renew_interval))
            .max(MS);
        let clocks = (0..rng.usize(2..=4))
            .map(|_| Clock::random(&mut rng))
            .collect();
        let command_timeout = rng.u64(2..=10) * timeout;
        let tolerance = params.deadline - params.renew_interval;
        // A stall drawn on both sides of the tolerance.
        let stall = |rng: &mut fastrand::Rng| tolerance * rng.u64(10..300) / 100;
        let short_stalls_only = rng.u8(..8) == 0;
        let faults = 'faults: {
            let mut faults = Vec::new();
            if short_stalls_only {
                // At most one stall a second, each shorter than the tolerance less a round trip
                // (and the clocks' drift over a renewal period).
                let longest = tolerance * 9 / 10 - 2 * MAX_NORMAL_DELAY;
                for second in 0..duration / (1_000 * MS) {
                    let at = second * 1_000 * MS + rng.u64(..500) * MS;
                    let inst = rng.usize(..6);
                    let dur = rng.u64(MS..longest);
                    let fault = match rng.u8(..3) {
                        0 => Fault::Freeze { inst, dur },
                        1 => Fault::LateWake { inst, dur },
                        _ => Fault::LateRead { inst, dur },
                    };
                    faults.push((at, fault));
                }
                break 'faults faults;
            }
            let count = match rng.u8(..10) {
                0 => 0,
                1..=6 => rng.usize(1..=4),
                _ => rng.usize(4..=10),
            };
            let inst = |rng: &mut fastrand::Rng| rng.usize(..6);
            let span = |rng: &mut fastrand::Rng| match rng.u8(..4) {
                0 => rng.u64(1..50) * MS,
                1 | 2 => rng.u64(50..500) * MS,
                _ => rng.u64(500..1_500) * MS,
            };
            for _ in 0..count {
                let at = rng.u64(..duration * 6 / 10);
                let fault = match rng.u8(..100) {
                    0..=7 => Fault::Join {
                        clock: Clock::random(&mut rng),
                    },
                    8..=15 => Fault::Crash {
                        inst: inst(&mut rng),
                    },
                    16..=19 => Fault::Stop {
                        inst: inst(&mut rng),
                    },
                    20..=25 => Fault::Freeze {
                        inst: inst(&mut rng),
                        dur: span(&mut rng),
                    },
                    26..=28 => Fault::LateWake {
                        inst: inst(&mut rng),
                        dur: stall(&mut rng),
                    },
                    29..=31 => Fault::LateRead {
                        inst: inst(&mut rng),
                        dur: stall(&mut rng),
                    },
                    32..=39 => Fault::Restart {
                        down: rng.u64(..300) * MS,
                        mode: match rng.u8(..3) {
                            0 => Restart::Persisted,
                            1 => Restart::Empty,
                            _ => Restart::Snapshot {
                                age: rng.u64(..2_000) * MS,
                            },
                        },
                    },
                    40..=45 => Fault::Promote {
                        lag: rng.u64(..500) * MS,
                    },
                    46..=50 => Fault::FlushAll,
                    51..=57 => Fault::Evict(match rng.u8(..3) {
                        0 => LeaseKey::Lock,
                        1 => LeaseKey::Record,
                        _ => LeaseKey::Epoch,
                    }),
                    58..=65 => Fault::HalfClose {
                        inst: inst(&mut rng),
                    },
                    66..=85 => Fault::Partition {
                        inst: inst(&mut rng),
                        dur: span(&mut rng),
                        dir: match rng.u8(..3) {
                            0 => Dir::Both,
                            1 => Dir::Requests,
                            _ => Dir::Replies,
                        },
                    },
                    _ => Fault::Storm {
                        dur: span(&mut rng),
                        loss: rng.u8(..60),
                        long: rng.u8(..40),
                    },
                };
                faults.push((at, fault));
            }
            faults.sort_by_key(|(at, _)| *at);
            faults
        };
        Schedule {
            seed,
            params,
            timeout,
            command_timeout,
            short_stalls_only,
            clocks,
            faults,
            duration,
            write_period: rng.u64(20..100) * MS,
        }
    }

    /// `B` of invariant (c).
    pub fn liveness_bound(&self) -> u64 {
        2 * machine::takeover_wait(self.params.deadline)
            + 4 * self.params.poll_interval
            + 2 * self.command_timeout
            + 50 * MS
    }
}
