//! The URL and environment rules of docs/contract.md §6. One test in its own binary: it changes the
//! process environment, which no other thread may read meanwhile.

mod common;

use common::RedisServer;
use quantshift_core::{Config, ErrorKind, StateManager};

#[test]
fn url_argument_then_environment_then_default_and_password_from_the_environment() {
    for name in ["QUANTSHIFT_REDIS_URL", "REDIS_URL", "REDIS_PASSWORD"] {
        std::env::remove_var(name);
    }
    assert_eq!(Config::new("b").effective_url(), "redis://127.0.0.1:6379/0");
    std::env::set_var("REDIS_URL", "redis://127.0.0.1:2/0");
    assert_eq!(Config::new("b").effective_url(), "redis://127.0.0.1:2/0");
    std::env::set_var("QUANTSHIFT_REDIS_URL", "redis://127.0.0.1:1/0");
    assert_eq!(Config::new("b").effective_url(), "redis://127.0.0.1:1/0");
    assert_eq!(
        Config::new("b")
            .redis_url("unix:///tmp/r.sock")
            .effective_url(),
        "unix:///tmp/r.sock"
    );

    // A password-protected server: the password from REDIS_PASSWORD is used when the URL has none.
    let password = format!("pw-{}", std::process::id());
    let server = RedisServer::start_with(&[
        "--maxmemory-policy",
        "noeviction",
        "--requirepass",
        &password,
    ]);
    let config = || {
        Config::new("envpw")
            .redis_url(server.url())
            .install_signal_handlers(false)
    };
    let err = StateManager::new(config()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RedisUnavailable, "{err}");
    assert!(!err.message().contains(&password));
    std::env::set_var("REDIS_PASSWORD", &password);
    let manager = StateManager::new(config()).expect("password taken from REDIS_PASSWORD");
    assert!(!format!("{manager:?}").contains(&password));
    manager.close().unwrap();

    // Unix sockets, spelled unix://.
    let socket = std::env::temp_dir().join(format!("qs-{}.sock", std::process::id()));
    let unix = RedisServer::start_with(&[
        "--maxmemory-policy",
        "noeviction",
        "--unixsocket",
        socket.to_str().unwrap(),
        "--requirepass",
        &password,
    ]);
    let manager = StateManager::new(
        Config::new("unix")
            .redis_url(format!("unix://{}", socket.display()))
            .install_signal_handlers(false),
    )
    .expect("unix:// URL");
    assert!(manager.wait_until_primary(Some(std::time::Duration::from_secs(3))));
    manager.close().unwrap();
    drop(unix);

    let err = Config::new("b")
        .redis_url("http://127.0.0.1/")
        .validate()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
