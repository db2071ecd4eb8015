//! How much of `failover_tolerance` this host eats: runs one bot as primary for a while (with
//! busy threads of its own if asked) and prints the lease's stall meter (`lease_stalls()`:
//! how late the lease thread woke, how long its round trips took) and whether the lease was
//! kept. `scripts/tolerance_profiles.sh` runs it under each profile of docs/failover.md
//! ("Tolerance profiles").
//!
//! ```text
//! QUANTSHIFT_REDIS_URL=redis://127.0.0.1:PORT/0 QS_SECONDS=60 QS_BUSY_THREADS=2 \
//!     cargo run --release --example lease_stalls
//! ```
//!
//! `QS_TOLERANCE_MS` sets `failover_tolerance` (default 200), `QS_BOT` the bot name, `QS_LABEL`
//! a label for the output line. Exit status 0 when the lease was kept (no demotion, one
//! epoch), 1 otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quantshift_core::{Config, HistogramSnapshot, StateManager, BUCKET_BOUNDS_MS};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Spins and allocates for ever: the bot's own work, competing with its lease.
fn busy(seed: u64) {
    let mut total = seed | 1;
    loop {
        let n = 1 + (total % 65_536) as usize;
        let v: Vec<u64> = (0..n as u64).map(|i| i.wrapping_mul(total)).collect();
        total = total
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(v.iter().fold(0, |a, &b| a ^ b) | 1);
        std::hint::black_box(&v);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// How many values were above `bound` ms.
fn above(h: &HistogramSnapshot, bound: u64) -> u64 {
    let from = BUCKET_BOUNDS_MS
        .iter()
        .position(|&b| b == bound)
        .map_or(h.buckets.len(), |i| i + 1);
    h.buckets.iter().skip(from).sum()
}

fn describe(name: &str, h: &HistogramSnapshot) -> String {
    format!(
        "{name}_n={} {name}_max_ms={:.1} {name}_p99_le_ms={:.0} {name}_p999_le_ms={:.0} {name}_over_50ms={} {name}_over_100ms={} {name}_over_200ms={}",
        h.count,
        ms(h.max),
        ms(h.quantile(0.99)),
        ms(h.quantile(0.999)),
        above(h, 50),
        above(h, 100),
        above(h, 200)
    )
}

fn main() {
    let url = std::env::var("QUANTSHIFT_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let seconds = env_u64("QS_SECONDS", 60);
    let busy_threads = env_u64("QS_BUSY_THREADS", 0);
    let tolerance = Duration::from_millis(env_u64("QS_TOLERANCE_MS", 200));
    let bot = std::env::var("QS_BOT").unwrap_or_else(|_| "tolerance-probe".to_owned());
    let label = std::env::var("QS_LABEL").unwrap_or_else(|_| "this host".to_owned());

    let state = StateManager::new(
        Config::new(bot)
            .redis_url(url)
            .failover_tolerance(tolerance)
            .install_signal_handlers(false),
    )
    .expect("a state manager");
    let demotions = Arc::new(Mutex::new(Vec::<String>::new()));
    let epochs = Arc::new(AtomicU64::new(0));
    let changes = Arc::new(AtomicU64::new(0));
    {
        let demotions = Arc::clone(&demotions);
        state.on_demoted(move |reason| demotions.lock().unwrap().push(reason.to_owned()));
        let (epochs, changes) = (Arc::clone(&epochs), Arc::clone(&changes));
        state.on_promoted(move |epoch| {
            if epochs.swap(epoch, Ordering::SeqCst) != epoch {
                changes.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    if !state.wait_until_primary(Some(Duration::from_secs(30))) {
        eprintln!("not primary within 30 s (another instance of the bot is running?)");
        std::process::exit(2);
    }
    let first_epoch = state.epoch().unwrap_or(0);
    for n in 0..busy_threads {
        std::thread::spawn(move || busy(n));
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let stalls = state.lease_stalls();
    let demoted = demotions.lock().unwrap().clone();
    let epoch_changes = changes.load(Ordering::SeqCst).saturating_sub(1);
    let kept = demoted.is_empty() && state.epoch() == Some(first_epoch) && state.is_primary();
    println!(
        "PROFILE label=\"{label}\" seconds={seconds} busy_threads={busy_threads} tolerance_ms={} {} {} demotions={} epoch_changes={epoch_changes} kept={kept} dropped_records={}",
        tolerance.as_millis(),
        describe("wake_late", &stalls.wake_late),
        describe("round_trip", &stalls.round_trip),
        demoted.len(),
        stalls.dropped_records
    );
    for reason in demoted.iter().take(5) {
        println!("  demoted: {reason}");
    }
    let _ = state.close();
    std::process::exit(if kept { 0 } else { 1 });
}
