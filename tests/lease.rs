//! The primary lease against real redis-server processes (docs/contract.md §2, §3).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use quantshift_core::{Config, ErrorKind, StateManager};

/// Not a test of its own: the body of the child bot processes (does nothing without
/// `QS_CHILD_URL`).
#[test]
fn child_bot() {
    child_bot_main();
}

#[test]
fn one_primary_and_a_standby_with_an_increasing_epoch() {
    let server = RedisServer::start();
    let a = manager(&server, "pair", 1500);
    assert!(a.wait_until_primary(Some(Duration::from_secs(3))));
    let b = manager(&server, "pair", 1500);
    assert!(!b.wait_until_primary(Some(Duration::from_millis(600))));
    assert!(a.is_primary() && !b.is_primary());
    let first_epoch = a.epoch().unwrap();
    assert_eq!(b.epoch(), None);
    let token: String = redis::cmd("GET")
        .arg("bot:pair:primary_lock")
        .query(&mut server.connection())
        .unwrap();
    assert!(
        token.starts_with(&format!("{}:", a.instance_id())),
        "{token}"
    );
    assert_eq!(
        token.split(':').count(),
        3,
        "hostname:pid:nonce, got {token}"
    );
    a.close().unwrap();
    assert!(b.wait_until_primary(Some(Duration::from_secs(2))));
    assert!(b.epoch().unwrap() > first_epoch);
}

#[test]
fn a_standby_write_is_refused_and_changes_nothing() {
    let server = RedisServer::start();
    let a = manager(&server, "fence", 1500);
    assert!(a.wait_until_primary(Some(Duration::from_secs(3))));
    a.save_position("AAPL", &mut obj(serde_json::json!({"quantity": 1})))
        .unwrap();
    let b = manager(&server, "fence", 1500);
    let before: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg("none")
        .query(&mut server.connection())
        .unwrap();
    assert!(before.is_empty());
    let dump_before = dump(&server);
    for err in [
        b.save_state(&mut obj(serde_json::json!({"x": 1})))
            .unwrap_err(),
        b.save_position("AAPL", &mut obj(serde_json::json!({"quantity": 2})))
            .unwrap_err(),
        b.clear_position("AAPL").unwrap_err(),
        b.apply_fill("AAPL", 1.0, 1.0, None).unwrap_err(),
        b.sync_positions(&[]).unwrap_err(),
        b.update_state(&obj(serde_json::json!({"y": 2})))
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::NotPrimary, "{err}");
    }
    assert_eq!(dump(&server), dump_before);
    // Reads are allowed from any instance.
    assert_eq!(b.load_positions().unwrap().len(), 1);
}

fn dump(server: &RedisServer) -> Vec<(String, Option<String>)> {
    let mut conn = server.connection();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.sort();
    keys.into_iter()
        // The lease thread's own bookkeeping (heartbeat, lease, live-instance scores) moves
        // with every renewal and acquisition attempt of either instance, the stall meter's
        // summaries every second.
        .filter(|k| {
            !k.ends_with(":heartbeat")
                && !k.ends_with(":primary_lock")
                && !k.ends_with(":instances")
                && !k.ends_with(":lease_stalls")
        })
        .map(|k| {
            let value: Option<String> = redis::cmd("DUMP")
                .arg(&k)
                .query::<Option<Vec<u8>>>(&mut conn)
                .unwrap()
                .map(|v| format!("{v:?}"));
            (k, value)
        })
        .collect()
}

#[test]
fn a_crashed_primary_is_replaced_within_ttl_plus_poll() {
    let server = RedisServer::start();
    let ttl = 1500;
    let mut child = ChildBot::spawn(&server, "crash", ttl, false);
    assert!(
        wait_for(Duration::from_secs(5), || child.has_line("primary")),
        "child never became primary"
    );
    let standby = manager(&server, "crash", ttl);
    assert!(!standby.is_primary());
    signal(child.pid(), libc::SIGKILL);
    let killed = Instant::now();
    let _ = child.wait_exit(Duration::from_secs(2));
    assert!(standby.wait_until_primary(Some(Duration::from_secs(5))));
    let took = killed.elapsed();
    let bound = Duration::from_millis(ttl)
        + standby.config().effective_poll_interval()
        + Duration::from_millis(300);
    assert!(took <= bound, "takeover took {took:?}, over {bound:?}");
    // The new primary can write.
    standby
        .save_position("TICK", &mut obj(serde_json::json!({"n": 0})))
        .unwrap();
}

