//! The bad-input catalogue (Rust side): one test per category. Each bad input must give a
//! clear error of its docs/contract.md §7 kind and write nothing, checked on the server: every key
//! the server modified while the call ran is recorded through keyspace notifications
//! (`notify-keyspace-events KA`), and the keyspace is dumped before and after (`KEYS *` +
//! `DUMP`). Only the lease's own bookkeeping (heartbeat, live instances, lock TTL, the lease
//! record), which the lease thread renews on its own schedule, may change meanwhile. Refusals of oversized
//! values are also checked not to reach the server at all (`total_net_input_bytes`), and
//! refused configurations not to connect. The Python and C front ends have their own
//! catalogues (including invalid UTF-8 through the C API, negative and NaN durations, which
//! a Rust `Duration` and `&str` cannot express).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use quantshift_core::{Config, ErrorKind, JsonObject, StateManager};
use serde_json::json;

/// A long lease: renewals (every 20 s) are rare during a test.
const QUIET_TTL_MS: u64 = 60_000;

/// Written by the inspector to know that every notification before it has arrived.
const MARKER: &str = "inspect:marker";

/// Keys the lease thread (and the stall meter's publisher) write on their own schedule,
/// whatever the caller does.
fn lease_bookkeeping(key: &str) -> bool {
    key.starts_with("inspect:")
        || key.ends_with(":heartbeat")
        || key.ends_with(":instances")
        || key.ends_with(":lease_stalls")
        || key.ends_with(":primary_lock")
        || key.ends_with(":lease_record")
}

/// One connection kept open for inspecting the server (so that inspecting does not count
/// as a new connection), and a subscriber recording every key the server modifies.
struct Inspect {
    conn: redis::Connection,
    touched: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
    markers: u64,
}

type Snapshot = Vec<(Vec<u8>, Option<Vec<u8>>)>;

impl Drop for Inspect {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
    }
}

impl Inspect {
    fn new(server: &RedisServer) -> Self {
        let mut conn = server.connection();
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("KA")
            .query::<()>(&mut conn)
            .unwrap();
        let mut subscriber = server.connection();
        let touched = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (Arc::clone(&touched), Arc::clone(&stop));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let listener = std::thread::spawn(move || {
            let mut pubsub = subscriber.as_pubsub();
            pubsub.psubscribe("__keyspace@0__:*").unwrap();
            pubsub
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            ready_tx.send(()).unwrap();
            while !stopped.load(Ordering::Acquire) {
                if let Ok(message) = pubsub.get_message() {
                    let channel = message.get_channel_name().to_owned();
                    let key = channel.trim_start_matches("__keyspace@0__:").to_owned();
                    sink.lock().unwrap().push(key);
                }
            }
        });
        ready_rx.recv().unwrap();
        Inspect {
            conn,
            touched,
            stop,
            listener: Some(listener),
            markers: 0,
        }
    }

    /// Writes a marker and waits until its notification arrived: every modification the
    /// server made before it has then been recorded. Returns how many were recorded.
    fn sync(&mut self) -> usize {
        self.markers += 1;
        redis::cmd("SET")
            .arg(MARKER)
            .arg(self.markers)
            .query::<()>(&mut self.conn)
            .unwrap();
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            {
                let touched = self.touched.lock().unwrap();
                let seen = touched.iter().filter(|k| k.as_str() == MARKER).count() as u64;
                if seen >= self.markers {
                    return touched.len();
                }
            }
            assert!(
                Instant::now() < give_up,
                "keyspace notifications did not arrive"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The keys modified since the recorded position `from`, but the lease's bookkeeping.
    fn touched_since(&self, from: usize) -> Vec<String> {
        self.touched.lock().unwrap()[from..]
            .iter()
            .filter(|k| !lease_bookkeeping(k))
            .cloned()
            .collect()
    }

    /// Every key and its serialized value, but the values the lease thread rewrites.
    fn snapshot(&mut self) -> Snapshot {
        let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut self.conn).unwrap();
        keys.sort();
        keys.into_iter()
            .filter(|k| !k.starts_with(b"inspect:"))
            .map(|k| {
                let text = String::from_utf8_lossy(&k);
                let dump: Option<Vec<u8>> = if text.ends_with(":heartbeat")
                    || text.ends_with(":instances")
                    || text.ends_with(":lease_stalls")
                    || text.ends_with(":lease_record")
                {
                    None
                } else {
                    redis::cmd("DUMP").arg(&k).query(&mut self.conn).unwrap()
                };
                (k, dump)
            })
            .collect()
    }

    /// Bytes the server has received from all clients.
    fn net_input_bytes(&mut self) -> u64 {
        self.info_field("stats", "total_net_input_bytes")
    }

    fn info_field(&mut self, section: &str, field: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn)
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
            .trim()
            .parse()
            .unwrap()
    }

