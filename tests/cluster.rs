//! The promises on a Redis Cluster (issue 19, part 6), with real processes: a local cluster of
//! 3 primaries and 3 replicas (tests/common/cluster.rs) on free loopback ports, and bot
//! processes (tests/chaos/bot.rs, the chaos suite's bot) that reach it only through a
//! `redis+cluster://127.0.0.1:P1,127.0.0.1:P2` URL and the public API. Three bot names whose
//! hash-tagged slots lie on the three different primaries, each run by two processes:
//!
//! - a `kill -9` of a primary bot process is replaced within a second, as on a single node;
//! - across `CLUSTER FAILOVER` of the owner of a running bot's slot, a `kill -9` of a primary
//!   `redis-server` (its replica promoted), and a migration of a running bot's slot to another
//!   primary: never two primaries of one bot at any instant, no stale write acknowledged, and
//!   every bot leads again afterwards;
//! - with `wait_replicas(1)`, no acknowledged write lost across a primary `kill -9`.
//!
//! How two primaries and stale writes are found is the chaos suite's method
//! (tests/chaos/analysis.rs, used unchanged): each bot process samples `is_primary()` every
//! 2 ms and logs its runs of `true` with the epoch, and every write with its send and
//! completion times and the epoch just before and after it, on `CLOCK_MONOTONIC`, which every
//! process of the machine shares; the runs of the two processes of one bot must never
//! intersect, and no acknowledged write may be sent inside another instance's run or fenced
//! with an epoch older than one already primary.
//!
//! The tests run one at a time (they measure timing with many processes on few cores), each on
//! its own cluster (started in about 2 s).

#[allow(dead_code)]
#[path = "chaos/analysis.rs"]
mod analysis;
#[path = "chaos/bot.rs"]
mod bot;
#[path = "cluster/fleet.rs"]
mod fleet;
#[path = "common/cluster.rs"]
mod harness;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bot::{mono_ns, BotOptions};
use fleet::{Fleet, PairReport};
use harness::LocalCluster;
use quantshift_core::{Config, KeyLayout, Keys, StateManager};

/// Not a test of its own: the body of the cluster bot processes (does nothing without
/// `QS_CLUSTER_URL`).
#[test]
fn cluster_child() {
    bot::child_main();
}

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The default `lock_ttl` (30 s): fast failover does not depend on it.
const TTL_MS: u64 = 30_000;

fn options(cluster: &LocalCluster, wait_replicas: u32) -> BotOptions {
    BotOptions {
        child_test: "cluster_child",
        wait_replicas,
        // Every fourth acknowledged position write read back, a write every 4 ms: six bot
        // processes share two cores with six servers.
        read_back_every: 4,
        pause_ms: 4,
        ..BotOptions::chaos(&cluster.seed_url(), TTL_MS, 150)
    }
}

fn keys(name: &str) -> Keys {
    Keys::with_layout(name, KeyLayout::HashTagged)
}

fn slot_of(cluster: &LocalCluster, name: &str) -> u16 {
    cluster.keyslot(&keys(name).lease_record)
}

