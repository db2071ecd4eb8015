//! The Rust core on a Redis Cluster (issue 19, part 7): a bot on a `redis+cluster://` URL,
//! each operation next to a bare PING on the connection every operation uses (a PING to the
//! primary owning the bot's slot) and a PING to that node on a plain redis-rs connection, with
//! the same operations on a single redis-server in the same rounds; then the start of a
//! standby (`StateManager::new` of a bot whose lease is held) on both, which on the cluster
//! includes discovering the slot's owner.
//!
//! Not criterion: on the shared 2-core machine a sequential run of one benchmark after another
//! compares minutes apart, so every operation is timed call by call in interleaved rounds
//! and medians are compared (as `benches/cluster_bench.py` does for Python). Prints Markdown.
//!
//! The cluster is given, not started: `QS_BENCH_RUST=1 bash scripts/bench_cluster.sh` starts
//! a local one and runs this with `QS_CLUSTER_NODES=host:port,host:port,…` set. Without it
//! the bench says so and measures nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{obj, RedisServer};
use quantshift_core::{Config, StateManager};
use serde_json::json;

const ROUNDS: usize = 40;
const CALLS: usize = 50;
const STARTS: usize = 30;
const POSITIONS: usize = 200;

fn config(url: &str, bot: &str) -> Config {
    Config::new(bot)
        .redis_url(url)
        .install_signal_handlers(false)
}

fn primary(url: &str, bot: &str) -> StateManager {
    let manager = StateManager::new(config(url, bot)).expect("manager");
    assert!(manager.wait_until_primary(Some(Duration::from_secs(5))));
    manager
}

/// A connection to the node of `nodes` serving `key`: the one answering `EXISTS` without
/// `MOVED`.
fn owner_of(nodes: &[String], key: &str) -> (String, redis::Connection) {
    for node in nodes {
        let client = redis::Client::open(format!("redis://{node}/")).expect("node URL");
        let mut conn = client.get_connection().expect("cluster node");
        if redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(&mut conn)
            .is_ok()
        {
            return (node.clone(), conn);
        }
    }
    panic!("no node of {nodes:?} serves {key}");
}

fn median(samples: &mut [u64]) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2] as f64
}