    fn connections_received(&mut self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query(&mut self.conn)
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query::<()>(&mut self.conn)
            .unwrap();
    }

    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET").arg(key).query(&mut self.conn).unwrap()
    }

    /// Runs `refused` (which must fail with `kind`, its message containing `needle`) and
    /// checks that the server modified no key and the keyspace did not change. Returns
    /// how many bytes the server received while `refused` ran (plus one INFO request).
    #[track_caller]
    fn refused<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        kind: ErrorKind,
        needle: &str,
        refused: impl FnOnce() -> quantshift_core::Result<T>,
    ) -> u64 {
        let before = self.snapshot();
        let from = self.sync();
        let received = self.net_input_bytes();
        let result = refused();
        let sent = self.net_input_bytes() - received;
        self.sync();
        let touched = self.touched_since(from);
        let err = match result {
            Ok(value) => panic!("{what}: accepted ({value:?})"),
            Err(err) => err,
        };
        assert_eq!(err.kind(), kind, "{what}: {err}");
        assert!(
            err.message().contains(needle),
            "{what}: the message does not say {needle:?}: {err}"
        );
        assert!(
            touched.is_empty(),
            "{what}: the server modified {touched:?}"
        );
        assert!(self.snapshot() == before, "{what}: the keyspace changed");
        sent
    }
}

fn primary_with(config: Config) -> StateManager {
    let m = StateManager::new(config).expect("start a state manager");
    assert!(m.wait_until_primary(Some(Duration::from_secs(5))));
    m
}

fn quiet_primary(server: &RedisServer, bot: &str) -> StateManager {
    primary_with(fast_config(server, bot, QUIET_TTL_MS))
}

fn position(quantity: f64) -> JsonObject {
    obj(json!({"quantity": quantity, "entry_price": 100.0}))
}

#[test]
fn bot_names_that_could_reach_other_keys_are_refused_before_connecting() {
    let server = RedisServer::start();
    let mut inspect = Inspect::new(&server);
    inspect.set(b"bot:victim:state", br#"{"mine": true}"#);
    let bad_names: Vec<(String, &str)> = vec![
        (String::new(), "must not be empty"),
        ("victim:state".into(), "':'"),
        ("a:b".into(), "':'"),
        ("tab\there".into(), "control character"),
        ("line\nfeed".into(), "control character"),
        ("nul\0byte".into(), "control character"),
        ("esc\u{1b}[2J".into(), "control character"),
        ("del\u{7f}".into(), "control character"),
        ("x".repeat(257), "257 bytes"),
        ("é".repeat(129), "258 bytes"),
    ];
    for (name, needle) in &bad_names {
        let connections = inspect.connections_received();
        let config = fast_config(&server, name, QUIET_TTL_MS);
        inspect.refused(
            &format!("bot name {name:?}"),
            ErrorKind::InvalidInput,
            needle,
            || StateManager::new(config),
        );
        assert_eq!(
            inspect.connections_received(),
            connections,
            "bot name {name:?}: connected to Redis before refusing it"
        );
    }
    // The longest accepted name, and non-ASCII, round-trip into exactly their keys.
    for name in ["x".repeat(256), "ünï-日本-bot".to_owned()] {
        let m = quiet_primary(&server, &name);
        let mut state = obj(json!({"name": name}));
        m.save_state(&mut state).unwrap();
        let key = format!("bot:{name}:state");
        let raw = inspect.get(&key).expect("state under the exact key");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["name"],
            json!(name)
        );
        assert_eq!(m.load_state().unwrap().unwrap(), state);
        m.close().unwrap();
    }
    assert_eq!(
        inspect.get("bot:victim:state").unwrap(),
        br#"{"mine": true}"#.to_vec()
    );
}

