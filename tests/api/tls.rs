//! `rediss://` against redis-server processes with TLS enabled, on 127.0.0.1 (issue 6, TLS).
//! The test makes its own CAs and certificates with `openssl`: the CA given by
//! `tls_ca_file` is trusted, a certificate from another CA or for another host name is
//! refused with a clear `RedisUnavailable` error, and the server's demand for a client
//! certificate is met by `tls_client_cert`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::{obj, RedisServer};
use quantshift_core::{Config, ErrorKind, StateManager};
use serde_json::json;

const PASSWORD: &str = "tls-Secret-5";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free loopback port")
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (bash scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Certificates made once per test binary: two CAs; a server certificate for 127.0.0.1 and
/// one for another host name, both from the first CA; a client certificate from it; a cluster
/// node's certificate (server and client) for 127.0.0.1.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn get() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("qs-tls-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ec = [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ];
            for ca in ["ca", "other-ca"] {
                let mut args = vec!["req", "-x509", "-days", "2", "-subj"];
                let subject = format!("/CN=quantshift test {ca}");
                args.push(&subject);
                args.extend(ec);
                let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
                args.extend([
                    "-keyout",
                    &key,
                    "-out",
                    &crt,
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ]);
                openssl(&dir, &args);
            }
            for (name, san, usage) in [
                ("server", "IP:127.0.0.1", "serverAuth"),
                ("elsewhere", "DNS:elsewhere.example", "serverAuth"),
                ("client", "DNS:quantshift-client", "clientAuth"),
                // Cluster nodes are TLS clients of each other on the bus.
                ("node", "IP:127.0.0.1", "serverAuth,clientAuth"),
            ] {
                let (key, csr, crt, ext) = (
                    format!("{name}.key"),
                    format!("{name}.csr"),
                    format!("{name}.crt"),
                    format!("{name}.ext"),
                );
                let mut args = vec!["req", "-new", "-subj", "/CN=quantshift test"];
                args.extend(ec);
                args.extend(["-keyout", &key, "-out", &csr]);
                openssl(&dir, &args);
                std::fs::write(
                    dir.join(&ext),
                    format!(
                        "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                         keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
                    ),
                )
                .unwrap();
                openssl(
                    &dir,
                    &[
                        "x509",
                        "-req",
                        "-in",
                        &csr,
                        "-CA",
                        "ca.crt",
                        "-CAkey",
                        "ca.key",
                        "-CAcreateserial",
                        "-days",
                        "2",
                        "-out",
                        &crt,
                        "-extfile",
                        &ext,
                    ],
                );
            }
            PKI_DIR.get_or_init(|| dir.clone());
            // SAFETY: registers a plain function run once at process exit.
            unsafe { libc::atexit(remove_pki_dir) };
            Pki { dir }
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

static PKI_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The certificates live for the whole test binary; removed when it exits.
extern "C" fn remove_pki_dir() {
    if let Some(dir) = PKI_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A redis-server with a plain port (for the test's own checks) and a TLS port presenting
/// `cert`, demanding a client certificate from the first CA.
struct TlsServer {
    server: RedisServer,
    tls_port: u16,
}

impl TlsServer {
    fn start(cert: &str) -> TlsServer {
        let pki = Pki::get();
        let tls_port = free_port();
        let (port, crt, key, ca) = (
            tls_port.to_string(),
            pki.path(&format!("{cert}.crt")),
            pki.path(&format!("{cert}.key")),
            pki.path("ca.crt"),
        );
        let server = RedisServer::start_with(&[
            "--maxmemory-policy",
            "noeviction",
            "--tls-port",
            &port,
            "--tls-cert-file",
            crt.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            "yes",
            "--requirepass",
            PASSWORD,
        ]);
        TlsServer { server, tls_port }
    }

    fn url(&self) -> String {
        format!("rediss://:{PASSWORD}@127.0.0.1:{}/0", self.tls_port)
    }

    fn plain_get(&self, key: &str) -> Option<String> {
        let client = redis::Client::open(format!(
            "redis://:{PASSWORD}@127.0.0.1:{}/0",
            self.server.port
        ))
        .unwrap();
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap();
        redis::cmd("GET").arg(key).query(&mut conn).unwrap()
    }
}

fn config(url: &str, bot: &str) -> Config {
    Config::new(bot)
        .redis_url(url)
        .lock_ttl(Duration::from_millis(1500))
        .connect_timeout(Duration::from_secs(2))
        .command_timeout(Duration::from_secs(2))
        .install_signal_handlers(false)
}

fn with_client_cert(config: Config) -> Config {
    let pki = Pki::get();
    config.tls_client_cert(pki.path("client.crt"), pki.path("client.key"))
}

fn refused(config: Config) -> quantshift_core::Error {
    let err = StateManager::new(config).expect_err("the connection must be refused");
    assert_eq!(err.kind(), ErrorKind::RedisUnavailable, "{err}");
    assert!(!err.message().contains(PASSWORD), "{err}");
    err
}

#[test]
fn rediss_with_the_configured_ca_works() {
    let server = TlsServer::start("server");
    let pki = Pki::get();
    let manager = StateManager::new(with_client_cert(
        config(&server.url(), "tls-bot").tls_ca_file(pki.path("ca.crt")),
    ))
    .unwrap();
    assert!(manager.wait_until_primary(Some(Duration::from_secs(5))));
    manager
        .save_state(&mut obj(json!({"over": "tls"})))
        .unwrap();
    assert_eq!(manager.load_state().unwrap().unwrap()["over"], json!("tls"));
    // Written to this server, read back over its plain port.
    assert!(server
        .plain_get("bot:tls-bot:state")
        .unwrap()
        .contains("\"over\":\"tls\""));
    assert!(!format!("{manager:?}").contains(PASSWORD));
    manager.close().unwrap();
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let server = TlsServer::start("server");
    let pki = Pki::get();
    let err = refused(with_client_cert(
        config(&server.url(), "tls-wrong-ca").tls_ca_file(pki.path("other-ca.crt")),
    ));
    assert!(err.message().contains("TLS handshake failed"), "{err}");
    assert!(err.message().contains("UnknownIssuer"), "{err}");
    println!("wrong CA: {err}");
}

#[test]
fn a_certificate_for_another_host_is_refused() {
    let server = TlsServer::start("elsewhere");
    let pki = Pki::get();
    let err = refused(with_client_cert(
        config(&server.url(), "tls-wrong-host").tls_ca_file(pki.path("ca.crt")),
    ));
    assert!(err.message().contains("TLS handshake failed"), "{err}");
    assert!(err.message().contains("not valid for name"), "{err}");
}

#[test]
fn a_server_demanding_a_client_certificate_refuses_a_client_without_one() {
    let server = TlsServer::start("server");
    let pki = Pki::get();
    let err = refused(config(&server.url(), "tls-no-client-cert").tls_ca_file(pki.path("ca.crt")));
    assert!(err.message().contains("client certificates"), "{err}");
}

#[test]
fn unusable_tls_files_are_invalid_input() {
    let missing = StateManager::new(
        config("rediss://127.0.0.1:1/0", "tls-files").tls_ca_file("/nonexistent/ca.pem"),
    )
    .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::InvalidInput, "{missing}");
    assert!(missing.message().contains("tls_ca_file"), "{missing}");
    let not_pem = Pki::get().path("server.ext");
    let err = StateManager::new(config("rediss://127.0.0.1:1/0", "tls-files").tls_ca_file(not_pem))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("not a PEM file"), "{err}");
}

/// A Sentinel with a plain port (for the readiness check) and a TLS port, monitoring the
/// master over TLS; killed on drop.
struct TlsSentinel {
    tls_port: u16,
    child: std::process::Child,
    dir: PathBuf,
}

impl TlsSentinel {
    fn start(master_tls_port: u16) -> TlsSentinel {
        let pki = Pki::get();
        for _ in 0..5 {
            let (port, tls_port) = (free_port(), free_port());
            let dir =
                std::env::temp_dir().join(format!("qs-tls-sentinel-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\ntls-port {tls_port}\n\
                     tls-cert-file {crt}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
                     tls-replication yes\ntls-auth-clients no\n\
                     sentinel monitor tlssvc 127.0.0.1 {master_tls_port} 1\n\
                     sentinel auth-pass tlssvc {PASSWORD}\n",
                    dir = dir.display(),
                    crt = pki.path("server.crt").display(),
                    key = pki.path("server.key").display(),
                    ca = pki.path("ca.crt").display(),
                ),
            )
            .unwrap();
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            // Ready once it sees the master (over TLS).
            let ready = crate::common::wait_for(Duration::from_secs(10), || {
                let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
                    return false;
                };
                let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(300))
                else {
                    return false;
                };
                let info: std::collections::HashMap<String, String> = redis::cmd("SENTINEL")
                    .arg("master")
                    .arg("tlssvc")
                    .query(&mut conn)
                    .unwrap_or_default();
                info.get("flags").is_some_and(|f| f == "master")
                    && info.get("role-reported").is_some_and(|r| r == "master")
            });
            if ready {
                return TlsSentinel {
                    tls_port,
                    child,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("could not start a TLS Sentinel");
    }
}

impl Drop for TlsSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `rediss+sentinel://`: TLS to the Sentinel and to the master it names, with the same CA
/// and client certificate; a wrong CA is refused on the Sentinel already.
#[test]
fn rediss_sentinel_finds_the_master_over_tls() {
    let server = TlsServer::start("server");
    let sentinel = TlsSentinel::start(server.tls_port);
    let pki = Pki::get();
    let url = format!(
        "rediss+sentinel://:{PASSWORD}@127.0.0.1:{}/tlssvc/0",
        sentinel.tls_port
    );
    let manager = StateManager::new(with_client_cert(
        config(&url, "tls-sentinel").tls_ca_file(pki.path("ca.crt")),
    ))
    .unwrap();
    assert!(manager.wait_until_primary(Some(Duration::from_secs(5))));
    manager
        .save_position("ES:FUT", &mut obj(json!({"quantity": 3})))
        .unwrap();
    assert!(server
        .plain_get("bot:tls-sentinel:position:ES:FUT")
        .unwrap()
        .contains("\"quantity\":3"));
    manager.close().unwrap();
    let err = refused(with_client_cert(
        config(&url, "tls-sentinel").tls_ca_file(pki.path("other-ca.crt")),
    ));
    assert!(err.message().contains("TLS handshake failed"), "{err}");
    assert!(err.message().contains("UnknownIssuer"), "{err}");
}

/// A TLS-only Redis Cluster of three primaries, as a managed service presents one: no plain
/// port, the cluster bus over TLS too, a password, and `CONFIG` and `INFO` renamed away. It is
/// formed with `CLUSTER ADDSLOTSRANGE` and `CLUSTER MEET` (redis-cli's `--cluster create`
/// needs `INFO`). Killed on drop.
struct TlsCluster {
    ports: Vec<u16>,
    children: Vec<std::process::Child>,
    dir: PathBuf,
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let pki = Pki::get();
        let dir = std::env::temp_dir().join(format!("qs-tls-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = TlsCluster {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            // The cluster bus listens on the client port + 10000.
            let port = (0..50)
                .map(|_| free_port())
                .find(|p| *p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok())
                .expect("a free port pair");
            let child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--dir", cluster.dir.to_str().unwrap()])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .args(["--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(pki.path("node.crt"))
                .arg("--tls-key-file")
                .arg(pki.path("node.key"))
                .arg("--tls-ca-cert-file")
                .arg(pki.path("ca.crt"))
                .args(["--requirepass", PASSWORD, "--masterauth", PASSWORD])
                .args(["--maxmemory-policy", "noeviction"])
                .args(["--rename-command", "CONFIG", ""])
                .args(["--rename-command", "INFO", ""])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        for port in cluster.ports.clone() {
            assert!(
                crate::common::wait_for(Duration::from_secs(10), || cluster
                    .try_admin(port)
                    .is_some()),
                "TLS cluster node {port} did not start"
            );
        }
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (port, (start, end)) in cluster.ports.clone().into_iter().zip(ranges) {
            redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(start)
                .arg(end)
                .query::<()>(&mut cluster.admin(port))
                .unwrap();
        }
        let mut first = cluster.admin(cluster.ports[0]);
        for port in &cluster.ports[1..] {
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(*port)
                .query::<()>(&mut first)
                .unwrap();
        }
        let formed = crate::common::wait_for(Duration::from_secs(20), || {
            cluster.ports.iter().all(|port| {
                cluster.try_admin(*port).is_some_and(|mut conn| {
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query::<String>(&mut conn)
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                })
            })
        });
        assert!(formed, "the TLS cluster did not reach cluster_state:ok");
        cluster
    }

    fn try_admin(&self, port: u16) -> Option<redis::Connection> {
        let info = format!("rediss://:{PASSWORD}@127.0.0.1:{port}/0");
        let root = std::fs::read(Pki::get().path("ca.crt")).ok()?;
        let client = redis::Client::build_with_tls(
            info.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root),
            },
        )
        .ok()?;
        client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()
    }

    fn admin(&self, port: u16) -> redis::Connection {
        self.try_admin(port).expect("a TLS admin connection")
    }

    /// The node holding `key` (the others answer `MOVED`).
    fn holder_of(&self, key: &str) -> Option<u16> {
        self.ports.iter().copied().find(|port| {
            redis::cmd("EXISTS")
                .arg(key)
                .query::<i64>(&mut self.admin(*port))
                .is_ok_and(|n| n == 1)
        })
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `rediss+cluster://` on a TLS-only cluster that refuses `CONFIG` and `INFO` (a managed
/// service's profile): bots on slots of different nodes run the seed's usage, each bot's keys
/// live on its slot's owner, the refused `CONFIG` is said to be unknown, and a graceful close
/// hands the lease over to the standby.
#[test]
fn rediss_cluster_without_config_or_info_runs_bots_on_their_slot_owners() {
    let cluster = TlsCluster::start();
    let pki = Pki::get();
    let url = format!(
        "rediss+cluster://:{PASSWORD}@127.0.0.1:{},127.0.0.1:{}",
        cluster.ports[0], cluster.ports[1]
    );
    let start =
        |bot: &str| StateManager::new(config(&url, bot).tls_ca_file(pki.path("ca.crt"))).unwrap();
    let mut owners = std::collections::BTreeSet::new();
    // Names chosen to land on different primaries: their hash tags hash across the ranges.
    for bot in ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"] {
        let primary = start(bot);
        assert!(
            primary.wait_until_primary(Some(Duration::from_secs(5))),
            "{bot}"
        );
        let warnings = primary.startup_warnings().join(" | ");
        assert!(
            warnings.contains("cannot read Redis maxmemory-policy"),
            "{warnings}"
        );
        assert!(!warnings.contains(PASSWORD), "{warnings}");
        primary
            .save_state(&mut obj(json!({"bot": bot, "pnl": 1.5})))
            .unwrap();
        primary
            .save_position("ES:FUT", &mut obj(json!({"quantity": 2})))
            .unwrap();
        let owner = cluster
            .holder_of(&format!("bot:{{{bot}}}:state"))
            .expect("the state is on one node");
        for key in [
            "lease_record",
            "epoch",
            "position:ES:FUT",
            "positions",
            "heartbeat",
        ] {
            assert_eq!(
                cluster.holder_of(&format!("bot:{{{bot}}}:{key}")),
                Some(owner),
                "{bot}: {key} on the slot's owner"
            );
        }
        owners.insert(owner);
        let standby = start(bot);
        assert!(!standby.is_primary());
        primary.close().unwrap();
        assert!(
            standby.wait_until_primary(Some(Duration::from_secs(3))),
            "{bot}: the standby takes over after a graceful close"
        );
        assert_eq!(standby.load_state().unwrap().unwrap()["bot"], json!(bot));
        assert_eq!(standby.load_positions().unwrap().len(), 1);
        standby.close().unwrap();
    }
    assert!(
        owners.len() >= 2,
        "the bots spread over the primaries: {owners:?}"
    );
}
