//! Graceful shutdown (docs/contract.md §5) against a real redis-server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use quantshift_core::{ErrorKind, StateManager};
use serde_json::json;

#[test]
fn child_bot() {
    child_bot_main();
}

#[test]
fn shutdown_runs_handlers_in_order_isolated_and_bounded_then_saves_and_releases() {
    let server = RedisServer::start();
    let m = StateManager::new(
        // Long enough for the panicking handler's backtrace (RUST_BACKTRACE=1 in a debug
        // build on a loaded machine takes hundreds of ms), short against the hanging one.
        fast_config(&server, "down", 3000).shutdown_timeout(Duration::from_millis(2000)),
    )
    .unwrap();
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    let standby = manager(&server, "down", 3000);
    let ran = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&ran);
    m.register_shutdown_handler(move || {
        log.lock().unwrap().push("first");
        Err("broker said no".into())
    });
    m.register_shutdown_handler(|| panic!("handler bug"));
    let log = Arc::clone(&ran);
    m.register_shutdown_handler(move || {
        log.lock().unwrap().push("third");
        Ok(())
    });
    let log = Arc::clone(&ran);
    m.register_shutdown_handler(move || {
        log.lock().unwrap().push("hangs");
        std::thread::sleep(Duration::from_secs(30));
        Ok(())
    });
    let mut state = obj(json!({"strategy": "ma", "daily_pnl": 1.5}));
    m.save_state(&mut state).unwrap();
    let started = Instant::now();
    m.shutdown().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(3000), "shutdown took {took:?}");
    assert_eq!(*ran.lock().unwrap(), ["first", "third", "hangs"]);
    let saved = standby.load_state().unwrap().unwrap();
    assert_eq!(saved["strategy"], json!("ma"));
    assert_eq!(saved["daily_pnl"], json!(1.5));
    assert!(saved["shutdown_time"].as_str().unwrap().len() == 26);
    assert!(standby.wait_until_primary(Some(Duration::from_millis(500))));
    assert!(!m.is_primary());
    assert_eq!(
        m.save_state(&mut obj(json!({}))).unwrap_err().kind(),
        ErrorKind::NotPrimary
    );
    m.close().unwrap(); // a second call does nothing
}

#[test]
fn shutdown_never_replaces_the_state_with_only_a_timestamp() {
    let server = RedisServer::start();
    let first = manager(&server, "keep", 3000);
    assert!(first.wait_until_primary(Some(Duration::from_secs(3))));
    first
        .save_state(&mut obj(json!({"strategy": "from-before"})))
        .unwrap();
    drop(first);
    let before: String = redis::cmd("GET")
        .arg("bot:keep:state")
        .query(&mut server.connection())
        .unwrap();
    assert!(
        before.contains("from-before") && before.contains("shutdown_time"),
        "{before}"
    );
    // The next instance saved nothing itself: its shutdown leaves the state alone.
    let second = manager(&server, "keep", 3000);
    assert!(second.wait_until_primary(Some(Duration::from_secs(3))));
    second.close().unwrap();
    let after: String = redis::cmd("GET")
        .arg("bot:keep:state")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(after, before);
}

fn lock_holder(server: &RedisServer, bot: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("bot:{bot}:primary_lock"))
        .query(&mut server.connection())
        .unwrap()
}

#[test]
fn sigterm_and_sigint_run_handlers_release_the_lease_and_exit_zero() {
    for (bot, sig) in [("term", libc::SIGTERM), ("int", libc::SIGINT)] {
        let server = RedisServer::start();
        let mut child = ChildBot::spawn(&server, bot, 3000, true);
        assert!(wait_for(Duration::from_secs(5), || child.has_line("primary")));
        let standby = manager(&server, bot, 3000);
        signal(child.pid(), sig);
        let sent = Instant::now();
        assert_eq!(
            child.wait_exit(Duration::from_secs(5)),
            Some(0),
            "exit status"
        );
        assert!(standby.wait_until_primary(Some(Duration::from_secs(1))));
        assert!(
            sent.elapsed() < Duration::from_millis(1000),
            "took {:?}",
            sent.elapsed()
        );
        let lines = child.lines();
        let first = lines
            .iter()
            .position(|l| l == "handler 0")
            .expect("handler 0 ran");
        let second = lines
            .iter()
            .position(|l| l == "handler 1")
            .expect("handler 1 ran");
        assert!(first < second);
        let state = standby.load_state().unwrap().unwrap();
        assert_eq!(state["strategy"], json!("child"));
        assert!(state.contains_key("shutdown_time"));
        assert!(lock_holder(&server, bot)
            .unwrap()
            .starts_with(standby.instance_id()));
    }
}

#[test]
fn a_second_signal_during_shutdown_exits_at_once() {
    let server = RedisServer::start();
    let mut child = ChildBot::spawn_with_env(
        &server,
        "twice",
        3000,
        true,
        &[("QS_CHILD_SLOW_HANDLER_MS", "20000")],
    );
    assert!(wait_for(Duration::from_secs(5), || child.has_line("primary")));
    signal(child.pid(), libc::SIGTERM);
    assert!(wait_for(Duration::from_secs(3), || child
        .has_line("slow handler started")));
    let sent = Instant::now();
    signal(child.pid(), libc::SIGTERM);
    let code = child.wait_exit(Duration::from_secs(3));
    assert!(code.is_some() && code != Some(0), "exit {code:?}");
    assert!(sent.elapsed() < Duration::from_secs(1));
}

#[test]
fn without_signal_handlers_the_host_keeps_its_own() {
    let server = RedisServer::start();
    let mut child = ChildBot::spawn(&server, "opt-out", 3000, false);
    assert!(wait_for(Duration::from_secs(5), || child.has_line("primary")));
    signal(child.pid(), libc::SIGTERM);
    // SIGTERM keeps its default disposition: the process dies of it, no handler runs.
    use std::os::unix::process::ExitStatusExt;
    let mut status = None;
    assert!(wait_for(Duration::from_secs(3), || {
        status = child.child.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().signal(), Some(libc::SIGTERM));
    assert!(!child.has_line("handler 0"));
}

#[test]
fn a_hung_callback_cannot_hold_the_shutdown_past_its_timeout() {
    let server = RedisServer::start();
    let m = StateManager::new(
        fast_config(&server, "hung", 3000).shutdown_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    m.on_demoted(|_| std::thread::sleep(Duration::from_secs(30)));
    let started = Instant::now();
    m.close().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close took {:?}",
        started.elapsed()
    );
    assert_eq!(
        lock_holder(&server, "hung"),
        None,
        "the lease was not released"
    );
}
