//! The model against a real redis-server: the same seeded random command sequences (the
//! shipped scripts with random but relevant arguments, HMGET, FLUSHALL, DEL, pauses that let
//! short TTLs run out) on both; every reply and the whole keyspace after every step compared.
//!
//! Time: before each step the model's clock is set to the server's `TIME`. The server runs
//! the step a little later, so values derived from its clock (epochs taken from the time,
//! `renewed_at`/`taken_at`, presence scores, expiry instants) are compared with a tolerance of
//! the step's measured duration + 2 ms; everything else exactly. After each step the model's
//! keyspace is reloaded from the server (so clock-derived values do not accumulate drift),
//! and a step is never run within a few ms of a key's expiry (it waits the expiry out first).

use std::collections::BTreeMap;
use std::time::Duration;

use super::model::{Data, Entry, Keyspace, Model, Resp, Script};
use super::sim::SimKeys;

static KEYS: std::sync::LazyLock<SimKeys> = std::sync::LazyLock::new(|| SimKeys::of("c"));
fn all_keys() -> [&'static str; 6] {
    [
        KEYS.lock.as_str(),
        KEYS.epoch.as_str(),
        KEYS.record.as_str(),
        KEYS.heartbeat.as_str(),
        KEYS.instances.as_str(),
        KEYS.fenced.as_str(),
    ]
}

fn to_resp(result: redis::RedisResult<redis::Value>) -> Resp {
    match result {
        Ok(value) => value_resp(value),
        Err(err) => Resp::Error {
            msg: match (err.code(), err.detail()) {
                (Some(code), Some(detail)) => format!("{code} {detail}"),
                (Some(code), None) => code.to_owned(),
                _ => err.to_string(),
            },
            raised: false,
        },
    }
}

