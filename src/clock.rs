//! Wall-clock stamps in the form the existing bots parse, and the monotonic clock the lease
//! deadline is counted on.

use std::sync::LazyLock;
use std::time::Duration;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use std::time::Instant;

/// `2025-12-24T22:00:00.123456`: UTC, microseconds, no offset (docs/contract.md §1).
pub fn utc_now_iso() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

pub fn unix_millis() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

static ORIGIN: LazyLock<u64> = LazyLock::new(boot_nanos);

/// Nanoseconds on the lease's clock since the first call in this process; never 0, so 0
/// can mean "no deadline". The clock is `CLOCK_BOOTTIME` where there is one: monotonic,
/// and unlike `CLOCK_MONOTONIC` (what `Instant` reads) it keeps counting while the host is
/// suspended, so a primary whose machine slept past its deadline is standby when it wakes.
pub fn now_nanos() -> u64 {
    let origin = *ORIGIN;
    boot_nanos().saturating_sub(origin).saturating_add(1)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn boot_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn boot_nanos() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_nanos() as u64
}

pub fn millis(duration: Duration) -> u64 {
    duration.as_millis().max(1) as u64
}