fn owner_of(cluster: &LocalCluster, name: &str) -> u16 {
    cluster.owner_of_key(&keys(name).lease_record)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// A fault injected into the cluster while the bots ran.
struct Fault {
    label: String,
    /// The bot names whose slot the fault hit directly.
    hit: Vec<usize>,
    /// Monotonic ns: the fault started, the cluster settled, the bots were steady again.
    started: u64,
    settled: u64,
    steady: u64,
}

/// Prints, per fault and bot name, how long the bot could not write and whether the lease
/// changed hands; then checks every name's logs.
fn report_and_check(what: &str, faults: &[Fault], reports: &[PairReport], started: Instant) {
    println!("{what}:");
    for fault in faults {
        println!(
            "  {} (cluster settled after {:.0} ms, bots steady after {:.0} ms):",
            fault.label,
            ms(fault.settled - fault.started),
            ms(fault.steady - fault.started)
        );
        for (i, report) in reports.iter().enumerate() {
            let gap = report.longest_write_gap(fault.started, fault.steady);
            let before = report.epoch_at(fault.started);
            let after = report.epoch_at(fault.steady);
            println!(
                "    {}{}: longest pause between acknowledged writes {:.0} ms; lease {}",
                report.name,
                if fault.hit.contains(&i) { " (hit)" } else { "" },
                ms(gap),
                if before == after && before != 0 {
                    "kept".to_owned()
                } else {
                    format!("moved (epoch {before} -> {after})")
                }
            );
        }
    }
    let failures: Vec<String> = reports.iter().flat_map(|r| r.safety_failures()).collect();
    println!("{what}: took {:.1} s", started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{what}:\n{}", failures.join("\n"));
}

/// The harness alone, without the library: start, slot owners, `CLUSTER FAILOVER`, a slot
/// migration with keys, a primary `kill -9` and its replica's promotion, a restart, and
/// nothing left behind.
#[test]
fn the_local_cluster_harness_starts_fails_over_migrates_and_stops() {
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = LocalCluster::start();
    println!("cluster started in {:?}", cluster.start_took);
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    for &p in &primaries {
        assert_eq!(cluster.replicas_of(p).len(), 1, "{:?}", cluster.shards());
    }
    assert!(cluster.seed_url().starts_with("redis+cluster://127.0.0.1:"));
    let names = cluster.names_on_distinct_primaries("h", 3);
    let owners: BTreeSet<u16> = names.iter().map(|n| owner_of(&cluster, n)).collect();
    assert_eq!(owners.len(), 3);

    let tag = |i: usize| format!("bot:{{h}}:k{i}");
    let slot = cluster.keyslot(&tag(0));
    let owner = cluster.owner_of_slot(slot);
    let mut conn = cluster.conn(owner);
    for i in 0..10 {
        let _: () = redis::cmd("SET")
            .arg(tag(i))
            .arg(i)
            .query(&mut conn)
            .unwrap();
    }
    let get = |cluster: &LocalCluster, port: u16, i: usize| -> Option<i64> {
        redis::cmd("GET")
            .arg(tag(i))
            .query(&mut cluster.conn(port))
            .unwrap()
    };

    let t = Instant::now();
    let new_owner = cluster.failover(owner);
    println!("CLUSTER FAILOVER {owner} -> {new_owner}: {:?}", t.elapsed());
    assert_ne!(new_owner, owner);
    assert_eq!(cluster.owner_of_slot(slot), new_owner);
    assert_eq!(cluster.replicas_of(new_owner), vec![owner]);
    assert_eq!(get(&cluster, new_owner, 3), Some(3));

    let target = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != new_owner)
        .unwrap();
    let t = Instant::now();
    let moved = cluster.migrate_slot(slot, target, 3, Duration::from_millis(10));
    println!(
        "migration of slot {slot} ({moved} keys) to {target}: {:?}",
        t.elapsed()
    );
    assert_eq!(moved, 10);
    assert_eq!(cluster.owner_of_slot(slot), target);
    assert_eq!(get(&cluster, target, 7), Some(7));

    let (promoted, took) = cluster.kill_primary_and_wait_promotion(target);
    println!("kill -9 of primary {target}: {promoted} promoted after {took:?}");
    assert_ne!(promoted, target);
    assert_eq!(cluster.owner_of_slot(slot), promoted);
    assert_eq!(get(&cluster, promoted, 7), Some(7));
    let t = Instant::now();
    cluster.restart_node(target);
    println!("restart of {target}: settled after {:?}", t.elapsed());
    assert_eq!(cluster.replicas_of(promoted), vec![target]);

    let pids = cluster.pids();
    assert_eq!(pids.len(), 6);
    let root = cluster.root().to_owned();
    drop(cluster);
    for pid in pids {
        // SAFETY: signal 0 only checks whether the process exists.
        assert_ne!(
            unsafe { libc::kill(pid, 0) },
            0,
            "redis-server {pid} survived"
        );
    }
    assert!(!root.exists(), "{root:?} was not removed");
    println!("harness test: {:?}", started.elapsed());
}

/// A `kill -9` of the primary bot process of each name, twice: the standby leads within a
/// second (median under half a second), as on a single node; never two primaries.
#[test]
fn a_killed_primary_bot_is_replaced_within_a_second_on_a_cluster() {
    let _serial = serial();
    let started = Instant::now();
    let cluster = LocalCluster::start();
    let names = cluster.names_on_distinct_primaries("crash", 3);
    let mut fleet = Fleet::start(options(&cluster, 0), &names);
    let mut kills = Vec::new();
    for round in 0..2u64 {
        for i in 0..names.len() {
            // Kill at a different moment of the standby's look cycle each time.
            std::thread::sleep(Duration::from_millis(
                300 + 23 * (round * names.len() as u64 + i as u64),
            ));
            let (writer, at) = fleet.kill_primary(i);
            kills.push((i, writer, at));
            assert!(
                fleet.wait_primary(i, Duration::from_secs(5)),
                "{}: no takeover within 5 s of kill -9:\n{}",
                names[i],
                fleet.describe()
            );
            fleet.respawn_dead(i);
            fleet.wait_steady(Duration::from_secs(20), "a bot kill");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let reports = fleet.finish();
    let mut times = Vec::new();
    for (i, writer, at) in &kills {
        let took = analysis::failover_after(&reports[*i].instances, writer, *at)
            .unwrap_or_else(|| panic!("{}: no failover after {writer} was killed", names[*i]));
        println!(
            "  kill -9 of {writer} (slot owner {}): replaced after {:.1} ms",
            owner_of(&cluster, &names[*i]),
            ms(took)
        );
        times.push(took);
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    let max = *times.last().unwrap();
    println!(
        "FAILOVER on a cluster, kill -9 of the primary bot: median {:.1} ms, max {:.1} ms",
        ms(median),
        ms(max)
    );
    report_and_check("bot kills on a cluster", &[], &reports, started);
    assert!(median < 500_000_000, "median failover {:.1} ms", ms(median));
    assert!(max < 1_000_000_000, "slowest failover {:.1} ms", ms(max));
}

/// `CLUSTER FAILOVER` on the replica of the owner of each running bot's slot, then back:
/// never two primaries, no stale write acknowledged, every bot leads again.
#[test]
fn cluster_failover_of_a_running_bots_slot_owner_never_makes_two_primaries() {
    let _serial = serial();
    let started = Instant::now();
    let cluster = LocalCluster::start();
    let names = cluster.names_on_distinct_primaries("manual", 3);
    let mut fleet = Fleet::start(options(&cluster, 0), &names);
    let faults = hit_each_bot(
        &cluster,
        &mut fleet,
        &names,
        &[0, 1],
        "CLUSTER FAILOVER",
        |round, name| {
            let owner = owner_of(&cluster, name);
            let new_owner = cluster.failover(owner);
            let label = format!(
                "round {round}: CLUSTER FAILOVER of {owner} (owner of {name}) to {new_owner}"
            );
            (new_owner, label)
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let reports = fleet.finish();
    report_and_check("CLUSTER FAILOVER", &faults, &reports, started);
}

/// `kill -9` of the primary `redis-server` owning a running bot's slot (its replica is
/// promoted; the whole cluster is down until then, `cluster-require-full-coverage` being
/// on), then its restart as a replica; twice, on two owners: never two primaries, no stale
/// write acknowledged, every bot leads again.
#[test]
fn a_killed_redis_primary_never_makes_two_primaries_on_a_cluster() {
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = LocalCluster::start();
    let names = cluster.names_on_distinct_primaries("redis-kill", 3);
    let mut fleet = Fleet::start(options(&cluster, 0), &names);
    let mut faults = Vec::new();
    for (i, name) in names.iter().enumerate().take(2) {
        std::thread::sleep(Duration::from_millis(500));
        let owner = owner_of(&cluster, name);
        let t0 = mono_ns();
        let (promoted, took) = cluster.kill_primary_and_wait_promotion(owner);
        let settled = mono_ns();
        println!("  kill -9 of redis {owner}: {promoted} promoted after {took:?}");
        fleet.wait_steady(Duration::from_secs(20), "a primary redis-server kill");
        faults.push(Fault {
            label: format!(
                "kill -9 of redis-server {owner} (owner of {name}), {promoted} promoted"
            ),
            hit: vec![i],
            started: t0,
            settled,
            steady: mono_ns(),
        });
        std::thread::sleep(Duration::from_millis(300));
        let t0 = mono_ns();
        cluster.restart_node(owner);
        let settled = mono_ns();
        fleet.wait_steady(Duration::from_secs(20), "the restart of a killed node");
        faults.push(Fault {
            label: format!("restart of {owner} (a replica of {promoted} now)"),
            hit: vec![],
            started: t0,
            settled,
            steady: mono_ns(),
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    let reports = fleet.finish();
    report_and_check("primary redis-server kill -9", &faults, &reports, started);
}

/// Each running bot's slot migrated to another primary by the standard procedure, three
/// times: 3 keys per `MIGRATE` 50 ms apart, then 1 key per `MIGRATE` 150 ms apart (the bot's
/// keys are split between two nodes for over a second, longer than the holder's deadline, so
/// renewals, takes and writes meet `ASK` and `TRYAGAIN`), then all keys in one `MIGRATE`:
/// never two primaries, no stale write acknowledged, every bot leads again, and its data
/// moved with it.
#[test]
fn migrating_a_running_bots_slot_never_makes_two_primaries() {
    let _serial = serial();
    let started = Instant::now();
    let cluster = LocalCluster::start();
    let names = cluster.names_on_distinct_primaries("migrate", 3);
    let mut fleet = Fleet::start(options(&cluster, 0), &names);
    let rounds = [(3usize, 50u64), (1, 150), (100, 0)];
    let faults = hit_each_bot(
        &cluster,
        &mut fleet,
        &names,
        &rounds,
        "a slot migration",
        |(batch, pause_ms), name| {
            let slot = slot_of(&cluster, name);
            let owner = cluster.owner_of_slot(slot);
            let target = next_primary(&cluster, owner);
            let moved = cluster.migrate_slot(slot, target, batch, Duration::from_millis(pause_ms));
            let label = format!(
                "slot {slot} of {name} migrated {owner} -> {target}: {moved} keys, \
             {batch} per MIGRATE, {pause_ms} ms apart"
            );
            (target, label)
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    fleet.freeze();
    std::thread::sleep(Duration::from_millis(200));
    assert_data_on_the_owners(&cluster, &names);
    let reports = fleet.finish();
    report_and_check("slot migration", &faults, &reports, started);
}

/// Atomic slot migration (`CLUSTER MIGRATESLOTS`, Valkey 9) of each running bot's slot, round
/// the three primaries: never two primaries, no stale write acknowledged, the data moved with
/// the slot, every bot leads again. On a server without it the test says so and ends; the
/// server matrix sets `QS_EXPECT_ATOMIC_MIGRATION=1` for Valkey, where its absence fails.
#[test]
fn atomic_slot_migration_of_a_running_bots_slot_never_makes_two_primaries() {
    let _serial = serial();
    let started = Instant::now();
    let cluster = LocalCluster::start();
    if !cluster.offers_atomic_migration() {
        assert!(
            std::env::var("QS_EXPECT_ATOMIC_MIGRATION").as_deref() != Ok("1"),
            "QS_EXPECT_ATOMIC_MIGRATION=1 but this server has no CLUSTER MIGRATESLOTS"
        );
        eprintln!("atomic slot migration: this server has no CLUSTER MIGRATESLOTS (Valkey 9 has)");
        return;
    }
    let names = cluster.names_on_distinct_primaries("atomic", 3);
    let mut fleet = Fleet::start(options(&cluster, 0), &names);
    let faults = hit_each_bot(
        &cluster,
        &mut fleet,
        &names,
        &[0, 1],
        "an atomic slot migration",
        |round, name| {
            let slot = slot_of(&cluster, name);
            let owner = cluster.owner_of_slot(slot);
            let target = next_primary(&cluster, owner);
            cluster.migrate_slot_atomically(slot, target);
            let label = format!(
                "round {round}: slot {slot} of {name} migrated atomically {owner} -> {target}"
            );
            (target, label)
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    fleet.freeze();
    std::thread::sleep(Duration::from_millis(200));
    assert_data_on_the_owners(&cluster, &names);
    let reports = fleet.finish();
    report_and_check("atomic slot migration", &faults, &reports, started);
}

/// For each round and each bot, 400 ms apart: `fault` moves the bot's slot and returns the
/// node that owns it now and a label; the owner is checked, and the fleet waited for until
/// every bot leads again. The faults, for [`report_and_check`].
fn hit_each_bot<R: Copy>(
    cluster: &LocalCluster,
    fleet: &mut Fleet,
    names: &[String],
    rounds: &[R],
    what: &str,
    mut fault: impl FnMut(R, &str) -> (u16, String),
) -> Vec<Fault> {
    let mut faults = Vec::new();
    for &round in rounds {
        for (i, name) in names.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(400));
            let t0 = mono_ns();
            let (new_owner, label) = fault(round, name);
            let settled = mono_ns();
            assert_eq!(owner_of(cluster, name), new_owner, "{label}");
            fleet.wait_steady(Duration::from_secs(20), what);
            faults.push(Fault {
                label,
                hit: vec![i],
                started: t0,
                settled,
                steady: mono_ns(),
            });
        }
    }
    faults
}

/// The next primary after `owner` (round the primaries), a slot's migration target.
fn next_primary(cluster: &LocalCluster, owner: u16) -> u16 {
    let primaries = cluster.primaries();
    primaries[(primaries.iter().position(|&p| p == owner).unwrap() + 1) % primaries.len()]
}

/// The data moved with the slots: each bot's lease record and positions are on the node
/// that owns its slot now.
fn assert_data_on_the_owners(cluster: &LocalCluster, names: &[String]) {
    for name in names {
        let owner = owner_of(cluster, name);
        let mut conn = cluster.conn(owner);
        let k = keys(name);
        let record: i64 = redis::cmd("EXISTS")
            .arg(&k.lease_record)
            .query(&mut conn)
            .unwrap();
        let last: Option<String> = redis::cmd("GET")
            .arg(k.position("LAST"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(record, 1, "{name}: no lease record on the owner {owner}");
        assert!(last.is_some(), "{name}: no position on the owner {owner}");
    }
}

/// What Redis holds of one bot name after the run: the fill ids recorded and `LAST`.
fn read_bot_data(
    cluster: &LocalCluster,
    name: &str,
) -> (BTreeSet<String>, Option<(String, u64, u64)>) {
    let owner = owner_of(cluster, name);
    let mut conn = cluster.conn(owner);
    let k = keys(name);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&k.fills)
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    let fills = members
        .iter()
        .filter_map(|m| m.strip_prefix("FILLS\u{1f}").map(str::to_owned))
        .collect();
    let last: Option<String> = redis::cmd("GET")
        .arg(k.position("LAST"))
        .query(&mut conn)
        .unwrap();
    let last = last.map(|raw| {
        let v: serde_json::Value = serde_json::from_str(&raw).expect("LAST is JSON");
        (
            v["w"].as_str().unwrap_or_default().to_owned(),
            v["seq"].as_u64().unwrap_or(0),
            v["e"].as_u64().unwrap_or(0),
        )
    });
    (fills, last)
}

/// With `wait_replicas(1)`, the primary `redis-server` owning a running bot's slot is killed
/// (twice, two owners; each restarted as a replica before the next): every write the library
/// acknowledged is in Redis afterwards (every acknowledged fill id in the fills set, the last
/// position at least the newest acknowledged one), and never two primaries.
#[test]
fn with_wait_replicas_no_acknowledged_write_is_lost_across_a_primary_kill() {
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = LocalCluster::start();
    let names = cluster.names_on_distinct_primaries("durable", 3);
    let mut fleet = Fleet::start(options(&cluster, 1), &names);
    let mut faults = Vec::new();
    for (i, name) in names.iter().enumerate().take(2) {
        std::thread::sleep(Duration::from_millis(1000));
        let owner = owner_of(&cluster, name);
        let t0 = mono_ns();
        let (promoted, took) = cluster.kill_primary_and_wait_promotion(owner);
        let settled = mono_ns();
        println!("  kill -9 of redis {owner}: {promoted} promoted after {took:?}");
        // The promoted primary has no replica until the killed node is back: WAIT 1 refuses
        // every write of the bots on it meanwhile.
        cluster.restart_node(owner);
        fleet.wait_steady(Duration::from_secs(20), "a primary redis-server kill");
        faults.push(Fault {
            label: format!(
                "kill -9 of redis-server {owner} (owner of {name}), {promoted} promoted, \
                 {owner} restarted as its replica"
            ),
            hit: vec![i],
            started: t0,
            settled,
            steady: mono_ns(),
        });
    }
    std::thread::sleep(Duration::from_millis(1000));
    fleet.freeze();
    std::thread::sleep(Duration::from_millis(300));
    let data: Vec<_> = names.iter().map(|n| read_bot_data(&cluster, n)).collect();
    let reports = fleet.finish();
    let mut lost = Vec::new();
    for (report, (fills, last)) in reports.iter().zip(&data) {
        let mut acked_fills = 0;
        for instance in &report.instances {
            for w in instance.writes.iter().filter(|w| w.ok && w.fill) {
                acked_fills += 1;
                let id = format!("{}-{}", instance.writer, w.seq);
                if !fills.contains(&id) {
                    lost.push(format!(
                        "{}: acknowledged fill {id} is not in Redis",
                        report.name
                    ));
                }
            }
        }
        let lost_positions = analysis::lost_position_writes(
            &report.instances,
            last.as_ref().map(|(w, s, e)| (w.as_str(), *s, *e)),
        );
        println!(
            "  {}: {acked_fills} acknowledged fills, {} recorded; acknowledged position writes \
             not covered by LAST {:?}: {}",
            report.name,
            fills.len(),
            last,
            lost_positions.len()
        );
        lost.extend(lost_positions);
    }
    println!(
        "acknowledged writes lost with wait_replicas 1: {}",
        lost.len()
    );
    report_and_check(
        "primary kill with wait_replicas 1",
        &faults,
        &reports,
        started,
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost ({}): {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

/// The start-up warning `split_brain_unguarded`: a bot whose slot owner has a replica warns
/// when neither `wait_replicas` nor the owner's `min-replicas-to-write` would stop a cut-off
/// owner from accepting its renewals, and only then.
#[test]
fn a_replicated_owner_without_wait_or_min_replicas_is_warned_about() {
    let _serial = serial();
    let cluster = LocalCluster::start();
    let name = cluster.names_on_distinct_primaries("warn-", 1).remove(0);
    let warnings_with = |wait_replicas: u32| {
        let manager = StateManager::new(
            Config::new(&name)
                .redis_url(cluster.seed_url())
                .wait_replicas(wait_replicas)
                .install_signal_handlers(false),
        )
        .expect("a manager on the cluster");
        let warnings = manager.startup_warnings().to_vec();
        manager.close().unwrap();
        warnings
    };
    let split_brain = |warnings: &[String]| {
        warnings
            .iter()
            .any(|w| w.contains("min-replicas-to-write") && w.contains("promoted replica"))
    };
    let unguarded = warnings_with(0);
    assert!(split_brain(&unguarded), "{unguarded:?}");
    let waiting = warnings_with(1);
    assert!(!split_brain(&waiting), "{waiting:?}");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg(1)
        .query::<()>(&mut cluster.conn(owner_of(&cluster, &name)))
        .unwrap();
    let guarded = warnings_with(0);
    assert!(!split_brain(&guarded), "{guarded:?}");
}
