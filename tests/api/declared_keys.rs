//! Every Lua script declares every key it touches (docs/contract.md §1), in both key layouts.
//!
//! Redis 7.0 itself does not refuse an undeclared key that hashes to a declared key's slot
//! (a one-node cluster with the hash-tagged layout accepts it), but ElastiCache Serverless,
//! Dragonfly and other cluster engines do. So the proof watches the server: `MONITOR` shows
//! every command a script runs right after the script call that ran it, and `COMMAND GETKEYS`
//! names the keys of each. Every key a script's command touches must be among the keys its
//! call declared.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::*;
use quantshift_core::{Inspector, KeyLayout, Keys, StateManager};
use serde_json::json;

/// Every line `MONITOR` sends, collected by a thread until [`stop`](Self::stop).
struct Monitor {
    lines: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Sent once the scenario is over: when the monitor shows it, it has shown everything before.
const END_MARKER: &str = "declared-keys-end-of-scenario";

impl Monitor {
    fn start(server: &RedisServer) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        (&stream).write_all(b"MONITOR\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut ok = Vec::new();
        while ok.last() != Some(&b'\n') {
            let _ = reader.read_until(b'\n', &mut ok);
        }
        assert_eq!(ok, b"+OK\r\n");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lines, stop) = (Arc::clone(&lines), Arc::clone(&stop));
            std::thread::spawn(move || {
                // read_until keeps what it read before a timeout in `line`: the next call
                // goes on from there.
                let mut line = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) => break,
                        Ok(_) if line.ends_with(b"\n") => {
                            lines.lock().unwrap().push(std::mem::take(&mut line));
                        }
                        _ => {}
                    }
                }
            })
        };
        Monitor {
            lines,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self, server: &RedisServer) -> Vec<MonitorLine> {
        let mut conn = server.connection();
        let _: String = redis::cmd("ECHO").arg(END_MARKER).query(&mut conn).unwrap();
        let seen_end = wait_for(Duration::from_secs(5), || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|line| String::from_utf8_lossy(line).contains(END_MARKER))
        });
        assert!(seen_end, "MONITOR did not show the end marker");
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        lines.iter().map(|line| MonitorLine::parse(line)).collect()
    }
}

/// `+1700000000.123456 [0 127.0.0.1:5000] "EVALSHA" "..." "2" "k1" ...`: who sent it (`lua`
/// for a command a script ran) and the arguments.
struct MonitorLine {
    from_script: bool,
    args: Vec<Vec<u8>>,
}

impl MonitorLine {
    fn parse(line: &[u8]) -> Self {
        let text = line.strip_suffix(b"\r\n").unwrap_or(line);
        let open = text.iter().position(|&b| b == b'[').expect("a client");
        let close = open + text[open..].iter().position(|&b| b == b']').unwrap();
        let from_script = text[open + 1..close].ends_with(b" lua");
        MonitorLine {
            from_script,
            args: unquote_args(&text[close + 1..]),
        }
    }

    fn command(&self) -> String {
        String::from_utf8_lossy(&self.args[0]).to_ascii_lowercase()
    }
}

/// The arguments as Redis quotes them in MONITOR (`sdscatrepr`: `\"`, `\\`, `\n`, `\r`, `\t`,
/// `\a`, `\b`, `\xHH`).
fn unquote_args(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut args = Vec::new();
    loop {
        while rest.first() == Some(&b' ') {
            rest = &rest[1..];
        }
        let Some((&b'"', tail)) = rest.split_first() else {
            assert!(rest.is_empty(), "unexpected MONITOR text {rest:?}");
            return args;
        };
        rest = tail;
        let mut arg = Vec::new();
        loop {
            match rest {
                [b'"', tail @ ..] => {
                    rest = tail;
                    break;
                }
                [b'\\', b'x', hi, lo, tail @ ..] => {
                    let hex = std::str::from_utf8(&[*hi, *lo]).unwrap().to_owned();
                    arg.push(u8::from_str_radix(&hex, 16).unwrap());
                    rest = tail;
                }
                [b'\\', escaped, tail @ ..] => {
                    arg.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'a' => 7,
                        b'b' => 8,
                        other => *other,
                    });
                    rest = tail;
                }
                [byte, tail @ ..] => {
                    arg.push(*byte);
                    rest = tail;
                }
                [] => panic!("unterminated MONITOR argument"),
            }
        }
        args.push(arg);
    }
}

