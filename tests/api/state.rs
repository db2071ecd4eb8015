//! State and positions against a real redis-server (docs/contract.md §1, §3, §4).

use std::time::Duration;

use crate::common::*;
use quantshift_core::{Config, ErrorKind, StateManager};
use serde_json::json;

fn primary(server: &RedisServer, bot: &str) -> StateManager {
    let m = manager(server, bot, 3000);
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    m
}

fn get(server: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut server.connection())
        .unwrap()
}

fn pttl(server: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query(&mut server.connection())
        .unwrap()
}

#[test]
fn state_round_trips_with_last_update_on_the_callers_map_and_its_ttl() {
    let server = RedisServer::start();
    let m = StateManager::new(fast_config(&server, "st", 3000).state_ttl(Duration::from_secs(100)))
        .unwrap();
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    assert_eq!(m.load_state().unwrap(), None);
    let mut state = obj(
        json!({"strategy": "moving_average", "daily_pnl": 150.5, "big": 12345678901234567u64, "tiny": 0.1}),
    );
    m.save_state(&mut state).unwrap();
    let stamp = state["last_update"].as_str().unwrap().to_owned();
    assert!(
        chrono::NaiveDateTime::parse_from_str(&stamp, "%Y-%m-%dT%H:%M:%S%.6f").is_ok(),
        "{stamp}"
    );
    assert_eq!(stamp.len(), 26, "{stamp}");
    let loaded = m.load_state().unwrap().unwrap();
    assert_eq!(loaded, state);
    let ttl = pttl(&server, "bot:st:state");
    assert!(ttl > 90_000 && ttl <= 100_000, "{ttl}");
    let merged = m
        .update_state(&obj(json!({"daily_pnl": 10, "new": [1, 2]})))
        .unwrap();
    assert_eq!(merged["strategy"], json!("moving_average"));
    assert_eq!(merged["daily_pnl"], json!(10));
    assert_eq!(m.load_state().unwrap().unwrap()["new"], json!([1, 2]));
}

#[test]
fn corrupt_stored_values_are_a_clear_error() {
    let server = RedisServer::start();
    let m = primary(&server, "bad");
    let mut conn = server.connection();
    for (raw, what) in [
        ("not json", "not valid JSON"),
        ("[1,2]", "array"),
        ("42", "number"),
    ] {
        redis::cmd("SET")
            .arg("bot:bad:state")
            .arg(raw)
            .query::<()>(&mut conn)
            .unwrap();
        let err = m.load_state().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CorruptData);
        assert!(err.message().contains(what), "{err}");
    }
    m.save_position("OK", &mut obj(json!({"quantity": 1})))
        .unwrap();
    redis::cmd("SET")
        .arg("bot:bad:position:OK")
        .arg("{broken")
        .query::<()>(&mut conn)
        .unwrap();
    let err = m.load_positions().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptData);
    assert!(err.message().contains("bot:bad:position:OK"), "{err}");
}

