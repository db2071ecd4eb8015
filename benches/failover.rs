//! Failover times on real processes, and what a standby costs Redis.
//!
//! - Crash: a primary bot process killed with SIGKILL (no release) and taken over by a
//!   standby, at `lock_ttl` 30 s (the default) and 2 s with fast failover (the standby takes
//!   over once the lease record has not moved for the take-over wait), and at 2 s with
//!   `fast_failover(false)` on the standby (it still honours the deadline the holder declares).
//! - Graceful: `close()` taken over through the release notice.
//! - Cost: `total_commands_processed` deltas (INFO) over a window with no bot, with a lone
//!   idle primary, and with an idle primary + standby pair; the standby's rate is the pair's
//!   minus the lone primary's.
//!
//! Prints Markdown tables; `bash scripts/bench.sh` runs it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{child_bot_main, fast_config, manager, signal, wait_for, ChildBot, RedisServer};
use quantshift_core::StateManager;

fn summary(name: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1])
    )
}

/// Kills a primary child bot `trials` times and times the standby's promotion.
fn crash_failover(server: &RedisServer, ttl_ms: u64, fast: bool, trials: usize) -> Vec<Duration> {
    let mut times = Vec::new();
    for trial in 0..trials {
        let bot = format!("crash{ttl_ms}{}{trial}", if fast { "f" } else { "t" });
        let mut child = ChildBot::spawn(server, &bot, ttl_ms, false);
        assert!(wait_for(Duration::from_secs(5), || child.has_line("primary")));
        let standby =
            StateManager::new(fast_config(server, &bot, ttl_ms).fast_failover(fast)).unwrap();
        // The standby has looked at the holder at least once.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!standby.is_primary());
        signal(child.pid(), libc::SIGKILL);
        let killed = Instant::now();
        let bound = Duration::from_millis(ttl_ms) + Duration::from_secs(5);
        assert!(standby.wait_until_primary(Some(bound)));
        times.push(killed.elapsed());
        let _ = child.wait_exit(Duration::from_secs(1));
        standby.close().unwrap();
    }
    times
}

fn total_commands(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut server.connection())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO stats has total_commands_processed")
}

/// `INFO commandstats` as command name → calls (commands run inside scripts included).
fn command_calls(server: &RedisServer) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.connection())
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Commands per second the server processes over `window` (the two INFO calls included),
/// and the same per command name.
fn command_rate(server: &RedisServer, window: Duration) -> (f64, String) {
    let before = total_commands(server);
    let calls_before = command_calls(server);
    let started = Instant::now();
    std::thread::sleep(window);
    let calls_after = command_calls(server);
    let after = total_commands(server);
    let secs = started.elapsed().as_secs_f64();
    let by_name = calls_after
        .iter()
        .filter_map(|(name, calls)| {
            let delta = calls - calls_before.get(name).copied().unwrap_or(0);
            (delta > 0).then(|| format!("{name} {:.1}", delta as f64 / secs))
        })
        .collect::<Vec<_>>()
        .join(", ");
    ((after - before) as f64 / secs, by_name)
}

fn main() {
    if std::env::var("QS_CHILD_URL").is_ok() {
        child_bot_main();
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` runs us too: stay quick there.
    let full = std::env::args().any(|a| a == "--bench");
    let trials = if full { 7 } else { 1 };
    let window = Duration::from_secs(if full { 20 } else { 2 });
    let server = RedisServer::start();

    let mut crash_30 = crash_failover(&server, 30_000, true, trials);
    let mut crash_2 = crash_failover(&server, 2_000, true, trials);
    let mut crash_2_ttl = crash_failover(&server, 2_000, false, trials.min(3));

    let mut graceful = Vec::new();
    for trial in 0..trials * 3 {
        let bot = format!("graceful{trial}");
        let primary = manager(&server, &bot, 2_000);
        assert!(primary.wait_until_primary(Some(Duration::from_secs(5))));
        let standby = manager(&server, &bot, 2_000);
        std::thread::sleep(Duration::from_millis(250));
        let started = Instant::now();
        primary.close().unwrap();
        assert!(standby.wait_until_primary(Some(Duration::from_secs(5))));
        graceful.push(started.elapsed());
        standby.close().unwrap();
    }

    // Cost, at the default lock_ttl (30 s), nothing else connected.
    let idle = command_rate(&server, window);
    let primary = StateManager::new(fast_config(&server, "cost", 30_000)).unwrap();
    assert!(primary.wait_until_primary(Some(Duration::from_secs(5))));
    std::thread::sleep(Duration::from_millis(500));
    let lone = command_rate(&server, window);
    let standby = StateManager::new(fast_config(&server, "cost", 30_000)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pair = command_rate(&server, window);
    assert!(primary.is_primary() && !standby.is_primary());
    standby.close().unwrap();
    primary.close().unwrap();

    println!("| failover | trials | min ms | median ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, samples) in [
        (
            "crash (SIGKILL of the primary), lock_ttl 30 s → standby primary",
            &mut crash_30,
        ),
        (
            "crash (SIGKILL of the primary), lock_ttl 2 s → standby primary",
            &mut crash_2,
        ),
        (
            "crash, lock_ttl 2 s, standby with fast_failover off (TTL path)",
            &mut crash_2_ttl,
        ),
        (
            "graceful close(), lock_ttl 2 s → standby primary",
            &mut graceful,
        ),
    ] {
        println!("{}", summary(name, samples));
    }
    println!(
        "\nbound for a crash: the take-over wait (316 ms at the default tolerance) after the \
         last renewal the standby saw, plus one look (100 ms)"
    );
    println!(
        "\n| Redis commands/s at lock_ttl 30 s, idle, {:.0} s windows | commands/s | \
         per command (INFO commandstats, script-internal calls included) |",
        window.as_secs_f64()
    );
    println!("|---|---|---|");
    println!(
        "| no bot (the measuring INFO calls) | {:.1} | {} |",
        idle.0, idle.1
    );
    println!("| lone primary | {:.1} | {} |", lone.0, lone.1);
    println!("| primary + standby | {:.1} | {} |", pair.0, pair.1);
    println!(
        "| the standby alone (pair − lone primary) | {:.1} | |",
        pair.0 - lone.0
    );
}