#[test]
fn a_frozen_primary_knows_it_is_standby_when_it_wakes_and_cannot_write() {
    let server = RedisServer::start();
    let ttl = 1200;
    let child = ChildBot::spawn(&server, "frozen", ttl, false);
    assert!(wait_for(Duration::from_secs(5), || child.has_line("primary")));
    assert!(wait_for(Duration::from_secs(2), || child
        .lines()
        .iter()
        .any(|l| l.ends_with("true ok"))));
    let standby = manager(&server, "frozen", ttl);
    signal(child.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(50));
    let frozen_at = child.lines().len();
    assert!(
        standby.wait_until_primary(Some(Duration::from_secs(5))),
        "standby never took over"
    );
    standby
        .save_position("TICK", &mut obj(serde_json::json!({"n": -1})))
        .unwrap();
    std::thread::sleep(Duration::from_millis(ttl)); // well past the child's TTL
    signal(child.pid(), libc::SIGCONT);
    assert!(wait_for(Duration::from_secs(3), || child.lines().len()
        > frozen_at + 20));
    let after: Vec<String> = child.lines()[frozen_at..]
        .iter()
        .filter(|l| l.starts_with("tick"))
        .cloned()
        .collect();
    // The iteration caught mid-way by SIGSTOP may have sampled "primary" and had its write
    // acknowledged before the freeze, and printed it after: the line after it is the first
    // whose sample and write both happened after the freeze.
    assert!(after.len() > 2, "{after:?}");
    for line in &after[1..] {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            parts[2], "false",
            "the frozen primary still claims primary: {line}"
        );
        assert_ne!(
            parts[3], "ok",
            "a write of the frozen primary was accepted: {line}"
        );
    }
    let stored: String = redis::cmd("GET")
        .arg("bot:frozen:position:TICK")
        .query(&mut server.connection())
        .unwrap();
    assert!(
        stored.contains("\"n\":-1"),
        "the standby's write was overwritten: {stored}"
    );
}

#[test]
fn graceful_release_hands_over_within_100ms() {
    let server = RedisServer::start();
    let a = manager(&server, "handover", 3000);
    assert!(a.wait_until_primary(Some(Duration::from_secs(3))));
    let b = manager(&server, "handover", 3000);
    std::thread::sleep(Duration::from_millis(400)); // let b subscribe and settle
    assert!(!b.is_primary());
    let started = Instant::now();
    a.close().unwrap();
    assert!(b.wait_until_primary(Some(Duration::from_secs(3))));
    let took = started.elapsed();
    assert!(!a.is_primary());
    assert!(took < Duration::from_millis(100), "handover took {took:?}");
}

