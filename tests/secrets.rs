//! The Redis password never appears in an error message, in `Debug` of `Config`,
//! `StateManager` or `Inspector`, or in any log record (captured here at trace level, from
//! this library and from its dependencies): with a wrong password, an unreachable server, a
//! password given through `REDIS_PASSWORD`, and malformed URLs carrying one. The password
//! is generated per run and the server started with `--requirepass`. (TLS failures and
//! Sentinel authentication are covered the same way by the TLS and Sentinel tests; the
//! Python `repr()` by the Python tests.)

mod common;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::*;
use quantshift_core::{Config, Inspector, StateManager};

/// Every log record of the process, formatted with its target.
static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        RECORDS.lock().unwrap().push(format!(
            "{} {} {}",
            record.level(),
            record.target(),
            record.args()
        ));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        log::set_boxed_logger(Box::new(Capture)).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Tests here change `REDIS_PASSWORD`; they run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh password with characters that need percent-encoding in a URL.
fn generate_password() -> String {
    let mut rng = fastrand::Rng::new();
    let core: String = (0..24).map(|_| rng.alphanumeric()).collect();
    format!("Pw{core}@:/%+")
}

fn encode(password: &str) -> String {
    password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The forms a secret could leak in: as given, percent-encoded, and a long fragment of it.
fn forms(secret: &str) -> Vec<String> {
    let fragment: String = secret.chars().skip(2).take(10).collect();
    vec![secret.to_owned(), encode(secret), fragment]
}

#[track_caller]
fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        for form in forms(secret) {
            assert!(
                !text.contains(&form),
                "{what} reveals a password ({form:?}): {text}"
            );
        }
    }
}

/// Checks every log record captured so far, then forgets them.
#[track_caller]
fn assert_logs_clean(secrets: &[&str]) -> usize {
    let records = std::mem::take(&mut *RECORDS.lock().unwrap());
    for record in &records {
        assert_clean("a log record", record, secrets);
    }
    records.len()
}

fn config(url: String) -> Config {
    Config::new("secret-bot")
        .redis_url(url)
        .lock_ttl(Duration::from_millis(1500))
        .connect_timeout(Duration::from_millis(500))
        .command_timeout(Duration::from_millis(500))
        .install_signal_handlers(false)
}

fn protected_server(password: &str) -> RedisServer {
    RedisServer::start_with(&[
        "--maxmemory-policy",
        "noeviction",
        "--requirepass",
        password,
    ])
}

#[test]
fn a_wrong_password_is_refused_without_revealing_either_password() {
    let _serial = serial();
    capture_logs();
    let password = generate_password();
    let wrong = generate_password();
    let server = protected_server(&password);
    let _ = assert_logs_clean(&[&password, &wrong]);
    for url in [
        format!("redis://:{}@127.0.0.1:{}/0", encode(&wrong), server.port),
        format!(
            "redis://default:{}@127.0.0.1:{}/0",
            encode(&wrong),
            server.port
        ),
    ] {
        let config = config(url);
        assert_clean("Debug of Config", &format!("{config:?}"), &[&wrong]);
        let err = StateManager::new(config).unwrap_err();
        assert_eq!(
            err.kind(),
            quantshift_core::ErrorKind::RedisUnavailable,
            "{err}"
        );
        assert_clean("the error", &err.to_string(), &[&password, &wrong]);
        assert_clean(
            "Debug of the error",
            &format!("{err:?}"),
            &[&password, &wrong],
        );
        let err = Inspector::connect(
            Some(&format!(
                "redis://:{}@127.0.0.1:{}/0",
                encode(&wrong),
                server.port
            )),
            Duration::from_millis(500),
        )
        .and_then(|inspector| inspector.server().map(|_| ()))
        .unwrap_err();
        assert_clean(
            "the operator tool's error",
            &format!("{err} {err:?}"),
            &[&password, &wrong],
        );
    }
    // No password at all: refused as well, and the server's password is not echoed.
    let err = StateManager::new(config(server.url())).unwrap_err();
    assert_clean("the error", &format!("{err} {err:?}"), &[&password]);
    // With the right one it works, and nothing it prints or logs shows the password.
    let url = format!("redis://:{}@127.0.0.1:{}/0", encode(&password), server.port);
    let m = StateManager::new(config(url.clone())).unwrap();
    assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
    m.save_state(&mut obj(serde_json::json!({"ok": true})))
        .unwrap();
    assert_clean("Debug of StateManager", &format!("{m:?}"), &[&password]);
    assert_clean(
        "Debug of its Config",
        &format!("{:?}", m.config()),
        &[&password],
    );
    let inspector = Inspector::connect(Some(&url), Duration::from_millis(500)).unwrap();
    assert_clean(
        "Debug of Inspector",
        &format!("{:?}", inspector.redacted_url()),
        &[&password],
    );
    assert!(inspector.status("secret-bot").unwrap().holder.is_some());
    // Redis goes away while the manager runs: the reconnect errors are clean too.
    drop(server);
    let err = m.load_state().unwrap_err();
    assert_clean("the error", &format!("{err} {err:?}"), &[&password]);
    std::thread::sleep(Duration::from_millis(1200));
    drop(m);
    let records = assert_logs_clean(&[&password, &wrong]);
    assert!(
        records > 0,
        "no log record captured: the check would prove nothing"
    );
}