#[test]
fn glob_characters_in_a_bot_name_match_only_themselves() {
    let server = RedisServer::start();
    let mut inspect = Inspect::new(&server);
    // Positions written by the predecessor library (no index) of bots whose names a glob
    // `b*`, `b?`, `b[xy]` or `b\` would match if it were not escaped.
    for bot in ["bx", "by", "b", "b\\x"] {
        inspect.set(
            format!("bot:{bot}:position:AAPL").as_bytes(),
            br#"{"quantity": 1}"#,
        );
    }
    inspect.set(b"bot:b*:position:OWN", br#"{"quantity": 2}"#);
    for glob in ["b*", "b?", "b[xy]", "b\\"] {
        let m = quiet_primary(&server, glob);
        let found: Vec<String> = m
            .load_positions()
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let expected: Vec<String> = if glob == "b*" {
            vec!["OWN".into()]
        } else {
            vec![]
        };
        assert_eq!(found, expected, "bot {glob:?} found others' positions");
        // Clearing and syncing to nothing touch only its own keys.
        m.sync_positions(&[]).unwrap();
        // The SCAN pattern of its position keys, run by the server, matches only its own.
        let mut matched: Vec<String> = redis::cmd("KEYS")
            .arg(m.keys().position_pattern())
            .query(&mut inspect.conn)
            .unwrap();
        matched.retain(|k| !k.starts_with(m.keys().position_prefix()));
        assert!(
            matched.is_empty(),
            "pattern of {glob:?} matches {matched:?}"
        );
        m.close().unwrap();
    }
    for bot in ["bx", "by", "b", "b\\x"] {
        assert!(
            inspect.get(&format!("bot:{bot}:position:AAPL")).is_some(),
            "bot {bot:?} lost its position to a glob-named bot"
        );
    }
}

#[test]
fn bad_symbols_and_fill_ids_are_refused_and_good_ones_round_trip() {
    let server = RedisServer::start();
    let mut inspect = Inspect::new(&server);
    let m = quiet_primary(&server, "sym");
    m.save_position("KEEP", &mut position(1.0)).unwrap();
    let bad_symbols: Vec<(String, &str)> = vec![
        (String::new(), "must not be empty"),
        ("new\nline".into(), "control character"),
        ("tab\t".into(), "control character"),
        ("\u{1b}[31mRED".into(), "control character"),
        ("nul\0".into(), "control character"),
        ("unit\u{1f}sep".into(), "control character"),
        ("c1\u{85}".into(), "control character"),
        ("x".repeat(257), "257 bytes"),
        ("ü".repeat(129), "258 bytes"),
    ];
    for (symbol, needle) in &bad_symbols {
        let what = format!("symbol {symbol:?}");
        inspect.refused(&what, ErrorKind::InvalidInput, needle, || {
            m.save_position(symbol, &mut position(1.0))
        });
        inspect.refused(&what, ErrorKind::InvalidInput, needle, || {
            m.apply_fill(symbol, 1.0, 10.0, Some("f1"))
        });
        inspect.refused(&what, ErrorKind::InvalidInput, needle, || {
            m.clear_position(symbol)
        });
        inspect.refused(&what, ErrorKind::InvalidInput, needle, || {
            m.sync_positions(&[(symbol.clone(), position(2.0))])
        });
    }
    for (fill_id, needle) in [
        (String::new(), "must not be empty"),
        ("a\u{1f}b".to_owned(), "control character"),
        ("cr\r".to_owned(), "control character"),
        ("f".repeat(257), "257 bytes"),
    ] {
        inspect.refused(
            &format!("fill_id {fill_id:?}"),
            ErrorKind::InvalidInput,
            needle,
            || m.apply_fill("KEEP", 1.0, 10.0, Some(&fill_id)),
        );
    }
    // Separators, glob characters, backslashes, non-ASCII and the longest accepted symbol
    // round-trip exactly, each under exactly its own key.
    let good = [
        "BTC/USD".to_owned(),
        "ES:FUT".to_owned(),
        "bot:other:state".to_owned(),
        "日本株".to_owned(),
        "émoji🚀".to_owned(),
        "a*b?[c]".to_owned(),
        "back\\slash".to_owned(),
        " spaced ".to_owned(),
        "y".repeat(256),
    ];
    for (i, symbol) in good.iter().enumerate() {
        m.save_position(symbol, &mut position(i as f64 + 1.0))
            .unwrap();
        let raw = inspect
            .get(&format!("bot:sym:position:{symbol}"))
            .unwrap_or_else(|| panic!("{symbol:?} not under its exact key"));
        let stored: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(stored["quantity"].as_f64(), Some(i as f64 + 1.0));
    }
    let mut loaded: Vec<String> = m
        .load_positions()
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    loaded.sort();
    let mut expected: Vec<String> = good.to_vec();
    expected.push("KEEP".into());
    expected.sort();
    assert_eq!(loaded, expected);
    // A symbol that looks like another key of the bot stays a position.
    assert_eq!(inspect.get("bot:other:state"), None);
    // A glob symbol clears only itself.
    m.save_position("a", &mut position(1.0)).unwrap();
    assert!(m.clear_position("a*b?[c]").unwrap());
    assert!(inspect.get("bot:sym:position:a").is_some());
}

#[test]
fn numbers_and_values_json_cannot_carry_are_refused_before_sending() {
    let server = RedisServer::start();
    let mut inspect = Inspect::new(&server);
    let m = quiet_primary(&server, "num");
    m.save_position("AAPL", &mut position(10.0)).unwrap();
    for (quantity, price, needle) in [
        (f64::NAN, 100.0, "quantity"),
        (f64::INFINITY, 100.0, "quantity"),
        (f64::NEG_INFINITY, 100.0, "quantity"),
        (0.0, 100.0, "non-zero"),
        (-0.0, 100.0, "non-zero"),
        (1.0, f64::NAN, "price"),
        (1.0, f64::INFINITY, "price"),
        (1.0, f64::NEG_INFINITY, "price"),
    ] {
        for symbol in ["AAPL", "NEW"] {
            inspect.refused(
                &format!("fill {quantity} @ {price} on {symbol}"),
                ErrorKind::InvalidInput,
                needle,
                || m.apply_fill(symbol, quantity, price, Some("f")),
            );
        }
    }
    // Finite inputs whose result is not finite.
    m.save_position("HUGE", &mut position(1e308)).unwrap();
    inspect.refused(
        "overflowing fill",
        ErrorKind::InvalidInput,
        "overflows",
        || m.apply_fill("HUGE", 1e308, 1e308, Some("big")),
    );
    // A JSON map cannot hold NaN or infinities in Rust: serde_json refuses them in text,
    // and has no number for them (json!(f64::NAN) is null, decided by the caller's code).
    for text in [
        r#"{"quantity": NaN}"#,
        r#"{"quantity": Infinity}"#,
        r#"{"quantity": -Infinity}"#,
        r#"{"quantity": 1e400}"#,
    ] {
        assert!(
            serde_json::from_str::<serde_json::Value>(text).is_err(),
            "{text} parsed"
        );
    }
    assert!(serde_json::Number::from_f64(f64::NAN).is_none());
    // Wrong types from the broker: refused, nothing written.
    for (data, needle) in [
        (json!({"quantity": "ten"}), "not a number"),
        (json!({"quantity": {"n": 1}}), "not a number"),
        (json!({"quantity": [1]}), "not a number"),
        (json!({"quantity": true}), "not a number"),
    ] {
        let broker = vec![("AAPL".to_owned(), obj(data.clone()))];
        inspect.refused(
            &format!("broker position {data}"),
            ErrorKind::InvalidInput,
            needle,
            || m.sync_positions(&broker),
        );
    }
    let twice = vec![
        ("AAPL".to_owned(), position(1.0)),
        ("AAPL".to_owned(), position(2.0)),
    ];
    inspect.refused(
        "a symbol twice",
        ErrorKind::InvalidInput,
        "appears twice",
        || m.sync_positions(&twice),
    );
}

#[test]
fn payloads_over_the_limit_are_refused_before_sending() {
    assert_eq!(Config::new("b").max_payload_bytes, 16 * 1024 * 1024);
    let server = RedisServer::start();
    let mut inspect = Inspect::new(&server);
    let m = primary_with(fast_config(&server, "big", QUIET_TTL_MS).max_payload_bytes(4096));
    m.save_state(&mut obj(json!({"small": 1}))).unwrap();
    m.save_position("AAPL", &mut position(1.0)).unwrap();
    let blob = "x".repeat(20_000);
    refused_unsent(&mut inspect, "big state", || {
        m.save_state(&mut obj(json!({ "blob": blob })))
    });
    refused_unsent(&mut inspect, "state grown big by update_state", || {
        m.update_state(&obj(json!({ "blob": blob })))
    });
    refused_unsent(&mut inspect, "big position", || {
        m.save_position("AAPL", &mut obj(json!({"quantity": 1, "note": blob})))
    });
    let broker = vec![
        ("AAPL".to_owned(), position(3.0)),
        ("MSFT".to_owned(), obj(json!({"quantity": 1, "note": blob}))),
    ];
    refused_unsent(
        &mut inspect,
        "big position in a sync (one good, one too big: neither written)",
        || m.sync_positions(&broker),
    );
    // Just under the limit is accepted (the limit is on the serialized size).
    let room = 4096
        - serde_json::to_string(&json!({"blob": "", "last_update": "2025-12-24T22:00:00.123456"}))
            .unwrap()
            .len();
    m.save_state(&mut obj(json!({ "blob": "y".repeat(room) })))
        .unwrap();
    // And the default limit, 16 MiB, applies without configuration.
    let d = StateManager::new(fast_config(&server, "default-limit", QUIET_TTL_MS)).unwrap();
    assert!(d.wait_until_primary(Some(Duration::from_secs(5))));
    let huge = "z".repeat(16 * 1024 * 1024);
    refused_unsent_of(&mut inspect, "a 16 MiB state", 16 * 1024 * 1024, || {
        d.save_state(&mut obj(json!({ "blob": huge })))
    });
}

/// An oversized value (20 000 bytes or more) refused before sending: the server received
/// far less than that while the call ran (reads of what is stored, a Lua script loaded on
/// first use, and the lease's renewals every 100 ms, of which a slow serialization of a
/// 16 MiB value sees several).
#[track_caller]
fn refused_unsent<T: std::fmt::Debug>(
    inspect: &mut Inspect,
    what: &str,
    call: impl FnOnce() -> quantshift_core::Result<T>,
) {
    refused_unsent_of(inspect, what, 20_000, call)
}

/// [`refused_unsent`] of a value of `value_bytes`: under a quarter of it reached the server.
#[track_caller]
fn refused_unsent_of<T: std::fmt::Debug>(
    inspect: &mut Inspect,
    what: &str,
    value_bytes: u64,
    call: impl FnOnce() -> quantshift_core::Result<T>,
) {
    let sent = inspect.refused(what, ErrorKind::InvalidInput, "over the limit", call);
    assert!(
        sent < value_bytes / 4,
        "{what}: {sent} bytes reached the server while refusing a value of {value_bytes} bytes or more"
    );
}

#[test]
fn corrupt_values_stored_under_our_keys_are_a_clear_error_and_left_alone() {
    let server = RedisServer::start();
    let mut inspect = Inspect::new(&server);
    let m = quiet_primary(&server, "cor");
    let corrupt: [(&[u8], &str); 9] = [
        (b"not json", "not valid JSON"),
        (b"{\"truncated\": ", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"{\"quantity\": NaN}", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[1, 2]", "array"),
        (b"\"text\"", "string"),
        (b"42", "number"),
        (b"null", "null"),
    ];
    for (raw, needle) in corrupt {
        let what = format!("state {:?}", String::from_utf8_lossy(raw));
        inspect.set(b"bot:cor:state", raw);
        inspect.refused(&what, ErrorKind::CorruptData, needle, || m.load_state());
        inspect.refused(&what, ErrorKind::CorruptData, needle, || {
            m.update_state(&obj(json!({"x": 1})))
        });
        let err = m.load_state().unwrap_err();
        assert!(err.message().contains("bot:cor:state"), "{what}: {err}");
    }
    // A corrupt position listed in the index.
    m.save_position("GOOD", &mut position(1.0)).unwrap();
    m.save_position("BAD", &mut position(1.0)).unwrap();
    for (raw, needle) in corrupt {
        let what = format!("position {:?}", String::from_utf8_lossy(raw));
        inspect.set(b"bot:cor:position:BAD", raw);
        inspect.refused(
            &what,
            ErrorKind::CorruptData,
            "bot:cor:position:BAD",
            || m.load_positions(),
        );
        inspect.refused(&what, ErrorKind::CorruptData, needle, || {
            m.apply_fill("BAD", 1.0, 10.0, Some("f"))
        });
        inspect.refused(&what, ErrorKind::CorruptData, needle, || {
            m.sync_positions(&[("GOOD".to_owned(), position(5.0))])
        });
    }
    // A position that is an object but whose numbers are not numbers.
    inspect.set(
        b"bot:cor:position:BAD",
        br#"{"quantity": "ten", "entry_price": 1}"#,
    );
    inspect.refused(
        "quantity \"ten\"",
        ErrorKind::CorruptData,
        "not a number",
        || m.apply_fill("BAD", 1.0, 10.0, None),
    );
    inspect.set(
        b"bot:cor:position:BAD",
        br#"{"quantity": 1, "entry_price": [1]}"#,
    );
    inspect.refused(
        "entry_price [1]",
        ErrorKind::CorruptData,
        "not a number",
        || m.apply_fill("BAD", 1.0, 10.0, None),
    );
    redis::cmd("DEL")
        .arg("bot:cor:position:BAD")
        .query::<()>(&mut inspect.conn)
        .unwrap();
    // An index member that is not UTF-8, with a value behind it.
    redis::cmd("SADD")
        .arg("bot:cor:positions")
        .arg(b"\xffsym".as_slice())
        .query::<()>(&mut inspect.conn)
        .unwrap();
    inspect.set(b"bot:cor:position:\xffsym", br#"{"quantity": 1}"#);
    inspect.refused(
        "non-UTF-8 index member",
        ErrorKind::CorruptData,
        "not UTF-8",
        || m.load_positions(),
    );
}

/// A key of ours replaced by hand with a value of another type: Redis answers `WRONGTYPE`
/// (naming no key); the error is `CorruptData` naming the key, and nothing is written.
#[test]
fn keys_of_another_redis_type_are_corrupt_data_naming_the_key() {
    let server = RedisServer::start();
    let mut inspect = Inspect::new(&server);
    let m = quiet_primary(&server, "wt");
    m.save_position("AAPL", &mut position(1.0)).unwrap();
    let replace = |inspect: &mut Inspect, key: &str, kind: &str| {
        redis::cmd("DEL")
            .arg(key)
            .query::<()>(&mut inspect.conn)
            .unwrap();
        let mut cmd = match kind {
            "list" => redis::cmd("RPUSH"),
            "hash" => redis::cmd("HSET"),
            _ => redis::cmd("SET"),
        };
        cmd.arg(key);
        if kind == "hash" {
            cmd.arg("f");
        }
        cmd.arg("by hand").query::<()>(&mut inspect.conn).unwrap();
    };
    let named = |key: &str, found: &str| format!("{key} holds a Redis {found}, not the ");

    replace(&mut inspect, "bot:wt:state", "list");
    let needle = named("bot:wt:state", "list");
    inspect.refused("state list", ErrorKind::CorruptData, &needle, || {
        m.load_state()
    });
    inspect.refused("state list", ErrorKind::CorruptData, &needle, || {
        m.update_state(&obj(json!({"x": 1})))
    });

    replace(&mut inspect, "bot:wt:position:AAPL", "hash");
    let needle = named("bot:wt:position:AAPL", "hash");
    inspect.refused("position hash", ErrorKind::CorruptData, &needle, || {
        m.load_positions()
    });
    inspect.refused("position hash", ErrorKind::CorruptData, &needle, || {
        m.apply_fill("AAPL", 1.0, 10.0, Some("f1"))
    });
    inspect.refused("position hash", ErrorKind::CorruptData, &needle, || {
        m.sync_positions(&[("AAPL".to_owned(), position(5.0))])
    });
    redis::cmd("DEL")
        .arg("bot:wt:position:AAPL")
        .query::<()>(&mut inspect.conn)
        .unwrap();

    replace(&mut inspect, "bot:wt:fills", "string");
    let needle = named("bot:wt:fills", "string");
    inspect.refused("fills string", ErrorKind::CorruptData, &needle, || {
        m.apply_fill("AAPL", 1.0, 10.0, Some("f2"))
    });
    redis::cmd("DEL")
        .arg("bot:wt:fills")
        .query::<()>(&mut inspect.conn)
        .unwrap();

    replace(&mut inspect, "bot:wt:positions", "list");
    let needle = named("bot:wt:positions", "list");
    inspect.refused("index list", ErrorKind::CorruptData, &needle, || {
        m.load_positions()
    });
}

#[test]
fn absurd_durations_and_limits_are_refused_before_connecting() {
    let server = RedisServer::start();
    let mut inspect = Inspect::new(&server);
    let base = || fast_config(&server, "dur", 3000);
    let ms = Duration::from_millis;
    let cases: Vec<(&str, Config, &str)> = vec![
        ("lock_ttl 0", base().lock_ttl(Duration::ZERO), "lock_ttl"),
        (
            "lock_ttl 1 ns",
            base().lock_ttl(Duration::from_nanos(1)),
            "lock_ttl",
        ),
        (
            "lock_ttl 2 ms (poll interval under 1 ms)",
            base().lock_ttl(ms(2)),
            "at least 1 ms",
        ),
        (
            "renew_deadline > lock_ttl",
            base().lock_ttl(ms(3000)).renew_deadline(ms(4000)),
            "lock_ttl > renew_deadline",
        ),
        (
            "renew_deadline == lock_ttl",
            base().lock_ttl(ms(3000)).renew_deadline(ms(3000)),
            "lock_ttl > renew_deadline",
        ),
        (
            "renew_deadline below the renew interval",
            base().lock_ttl(ms(3000)).renew_deadline(ms(900)),
            "renew interval",
        ),
        (
            "renew_deadline 0",
            base().renew_deadline(Duration::ZERO),
            "renew_deadline",
        ),
        (
            "poll_interval 0",
            base().poll_interval(Duration::ZERO),
            "poll_interval",
        ),
        (
            "poll_interval 1 µs",
            base().poll_interval(Duration::from_micros(1)),
            "poll_interval",
        ),
        (
            "command_timeout 0",
            base().command_timeout(Duration::ZERO),
            "command_timeout",
        ),
        (
            "connect_timeout 0",
            base().connect_timeout(Duration::ZERO),
            "connect_timeout",
        ),
        ("state_ttl 0", base().state_ttl(Duration::ZERO), "state_ttl"),
        (
            "position_ttl 0",
            base().position_ttl(Duration::ZERO),
            "position_ttl",
        ),
        (
            "heartbeat_ttl 0",
            base().heartbeat_ttl(Duration::ZERO),
            "heartbeat_ttl",
        ),
        (
            "wait_timeout 0",
            base().wait_timeout(Duration::ZERO),
            "wait_timeout",
        ),
        (
            "max_payload_bytes 0",
            base().max_payload_bytes(0),
            "max_payload_bytes",
        ),
        // Beyond ten years: these used to be accepted and then panic (`Instant + Duration`
        // overflow in the caller's thread, `lock_ttl * 2 / 3` overflow), never promote, or
        // fail every write with a Redis "out of range" error.
        (
            "lock_ttl Duration::MAX",
            base().lock_ttl(Duration::MAX),
            "lock_ttl must be at most",
        ),
        (
            "lock_ttl 2^62 s",
            base().lock_ttl(Duration::from_secs(1 << 62)),
            "lock_ttl must be at most",
        ),
        (
            "state_ttl Duration::MAX",
            base().state_ttl(Duration::MAX),
            "state_ttl must be at most",
        ),
        (
            "position_ttl 11 years",
            base().position_ttl(Duration::from_secs(11 * 365 * 86_400)),
            "position_ttl must be at most",
        ),
        (
            "heartbeat_ttl Duration::MAX",
            base().heartbeat_ttl(Duration::MAX),
            "heartbeat_ttl must be at most",
        ),
        (
            "renew_deadline Duration::MAX",
            base().renew_deadline(Duration::MAX),
            "renew_deadline must be at most",
        ),
        (
            "poll_interval Duration::MAX",
            base().poll_interval(Duration::MAX),
            "poll_interval must be at most",
        ),
        (
            "command_timeout Duration::MAX",
            base().command_timeout(Duration::MAX),
            "command_timeout must be at most",
        ),
        (
            "connect_timeout Duration::MAX",
            base().connect_timeout(Duration::MAX),
            "connect_timeout must be at most",
        ),
        (
            "wait_timeout Duration::MAX",
            base().wait_timeout(Duration::MAX),
            "wait_timeout must be at most",
        ),
        (
            "shutdown_timeout Duration::MAX",
            base().shutdown_timeout(Duration::MAX),
            "shutdown_timeout must be at most",
        ),
        (
            "wait_replicas 1000",
            base().wait_replicas(1000),
            "wait_replicas",
        ),
        (
            "no URL scheme",
            base().redis_url("127.0.0.1:6379"),
            "unsupported Redis URL",
        ),
        (
            "http URL",
            base().redis_url("http://127.0.0.1:1/"),
            "unsupported Redis URL",
        ),
    ];
    for (what, config, needle) in cases {
        // Never a panic, whatever the value.
        let config = std::panic::AssertUnwindSafe(config);
        let outcome = std::panic::catch_unwind(|| config.0.validate());
        assert!(
            outcome.is_ok(),
            "{what}: validating the configuration panicked"
        );
        let config = config.0;
        let connections = inspect.connections_received();
        inspect.refused(what, ErrorKind::InvalidInput, needle, || {
            StateManager::new(config)
        });
        assert_eq!(
            inspect.connections_received(),
            connections,
            "{what}: connected to Redis before refusing the configuration"
        );
    }
}

#[test]
fn wait_replicas_on_a_server_that_refuses_wait_is_a_clear_error_at_start() {
    let server = RedisServer::start_with(&["--rename-command", "WAIT", ""]);
    let Err(err) = StateManager::new(
        Config::new("no-wait")
            .redis_url(server.url())
            .install_signal_handlers(false)
            .wait_replicas(1),
    ) else {
        panic!("wait_replicas=1 was accepted by a server without WAIT");
    };
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("refuses WAIT"), "{err}");
    // Without replicas asked for, the same server is fine.
    let fine = StateManager::new(
        Config::new("no-wait")
            .redis_url(server.url())
            .install_signal_handlers(false),
    )
    .unwrap();
    assert!(fine.wait_until_primary(Some(Duration::from_secs(3))));
}

/// A cluster URL naming a server that is not a cluster node: a clear `InvalidInput` error at
/// start (not retried as if Redis were away), without the password.
#[test]
fn a_cluster_url_to_a_single_server_is_a_clear_error() {
    let server = RedisServer::start_with(&["--requirepass", "hunter2-secret"]);
    let started = std::time::Instant::now();
    let Err(err) = StateManager::new(
        Config::new("not-a-cluster")
            .redis_url(format!(
                "redis+cluster://:hunter2-secret@127.0.0.1:{}",
                server.port
            ))
            .connect_timeout(Duration::from_secs(5))
            .install_signal_handlers(false),
    ) else {
        panic!("a cluster URL to a single server was accepted");
    };
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("not a cluster node"), "{err}");
    assert!(!err.message().contains("hunter2"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after the connect timeout's retries"
    );
}