fn value_resp(value: redis::Value) -> Resp {
    match value {
        redis::Value::Nil => Resp::Nil,
        redis::Value::Int(i) => Resp::Int(i),
        redis::Value::BulkString(b) => Resp::Bulk(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::Okay => Resp::Status("OK".into()),
        redis::Value::SimpleString(s) => Resp::Status(s),
        redis::Value::Array(items) => Resp::Array(items.into_iter().map(value_resp).collect()),
        redis::Value::ServerError(err) => Resp::Error {
            msg: format!("{} {}", err.code(), err.details().unwrap_or_default()),
            raised: false,
        },
        other => panic!("unexpected reply {other:?}"),
    }
}

/// One step of a sequence.
#[derive(Debug, Clone)]
enum Step {
    Eval {
        script: Script,
        keys: Vec<&'static str>,
        argv: Vec<String>,
        by_sha: bool,
    },
    Hmget,
    FlushAll,
    Del(&'static str),
    Pause(u64),
}

fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

fn random_step(rng: &mut fastrand::Rng, model: &Model) -> Step {
    let (token, seq) = {
        let space = model.space.borrow();
        match space.keys.get(KEYS.record.as_str()).map(|e| &e.data) {
            Some(Data::Hash(h)) => (
                h.get("token").cloned().unwrap_or_default(),
                h.get("seq").cloned().unwrap_or_default(),
            ),
            _ => (String::new(), "0".into()),
        }
    };
    let lock = match model
        .space
        .borrow()
        .keys
        .get(KEYS.lock.as_str())
        .map(|e| &e.data)
    {
        Some(Data::Str(s)) => s.clone(),
        _ => String::new(),
    };
    let tokens = ["", "a:1", "b:2", "c:3", "a:4"];
    let some_token = |rng: &mut fastrand::Rng| -> String {
        match rng.u8(..10) {
            0..=3 => token.clone(),
            4..=5 => lock.clone(),
            _ => (*pick(rng, &tokens)).to_owned(),
        }
    };
    let now_ms = model.space.borrow().now_ms();
    let ttls = ["20", "25", "300", "60000"];
    let ids = ["i0", "i1", "i2"];
    let eval =
        |script, keys: &[&'static str], argv: Vec<String>, rng: &mut fastrand::Rng| Step::Eval {
            script,
            keys: keys.to_vec(),
            argv,
            by_sha: rng.bool(),
        };
    match rng.u8(..100) {
        0..=24 => {
            let expect_present = rng.u8(..4) != 0;
            let expected = some_token(rng);
            let expected_seq = match rng.u8(..4) {
                0 => rng.u64(..4).to_string(),
                _ => seq.clone(),
            };
            let floor = match rng.u8(..5) {
                0 => (now_ms + 1_000_000).to_string(),
                1 => "7".into(),
                2 => "abc".into(),
                _ => "0".into(),
            };
            let argv = vec![
                if expect_present { "1" } else { "0" }.to_owned(),
                expected,
                expected_seq,
                (*pick(rng, &tokens[1..])).to_owned() + &rng.u8(..9).to_string(),
                (*pick(rng, &ttls)).to_owned(),
                (*pick(rng, &["300", "1000"])).to_owned(),
                floor,
                "2024-01-01T00:00:00Z".into(),
                (*pick(rng, &ttls)).to_owned(),
                (*pick(rng, &ids)).to_owned(),
                (*pick(rng, &ttls)).to_owned(),
            ];
            eval(
                Script::Take,
                &[
                    KEYS.lock.as_str(),
                    KEYS.epoch.as_str(),
                    KEYS.record.as_str(),
                    KEYS.heartbeat.as_str(),
                    KEYS.instances.as_str(),
                ],
                argv,
                rng,
            )
        }
        25..=44 => {
            let argv = vec![
                some_token(rng),
                (*pick(rng, &["0", "1", "2"])).to_owned(),
                (*pick(rng, &ttls)).to_owned(),
                "2024-01-01T00:00:01Z".into(),
                (*pick(rng, &ttls)).to_owned(),
                (*pick(rng, &ids)).to_owned(),
                (*pick(rng, &ttls)).to_owned(),
            ];
            eval(
                Script::Renew,
                &[
                    KEYS.lock.as_str(),
                    KEYS.record.as_str(),
                    KEYS.heartbeat.as_str(),
                    KEYS.instances.as_str(),
                ],
                argv,
                rng,
            )
        }
        45..=54 => {
            let argv = vec![
                some_token(rng),
                (*pick(rng, &["", KEYS.channel.as_str()])).to_owned(),
                "released i0".into(),
                (*pick(rng, &["0", "1", ""])).to_owned(),
            ];
            eval(
                Script::Release,
                &[KEYS.lock.as_str(), KEYS.record.as_str()],
                argv,
                rng,
            )
        }
        55..=64 => {
            let argv = vec![
                (*pick(rng, &ttls)).to_owned(),
                (*pick(rng, &ids)).to_owned(),
            ];
            eval(
                Script::Observe,
                &[KEYS.record.as_str(), KEYS.instances.as_str()],
                argv,
                rng,
            )
        }
        65..=79 => {
            let argv = vec![
                some_token(rng),
                format!("v{}", rng.u32(..)),
                (*pick(rng, &ttls)).to_owned(),
            ];
            eval(
                Script::FencedSet,
                &[KEYS.lock.as_str(), KEYS.fenced.as_str()],
                argv,
                rng,
            )
        }
        80..=87 => Step::Hmget,
        88..=89 => Step::FlushAll,
        90..=95 => Step::Del(all_keys()[rng.usize(..all_keys().len())]),
        _ => Step::Pause(rng.u64(5..40)),
    }
}

fn server_time_us(conn: &mut redis::Connection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(conn).expect("TIME");
    secs * 1_000_000 + micros
}

/// The server's keyspace (the test's keys), read at server time `at_us`: one transaction,
/// so a key cannot expire between its type and its value being read (every read of every
/// type is sent; the ones of the wrong type fail and are skipped).
fn dump(conn: &mut redis::Connection) -> (i64, BTreeMap<String, Entry>) {
    const PER_KEY: usize = 5;
    let mut pipe = redis::pipe();
    pipe.atomic().ignore_errors().cmd("TIME");
    for key in all_keys() {
        pipe.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
        pipe.cmd("GET").arg(key).cmd("HGETALL").arg(key);
        pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES");
    }
    let values: Vec<redis::Value> = pipe.query(conn).expect("dump");
    let time: (i64, i64) = redis::from_redis_value_ref(&values[0]).unwrap();
    let at_us = time.0 * 1_000_000 + time.1;
    let mut out = BTreeMap::new();
    for (i, key) in all_keys().iter().enumerate() {
        let at = 1 + PER_KEY * i;
        let kind: String = redis::from_redis_value_ref(&values[at]).unwrap();
        let pttl: i64 = redis::from_redis_value_ref(&values[at + 1]).unwrap();
        let data = match kind.as_str() {
            "none" => continue,
            "string" => Data::Str(redis::from_redis_value_ref(&values[at + 2]).unwrap()),
            "hash" => Data::Hash(redis::from_redis_value_ref(&values[at + 3]).unwrap()),
            "zset" => {
                let pairs: Vec<(String, f64)> =
                    redis::from_redis_value_ref(&values[at + 4]).unwrap();
                Data::ZSet(pairs.into_iter().collect())
            }
            other => panic!("unexpected type {other} of {key}"),
        };
        let expire_at = (pttl >= 0).then(|| at_us / 1000 + pttl);
        out.insert((*key).to_owned(), Entry { data, expire_at });
    }
    (at_us, out)
}

fn close(a: &str, b: &str, tolerance: i64, from_ms: i64) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x >= from_ms - 1 && y >= from_ms - 1 && (x - y).abs() <= tolerance,
        _ => false,
    }
}

