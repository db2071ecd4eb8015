//! The stall meter for operators: each manager publishes a compact summary of its lease
//! thread's meter ([`LeaseStalls`]) to Redis about every second, from a thread of its own
//! (`quantshift-stalls`: the lease thread never waits for it), so `quantshift-state status`
//! and the metrics exporter, in other processes, can show it.
//!
//! The summaries are the fields of one hash per bot ([`Keys::lease_stalls`], hash-tagged
//! with the bot's other keys), one field per instance id, each `<until ms> <JSON>`: it counts
//! until that server time ([`SUMMARY_TTL`] after it was written), so a dead instance's entry
//! is ignored once it lapses and removed by the next publisher; the key expires when nobody
//! publishes any more. A closed manager removes its own entry (and its presence among the
//! live instances) at once: [`leave`].
//!
//! [`Keys::lease_stalls`]: crate::keys::Keys::lease_stalls

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};

use crate::clock::millis;
use crate::keys::Keys;
use crate::lease::meter::{HistogramSnapshot, LeaseStalls, BUCKET_BOUNDS_MS};
use crate::store::{Store, SCRIPTS};

/// How often a manager publishes its summary.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a published summary counts (a few publishing intervals).
pub const SUMMARY_TTL: Duration = Duration::from_secs(3);
/// The summary's format; readers ignore summaries of another version.
const SUMMARY_VERSION: u64 = 1;

/// The summary of `stalls` as published: compact JSON, durations in microseconds.
pub fn summary_json(stalls: &LeaseStalls) -> String {
    let histogram = |h: &HistogramSnapshot| {
        json!({
            "count": h.count,
            "sum_us": micros(h.sum),
            "max_us": micros(h.max),
            "buckets": h.buckets,
        })
    };
    json!({
        "v": SUMMARY_VERSION,
        "wake_late": histogram(&stalls.wake_late),
        "round_trip": histogram(&stalls.round_trip),
        "tolerance_us": micros(stalls.tolerance),
        "dropped_records": stalls.dropped_records,
    })
    .to_string()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A published summary read back; `None` for one this version cannot read (another format
/// version, other buckets).
pub fn parse_summary(text: &str) -> Option<LeaseStalls> {
    let doc: Value = serde_json::from_str(text).ok()?;
    if doc.get("v")?.as_u64()? != SUMMARY_VERSION {
        return None;
    }
    let us = |value: &Value| value.as_u64().map(Duration::from_micros);
    let histogram = |value: &Value| -> Option<HistogramSnapshot> {
        let buckets: Vec<u64> = value
            .get("buckets")?
            .as_array()?
            .iter()
            .map(Value::as_u64)
            .collect::<Option<_>>()?;
        if buckets.len() != BUCKET_BOUNDS_MS.len() + 1 {
            return None;
        }
        Some(HistogramSnapshot {
            count: value.get("count")?.as_u64()?,
            sum: us(value.get("sum_us")?)?,
            max: us(value.get("max_us")?)?,
            buckets,
        })
    };
    Some(LeaseStalls {
        wake_late: histogram(doc.get("wake_late")?)?,
        round_trip: histogram(doc.get("round_trip")?)?,
        tolerance: us(doc.get("tolerance_us")?)?,
        dropped_records: doc.get("dropped_records")?.as_u64()?,
    })
}

/// One field of the stalls hash: the summary, if it still counts at the server time `now_ms`.
pub fn parse_entry(value: &str, now_ms: u64) -> Option<LeaseStalls> {
    let (until, summary) = value.split_once(' ')?;
    if until.parse::<u64>().ok()? <= now_ms {
        return None;
    }
    parse_summary(summary)
}

/// Publishes a manager's summary every [`PUBLISH_INTERVAL`] until stopped.
pub(crate) struct Publisher {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Publisher {
    /// Starts the publisher thread; `meter` reads the lease's stall meter.
    pub fn spawn(
        store: Arc<Store>,
        keys: &Keys,
        instance_id: String,
        meter: impl Fn() -> LeaseStalls + Send + 'static,
    ) -> std::io::Result<(Arc<Publisher>, JoinHandle<()>)> {
        let publisher = Arc::new(Publisher {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let key = keys.lease_stalls.clone();
        let running = Arc::clone(&publisher);
        let thread = std::thread::Builder::new()
            .name("quantshift-stalls".into())
            .spawn(move || running.run(&store, &key, &instance_id, meter))?;
        Ok((publisher, thread))
    }

    fn run(&self, store: &Store, key: &str, instance_id: &str, meter: impl Fn() -> LeaseStalls) {
        let mut failing = false;
        loop {
            let summary = summary_json(&meter());
            let mut invocation = SCRIPTS.stalls_publish.key(key);
            invocation
                .arg(instance_id)
                .arg(&summary)
                .arg(millis(SUMMARY_TTL));
            match store.run(|conn| invocation.invoke::<i64>(conn)) {
                Ok(_) => failing = false,
                // Said once per run of failures, at debug: the lease thread reports outages.
                Err(err) if !failing => {
                    failing = true;
                    log::debug!("{instance_id}: could not publish the lease stall meter: {err}");
                }
                Err(_) => {}
            }
            let next = Instant::now() + PUBLISH_INTERVAL;
            let mut stopped = self.stopped.lock();
            while !*stopped && Instant::now() < next {
                self.wake.wait_until(&mut stopped, next);
            }
            if *stopped {
                return;
            }
        }
    }

    /// Ends the publisher thread (at once, or after the publish under way).
    pub fn stop(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }
}

/// A closed instance leaves the operators' view at once: its member of the live instances
/// and its stall summary go (one round trip, bounded by the command timeout). A failure is
/// only logged: both lapse by themselves within seconds.
pub(crate) fn leave(store: &Store, keys: &Keys, instance_id: &str) {
    let left = store.run(|conn| {
        redis::pipe()
            .zrem(&keys.instances, instance_id)
            .ignore()
            .hdel(&keys.lease_stalls, instance_id)
            .ignore()
            .query::<()>(conn)
    });
    match left {
        Ok(()) => {}
        // Nothing for the operator to do: the entries lapse by themselves within seconds.
        Err(err) if err.kind() == crate::error::ErrorKind::RedisUnavailable => log::debug!(
            "{instance_id}: Redis unreachable, the instance leaves the live instances when its \
             presence lapses: {err}"
        ),
        Err(err) => log::warn!(
            "{instance_id}: could not remove this instance from the live instances (it lapses \
             by itself within seconds): {err}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_back_as_published_while_it_counts() {
        let h = crate::lease::meter::Histogram::default();
        for ms in [0, 3, 120, 7000] {
            h.record(Duration::from_millis(ms));
        }
        let stalls = LeaseStalls {
            wake_late: h.snapshot(),
            round_trip: crate::lease::meter::Histogram::default().snapshot(),
            tolerance: Duration::from_millis(200),
            dropped_records: 4,
        };
        let text = summary_json(&stalls);
        assert_eq!(parse_summary(&text), Some(stalls.clone()));
        let entry = format!("1000 {text}");
        assert_eq!(parse_entry(&entry, 999), Some(stalls));
        assert_eq!(parse_entry(&entry, 1000), None);
        assert_eq!(parse_entry("junk", 0), None);
        assert_eq!(parse_summary(&text.replace("\"v\":1", "\"v\":2")), None);
    }
}
