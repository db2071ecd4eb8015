//! Per-operation cost against a real redis-server on loopback, each next to a bare PING on
//! the same connection (the cost of one round trip). `bash scripts/bench.sh` runs this and
//! prints the ratios written in BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{obj, RedisServer};
use criterion::{criterion_group, criterion_main, Criterion};
use quantshift_core::{Config, StateManager};
use serde_json::json;

fn primary(server: &RedisServer, bot: &str) -> StateManager {
    let config = Config::new(bot)
        .redis_url(server.url())
        .lock_ttl(Duration::from_secs(30))
        .install_signal_handlers(false);
    let manager = StateManager::new(config).expect("manager");
    assert!(manager.wait_until_primary(Some(Duration::from_secs(5))));
    manager
}

/// `--enable-debug-command yes` where the server has the setting (Redis 7+, Valkey): before
/// 7.0 `DEBUG` is always on and the unknown setting would stop the server from starting.
fn debug_command_args() -> &'static [&'static str] {
    let version = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let major: u32 = version
        .split("v=")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    if version.starts_with("Valkey") || major >= 7 {
        &["--enable-debug-command", "yes"]
    } else {
        &[]
    }
}

fn operations(c: &mut Criterion) {
    let mut args = vec!["--maxmemory-policy", "noeviction"];
    args.extend_from_slice(debug_command_args());
    let server = RedisServer::start_with(&args);
    let manager = primary(&server, "bench");
    let mut group = c.benchmark_group("ops");
    group.bench_function("ping", |b| b.iter(|| manager.ping().unwrap()));
    group.bench_function("is_primary", |b| b.iter(|| assert!(manager.is_primary())));
    group.bench_function("heartbeat_renewal", |b| {
        b.iter(|| manager.heartbeat().unwrap())
    });
    let state = obj(
        json!({"strategy": "moving_average", "last_trade": "2025-12-24T22:00:00", "daily_pnl": 150.5}),
    );
    group.bench_function("save_state", |b| {
        b.iter(|| manager.save_state(&mut state.clone()).unwrap())
    });
    group.bench_function("load_state", |b| b.iter(|| manager.load_state().unwrap()));
    let position = obj(
        json!({"quantity": 10, "entry_price": 150.0, "stop_loss": 145.0, "take_profit": 160.0}),
    );
    group.bench_function("save_position", |b| {
        b.iter(|| {
            manager
                .save_position("AAPL", &mut position.clone())
                .unwrap()
        })
    });
    let mut fill = 0u64;
    group.bench_function("apply_fill", |b| {
        b.iter(|| {
            fill += 1;
            manager
                .apply_fill("MSFT", 1.0, 100.0, Some(&fill.to_string()))
                .unwrap()
        })
    });
    group.finish();

    // load_positions: 10 000 positions of the bot.
    let many = primary(&server, "many");
    for i in 0..10_000 {
        many.save_position(&format!("S{i}"), &mut position.clone())
            .unwrap();
    }
    let mut group = c.benchmark_group("load_positions");
    group.sample_size(20);
    group.bench_function("ping", |b| b.iter(|| many.ping().unwrap()));
    group.bench_function("10k_positions", |b| {
        b.iter(|| assert_eq!(many.load_positions().unwrap().len(), 10_000))
    });
    // 1 000 000 unrelated keys in the same Redis: the cost must not move.
    let few = primary(&server, "few");
    for i in 0..10 {
        few.save_position(&format!("S{i}"), &mut position.clone())
            .unwrap();
    }
    group.bench_function("10_positions", |b| {
        b.iter(|| assert_eq!(few.load_positions().unwrap().len(), 10))
    });
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1_000_000)
        .arg("unrelated")
        .query::<()>(&mut server.connection())
        .unwrap();
    group.bench_function("10_positions_among_1M_keys", |b| {
        b.iter(|| assert_eq!(few.load_positions().unwrap().len(), 10))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = operations
}
criterion_main!(benches);
