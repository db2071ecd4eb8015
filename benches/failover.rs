//! Failover times at `lock_ttl = 2 s`, on real processes: a primary bot process killed with
//! SIGKILL (no release) and taken over by a standby, and a graceful release (close) taken
//! over through the release notice. Prints a Markdown table; `bash scripts/bench.sh` runs it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{child_bot_main, manager, signal, wait_for, ChildBot, RedisServer};

const LOCK_TTL_MS: u64 = 2000;

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

fn main() {
    if std::env::var("QS_CHILD_URL").is_ok() {
        child_bot_main();
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` runs us too: stay quick there.
    let trials = if std::env::args().any(|a| a == "--bench") {
        5
    } else {
        1
    };
    let server = RedisServer::start();

    let mut crash = Vec::new();
    for trial in 0..trials {
        let bot = format!("crash{trial}");
        let mut child = ChildBot::spawn(&server, &bot, LOCK_TTL_MS, false);
        assert!(wait_for(Duration::from_secs(5), || child.has_line("primary")));
        let standby = manager(&server, &bot, LOCK_TTL_MS);
        std::thread::sleep(Duration::from_millis(300));
        signal(child.pid(), libc::SIGKILL);
        let killed = Instant::now();
        assert!(standby.wait_until_primary(Some(Duration::from_secs(10))));
        crash.push(killed.elapsed());
        let _ = child.wait_exit(Duration::from_secs(1));
    }

    let mut graceful = Vec::new();
    for trial in 0..trials * 4 {
        let bot = format!("graceful{trial}");
        let primary = manager(&server, &bot, LOCK_TTL_MS);
        assert!(primary.wait_until_primary(Some(Duration::from_secs(5))));
        let standby = manager(&server, &bot, LOCK_TTL_MS);
        std::thread::sleep(Duration::from_millis(250));
        let started = Instant::now();
        primary.close().unwrap();
        assert!(standby.wait_until_primary(Some(Duration::from_secs(5))));
        graceful.push(started.elapsed());
    }

    println!("| failover at lock_ttl = 2 s | trials | min ms | median ms | max ms |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        summary(
            "crash (SIGKILL of the primary process) → standby primary",
            &mut crash
        )
    );
    println!(
        "{}",
        summary("graceful close() → standby primary", &mut graceful)
    );
    let bound = LOCK_TTL_MS as f64 + 200.0;
    println!("\nbound for a crash: lock_ttl + poll_interval = {bound:.0} ms");
}
