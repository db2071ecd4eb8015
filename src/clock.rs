//! Wall-clock stamps in the form the existing bots parse, and the monotonic clock the lease
//! deadline is counted on.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// `2025-12-24T22:00:00.123456`: UTC, microseconds, no offset (CONTRACT §1).
pub fn utc_now_iso() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

pub fn unix_millis() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds on the monotonic clock since the first call in this process; never 0 after
/// the first call returns, so 0 can mean "no deadline".
pub fn monotonic_nanos(at: Instant) -> u64 {
    let origin = *ORIGIN;
    (at.saturating_duration_since(origin).as_nanos() as u64).saturating_add(1)
}

pub fn now_nanos() -> u64 {
    monotonic_nanos(Instant::now())
}

pub fn millis(duration: Duration) -> u64 {
    duration.as_millis().max(1) as u64
}
