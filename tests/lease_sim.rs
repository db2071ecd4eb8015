//! A deterministic simulator for the lease state machine (`crates/lease/src/machine.rs`): instances
//! with drifting clocks, a network that delays and loses, a Redis that restarts, rolls back,
//! flushes and evicts, run against a model of Redis that executes the shipped Lua scripts
//! (held to a real redis-server by `model_matches_redis_server`). See `lease_sim/sim.rs` for
//! the invariants checked after every event.
//!
//! `LEASE_SIM_SCHEDULES=N` runs N schedules (default 100 000; 1 000 in a debug build), `LEASE_SIM_SEED=S` replays one
//! schedule (and shrinks it if it fails), `LEASE_SIM_THREADS=T` (default 2).

#[path = "common/mod.rs"]
mod common;
#[path = "lease_sim/conformance.rs"]
mod conformance;
#[path = "lease_sim/model.rs"]
mod model;
#[path = "lease_sim/sim.rs"]
mod sim;

#[test]
fn model_matches_redis_server() {
    let server = common::RedisServer::start();
    let mut conn = server.connection();
    let (compared, skipped) = conformance::compare(&mut conn, 25, 120);
    println!("model vs redis-server: {compared} steps compared, {skipped} skipped (slow host)");
    assert!(compared > skipped * 4, "too many steps skipped: {skipped}");
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
}

/// Runs the schedules of `seeds` on `threads` threads; returns the first failing seed.
fn run_many(first: u64, count: u64, threads: u64) -> (Option<u64>, sim::Stats) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let failed = AtomicBool::new(false);
    let failing = AtomicU64::new(u64::MAX);
    let totals = std::sync::Mutex::new(sim::Stats::default());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (failed, failing, totals) = (&failed, &failing, &totals);
            scope.spawn(move || {
                let mut model = model::Model::new();
                let mut stats = sim::Stats::default();
                let mut seed = first + t;
                while seed < first + count && !failed.load(Ordering::Relaxed) {
                    let schedule = sim::Schedule::generate(seed);
                    let (violation, s, _) = sim::run(&schedule, &mut model, false);
                    stats.commands += s.commands;
                    stats.takes += s.takes;
                    stats.writes_acked += s.writes_acked;
                    stats.primary_ns += s.primary_ns;
                    stats.liveness_checks += s.liveness_checks;
                    stats.stalls += s.stalls;
                    stats.stalls_injected += s.stalls_injected;
                    stats.regains += s.regains;
                    stats.short_stall_schedules += u64::from(schedule.short_stalls_only);
                    if violation.is_some() {
                        failing.fetch_min(seed, Ordering::Relaxed);
                        failed.store(true, Ordering::Relaxed);
                    }
                    seed += threads;
                }
                let mut totals = totals.lock().unwrap();
                totals.commands += stats.commands;
                totals.takes += stats.takes;
                totals.writes_acked += stats.writes_acked;
                totals.primary_ns += stats.primary_ns;
                totals.liveness_checks += stats.liveness_checks;
                totals.stalls += stats.stalls;
                totals.stalls_injected += stats.stalls_injected;
                totals.regains += stats.regains;
                totals.short_stall_schedules += stats.short_stall_schedules;
            });
        }
    });
    let seed = failing.load(Ordering::Relaxed);
    (
        (seed != u64::MAX).then_some(seed),
        totals.into_inner().unwrap(),
    )
}

fn shrink_and_report(seed: u64) -> String {
    let mut model = model::Model::new();
    let schedule = sim::Schedule::generate(seed);
    let (violation, _, _) = sim::run(&schedule, &mut model, false);
    let Some(violation) = violation else {
        return format!("seed {seed} passes");
    };
    let shrunk = sim::shrink(&schedule, &mut model, violation.kind);
    sim::report(seed, &schedule, &shrunk, &mut model)
}

#[test]
fn lease_simulation() {
    if let Some(seed) = env_u64("LEASE_SIM_SEED") {
        let report = shrink_and_report(seed);
        println!("{report}");
        assert!(report.ends_with("passes"), "{report}");
        return;
    }
    // The test command runs the 100 000 in a release build (scripts/test.d/25-lease-sim.sh);
    // the debug build of `cargo test --all-targets` runs a hundredth, with overflow checks.
    let default = if cfg!(debug_assertions) {
        1_000
    } else {
        100_000
    };
    let count = env_u64("LEASE_SIM_SCHEDULES").unwrap_or(default);
    let first = env_u64("LEASE_SIM_FIRST").unwrap_or(0);
    let threads = env_u64("LEASE_SIM_THREADS").unwrap_or(2).max(1);
    let started = std::time::Instant::now();
    let (failing, stats) = run_many(first, count, threads);
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(seed) = failing {
        panic!("{}", shrink_and_report(seed));
    }
    println!(
        "lease simulator: {count} schedules (seeds {first}..{}) in {elapsed:.1} s on {threads} \
         threads: {:.0} schedules/s; {} commands, {} takes, {} fenced writes acknowledged, \
         {:.0} s primary, {} liveness windows checked; {} host stalls injected ({} schedules \
         of stalls shorter than the tolerance only: the lease never moved), {} late holders \
         primary again at once, {} stall meter samples",
        first + count,
        count as f64 / elapsed,
        stats.commands,
        stats.takes,
        stats.writes_acked,
        stats.primary_ns as f64 / 1e9,
        stats.liveness_checks,
        stats.stalls_injected,
        stats.short_stall_schedules,
        stats.regains,
        stats.stalls
    );
}

/// The checker has teeth: with clocks outside the bound the machine assumes (a holder's clock
/// 40 % slow, a taker's 40 % fast), the take-over wait no longer covers the holder's deadline
/// and the simulator must find two primaries or a fenced write under another primary.
#[test]
fn the_checker_catches_clocks_beyond_the_bound() {
    let mut model = model::Model::new();
    let found = (0..3_000).find_map(|seed| {
        let mut schedule = sim::Schedule::generate(seed);
        for (k, clock) in schedule.clocks.iter_mut().enumerate() {
            (clock.num, clock.den) = if k % 2 == 0 {
                (1_000_000, 1_400_000)
            } else {
                (1_400_000, 1_000_000)
            };
        }
        match sim::run(&schedule, &mut model, false).0 {
            Some(v) if matches!(v.kind, sim::Kind::TwoPrimaries | sim::Kind::FencedWrite) => {
                Some((seed, v))
            }
            _ => None,
        }
    });
    println!("clocks beyond the bound: {found:?}");
    assert!(found.is_some(), "no violation found with illegal clocks");
}