type Op<'a> = Box<dyn FnMut() + 'a>;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of tests: there are none.
    }
    let Ok(seeds) = std::env::var("QS_CLUSTER_NODES") else {
        eprintln!(
            "QS_CLUSTER_NODES is not set: run `QS_BENCH_RUST=1 bash scripts/bench_cluster.sh`"
        );
        return;
    };
    let nodes: Vec<String> = seeds.split(',').map(str::to_owned).collect();
    let single = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let (owner, mut owner_conn) = owner_of(&nodes, "bot:{rust-alpha}:state");
    // The owner last in the URL: a start asks another node first.
    let mut ordered: Vec<&str> = nodes
        .iter()
        .filter(|n| **n != owner)
        .map(String::as_str)
        .collect();
    ordered.push(&owner);
    let cluster_url = format!("redis+cluster://{}", ordered.join(","));
    let single_url = single.url();
    let mut single_conn = single.connection();

    let state = obj(
        json!({"strategy": "moving_average", "last_trade": "2025-12-24T22:00:00", "daily_pnl": 150.5}),
    );
    let position = obj(
        json!({"quantity": 10, "entry_price": 150.0, "stop_loss": 145.0, "take_profit": 160.0}),
    );
    // Writer and reader of each kind; the cluster's reader must share the writer's owner.
    let reader_name = [
        "rust-beta",
        "rust-gamma",
        "rust-delta",
        "rust-epsilon",
        "rust-zeta",
    ]
    .into_iter()
    .find(|name| owner_of(&nodes, &format!("bot:{{{name}}}:state")).0 == owner)
    .expect("a reader name on the writer's owner");
    let writer = primary(&cluster_url, "rust-alpha");
    let reader = primary(&cluster_url, reader_name);
    let swriter = primary(&single_url, "rust-alpha");
    let sreader = primary(&single_url, reader_name);
    for manager in [&reader, &sreader] {
        for i in 0..POSITIONS {
            manager
                .save_position(&format!("SYM{i:03}"), &mut position.clone())
                .unwrap();
        }
        assert_eq!(manager.load_positions().unwrap().len(), POSITIONS);
    }

    let mut ops: Vec<(&str, &str, Op<'_>)> = Vec::new();
    for (kind, w, r) in [
        ("cluster", &writer, &reader),
        ("single", &swriter, &sreader),
    ] {
        let (state, position) = (state.clone(), position.clone());
        ops.push((
            kind,
            "ping (StateManager::ping)",
            Box::new(move || w.ping().unwrap()),
        ));
        ops.push((
            kind,
            "save_state (fenced write)",
            Box::new(move || w.save_state(&mut state.clone()).unwrap()),
        ));
        ops.push((
            kind,
            "save_position (fenced write)",
            Box::new(move || w.save_position("AAPL", &mut position.clone()).unwrap()),
        ));
        ops.push((
            kind,
            "load_positions (200, decoded into serde_json maps)",
            Box::new(move || assert_eq!(r.load_positions().unwrap().len(), POSITIONS)),
        ));
        ops.push((
            kind,
            "load_positions_shared (200, undecoded, as Python uses it)",
            Box::new(move || {
                assert_eq!(r.load_positions_shared().unwrap().items().len(), POSITIONS)
            }),
        ));
    }
    ops.push((
        "cluster",
        "PING to the owner, plain redis-rs connection",
        Box::new(|| {
            redis::cmd("PING").query::<String>(&mut owner_conn).unwrap();
        }),
    ));
    ops.push((
        "single",
        "PING, plain redis-rs connection",
        Box::new(|| {
            redis::cmd("PING")
                .query::<String>(&mut single_conn)
                .unwrap();
        }),
    ));

    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); ops.len()];
    for round in 0..=ROUNDS {
        for (i, (_, _, op)) in ops.iter_mut().enumerate() {
            for _ in 0..CALLS {
                let started = Instant::now();
                op();
                if round > 0 {
                    samples[i].push(started.elapsed().as_nanos() as u64);
                }
            }
        }
    }

    // Standby starts (the bots above hold their leases), interleaved.
    let mut starts: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..=STARTS {
        for (i, url) in [&cluster_url, &single_url].into_iter().enumerate() {
            let started = Instant::now();
            let manager = StateManager::new(config(url, "rust-alpha")).expect("standby");
            let took = started.elapsed().as_nanos() as u64;
            assert!(!manager.is_primary());
            manager.close().unwrap();
            if round > 0 {
                starts[i].push(took);
            }
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let ping_of = |kind: &str| {
        ops.iter()
            .zip(&medians)
            .find(|((k, name, _), _)| *k == kind && name.starts_with("ping"))
            .map(|(_, m)| *m)
            .unwrap()
    };
    println!(
        "Rust core, {ROUNDS} interleaved rounds of {CALLS} calls, medians; owner {owner}, URL {cluster_url}"
    );
    println!();
    println!("| node | operation | median | ratio to StateManager::ping |");
    println!("|---|---|---|---|");
    for ((kind, name, _), m) in ops.iter().zip(&medians) {
        println!(
            "| {kind} | {name} | {:.1} µs | {:.2}× |",
            m / 1000.0,
            m / ping_of(kind)
        );
    }
    // A standby's start takes ~1 ms or ~11 ms (on both): the fast ones are compared apart.
    let mut rows = Vec::new();
    for samples in &mut starts {
        let fastest = *samples.iter().min().unwrap();
        let mut quick: Vec<u64> = samples
            .iter()
            .copied()
            .filter(|x| *x < fastest + 5_000_000)
            .collect();
        let count = quick.len();
        rows.push((median(samples), fastest as f64, median(&mut quick), count));
    }
    println!();
    println!(
        "| standby start (StateManager::new, {STARTS} each, interleaved) | median | fastest \
         | median of the starts within 5 ms of the fastest |"
    );
    println!("|---|---|---|---|");
    for (name, (all, fastest, quick, count)) in ["cluster", "single node"].iter().zip(&rows) {
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms ({count} of {STARTS}) |",
            all / 1e6,
            fastest / 1e6,
            quick / 1e6
        );
    }
    println!(
        "| cluster − single node | {:+.2} ms | {:+.2} ms | {:+.2} ms |",
        (rows[0].0 - rows[1].0) / 1e6,
        (rows[0].1 - rows[1].1) / 1e6,
        (rows[0].2 - rows[1].2) / 1e6
    );
    drop(ops);
    for manager in [writer, reader, swriter, sreader] {
        manager.close().unwrap();
    }
}