#[test]
fn an_unreachable_server_error_does_not_reveal_the_password() {
    let _serial = serial();
    capture_logs();
    let password = generate_password();
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for url in [
        format!("redis://:{}@127.0.0.1:{port}/0", encode(&password)),
        format!("redis://user:{}@127.0.0.1:{port}/0", encode(&password)),
        // A name that does not resolve.
        format!(
            "redis://:{}@no-such-host.invalid:{port}/0",
            encode(&password)
        ),
    ] {
        let config = config(url);
        assert_clean("Debug of Config", &format!("{config:?}"), &[&password]);
        let err = StateManager::new(config).unwrap_err();
        assert_eq!(
            err.kind(),
            quantshift_core::ErrorKind::RedisUnavailable,
            "{err}"
        );
        assert_clean("the error", &format!("{err} {err:?}"), &[&password]);
    }
    assert_logs_clean(&[&password]);
}

#[test]
fn a_password_from_redis_password_is_used_and_never_shown() {
    let _serial = serial();
    capture_logs();
    let password = generate_password();
    let server = protected_server(&password);
    // SAFETY (edition 2021 API): tests touching the environment hold the serial lock.
    std::env::set_var("REDIS_PASSWORD", &password);
    let outcome = std::panic::catch_unwind(|| {
        let config = config(server.url());
        assert_clean("Debug of Config", &format!("{config:?}"), &[&password]);
        let m = StateManager::new(config).expect("the password from REDIS_PASSWORD is used");
        assert!(m.wait_until_primary(Some(Duration::from_secs(3))));
        m.save_state(&mut obj(serde_json::json!({"env": true})))
            .unwrap();
        assert_clean("Debug of StateManager", &format!("{m:?}"), &[&password]);
        m.close().unwrap();
        // A wrong one from the environment: refused, not shown.
        let wrong = generate_password();
        std::env::set_var("REDIS_PASSWORD", &wrong);
        let err = StateManager::new(self::config(server.url())).unwrap_err();
        assert_clean("the error", &format!("{err} {err:?}"), &[&password, &wrong]);
        assert_logs_clean(&[&password, &wrong]);
    });
    std::env::remove_var("REDIS_PASSWORD");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn malformed_urls_carrying_a_password_are_refused_without_showing_it() {
    let _serial = serial();
    capture_logs();
    let password = generate_password();
    let raw: String = password.chars().take(26).collect(); // alphanumeric part only
    for url in [
        format!("redis://:{raw}@127.0.0.1:notaport/0"),
        format!("redis://:{raw}@127.0.0.1:1/notadb"),
        format!("redis://:{raw}@[::1/0"),
        format!("http://:{raw}@127.0.0.1:1/0"),
        format!("redis://:{raw}@127.0.0.1:1/0?password={raw}"),
        // Unencoded characters that end the authority early in a naive parser.
        format!("redis://:{raw}/x@127.0.0.1:1/0"),
        format!("redis://:{raw}?x@127.0.0.1:1/0"),
        format!("redis://:{raw}#x@127.0.0.1:1/0"),
    ] {
        let config = config(url.clone());
        assert_clean(
            &format!("Debug of Config for {url}"),
            &format!("{config:?}"),
            &[&raw],
        );
        match StateManager::new(config) {
            Ok(m) => panic!("{url} accepted: {m:?}"),
            Err(err) => assert_clean(
                &format!("the error for {url}"),
                &format!("{err} {err:?}"),
                &[&raw],
            ),
        }
        assert_clean("redact_url", &quantshift_core::redact_url(&url), &[&raw]);
    }
    assert_logs_clean(&[&raw]);
}

/// A server that refuses `CLIENT TRACKING` to the bot's user: loads fall back to untracked
/// reads, said once as a warning (not on every load), and still return the positions.
#[test]
fn refused_key_tracking_is_said_once_as_a_warning() {
    let _serial = serial();
    capture_logs();
    let server = RedisServer::start();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("notrack")
        .arg("on")
        .arg(">notrack-pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-client|tracking")
        .query::<()>(&mut server.connection())
        .unwrap();
    let manager = StateManager::new(
        Config::new("notrack-bot")
            .redis_url(format!(
                "redis://notrack:notrack-pw@127.0.0.1:{}/0",
                server.port
            ))
            .install_signal_handlers(false),
    )
    .unwrap();
    assert!(manager.wait_until_primary(Some(Duration::from_secs(5))));
    manager
        .save_position("AAPL", &mut obj(serde_json::json!({"quantity": 1})))
        .unwrap();
    for _ in 0..4 {
        assert_eq!(manager.load_positions().unwrap().len(), 1);
    }
    let said: Vec<String> = RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains("refuses RESP3 or CLIENT TRACKING"))
        .cloned()
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with("WARN "), "{said:?}");
    manager.close().unwrap();
}