#[test]
fn positions_round_trip_every_accepted_symbol_and_stay_within_the_bot() {
    let server = RedisServer::start();
    let m =
        StateManager::new(fast_config(&server, "pos", 3000).position_ttl(Duration::from_secs(500)))
            .unwrap();
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    let symbols = [
        "AAPL",
        "BTC/USD",
        "ES:FUT",
        "日本株",
        "a*b?[c]",
        "x\\y",
        "with space",
    ];
    for (i, symbol) in symbols.iter().enumerate() {
        let mut data = obj(json!({"quantity": i + 1, "entry_price": 150.0}));
        m.save_position(symbol, &mut data).unwrap();
        assert!(data.contains_key("last_update"));
    }
    let loaded = m.load_positions().unwrap();
    let mut names: Vec<&str> = loaded.iter().map(|(s, _)| s.as_str()).collect();
    names.sort();
    let mut expected = symbols.to_vec();
    expected.sort();
    assert_eq!(names, expected);
    let ttl = pttl(&server, "bot:pos:position:ES:FUT");
    assert!(ttl > 400_000 && ttl <= 500_000, "{ttl}");
    // A bot whose name is a glob never sees another bot's positions.
    let other = primary(&server, "po*");
    assert!(other.load_positions().unwrap().is_empty());
    assert!(m.clear_position("ES:FUT").unwrap());
    assert!(!m.clear_position("ES:FUT").unwrap());
    assert_eq!(get(&server, "bot:pos:position:ES:FUT"), None);
    assert_eq!(m.load_positions().unwrap().len(), symbols.len() - 1);
    for bad in ["", "a\nb", &"x".repeat(257)] {
        assert_eq!(
            m.save_position(bad, &mut obj(json!({})))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
    }
}

#[test]
fn fills_are_atomic_weighted_and_idempotent_by_fill_id() {
    let server = RedisServer::start();
    let m = primary(&server, "fills");
    let p = m
        .apply_fill("AAPL", 10.0, 100.0, Some("f1"))
        .unwrap()
        .unwrap();
    assert_eq!(p["quantity"], json!(10));
    // The same fill delivered again changes nothing.
    let again = m
        .apply_fill("AAPL", 10.0, 100.0, Some("f1"))
        .unwrap()
        .unwrap();
    assert_eq!(again["quantity"], json!(10));
    let p = m
        .apply_fill("AAPL", 10.0, 110.0, Some("f2"))
        .unwrap()
        .unwrap();
    assert_eq!(p["entry_price"], json!(105));
    let p = m
        .apply_fill("AAPL", -25.0, 100.0, Some("f3"))
        .unwrap()
        .unwrap();
    assert_eq!(p["quantity"], json!(-5));
    assert_eq!(p["entry_price"], json!(100));
    assert_eq!(p["realized_pnl"], json!(-100));
    assert_eq!(m.apply_fill("AAPL", 5.0, 100.0, Some("f4")).unwrap(), None);
    assert_eq!(get(&server, "bot:fills:position:AAPL"), None);
    assert!(m.load_positions().unwrap().is_empty());
    assert_eq!(
        m.apply_fill("AAPL", f64::INFINITY, 1.0, None)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        m.apply_fill("AAPL", 1.0, 1.0, Some("")).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // Fills from several threads on one manager all land exactly once.
    std::thread::scope(|scope| {
        for t in 0..4 {
            let m = &m;
            scope.spawn(move || {
                for i in 0..25 {
                    m.apply_fill("MSFT", 1.0, 10.0, Some(&format!("t{t}-{i}")))
                        .unwrap();
                    m.apply_fill("MSFT", 1.0, 10.0, Some(&format!("t{t}-{i}")))
                        .unwrap();
                }
            });
        }
    });
    let msft = m
        .load_positions()
        .unwrap()
        .into_iter()
        .find(|(s, _)| s == "MSFT")
        .unwrap()
        .1;
    assert_eq!(msft["quantity"], json!(100));
}

#[test]
fn sync_positions_makes_redis_match_the_broker_and_reports_differences() {
    let server = RedisServer::start();
    let m = primary(&server, "sync");
    m.save_position(
        "KEEP",
        &mut obj(json!({"quantity": 1, "entry_price": 2, "stop_loss": 1.5})),
    )
    .unwrap();
    m.save_position("MOVE", &mut obj(json!({"quantity": 3, "entry_price": 4})))
        .unwrap();
    m.save_position("GONE", &mut obj(json!({"quantity": 5, "entry_price": 6})))
        .unwrap();
    let broker = vec![
        (
            "KEEP".to_owned(),
            obj(json!({"quantity": 1, "entry_price": 2.0})),
        ),
        (
            "MOVE".to_owned(),
            obj(json!({"quantity": 7, "entry_price": 4})),
        ),
        (
            "NEW".to_owned(),
            obj(json!({"quantity": 8, "entry_price": 9})),
        ),
    ];
    let report = m.sync_positions(&broker).unwrap();
    assert_eq!(
        (
            report.inserted,
            report.updated,
            report.deleted,
            report.unchanged
        ),
        (1, 1, 1, 1)
    );
    let json = report.to_json();
    assert_eq!(json["differences"]["MOVE"]["before"]["quantity"], json!(3));
    assert_eq!(json["differences"]["MOVE"]["after"]["quantity"], json!(7));
    assert_eq!(json["differences"]["GONE"]["change"], json!("deleted"));
    let mut loaded = m.load_positions().unwrap();
    loaded.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = loaded.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["KEEP", "MOVE", "NEW"]);
    assert_eq!(
        loaded[0].1["stop_loss"],
        json!(1.5),
        "our own fields are kept"
    );
    let again = m.sync_positions(&broker).unwrap();
    assert_eq!((again.unchanged, again.differences.len()), (3, 0));
    let err = m
        .sync_positions(&[("bad\u{0}".to_owned(), obj(json!({"quantity": 1})))])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn positions_written_before_the_index_are_found_and_adopted() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    // As the predecessor library wrote them: plain keys, no index.
    redis::cmd("SET")
        .arg("bot:legacy:position:AAPL")
        .arg(r#"{"quantity": 10, "entry_price": 150.0}"#)
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("SET")
        .arg("bot:legacy:position:BTC/USD")
        .arg(r#"{"quantity": 0.5, "entry_price": 40000}"#)
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("SET")
        .arg("bot:legacyx:position:NOPE")
        .arg(r#"{"quantity": 1}"#)
        .query::<()>(&mut conn)
        .unwrap();
    let m = primary(&server, "legacy");
    let loaded = m.load_positions().unwrap();
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert!(
        wait_for(Duration::from_secs(2), || {
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg("bot:legacy:positions")
                .query(&mut conn)
                .unwrap();
            members.len() == 2
        }),
        "legacy positions were not indexed after promotion"
    );
    // A later instance finds them through the index alone.
    drop(m);
    let n = primary(&server, "legacy");
    assert_eq!(n.load_positions().unwrap().len(), 2);
}

fn command_calls(info: &str, command: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// Calls of the lease scripts (the primary renews every 100 ms with fast failover, a standby
/// looks as often), subtracted so that loads are counted alone. Each reads the lease record
/// once, the renewal and the release with `HGET`, the others with `HMGET` (which a standby's
/// plain look also sends) next to one `ZREMRANGEBYSCORE`. The stall meter's publisher (every
/// second) runs a script that reads its hash with one `HGETALL`; no other script touches a
/// hash.
fn lease_script_calls(info: &str) -> u64 {
    command_calls(info, "hget")
        + command_calls(info, "zremrangebyscore")
        + command_calls(info, "hgetall")
}

/// Calls of `command` made by anything but the lease scripts (a renewal runs one `GET`).
fn load_calls(info: &str, command: &str) -> u64 {
    let calls = command_calls(info, command);
    match command {
        "evalsha" => calls.saturating_sub(lease_script_calls(info)),
        "get" => calls.saturating_sub(command_calls(info, "hget")),
        _ => calls,
    }
}

/// Commands a load sent, as round trips: a MULTI/EXEC transaction (with one EXISTS inside
/// when there are positions), a script call, and the EXISTS (PING when there are no
/// positions) that confirms cached positions are one each.
fn load_round_trips(info: &str) -> u64 {
    let transactions = command_calls(info, "exec");
    transactions
        + load_calls(info, "evalsha")
        + command_calls(info, "eval")
        + command_calls(info, "exists").saturating_sub(transactions)
        + command_calls(info, "ping")
}

fn reset_stats(conn: &mut redis::Connection) {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(conn)
        .unwrap();
}

fn commandstats(conn: &mut redis::Connection) -> String {
    redis::cmd("INFO").arg("commandstats").query(conn).unwrap()
}

fn assert_no_scan(info: &str) {
    assert_eq!(
        command_calls(info, "scan") + command_calls(info, "keys"),
        0,
        "{info}"
    );
}

#[test]
fn loading_positions_never_scans_and_costs_one_round_trip() {
    let server = RedisServer::start();
    // A long lease: no renewal lands inside the measured window.
    let m = manager(&server, "rt", 30_000);
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    for i in 0..200 {
        m.save_position(&format!("S{i}"), &mut obj(json!({"quantity": i})))
            .unwrap();
    }
    let mut conn = server.connection();
    redis::cmd("SET")
        .arg("bot:rt:position-not-ours")
        .arg("x")
        .query::<()>(&mut conn)
        .unwrap();
    // An instance that never loaded nor wrote knows no symbol: the script, given no position
    // key, answers the index's members and reads nothing; called again with their keys, it
    // reads them. Two round trips, whatever the number of positions.
    let fresh = manager(&server, "rt", 30_000);
    reset_stats(&mut conn);
    assert_eq!(fresh.load_positions().unwrap().len(), 200);
    let info = commandstats(&mut conn);
    assert_eq!(load_round_trips(&info), 2, "{info}");
    assert_eq!(load_calls(&info, "evalsha"), 2, "{info}");
    assert_eq!(command_calls(&info, "mget"), 1, "{info}");
    assert_no_scan(&info);
    drop(fresh);
    // The primary's first load: the symbols it wrote are declared already, one script call.
    reset_stats(&mut conn);
    assert_eq!(m.load_positions().unwrap().len(), 200);
    let info = commandstats(&mut conn);
    assert_eq!(load_round_trips(&info), 1, "{info}");
    assert_eq!(load_calls(&info, "evalsha"), 1, "{info}");
    assert_no_scan(&info);
    // The next reads the symbols it found in one transaction on the tracked connection.
    reset_stats(&mut conn);
    assert_eq!(m.load_positions().unwrap().len(), 200);
    let info = commandstats(&mut conn);
    assert_eq!(load_round_trips(&info), 1, "{info}");
    assert_eq!(command_calls(&info, "exec"), 1, "{info}");
    assert_eq!(command_calls(&info, "mget"), 1, "{info}");
    for _ in 0..3 {
        reset_stats(&mut conn);
        assert_eq!(m.load_positions().unwrap().len(), 200);
        let info = commandstats(&mut conn);
        assert_no_scan(&info);
        // Nothing changed: Redis tracked the keys the last load read and sent no
        // invalidation before the reply to one EXISTS, which counts the 200 positions still
        // there. No value is transferred again.
        assert_eq!(load_round_trips(&info), 1, "{info}");
        assert_eq!(command_calls(&info, "exists"), 1, "{info}");
        assert_eq!(command_calls(&info, "mget"), 0, "{info}");
        assert_eq!(load_calls(&info, "get"), 0, "{info}");
    }
    // A position added by this instance: two round trips, the EXISTS, then the script (one
    // MGET inside), which declares the new symbol's key with the known ones.
    m.save_position("NEW", &mut obj(json!({"quantity": 1})))
        .unwrap();
    reset_stats(&mut conn);
    let loaded = m.load_positions().unwrap();
    assert_eq!(loaded.len(), 201);
    let info = commandstats(&mut conn);
    assert_eq!(load_round_trips(&info), 2, "{info}");
    assert_eq!(load_calls(&info, "evalsha"), 1, "{info}");
    assert_eq!(command_calls(&info, "mget"), 1, "{info}");
    assert_no_scan(&info);
    // Then one transaction (tracked again), then one EXISTS.
    for expected_mget in [1, 0] {
        reset_stats(&mut conn);
        assert_eq!(m.load_positions().unwrap().len(), 201);
        let info = commandstats(&mut conn);
        assert_eq!(load_round_trips(&info), 1, "{info}");
        assert_eq!(command_calls(&info, "mget"), expected_mget, "{info}");
    }
    // A position added by another writer: three round trips, the EXISTS, the script given
    // the known symbols (it answers the index's members, reading nothing), the script again.
    redis::cmd("SET")
        .arg("bot:rt:position:OTHER")
        .arg(r#"{"quantity": 2}"#)
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("SADD")
        .arg("bot:rt:positions")
        .arg("OTHER")
        .query::<()>(&mut conn)
        .unwrap();
    reset_stats(&mut conn);
    assert_eq!(m.load_positions().unwrap().len(), 202);
    let info = commandstats(&mut conn);
    assert_eq!(load_round_trips(&info), 3, "{info}");
    assert_eq!(load_calls(&info, "evalsha"), 2, "{info}");
    assert_eq!(command_calls(&info, "mget"), 1, "{info}");
    assert_no_scan(&info);
}

/// A manager whose Redis user may not turn key tracking on.
fn manager_without_tracking(server: &RedisServer, bot: &str) -> StateManager {
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("notrack")
        .arg("on")
        .arg(">secret-pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-client|tracking")
        .query::<()>(&mut server.connection())
        .unwrap();
    let url = format!("redis://notrack:secret-pw@127.0.0.1:{}/0", server.port);
    StateManager::new(
        Config::new(bot)
            .redis_url(url)
            .lock_ttl(Duration::from_secs(30))
            .install_signal_handlers(false),
    )
    .unwrap()
}

/// Where Redis refuses key tracking to the user, the last load's picture is confirmed in one
/// MULTI/EXEC (the index, the values as one MGET), and a change costs a second round trip.
#[test]
fn without_key_tracking_a_load_is_one_transaction() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let m = manager_without_tracking(&server, "notrack");
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    for i in 0..50 {
        m.save_position(&format!("S{i}"), &mut obj(json!({"quantity": i})))
            .unwrap();
    }
    assert_eq!(m.load_positions().unwrap().len(), 50);
    for _ in 0..2 {
        reset_stats(&mut conn);
        assert_eq!(m.load_positions().unwrap().len(), 50);
        let info = commandstats(&mut conn);
        assert_eq!(load_round_trips(&info), 1, "{info}");
        assert_eq!(command_calls(&info, "exec"), 1, "{info}");
        assert_eq!(command_calls(&info, "smembers"), 1, "{info}");
        assert_eq!(command_calls(&info, "mget"), 1, "{info}");
        assert_eq!(command_calls(&info, "exists"), 1, "{info}");
    }
    m.clear_position("S0").unwrap();
    reset_stats(&mut conn);
    assert_eq!(m.load_positions().unwrap().len(), 49);
    let info = commandstats(&mut conn);
    assert_eq!(load_round_trips(&info), 2, "{info}");
    assert_eq!(load_calls(&info, "evalsha"), 1, "{info}");
    // Added by another writer: the transaction saw the new member, and the script declares
    // its key at once.
    redis::cmd("SET")
        .arg("bot:notrack:position:OTHER")
        .arg(r#"{"quantity": 2}"#)
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("SADD")
        .arg("bot:notrack:positions")
        .arg("OTHER")
        .query::<()>(&mut conn)
        .unwrap();
    reset_stats(&mut conn);
    assert_eq!(m.load_positions().unwrap().len(), 50);
    let info = commandstats(&mut conn);
    assert_eq!(load_round_trips(&info), 2, "{info}");
    assert_eq!(load_calls(&info, "evalsha"), 1, "{info}");
    assert_no_scan(&info);
}

/// Each load answers what Redis holds at that instant, whatever the previous load saw: values
/// changed, keys expired behind the index, expired keys back, keys of another type.
#[test]
fn a_load_never_answers_from_what_the_previous_load_saw() {
    let server = RedisServer::start();
    loads_follow_redis(&server, |server| manager(server, "snap", 30_000));
}

#[test]
fn without_key_tracking_a_load_never_answers_from_what_the_previous_load_saw() {
    let server = RedisServer::start();
    loads_follow_redis(&server, |server| manager_without_tracking(server, "snap"));
}

fn loads_follow_redis(server: &RedisServer, new_manager: impl Fn(&RedisServer) -> StateManager) {
    let m = new_manager(server);
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    for symbol in ["A", "B", "C"] {
        m.save_position(symbol, &mut obj(json!({"quantity": 1})))
            .unwrap();
    }
    let mut conn = server.connection();
    let quantities = |m: &StateManager| -> Vec<(String, i64)> {
        // Twice: the second load answers from what Redis tracks for the first.
        let mut loads = [0, 1].map(|_| {
            let mut out: Vec<(String, i64)> = m
                .load_positions()
                .unwrap()
                .into_iter()
                .map(|(s, p)| (s, p["quantity"].as_i64().unwrap()))
                .collect();
            out.sort();
            out
        });
        assert_eq!(loads[0], loads[1]);
        std::mem::take(&mut loads[0])
    };
    let pairs = |items: &[(&str, i64)]| -> Vec<(String, i64)> {
        items.iter().map(|(s, q)| (s.to_string(), *q)).collect()
    };
    assert_eq!(quantities(&m), pairs(&[("A", 1), ("B", 1), ("C", 1)]));
    // A value changed by hand.
    redis::cmd("SET")
        .arg("bot:snap:position:A")
        .arg(r#"{"quantity": 7}"#)
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(quantities(&m), pairs(&[("A", 7), ("B", 1), ("C", 1)]));
    // A position expired: its symbol stays in the index, the position is gone from the load,
    // and the next loads confirm it gone in one round trip.
    redis::cmd("DEL")
        .arg("bot:snap:position:B")
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(quantities(&m), pairs(&[("A", 7), ("C", 1)]));
    reset_stats(&mut conn);
    assert_eq!(m.load_positions().unwrap().len(), 2);
    assert_eq!(load_round_trips(&commandstats(&mut conn)), 1);
    // The gone key back (written by an older bot, say).
    redis::cmd("SET")
        .arg("bot:snap:position:B")
        .arg(r#"{"quantity": 3}"#)
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(quantities(&m), pairs(&[("A", 7), ("B", 3), ("C", 1)]));
    // A position past its TTL, whether or not Redis reclaimed it yet.
    m.save_position("E", &mut obj(json!({"quantity": 5})))
        .unwrap();
    assert_eq!(
        quantities(&m),
        pairs(&[("A", 7), ("B", 3), ("C", 1), ("E", 5)])
    );
    redis::cmd("PEXPIRE")
        .arg("bot:snap:position:E")
        .arg(20)
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(
        quantities(&m),
        pairs(&[("A", 7), ("B", 3), ("C", 1), ("E", 5)])
    );
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(quantities(&m), pairs(&[("A", 7), ("B", 3), ("C", 1)]));
    // A present key replaced by another type, then a gone key back as another type.
    redis::cmd("DEL")
        .arg("bot:snap:position:C")
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("HSET")
        .arg("bot:snap:position:C")
        .arg("quantity")
        .arg("1")
        .query::<()>(&mut conn)
        .unwrap();
    let err = m.load_positions().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptData, "{err}");
    assert!(err.message().contains("bot:snap:position:C"), "{err}");
    redis::cmd("DEL")
        .arg("bot:snap:position:C")
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(quantities(&m), pairs(&[("A", 7), ("B", 3)]));
    redis::cmd("LPUSH")
        .arg("bot:snap:position:C")
        .arg("x")
        .query::<()>(&mut conn)
        .unwrap();
    let err = m.load_positions().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptData, "{err}");
    redis::cmd("DEL")
        .arg("bot:snap:position:C")
        .query::<()>(&mut conn)
        .unwrap();
    // The index emptied by hand.
    redis::cmd("DEL")
        .arg("bot:snap:positions")
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(quantities(&m), pairs(&[]));
    // A new manager finds the unindexed positions by its start-up scan, then the new one too.
    let standby = new_manager(server);
    assert_eq!(quantities(&standby), pairs(&[("A", 7), ("B", 3)]));
    m.save_position("D", &mut obj(json!({"quantity": 4})))
        .unwrap();
    assert_eq!(quantities(&standby), pairs(&[("A", 7), ("B", 3), ("D", 4)]));
    assert_eq!(quantities(&m), pairs(&[("D", 4)]));
}

#[test]
fn values_over_the_payload_limit_are_refused_before_sending() {
    let server = RedisServer::start();
    let m = StateManager::new(fast_config(&server, "big", 3000).max_payload_bytes(1024)).unwrap();
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    let err = m
        .save_state(&mut obj(json!({"blob": "x".repeat(2000)})))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("limit"), "{err}");
    assert_eq!(get(&server, "bot:big:state"), None);
}

/// Above the counted-check limit the TTLs are read with the positions and unchanged loads are
/// confirmed by a PING until the first TTL may have run out; a position past its TTL is never
/// returned, whether or not Redis reclaimed it (active expiry off here: never reclaimed).
#[test]
fn many_positions_past_their_ttl_are_never_returned() {
    let server = RedisServer::start_with(&["--enable-debug-command", "local"]);
    let mut conn = server.connection();
    let m = manager(&server, "ttl", 30_000);
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    let broker: Vec<(String, serde_json::Map<String, serde_json::Value>)> = (0..1500)
        .map(|i| (format!("S{i:04}"), obj(json!({"quantity": i + 1}))))
        .collect();
    m.sync_positions(&broker).unwrap();
    redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("PEXPIRE")
        .arg("bot:ttl:position:S0007")
        .arg(400)
        .query::<()>(&mut conn)
        .unwrap();
    // The script, then the tracked read with the TTLs, then a PING.
    for round in 0..2 {
        let loaded = m.load_positions().unwrap();
        let names: std::collections::BTreeSet<&str> =
            loaded.iter().map(|(s, _)| s.as_str()).collect();
        let missing: Vec<String> = broker
            .iter()
            .map(|(s, _)| s.clone())
            .filter(|s| !names.contains(s.as_str()))
            .collect();
        assert!(missing.is_empty(), "round {round}: {missing:?}");
    }
    reset_stats(&mut conn);
    assert_eq!(m.load_positions().unwrap().len(), 1500);
    let info = commandstats(&mut conn);
    assert_eq!(load_round_trips(&info), 1, "{info}");
    assert_eq!(command_calls(&info, "ping"), 1, "{info}");
    std::thread::sleep(Duration::from_millis(500));
    let loaded = m.load_positions().unwrap();
    assert_eq!(loaded.len(), 1499);
    assert!(!loaded.iter().any(|(symbol, _)| symbol == "S0007"));
}

/// Redis restarted empty under loaded positions: the next load answers the empty Redis (the
/// tracked connection broke), loads go on through the command connection meanwhile, and
/// within the retry interval the tracked connection is back (one EXISTS per unchanged load).
#[test]
fn loads_follow_a_redis_restart_and_track_again() {
    let mut server = RedisServer::start();
    let m = manager(&server, "restart", 30_000);
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    m.save_position("A", &mut obj(json!({"quantity": 1})))
        .unwrap();
    for _ in 0..2 {
        assert_eq!(m.load_positions().unwrap().len(), 1);
    }
    server.restart_empty();
    let reloaded = wait_for(Duration::from_secs(5), || {
        m.load_positions()
            .is_ok_and(|positions| positions.is_empty())
    });
    assert!(reloaded, "a load after the restart answers the empty Redis");
    let mut conn = server.connection();
    redis::cmd("SET")
        .arg("bot:restart:position:B")
        .arg(r#"{"quantity": 2}"#)
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("SADD")
        .arg("bot:restart:positions")
        .arg("B")
        .query::<()>(&mut conn)
        .unwrap();
    let tracked_again = wait_for(Duration::from_secs(5), || {
        let loaded = m.load_positions().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0, "B");
        reset_stats(&mut conn);
        let _ = m.load_positions().unwrap();
        let info = commandstats(&mut conn);
        command_calls(&info, "exists") == 1 && load_round_trips(&info) == 1
    });
    assert!(tracked_again, "unchanged loads are one EXISTS again");
}

/// An error reply on the tracked connection never confirms the cached positions (on a
/// cluster: MOVED, ASK, TRYAGAIN or CLUSTERDOWN once the bot's slot moved away from the node
/// that tracks it; here, the user may no longer run EXISTS): the load drops the connection
/// and reads Redis another way, and tracks again once the error is gone.
#[test]
fn an_error_reply_on_the_tracked_connection_is_never_a_cached_answer() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let acl = |conn: &mut redis::Connection, rule: &str| {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("checker")
            .arg("on")
            .arg(">checker-pw")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg(rule)
            .query::<()>(conn)
            .unwrap();
    };
    acl(&mut conn, "+exists");
    let m = StateManager::new(
        Config::new("errs")
            .redis_url(server.url_as("checker", "checker-pw"))
            .lock_ttl(Duration::from_secs(30))
            .install_signal_handlers(false),
    )
    .unwrap();
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    m.save_position("A", &mut obj(json!({"quantity": 1})))
        .unwrap();
    for _ in 0..2 {
        assert_eq!(m.load_positions().unwrap().len(), 1);
    }
    reset_stats(&mut conn);
    assert_eq!(m.load_positions().unwrap().len(), 1);
    assert_eq!(command_calls(&commandstats(&mut conn), "exists"), 1);
    // Nothing changed, so no invalidation comes: only the error says the check failed, and
    // the positions are read again (MGET), not taken from what the tracked connection saw.
    acl(&mut conn, "-exists");
    reset_stats(&mut conn);
    assert_eq!(m.load_positions().unwrap().len(), 1);
    let info = commandstats(&mut conn);
    let exists_refused = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_exists:"))
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|s| s.strip_prefix("rejected_calls="))
        })
        .is_some_and(|n| n != "0");
    assert!(exists_refused, "{info}");
    assert_eq!(command_calls(&info, "mget"), 1, "{info}");
    acl(&mut conn, "+exists");
    let tracked_again = wait_for(Duration::from_secs(5), || {
        assert_eq!(m.load_positions().unwrap().len(), 1);
        reset_stats(&mut conn);
        assert_eq!(m.load_positions().unwrap().len(), 1);
        let info = commandstats(&mut conn);
        command_calls(&info, "exists") == 1 && load_round_trips(&info) == 1
    });
    assert!(tracked_again, "unchanged loads are one EXISTS again");
}