fn same_reply(model: &Resp, server: &Resp, tolerance: i64, from_ms: i64) -> bool {
    match (model, server) {
        (Resp::Error { msg: a, raised }, Resp::Error { msg: b, .. }) => {
            if *raised {
                a.split(' ').next() == b.split(' ').next()
            } else {
                a == b
            }
        }
        (Resp::Int(a), Resp::Int(b)) => close(&a.to_string(), &b.to_string(), tolerance, from_ms),
        (Resp::Array(a), Resp::Array(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| same_reply(x, y, tolerance, from_ms))
        }
        _ => model == server,
    }
}

fn same_entry(model: &Entry, server: &Entry, tolerance: i64, from_ms: i64) -> bool {
    let expiry = match (model.expire_at, server.expire_at) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= tolerance + 2,
        _ => false,
    };
    let data = match (&model.data, &server.data) {
        (Data::Str(a), Data::Str(b)) => close(a, b, tolerance, from_ms),
        (Data::Hash(a), Data::Hash(b)) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|((fa, va), (fb, vb))| {
                    fa == fb
                        && if matches!(fa.as_str(), "renewed_at" | "taken_at" | "epoch") {
                            close(va, vb, tolerance, from_ms)
                        } else {
                            va == vb
                        }
                })
        }
        (Data::ZSet(a), Data::ZSet(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ma, sa), (mb, sb))| ma == mb && (sa - sb).abs() <= tolerance as f64)
        }
        _ => false,
    };
    expiry && data
}

fn run_on_server(conn: &mut redis::Connection, step: &Step) -> Resp {
    match step {
        Step::Eval {
            script,
            keys,
            argv,
            by_sha,
        } => {
            let source = script.source();
            let mut cmd = if *by_sha {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(redis::Script::new(source).get_hash());
                cmd
            } else {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(source);
                cmd
            };
            cmd.arg(keys.len()).arg(keys).arg(argv);
            to_resp(cmd.query(conn))
        }
        Step::Hmget => to_resp(
            redis::cmd("HMGET")
                .arg(KEYS.record.as_str())
                .arg(&quantshift_core::lease::protocol::RECORD_FIELDS[..])
                .query(conn),
        ),
        Step::FlushAll => to_resp(redis::cmd("FLUSHALL").query(conn)),
        Step::Del(key) => to_resp(redis::cmd("DEL").arg(*key).query(conn)),
        Step::Pause(_) => Resp::Nil,
    }
}