/// One script call and the commands it ran.
struct ScriptCall {
    sha: String,
    declared: HashSet<Vec<u8>>,
    commands: Vec<Vec<Vec<u8>>>,
}

fn script_calls(lines: Vec<MonitorLine>) -> Vec<ScriptCall> {
    let mut calls: Vec<ScriptCall> = Vec::new();
    let mut in_script = false;
    for line in lines {
        if line.from_script {
            assert!(in_script, "a script's command without its call");
            calls.last_mut().unwrap().commands.push(line.args);
            continue;
        }
        in_script = matches!(
            line.command().as_str(),
            "eval" | "evalsha" | "eval_ro" | "evalsha_ro"
        );
        if in_script {
            let numkeys: usize = String::from_utf8_lossy(&line.args[2]).parse().unwrap();
            calls.push(ScriptCall {
                sha: String::from_utf8_lossy(&line.args[1]).to_ascii_lowercase(),
                declared: line.args[3..3 + numkeys].iter().cloned().collect(),
                commands: Vec::new(),
            });
        }
    }
    calls
}

/// The keys of one command, as the server names them (none for a command without keys).
fn keys_of(conn: &mut redis::Connection, command: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut getkeys = redis::cmd("COMMAND");
    getkeys.arg("GETKEYS");
    for arg in command {
        getkeys.arg(arg.as_slice());
    }
    getkeys.query(conn).unwrap_or_default()
}

/// Every key each script call touched that it did not declare, as readable lines.
fn undeclared_keys(server: &RedisServer, calls: &[ScriptCall]) -> Vec<String> {
    let mut conn = server.connection();
    let mut found = Vec::new();
    for call in calls {
        for command in &call.commands {
            for key in keys_of(&mut conn, command) {
                if !call.declared.contains(&key) {
                    found.push(format!(
                        "script {} ran {} on {:?}, a key it did not declare",
                        call.sha,
                        String::from_utf8_lossy(&command[0]),
                        String::from_utf8_lossy(&key)
                    ));
                }
            }
        }
    }
    found
}

fn sha_of(source: &str) -> String {
    redis::Script::new(source).get_hash().to_owned()
}

fn set(conn: &mut redis::Connection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(conn)
        .unwrap();
}

