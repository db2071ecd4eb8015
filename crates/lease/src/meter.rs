//! The stall meter: how late the lease thread woke and how long its round trips took, the
//! two ways a host eats into `failover_tolerance` (a renewal that starts or ends more than
//! the tolerance late costs the lease). Written by the lease thread with relaxed atomics,
//! read by anyone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::machine::Warning;

/// The histograms' bucket upper bounds in milliseconds (a last bucket holds the rest):
/// fine below the default 200 ms tolerance, coarse past it.
pub const BUCKET_BOUNDS_MS: [u64; 13] = [1, 2, 5, 10, 20, 50, 100, 150, 200, 300, 500, 1000, 5000];

const BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;

/// A histogram of durations with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_MS
            .iter()
            .position(|bound| us <= bound * 1_000)
            .unwrap_or(BUCKETS - 1);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            count: counts.iter().sum(),
            sum: Duration::from_micros(self.sum_us.load(Ordering::Relaxed)),
            max: Duration::from_micros(self.max_us.load(Ordering::Relaxed)),
            buckets: counts,
        }
    }
}

/// A histogram as read at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum: Duration,
    pub max: Duration,
    /// Counts per bucket: `buckets[i]` holds values up to `BUCKET_BOUNDS_MS[i]` (and above
    /// the previous bound); the last holds the values above every bound.
    pub buckets: Vec<u64>,
}

impl HistogramSnapshot {
    /// An upper bound on the `q` quantile (0..=1): the bound of the bucket it falls in, or
    /// the maximum when it falls past the last bound. Zero with no values.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return match BUCKET_BOUNDS_MS.get(i) {
                    Some(bound) => Duration::from_millis(*bound).min(self.max),
                    None => self.max,
                };
            }
        }
        self.max
    }
}

/// The lease thread's stall meter.
#[derive(Default)]
pub struct StallMeter {
    /// How much later than asked the lease thread woke (timer wake-ups only).
    pub wake_late: Histogram,
    /// Each lease command's round trip, send to reply (or failure).
    pub round_trip: Histogram,
}

/// What the stall meter shows, with the lease's own margins beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStalls {
    pub wake_late: HistogramSnapshot,
    pub round_trip: HistogramSnapshot,
    /// How late a renewal may come before the holder demotes itself: its deadline less the
    /// renewal period (`failover_tolerance` with fast failover).
    pub tolerance: Duration,
    /// Role events and log records the lease's threads dropped because the thread that
    /// delivers them was behind (a callback or a logger that blocks).
    pub dropped_records: u64,
}

/// What a stall was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The lease thread woke this late.
    WokeLate,
    /// A lease round trip took this long.
    RoundTrip,
}

/// A stall is worth a warning from half the tolerance on: one twice as long costs a
/// failover.
const WARN_FRACTION: u64 = 2;
/// At most one stall warning per this period (nanoseconds).
const WARN_EVERY: u64 = 60_000_000_000;

/// Decides when the host's stalls come close enough to the tolerance to warn.
#[derive(Debug, Default)]
pub struct StallWatch {
    last_warned: Option<u64>,
}

impl StallWatch {
    /// The warning for a stall of `value` seen at `now` (nanoseconds of one monotonic
    /// clock), if one is due.
    pub fn check(&mut self, now: u64, stall: Stall, value: u64, tolerance: u64) -> Option<Warning> {
        if tolerance == 0 || value < tolerance / WARN_FRACTION {
            return None;
        }
        if self
            .last_warned
            .is_some_and(|at| now.saturating_sub(at) < WARN_EVERY)
        {
            return None;
        }
        self.last_warned = Some(now);
        Some(Warning::Stalled {
            stall,
            value_ms: value / 1_000_000,
            tolerance_ms: tolerance / 1_000_000,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        let h = Histogram::default();
        for ms in [0, 1, 3, 3, 40, 250, 9000] {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 7);
        assert_eq!(s.max, Duration::from_secs(9));
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[2], 2);
        assert_eq!(s.buckets[BUCKETS - 1], 1);
        assert_eq!(s.quantile(0.5), Duration::from_millis(5));
        assert_eq!(s.quantile(1.0), Duration::from_secs(9));
        assert_eq!(
            Histogram::default().snapshot().quantile(0.99),
            Duration::ZERO
        );
    }

    #[test]
    fn stalls_near_the_tolerance_warn_once_a_minute() {
        let mut watch = StallWatch::default();
        let ms = |n: u64| n * 1_000_000;
        let tolerance = ms(200);
        assert!(watch.check(0, Stall::WokeLate, ms(99), tolerance).is_none());
        let text = watch
            .check(1, Stall::WokeLate, ms(150), tolerance)
            .unwrap()
            .text("i");
        assert!(text.contains("150 ms late") && text.contains("failover_tolerance of 200 ms"));
        assert!(watch
            .check(2, Stall::RoundTrip, ms(190), tolerance)
            .is_none());
        let later = 61_000_000_000;
        assert!(watch
            .check(later, Stall::RoundTrip, ms(190), tolerance)
            .is_some());
    }
}
