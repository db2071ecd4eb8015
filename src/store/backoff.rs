//! The reconnection backoff shared by every connection to Redis and to the Sentinels.

use std::time::Duration;

/// Reconnection backoff: doubles from the first delay up to the cap, each delay jittered.
pub(super) const BACKOFF_FIRST: Duration = Duration::from_millis(25);
pub(super) const BACKOFF_CAP: Duration = Duration::from_secs(1);

/// `delay` scaled by a random factor in [0.5, 1.0), so reconnecting clients spread out.
pub(super) fn jittered(delay: Duration) -> Duration {
    let random = getrandom::u32().unwrap_or(u32::MAX / 2);
    let factor = 0.5 + f64::from(random) / f64::from(u32::MAX) / 2.0;
    delay.mul_f64(factor)
}