/// Everything that runs the positions scripts and the status script: start-up adoption of
/// unindexed positions, loads (first, unchanged, changed by another writer), writes, fills,
/// a broker sync, a second instance's loads, and the operators' views.
fn run_scenario(server: &RedisServer, bot: &str, layout: KeyLayout) {
    let keys = Keys::with_layout(bot, layout);
    let mut conn = server.connection();
    // Written before the index existed: found by the start-up scan, adopted on promotion.
    set(&mut conn, &keys.position("OLD"), r#"{"quantity": 2}"#);
    let config = |ttl| fast_config(server, bot, ttl).key_layout(layout);
    let m = StateManager::new(config(30_000)).unwrap();
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    let adopted = wait_for(Duration::from_secs(3), || {
        redis::cmd("SISMEMBER")
            .arg(&keys.positions_index)
            .arg("OLD")
            .query::<bool>(&mut conn)
            .unwrap()
    });
    assert!(adopted, "the unindexed position was not adopted");
    for symbol in ["A", "BTC/USD", "ES:FUT", "日本株"] {
        m.save_position(symbol, &mut obj(json!({"quantity": 1})))
            .unwrap();
    }
    for _ in 0..3 {
        assert_eq!(m.load_positions().unwrap().len(), 5);
    }
    // Another writer adds a position: the load meets a symbol whose key it did not declare.
    set(&mut conn, &keys.position("NEW"), r#"{"quantity": 3}"#);
    redis::cmd("SADD")
        .arg(&keys.positions_index)
        .arg("NEW")
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(m.load_positions().unwrap().len(), 6);
    assert!(m.clear_position("A").unwrap());
    m.apply_fill("BTC/USD", 0.5, 100.0, Some("fill-1")).unwrap();
    let broker = vec![
        ("BTC/USD".to_owned(), obj(json!({"quantity": 2}))),
        ("ETH/USD".to_owned(), obj(json!({"quantity": 1}))),
    ];
    m.sync_positions(&broker).unwrap();
    let standby = StateManager::new(config(30_000)).unwrap();
    let loaded: BTreeSet<String> = standby
        .load_positions()
        .unwrap()
        .into_iter()
        .map(|(symbol, _)| symbol)
        .collect();
    assert_eq!(
        loaded,
        BTreeSet::from(["BTC/USD".to_owned(), "ETH/USD".to_owned()])
    );
    let inspector = Inspector::connect(Some(&server.url()), Duration::from_secs(2))
        .unwrap()
        .key_layout(layout);
    assert_eq!(inspector.bots().unwrap(), [bot]);
    let status = inspector.status(bot).unwrap();
    assert_eq!(status.positions, 2);
    for status in inspector.statuses(&[bot, "nobody"]).unwrap() {
        status.unwrap();
    }
    assert_eq!(inspector.positions(bot).unwrap().len(), 2);
    drop(standby);
    drop(m);
}

fn check_layout(layout: KeyLayout) {
    let server = RedisServer::start();
    let monitor = Monitor::start(&server);
    run_scenario(&server, "declared", layout);
    let calls = script_calls(monitor.stop(&server));
    let undeclared = undeclared_keys(&server, &calls);
    assert!(undeclared.is_empty(), "{}", undeclared.join("\n"));
    // The check saw what it is about: each script ran, and touched position keys.
    let keys = Keys::with_layout("declared", layout);
    for source in [
        include_str!("../../src/scripts/positions_load.lua"),
        include_str!("../../src/scripts/positions_adopt.lua"),
        include_str!("../../src/scripts/bot_status.lua"),
    ] {
        let sha = sha_of(source);
        let touched_positions = calls.iter().filter(|call| call.sha == sha).any(|call| {
            call.commands.iter().any(|command| {
                command[1..]
                    .iter()
                    .any(|arg| arg.starts_with(keys.position_prefix().as_bytes()))
            })
        });
        assert!(
            touched_positions,
            "script {sha} never touched a position key"
        );
    }
    // Each manager publishes its stall meter as it starts (then every second).
    let publish = sha_of(include_str!("../../src/scripts/stalls_publish.lua"));
    assert!(
        calls.iter().any(|call| call.sha == publish),
        "the stall meter was never published"
    );
}

#[test]
fn every_script_declares_every_key_it_touches_plain_layout() {
    check_layout(KeyLayout::Plain);
}

#[test]
fn every_script_declares_every_key_it_touches_hash_tagged_layout() {
    check_layout(KeyLayout::HashTagged);
}

/// Thousands of positions, more than one chunk (`unpack()` limits), some not indexed: every
/// one is read, every key declared, and a status stays at most two script calls.
#[test]
fn thousands_of_positions_are_read_in_chunks_declaring_every_key() {
    const INDEXED: usize = 3500;
    let server = RedisServer::start();
    let layout = KeyLayout::HashTagged;
    let keys = Keys::with_layout("many", layout);
    let mut conn = server.connection();
    let mut seed = redis::pipe();
    for i in 0..INDEXED + 5 {
        let symbol = format!("S{i:05}");
        seed.set(keys.position(&symbol), format!(r#"{{"quantity": {i}}}"#))
            .ignore();
        if i < INDEXED {
            seed.sadd(&keys.positions_index, &symbol).ignore();
        }
    }
    seed.query::<()>(&mut conn).unwrap();
    let inspector = Inspector::connect(Some(&server.url()), Duration::from_secs(5))
        .unwrap()
        .key_layout(layout);
    let monitor = Monitor::start(&server);
    let evalsha_calls = |conn: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
    };
    let reset = |conn: &mut redis::Connection| {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query::<()>(conn)
            .unwrap();
    };
    // Loads the scripts (a first call meets NOSCRIPT), so that the calls below count alone.
    inspector.status("nobody").unwrap();
    assert!(inspector.positions("nobody").unwrap().is_empty());
    // The first status learns the index (two calls), the next declares what it learnt.
    for expected_calls in [2, 1] {
        reset(&mut conn);
        assert_eq!(inspector.status("many").unwrap().positions, INDEXED);
        assert_eq!(evalsha_calls(&mut conn), expected_calls);
    }
    // The operator's view scans for unindexed positions first: the script is given every key
    // found, one call.
    reset(&mut conn);
    let loaded = inspector.positions("many").unwrap();
    assert_eq!(evalsha_calls(&mut conn), 1);
    assert_eq!(loaded.len(), INDEXED + 5);
    for (i, (symbol, position)) in loaded.iter().enumerate() {
        assert_eq!(symbol, &format!("S{i:05}"));
        assert_eq!(position["quantity"], json!(i));
    }
    let calls = script_calls(monitor.stop(&server));
    let undeclared = undeclared_keys(&server, &calls);
    assert!(undeclared.is_empty(), "{}", undeclared.join("\n"));
    let load = sha_of(include_str!("../../src/scripts/positions_load.lua"));
    let mgets = calls
        .iter()
        .filter(|call| call.sha == load)
        .flat_map(|call| &call.commands)
        .filter(|command| command[0].eq_ignore_ascii_case(b"mget"))
        .count();
    assert_eq!(mgets, (INDEXED + 5).div_ceil(1000));
}

/// Given too few keys, the scripts touch nothing but what they were given: they answer the
/// index's members for the caller to call again.
#[test]
fn scripts_given_too_few_keys_answer_the_index_and_read_nothing() {
    let server = RedisServer::start();
    let keys = Keys::with_layout("few", KeyLayout::HashTagged);
    let mut conn = server.connection();
    for symbol in ["A", "B"] {
        set(&mut conn, &keys.position(symbol), "{}");
        redis::cmd("SADD")
            .arg(&keys.positions_index)
            .arg(symbol)
            .query::<()>(&mut conn)
            .unwrap();
    }
    let members = |reply: &redis::Value| -> BTreeSet<String> {
        let redis::Value::Array(items) = reply else {
            panic!("{reply:?}")
        };
        redis::from_redis_value(items[1].clone()).unwrap()
    };
    let flag = |reply: &redis::Value| -> i64 {
        let redis::Value::Array(items) = reply else {
            panic!("{reply:?}")
        };
        redis::from_redis_value(items[0].clone()).unwrap()
    };
    let both = BTreeSet::from(["A".to_owned(), "B".to_owned()]);
    let load = redis::Script::new(include_str!("../../src/scripts/positions_load.lua"));
    // ARGV[1]: no extra symbol; then the symbol of each position key.
    let reply: redis::Value = load
        .key(&keys.positions_index)
        .key(keys.position("A"))
        .arg(0)
        .arg("A")
        .invoke(&mut conn)
        .unwrap();
    assert_eq!((flag(&reply), members(&reply)), (0, both.clone()));
    let reply: redis::Value = load
        .key(&keys.positions_index)
        .key(keys.position("A"))
        .key(keys.position("B"))
        .key(keys.position("GONE"))
        .arg(0)
        .arg("A")
        .arg("B")
        .arg("GONE")
        .invoke(&mut conn)
        .unwrap();
    assert_eq!((flag(&reply), members(&reply)), (1, both.clone()));
    let status = redis::Script::new(include_str!("../../src/scripts/bot_status.lua"));
    let mut call = status.key(&keys.lock);
    call.key(&keys.epoch)
        .key(&keys.heartbeat)
        .key(&keys.state)
        .key(&keys.instances)
        .key(&keys.positions_index)
        .key(&keys.lease_record)
        .key(&keys.lease_stalls)
        .key(keys.position("B"))
        .arg("B");
    let reply: redis::Value = call.invoke(&mut conn).unwrap();
    assert_eq!((flag(&reply), members(&reply)), (0, both));
}

/// On a Redis Cluster node (one node serving every slot), the hash-tagged layout runs every
/// path: each script's declared keys share the bot's slot (a plain-layout call would fail
/// with CROSSSLOT), and no script reaches outside what it declared.
#[test]
fn the_hash_tagged_layout_runs_on_a_cluster_node() {
    let server = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    let mut conn = server.connection();
    redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query::<()>(&mut conn)
        .unwrap();
    let ready = wait_for(Duration::from_secs(10), || {
        let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).unwrap();
        info.contains("cluster_state:ok")
    });
    assert!(ready, "the one-node cluster did not come up");
    let monitor = Monitor::start(&server);
    run_scenario(&server, "clustered", KeyLayout::HashTagged);
    let calls = script_calls(monitor.stop(&server));
    let undeclared = undeclared_keys(&server, &calls);
    assert!(undeclared.is_empty(), "{}", undeclared.join("\n"));
}