fn run_on_model(model: &mut Model, step: &Step) -> Resp {
    match step {
        Step::Eval {
            script, keys, argv, ..
        } => {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            model.eval(*script, keys, &argv)
        }
        Step::Hmget => {
            let mut args = vec!["HMGET", KEYS.record.as_str()];
            args.extend(quantshift_core::lease::protocol::RECORD_FIELDS);
            model.command(&args)
        }
        Step::FlushAll => model.command(&["FLUSHALL"]),
        Step::Del(key) => model.command(&["DEL", key]),
        Step::Pause(_) => Resp::Nil,
    }
}

/// Runs `sequences` seeded sequences of `steps` steps; returns (steps compared, steps skipped
/// because the machine was too slow for the tolerance).
pub fn compare(conn: &mut redis::Connection, sequences: u64, steps: usize) -> (usize, usize) {
    let mut model = Model::new();
    for source in super::model::Script::ALL {
        let _: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(source.source())
            .query(conn)
            .expect("SCRIPT LOAD");
    }
    let (mut compared, mut skipped) = (0, 0);
    for seed in 0..sequences {
        let mut rng = fastrand::Rng::with_seed(0x5EED_0000 + seed);
        let _: () = redis::cmd("FLUSHALL").query(conn).unwrap();
        model.reset();
        let mut history: Vec<Step> = Vec::new();
        for _ in 0..steps {
            // Never run a step close to a key's expiry: wait it out.
            let mut t0 = server_time_us(conn);
            loop {
                let soon = model
                    .space
                    .borrow()
                    .keys
                    .values()
                    .filter_map(|e| e.expire_at)
                    .find(|at| {
                        let now = t0 / 1000;
                        *at >= now - 5 && *at <= now + 20
                    });
                let Some(at) = soon else { break };
                std::thread::sleep(Duration::from_millis((at - t0 / 1000 + 6).max(1) as u64));
                t0 = server_time_us(conn);
            }
            model.set_time_us(t0);
            let step = random_step(&mut rng, &model);
            if let Step::Pause(ms) = step {
                std::thread::sleep(Duration::from_millis(ms));
                history.push(step);
                continue;
            }
            let expected = run_on_model(&mut model, &step);
            let actual = run_on_server(conn, &step);
            let (t2, server_keys) = dump(conn);
            let tolerance = (t2 / 1000 - t0 / 1000) + 2;
            history.push(step.clone());
            if tolerance > 12 {
                skipped += 1;
            } else {
                compared += 1;
                let from_ms = t0 / 1000;
                assert!(
                    same_reply(&expected, &actual, tolerance, from_ms),
                    "sequence {seed}: the model replied {expected:?}, redis-server {actual:?} to \
                     {step:?}\nsteps so far: {history:#?}"
                );
                let mut model_keys: BTreeMap<String, Entry> = BTreeMap::new();
                {
                    let mut space = model.space.borrow_mut();
                    for key in space.live_keys() {
                        model_keys.insert(key.clone(), space.keys[&key].clone());
                    }
                }
                let same = model_keys.len() == server_keys.len()
                    && model_keys
                        .iter()
                        .zip(&server_keys)
                        .all(|((ka, a), (kb, b))| ka == kb && same_entry(a, b, tolerance, from_ms));
                assert!(
                    same,
                    "sequence {seed}: after {step:?} the model holds {model_keys:#?}\n\
                     redis-server holds {server_keys:#?}\nsteps so far: {history:#?}"
                );
            }
            // Reload: clock-derived values follow the server's exactly from here.
            let mut space = Keyspace {
                now_us: t2,
                ..Keyspace::default()
            };
            space.keys = server_keys.into_iter().collect();
            *model.space.borrow_mut() = space;
        }
    }
    (compared, skipped)
}