#[test]
fn a_stalled_redis_demotes_the_primary_before_its_ttl_and_nobody_claims() {
    let server = RedisServer::start();
    let ttl = 1500;
    let a = manager(&server, "stall", ttl);
    assert!(a.wait_until_primary(Some(Duration::from_secs(3))));
    let b = manager(&server, "stall", ttl);
    let demoted_at = Arc::new(AtomicU64::new(0));
    let origin = Instant::now();
    let flag = Arc::clone(&demoted_at);
    a.on_demoted(move |_| flag.store(origin.elapsed().as_millis() as u64 + 1, Ordering::SeqCst));
    server.freeze();
    let frozen = Instant::now();
    // The primary must give up before its lock could expire on the server.
    assert!(
        wait_for(Duration::from_millis(ttl), || !a.is_primary()),
        "still primary at TTL"
    );
    assert!(frozen.elapsed() < Duration::from_millis(ttl));
    let give_up = Instant::now() + Duration::from_millis(ttl);
    while Instant::now() < give_up {
        assert!(
            !b.is_primary(),
            "the standby claimed the lease while Redis was stalled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        wait_for(Duration::from_secs(1), || demoted_at.load(Ordering::SeqCst)
            > 0),
        "on_demoted not called"
    );
    server.thaw();
    // Afterwards exactly one becomes primary, and never both at once.
    let give_up = Instant::now() + Duration::from_secs(4);
    let mut someone = false;
    while Instant::now() < give_up {
        let (pa, pb) = (a.is_primary(), b.is_primary());
        assert!(!(pa && pb), "two primaries");
        someone |= pa || pb;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(someone, "nobody became primary after Redis came back");
}

#[test]
fn a_restarted_redis_fails_calls_within_the_timeout_then_works_again() {
    let mut server = RedisServer::start();
    let a = manager(&server, "restart", 1500);
    assert!(a.wait_until_primary(Some(Duration::from_secs(3))));
    server.kill();
    let started = Instant::now();
    let err = a.load_state().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RedisUnavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(wait_for(Duration::from_secs(3), || !a.is_primary()));
    server.restart();
    assert!(wait_for(Duration::from_secs(5), || a.load_state().is_ok()));
    assert!(
        a.wait_until_primary(Some(Duration::from_secs(5))),
        "never primary again"
    );
    a.save_state(&mut obj(serde_json::json!({"back": true})))
        .unwrap();
}

#[test]
fn an_inverted_timing_configuration_is_a_clear_error() {
    let server = RedisServer::start();
    let err = StateManager::new(
        fast_config(&server, "timing", 1000).renew_deadline(Duration::from_millis(1500)),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("lock_ttl > renew_deadline"), "{err}");
    let err = StateManager::new(fast_config(&server, "timing", 0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn callbacks_and_heartbeat() {
    let server = RedisServer::start();
    let a = StateManager::new(fast_config(&server, "calls", 3000)).unwrap();
    let promoted = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&promoted);
    a.on_promoted(move |epoch| seen.store(epoch, Ordering::SeqCst));
    assert!(a.wait_until_primary(Some(Duration::from_secs(3))));
    // Registered after the first promotion: fires on the next one.
    let b = manager(&server, "calls", 3000);
    let b_promoted = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&b_promoted);
    b.on_promoted(move |epoch| seen.store(epoch, Ordering::SeqCst));
    a.heartbeat().unwrap();
    let heartbeat: String = redis::cmd("GET")
        .arg("bot:calls:heartbeat")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(
        heartbeat.len(),
        "2025-12-24T22:00:00.123456".len(),
        "{heartbeat}"
    );
    a.close().unwrap();
    assert!(wait_for(Duration::from_secs(2), || b_promoted
        .load(Ordering::SeqCst)
        > 0));
    assert_eq!(b.epoch(), Some(b_promoted.load(Ordering::SeqCst)));
    let _ = promoted;
    // A closed manager refuses writes and heartbeats.
    assert_eq!(a.heartbeat().unwrap_err().kind(), ErrorKind::NotPrimary);
    let config = Config::new("calls")
        .redis_url(server.url())
        .install_signal_handlers(false);
    drop(config);
}

#[test]
fn a_requested_handover_waits_for_writes_and_the_standby_takes_over() {
    let _ = env_logger::builder().is_test(true).try_init();
    let server = RedisServer::start();
    let a = manager(&server, "planned", 3000);
    assert!(a.wait_until_primary(Some(Duration::from_secs(3))));
    let b = manager(&server, "planned", 3000);
    let inspector =
        quantshift_core::Inspector::connect(Some(&server.url()), Duration::from_secs(1)).unwrap();
    // Both instances are visible; b is the standby.
    assert!(wait_for(Duration::from_secs(2), || {
        inspector.status("planned").unwrap().standbys() == vec![b.instance_id()]
    }));
    let status = inspector.status("planned").unwrap();
    assert_eq!(status.holder.as_deref(), Some(a.instance_id()));
    assert_eq!(status.epoch, a.epoch());
    let started = Instant::now();
    assert!(inspector.request_handover("planned").unwrap() >= 2);
    assert!(
        b.wait_until_primary(Some(Duration::from_secs(2))),
        "standby did not take over"
    );
    assert!(!a.is_primary());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    // The old primary leaves the lease to the new one instead of racing for it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(b.is_primary() && !a.is_primary());
    assert_eq!(
        inspector.status("planned").unwrap().holder.as_deref(),
        Some(b.instance_id())
    );
    // Handing back well within lock_ttl works too: the old primary is a standby again.
    let started = Instant::now();
    assert!(inspector.request_handover("planned").unwrap() >= 2);
    assert!(
        a.wait_until_primary(Some(Duration::from_secs(2))),
        "the first primary did not take the lease back"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(!b.is_primary());
}

#[test]
fn the_inspector_lists_bots_and_reports_state_and_positions() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let a = manager(&server, "seen", 3000);
    // One warning about eviction (the test server also runs without persistence: another).
    let eviction: Vec<_> = a
        .startup_warnings()
        .iter()
        .filter(|w| w.contains("maxmemory-policy"))
        .collect();
    assert_eq!(eviction.len(), 1, "{:?}", a.startup_warnings());
    assert!(eviction[0].contains("allkeys-lru"));
    assert!(a.wait_until_primary(Some(Duration::from_secs(3))));
    a.save_state(&mut obj(serde_json::json!({"k": 1}))).unwrap();
    a.save_position("ES:FUT", &mut obj(serde_json::json!({"quantity": 2})))
        .unwrap();
    let other = manager(&server, "other-bot", 3000);
    assert!(other.wait_until_primary(Some(Duration::from_secs(3))));
    let inspector =
        quantshift_core::Inspector::connect(Some(&server.url()), Duration::from_secs(1)).unwrap();
    assert_eq!(
        inspector.bots().unwrap(),
        vec!["other-bot".to_owned(), "seen".to_owned()]
    );
    let status = inspector.status("seen").unwrap();
    assert_eq!(status.positions, 1);
    assert!(status.heartbeat_age.unwrap() < Duration::from_secs(5));
    assert!(status.state_age.unwrap() < Duration::from_secs(5));
    assert!(status.lease_ttl.unwrap() <= Duration::from_secs(3));
    assert_eq!(inspector.positions("seen").unwrap()[0].0, "ES:FUT");
    let node = inspector.server().unwrap();
    assert_eq!(node.role, "master");
    assert_eq!(
        node.warnings
            .iter()
            .filter(|w| w.contains("maxmemory-policy"))
            .count(),
        1,
        "{:?}",
        node.warnings
    );
}

#[test]
fn a_heartbeat_right_after_start_leaves_a_sole_instance_primary() {
    // The caller's attempt and the lease thread's first attempt race; whichever wins, the
    // instance is primary once heartbeat() returns.
    let server = RedisServer::start();
    for i in 0..40 {
        let m = manager(&server, &format!("race{i}"), 3000);
        m.heartbeat().unwrap();
        assert!(m.is_primary(), "attempt {i}: not primary after heartbeat()");
        m.close().unwrap();
    }
}

#[test]
fn a_sole_instance_is_primary_when_new_returns_and_hears_its_own_demotion_at_close() {
    let server = RedisServer::start();
    let m = manager(&server, "sole", 3000);
    assert!(
        m.is_primary(),
        "the lease was free but new() returned a standby"
    );
    m.save_state(&mut obj(serde_json::json!({"at": "once"})))
        .unwrap();
    let reasons = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&reasons);
    m.on_demoted(move |reason| sink.lock().unwrap().push(reason.to_owned()));
    m.close().unwrap();
    assert_eq!(*reasons.lock().unwrap(), ["shutting down"]);
}

/// The lease record's epoch every 5 ms for `how_long`: each distinct epoch with the instant it
/// was first seen.
fn epochs_seen(server: &RedisServer, bot: &str, how_long: Duration) -> Vec<(u64, Instant)> {
    let mut conn = server.connection();
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        let epoch: Option<u64> = redis::cmd("HGET")
            .arg(format!("bot:{bot}:lease_record"))
            .arg("epoch")
            .query(&mut conn)
            .unwrap();
        if let Some(epoch) = epoch {
            if seen.last().is_none_or(|(last, _)| *last != epoch) {
                seen.push((epoch, Instant::now()));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    seen
}

/// Issue 24: with a logger that takes a second per record (every promotion, demotion and
/// warning is logged), two healthy instances never trade the lease, and after a `kill -9` of
/// the primary exactly one take follows, within a second, and the new primary leads on.
#[test]
fn a_logger_that_blocks_delays_no_renewal() {
    let server = RedisServer::start();
    let bot = "blocking-log";
    let env = [("QS_CHILD_LOG_SLEEP_MS", "1000")];
    let mut primary = ChildBot::spawn_with_env(&server, bot, 30_000, false, &env);
    assert!(
        wait_for(Duration::from_secs(10), || primary.has_line("primary")),
        "the first child never became primary"
    );
    let mut standby = ChildBot::spawn_with_env(&server, bot, 30_000, false, &env);
    assert!(
        wait_for(Duration::from_secs(10), || standby.has_line("tick")),
        "the second child never started"
    );
    let quiet = epochs_seen(&server, bot, Duration::from_secs(6));
    assert_eq!(quiet.len(), 1, "the lease moved with no fault: {quiet:?}");
    signal(primary.pid(), libc::SIGKILL);
    let killed = Instant::now();
    let _ = primary.wait_exit(Duration::from_secs(2));
    let after = epochs_seen(&server, bot, Duration::from_secs(5));
    let new: Vec<_> = after.iter().filter(|(e, _)| *e != quiet[0].0).collect();
    assert_eq!(new.len(), 1, "exactly one take after the kill: {after:?}");
    let took = new[0].1.duration_since(killed);
    assert!(
        took <= Duration::from_secs(1),
        "the take came {took:?} after the kill"
    );
    assert!(
        standby.has_line("primary"),
        "the standby never said it was primary"
    );
    let _ = standby.child.kill();
    let _ = standby.wait_exit(Duration::from_secs(2));
}
