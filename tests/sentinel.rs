//! Redis HA against real processes on 127.0.0.1 (issue 5): a master, replicas and three
//! Sentinels; two state managers on a `redis+sentinel://` URL; kill -9 of the master. Checks
//! that the Sentinels promote a replica, the bots carry on against it within a bounded time,
//! never two primaries (both sampled every 2 ms), every write acknowledged with
//! `wait_replicas=1` survives, and the epoch only grows. Also: WAIT timeouts raise
//! `NotReplicated`, a graceful `SENTINEL FAILOVER` (READONLY, `+switch-master`), Sentinel
//! authentication, and the start-up warnings. Prints the failover timings it measures
//! (`FAILOVER-TIMING` lines; docs/deployment.md and BENCHMARKS.md quote them).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use quantshift_core::{Config, ErrorKind, StateManager};
use serde_json::json;

const DATA_PASSWORD: &str = "d4ta-Secret-7";
const SENTINEL_PASSWORD: &str = "s3ntinel-Secret-9";
const SERVICE: &str = "qsvc";

// ---------------------------------------------------------------------------------------
// Processes

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free loopback port")
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server (data node or Sentinel) on a free loopback port, killed on drop.
struct Node {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    password: Option<String>,
}

impl Node {
    fn data(password: Option<&str>, replica_of: Option<u16>) -> Node {
        Self::spawn_retrying(password, |port, dir| {
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                dir.to_str().unwrap(),
                // A full resync (a demoted master rejoining) starts at once, not after 5 s.
                "--repl-diskless-sync-delay",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(password) = password {
                args.extend(["--requirepass".into(), password.into()]);
                args.extend(["--masterauth".into(), password.into()]);
            }
            if let Some(master) = replica_of {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            }
            args
        })
    }

    fn sentinel(master_port: u16) -> Node {
        Self::spawn_retrying(Some(SENTINEL_PASSWORD), |port, dir| {
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nrequirepass {SENTINEL_PASSWORD}\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
                     sentinel auth-pass {SERVICE} {DATA_PASSWORD}\n\
                     sentinel down-after-milliseconds {SERVICE} 400\n\
                     sentinel failover-timeout {SERVICE} 4000\n\
                     sentinel parallel-syncs {SERVICE} 2\n",
                    dir = dir.display()
                ),
            )
            .unwrap();
            vec![conf.to_str().unwrap().to_owned(), "--sentinel".to_owned()]
        })
    }

    fn spawn_retrying(password: Option<&str>, args: impl Fn(u16, &PathBuf) -> Vec<String>) -> Node {
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("qs-ha-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let child = Command::new("redis-server")
                .args(args(port, &dir))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (bash scripts/setup.sh installs it)");
            let mut node = Node {
                port,
                child: Some(child),
                dir,
                password: password.map(str::to_owned),
            };
            let give_up = Instant::now() + Duration::from_secs(10);
            while Instant::now() < give_up {
                if let Ok(mut conn) = node.try_connection() {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return node;
                    }
                }
                if let Some(Ok(Some(_))) = node.child.as_mut().map(|c| c.try_wait()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            node.kill();
        }
        panic!("could not start redis-server on a free loopback port");
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let info = redis::ConnectionAddr::Tcp("127.0.0.1".into(), self.port);
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        let info =
            redis::IntoConnectionInfo::into_connection_info(info)?.set_redis_settings(settings);
        let conn =
            redis::Client::open(info)?.get_connection_with_timeout(Duration::from_millis(500))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(conn)
    }

    fn connection(&self) -> redis::Connection {
        self.try_connection().expect("connect to a test node")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, `replicas` replicas and three Sentinels (quorum 2), all with passwords.
struct Cluster {
    nodes: Vec<Node>,
    sentinels: Vec<Node>,
}

impl Cluster {
    fn start(replicas: usize) -> Cluster {
        let master = Node::data(Some(DATA_PASSWORD), None);
        let master_port = master.port;
        let mut nodes = vec![master];
        for _ in 0..replicas {
            nodes.push(Node::data(Some(DATA_PASSWORD), Some(master_port)));
        }
        let sentinels: Vec<Node> = (0..3).map(|_| Node::sentinel(master_port)).collect();
        let cluster = Cluster { nodes, sentinels };
        // The Sentinels find each other through the master's hello channel (every 2 s).
        let ready = wait_for(Duration::from_secs(20), || {
            cluster.sentinels.iter().all(|s| {
                let info = sentinel_master_info(s);
                info.get("num-other-sentinels").map(String::as_str) == Some("2")
                    && info.get("num-slaves").map(String::as_str) == Some(&*replicas.to_string())
            }) && cluster.replicas_online(master_port) == replicas
        });
        assert!(
            ready,
            "the Sentinels did not see each other and the replicas in time"
        );
        cluster
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!(
            "redis+sentinel://:{DATA_PASSWORD}@{}/{SERVICE}/0",
            hosts.join(",")
        )
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// The master port, once every Sentinel names the same one.
    fn master_port(&self) -> Option<u16> {
        let named: Vec<Option<u16>> = self
            .sentinels
            .iter()
            .map(|s| {
                let mut conn = s.try_connection().ok()?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(SERVICE)
                    .query::<Option<(String, u16)>>(&mut conn)
                    .ok()
                    .flatten()
                    .map(|(_, port)| port)
            })
            .collect();
        named[0].filter(|_| named.iter().all(|n| *n == named[0]))
    }

    /// The master port once the Sentinels agree on it (waits up to 10 s).
    fn agreed_master(&self) -> u16 {
        let mut port = None;
        assert!(
            wait_for(Duration::from_secs(10), || {
                port = self.master_port();
                port.is_some()
            }),
            "the Sentinels agree on the master"
        );
        port.unwrap()
    }

    /// Replicas the master at `port` reports online.
    fn replicas_online(&self, port: u16) -> usize {
        let Some(node) = self.nodes.iter().find(|n| n.port == port) else {
            return 0;
        };
        let Ok(mut conn) = node.try_connection() else {
            return 0;
        };
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn)
            .unwrap_or_default();
        info.lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .count()
    }
}

fn sentinel_master_info(sentinel: &Node) -> HashMap<String, String> {
    let Ok(mut conn) = sentinel.try_connection() else {
        return HashMap::new();
    };
    redis::cmd("SENTINEL")
        .arg("master")
        .arg(SERVICE)
        .query(&mut conn)
        .unwrap_or_default()
}

fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + timeout;
    while Instant::now() < give_up {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

// ---------------------------------------------------------------------------------------
// Log capture: no record may carry a password.

struct Capture;
static RECORDS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        RECORDS
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = log::set_boxed_logger(Box::new(Capture));
        log::set_max_level(log::LevelFilter::Debug);
    });
}

fn assert_no_secret_logged() {
    let records = RECORDS.get_or_init(Default::default).lock().unwrap();
    assert!(!records.is_empty(), "the library logs at debug level");
    for record in records.iter() {
        assert!(
            !record.contains(DATA_PASSWORD) && !record.contains(SENTINEL_PASSWORD),
            "a password in a log record: {record}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Bots under observation

fn ha_config(url: &str, bot: &str, wait_replicas: u32) -> Config {
    Config::new(bot)
        .redis_url(url)
        .sentinel_password(SENTINEL_PASSWORD)
        .lock_ttl(Duration::from_millis(2000))
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .wait_replicas(wait_replicas)
        .wait_timeout(Duration::from_millis(500))
        .install_signal_handlers(false)
}

/// Two managers sampled every 2 ms (`is_primary()` of both) and written to by whichever is
/// primary, every 3 ms, on the shared clock `origin`.
struct Observed {
    managers: Arc<Vec<StateManager>>,
    origin: Instant,
    stop: Arc<AtomicBool>,
    /// Samples where both said primary.
    overlaps: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    /// (ms since origin, whether some manager said primary), one per sample.
    primary_timeline: Arc<Mutex<Vec<(f64, bool)>>>,
    /// (ms since origin when sent, symbol) of each acknowledged write.
    acked: Arc<Mutex<Vec<(f64, String)>>>,
    errors: Arc<Mutex<HashMap<String, u64>>>,
    /// (ms since origin, manager index, epoch) of each promotion.
    promotions: Arc<Mutex<Vec<(f64, usize, u64)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Observed {
    fn start(managers: Vec<StateManager>) -> Observed {
        let origin = Instant::now();
        let promotions = Arc::new(Mutex::new(Vec::new()));
        for (i, manager) in managers.iter().enumerate() {
            let promotions = Arc::clone(&promotions);
            if let Some(epoch) = manager.epoch() {
                promotions.lock().unwrap().push((0.0, i, epoch));
            }
            manager.on_promoted(move |epoch| {
                let mut promotions = promotions.lock().unwrap();
                // The promotion before the observation may be delivered to us late.
                if !promotions.iter().any(|(_, j, e)| *j == i && *e == epoch) {
                    promotions.push((ms(origin.elapsed()), i, epoch));
                }
            });
        }
        let mut observed = Observed {
            managers: Arc::new(managers),
            origin,
            stop: Arc::new(AtomicBool::new(false)),
            overlaps: Arc::new(AtomicU64::new(0)),
            samples: Arc::new(AtomicU64::new(0)),
            primary_timeline: Arc::new(Mutex::new(Vec::new())),
            acked: Arc::new(Mutex::new(Vec::new())),
            errors: Arc::new(Mutex::new(HashMap::new())),
            promotions,
            threads: Vec::new(),
        };
        let (managers, stop, overlaps, samples, timeline) = (
            Arc::clone(&observed.managers),
            Arc::clone(&observed.stop),
            Arc::clone(&observed.overlaps),
            Arc::clone(&observed.samples),
            Arc::clone(&observed.primary_timeline),
        );
        observed.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let roles: Vec<bool> = managers.iter().map(|m| m.is_primary()).collect();
                let primaries = roles.iter().filter(|p| **p).count();
                if primaries > 1 {
                    overlaps.fetch_add(1, Ordering::Relaxed);
                }
                samples.fetch_add(1, Ordering::Relaxed);
                timeline
                    .lock()
                    .unwrap()
                    .push((ms(origin.elapsed()), primaries > 0));
                std::thread::sleep(Duration::from_millis(2));
            }
        }));
        let (managers, stop, acked, errors) = (
            Arc::clone(&observed.managers),
            Arc::clone(&observed.stop),
            Arc::clone(&observed.acked),
            Arc::clone(&observed.errors),
        );
        observed.threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for manager in managers.iter() {
                    if !manager.is_primary() {
                        continue;
                    }
                    n += 1;
                    let symbol = format!("S{n}");
                    let sent = ms(origin.elapsed());
                    match manager.save_position(&symbol, &mut obj(json!({"quantity": n}))) {
                        Ok(()) => acked.lock().unwrap().push((sent, symbol)),
                        Err(err) => {
                            *errors
                                .lock()
                                .unwrap()
                                .entry(format!("{:?}", err.kind()))
                                .or_default() += 1;
                            assert!(
                                !err.message().contains(DATA_PASSWORD)
                                    && !err.message().contains(SENTINEL_PASSWORD),
                                "{err}"
                            );
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        }));
        observed
    }

    fn now(&self) -> f64 {
        ms(self.origin.elapsed())
    }

    fn acked_after(&self, t: f64) -> Option<f64> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .find(|(sent, _)| *sent > t)
            .map(|(sent, _)| *sent)
    }

    /// The longest stretch without any primary between `from` and `to` (ms).
    fn longest_gap(&self, from: f64, to: f64) -> f64 {
        let timeline = self.primary_timeline.lock().unwrap();
        let mut longest: f64 = 0.0;
        let mut gap_start: Option<f64> = None;
        for (t, any) in timeline.iter().filter(|(t, _)| *t >= from && *t <= to) {
            match (any, gap_start) {
                (false, None) => gap_start = Some(*t),
                (true, Some(start)) => {
                    longest = longest.max(t - start);
                    gap_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = gap_start {
            longest = longest.max(to - start);
        }
        longest
    }

    fn stop(mut self) -> Stopped {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().expect("an observer thread panicked");
        }
        Stopped(self)
    }
}

struct Stopped(Observed);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn obj(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    value.as_object().unwrap().clone()
}

/// Kill -9 the master of a running cluster with two bots writing, and check everything the
/// issue asks. Returns (kill → Sentinels name a new master, kill → a primary again, kill →
/// first acknowledged write, longest gap without primary) in ms.
fn kill_the_master(
    cluster: &mut Cluster,
    observed: &Observed,
    wait_replicas: u32,
) -> (f64, f64, f64, f64) {
    let old_master = cluster.agreed_master();
    // Writes flowing for a while before the kill.
    assert!(wait_for(Duration::from_secs(10), || observed
        .acked_after(observed.now() - 300.0)
        .is_some()
        && observed.acked.lock().unwrap().len() > 50));
    let killed_at = observed.now();
    cluster.node_mut(old_master).kill();
    let mut switched_at = None;
    let mut primary_at = None;
    let mut write_at = None;
    let give_up = Instant::now() + Duration::from_secs(25);
    while Instant::now() < give_up && (switched_at.is_none() || write_at.is_none()) {
        if switched_at.is_none() && cluster.master_port().is_some_and(|p| p != old_master) {
            switched_at = Some(observed.now());
        }
        if primary_at.is_none() {
            primary_at = observed
                .promotions
                .lock()
                .unwrap()
                .iter()
                .find(|(t, _, _)| *t > killed_at)
                .map(|(t, _, _)| *t);
        }
        if write_at.is_none() {
            write_at = observed.acked_after(killed_at);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let switched_at = switched_at.expect("the Sentinels promoted a replica within 25 s");
    let write_at = write_at.expect("the bots wrote again within 25 s of the kill");
    // The old primary may have kept the lease through the switch (no promotion needed).
    let primary_at = primary_at.unwrap_or(write_at).min(write_at);
    // Carry on a little on the new master.
    std::thread::sleep(Duration::from_millis(500));
    let new_master = cluster.agreed_master();
    assert_ne!(new_master, old_master);
    let gap = observed.longest_gap(killed_at - 100.0, observed.now());
    let _ = wait_replicas;
    (
        switched_at - killed_at,
        primary_at - killed_at,
        write_at - killed_at,
        gap,
    )
}

fn check_after(cluster: &Cluster, stopped: &Stopped, bot: &str, wait_replicas: u32, up_to: f64) {
    let observed = &stopped.0;
    let samples = observed.samples.load(Ordering::Relaxed);
    let overlaps = observed.overlaps.load(Ordering::Relaxed);
    assert!(samples > 300, "sampled {samples} times");
    assert_eq!(
        overlaps, 0,
        "both managers said primary in {overlaps} samples"
    );
    // Every promotion, of either manager, has a larger epoch than the one before.
    let promotions = observed.promotions.lock().unwrap().clone();
    assert!(!promotions.is_empty(), "{promotions:?}");
    for pair in promotions.windows(2) {
        assert!(
            pair[1].2 > pair[0].2,
            "the epoch went backwards: {promotions:?}"
        );
    }
    let master = cluster.node(cluster.agreed_master());
    let mut conn = master.connection();
    let acked = observed.acked.lock().unwrap().clone();
    let mut missing = Vec::new();
    for (sent, symbol) in acked.iter().filter(|(sent, _)| *sent <= up_to) {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("bot:{bot}:position:{symbol}"))
            .query(&mut conn)
            .unwrap();
        if !exists {
            missing.push((*sent, symbol.clone()));
        }
    }
    println!(
        "wait_replicas={wait_replicas}: {} writes acknowledged, {} missing on the new master, \
         errors {:?}, {} samples, {} overlaps, promotions {:?}",
        acked.len(),
        missing.len(),
        observed.errors.lock().unwrap(),
        samples,
        overlaps,
        promotions
    );
    if wait_replicas > 0 {
        assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    }
}

fn report(label: &str, timings: (f64, f64, f64, f64)) {
    println!(
        "FAILOVER-TIMING {label}: sentinels switched {:.0} ms, primary again {:.0} ms, \
         first acknowledged write {:.0} ms, longest time without primary {:.0} ms after kill -9",
        timings.0, timings.1, timings.2, timings.3
    );
}

/// Master + two replicas, `wait_replicas=1`: after kill -9 of the master the Sentinels
/// promote a replica, the other follows it, and the bots carry on; nothing acknowledged is
/// lost.
#[test]
fn kill_9_of_the_master_with_wait_replicas_loses_nothing_acknowledged() {
    capture_logs();
    let mut cluster = Cluster::start(2);
    let url = cluster.url();
    let bot = "ha-wait";

    // Sentinel authentication: a wrong Sentinel password is a clear error without secrets.
    let err = StateManager::new(ha_config(&url, bot, 1).sentinel_password("wrong-Sentinel-pw"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RedisUnavailable, "{err}");
    assert!(err.message().contains("Sentinel"), "{err}");
    for secret in [DATA_PASSWORD, SENTINEL_PASSWORD, "wrong-Sentinel-pw"] {
        assert!(!err.message().contains(secret), "{err}");
    }
    // A wrong data-node password: the Sentinels answer, the master refuses.
    let wrong_data = url.replace(DATA_PASSWORD, "wrong-Data-pw");
    let err = StateManager::new(ha_config(&wrong_data, bot, 1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RedisUnavailable, "{err}");
    assert!(err.message().contains("named by Sentinel"), "{err}");
    for secret in [DATA_PASSWORD, SENTINEL_PASSWORD, "wrong-Data-pw"] {
        assert!(!err.message().contains(secret), "{err}");
    }
    println!("wrong data password: {err}");

    let a = StateManager::new(ha_config(&url, bot, 1)).unwrap();
    assert!(a.wait_until_primary(Some(Duration::from_secs(5))));
    let b = StateManager::new(ha_config(&url, bot, 1)).unwrap();
    for secret in [DATA_PASSWORD, SENTINEL_PASSWORD] {
        assert!(!format!("{a:?} {:?}", a.config()).contains(secret));
    }
    assert!(
        !a.startup_warnings()
            .iter()
            .any(|w| w.contains("persistence") || w.contains("replica")),
        "{:?}",
        a.startup_warnings()
    );
    let observed = Observed::start(vec![a, b]);
    let timings = kill_the_master(&mut cluster, &observed, 1);
    let killed_writes_end = observed.now();
    report("wait_replicas=1 (master + 2 replicas)", timings);
    assert!(timings.2 < 15_000.0, "{timings:?}");

    let stopped = observed.stop();
    check_after(&cluster, &stopped, bot, 1, killed_writes_end);
    for manager in stopped.0.managers.iter() {
        manager.close().unwrap();
    }
    assert_no_secret_logged();
}

/// The seed's topology: master + one replica, `wait_replicas=0`. After kill -9 the replica
/// is promoted and the bots carry on on it; still never two primaries.
#[test]
fn kill_9_of_the_master_without_wait_keeps_one_primary() {
    capture_logs();
    let mut cluster = Cluster::start(1);
    let url = cluster.url();
    let bot = "ha-nowait";
    let a = StateManager::new(ha_config(&url, bot, 0)).unwrap();
    assert!(a.wait_until_primary(Some(Duration::from_secs(5))));
    let b = StateManager::new(ha_config(&url, bot, 0)).unwrap();
    // No persistence on the test nodes, and no replicas waited for: warned.
    assert!(
        a.startup_warnings()
            .iter()
            .any(|w| w.contains("persistence")),
        "{:?}",
        a.startup_warnings()
    );
    let observed = Observed::start(vec![a, b]);
    let timings = kill_the_master(&mut cluster, &observed, 0);
    report("wait_replicas=0 (master + 1 replica)", timings);
    assert!(timings.2 < 15_000.0, "{timings:?}");
    let up_to = observed.now();
    let stopped = observed.stop();
    check_after(&cluster, &stopped, bot, 0, up_to);
    for manager in stopped.0.managers.iter() {
        manager.close().unwrap();
    }
}

/// A graceful `SENTINEL FAILOVER`: the master is demoted to a replica while the bots write
/// to it (READONLY) and the Sentinels announce `+switch-master`; the bots follow the new
/// master at once and there are never two primaries.
#[test]
fn a_graceful_sentinel_failover_is_followed_at_once() {
    capture_logs();
    let cluster = Cluster::start(1);
    let url = cluster.url();
    let bot = "ha-graceful";
    let a = StateManager::new(ha_config(&url, bot, 0)).unwrap();
    assert!(a.wait_until_primary(Some(Duration::from_secs(5))));
    let b = StateManager::new(ha_config(&url, bot, 0)).unwrap();
    let observed = Observed::start(vec![a, b]);
    assert!(wait_for(Duration::from_secs(10), || observed
        .acked
        .lock()
        .unwrap()
        .len()
        > 50));
    let old = cluster.agreed_master();
    // Both managers hold loaded positions (tracked on the old master) through the switch.
    for manager in observed.managers.iter() {
        for _ in 0..2 {
            assert!(!manager.load_positions().unwrap().is_empty());
        }
    }
    let before = observed.now();
    assert!(
        request_failover(&cluster, Duration::from_secs(10)),
        "SENTINEL FAILOVER was accepted"
    );
    assert!(wait_for(Duration::from_secs(15), || cluster
        .master_port()
        .is_some_and(|p| p != old)));
    let switched = observed.now() - before;
    let new = cluster.agreed_master();
    // Writes land on the new master soon after the switch (the old one is converted to a
    // replica by the Sentinels only later, at their next INFO).
    let mut conn = cluster.node(new).connection();
    let resumed = wait_for(Duration::from_secs(10), || {
        observed
            .acked
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(3)
            .all(|(sent, symbol)| {
                *sent > before + switched
                    && redis::cmd("EXISTS")
                        .arg(format!("bot:{bot}:position:{symbol}"))
                        .query::<bool>(&mut conn)
                        .unwrap_or(false)
            })
    });
    assert!(resumed, "writes resumed on the new master");
    let resumed_at = observed.now() - before;
    println!(
        "FAILOVER-TIMING graceful SENTINEL FAILOVER (wait_replicas=0): sentinels switched \
         {switched:.0} ms, writes landing on the new master {resumed_at:.0} ms after the command"
    );
    std::thread::sleep(Duration::from_millis(300));
    let stopped = observed.stop();
    let overlaps = stopped.0.overlaps.load(Ordering::Relaxed);
    assert_eq!(overlaps, 0);
    // Loads answer what the new master holds, not what the old one did.
    let mut on_new: Vec<String> = redis::cmd("KEYS")
        .arg(format!("bot:{bot}:position:*"))
        .query::<Vec<String>>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|key| key.rsplit(':').next().unwrap().to_owned())
        .collect();
    on_new.sort();
    for manager in stopped.0.managers.iter() {
        for _ in 0..2 {
            let mut loaded: Vec<String> = manager
                .load_positions()
                .unwrap()
                .into_iter()
                .map(|(symbol, _)| symbol)
                .collect();
            loaded.sort();
            assert_eq!(loaded, on_new);
        }
    }
    let logs = RECORDS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .clone();
    // This cluster's switch, as the stores saw it (the log is shared by the tests here).
    let switch = format!("from 127.0.0.1:{old} to 127.0.0.1:{new}");
    assert!(
        logs.iter()
            .any(|l| l.contains("Redis master changed") && l.contains(&switch)),
        "the switch was noticed: {switch}"
    );
    for manager in stopped.0.managers.iter() {
        manager.close().unwrap();
    }
}

/// With the replica gone, a write is applied on the master but `WAIT` cannot confirm it:
/// `NotReplicated` within `wait_timeout` (plus a round trip), and the value is on the master.
#[test]
fn writes_without_their_replica_raise_not_replicated_within_wait_timeout() {
    let master = Node::data(None, None);
    let mut replica = Node::data(None, Some(master.port));
    let online = wait_for(Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut master.connection())
            .unwrap_or_default();
        info.contains("state=online")
    });
    assert!(online, "the replica is in sync");
    let wait_timeout = Duration::from_millis(400);
    let config = Config::new("not-replicated")
        .redis_url(format!("redis://127.0.0.1:{}/0", master.port))
        .lock_ttl(Duration::from_secs(15))
        .command_timeout(Duration::from_millis(500))
        .wait_replicas(1)
        .wait_timeout(wait_timeout)
        // Renewals need the replica too: a lease that outlives its loss long enough to see
        // the writes refused for want of it (with the default tolerance the primary would be
        // standby 0.3 s after the replica went, and writes refused as NotPrimary).
        .failover_tolerance(Duration::from_secs(3))
        .install_signal_handlers(false);
    let manager = StateManager::new(config).unwrap();
    // A first start claims the empty record and leads after the take-over wait (3.2 s here).
    assert!(manager.wait_until_primary(Some(Duration::from_secs(10))));
    // Confirmed while the replica is there.
    manager
        .save_position("AAPL", &mut obj(json!({"quantity": 1})))
        .unwrap();
    manager.save_state(&mut obj(json!({"k": 1}))).unwrap();
    // The WAIT travels in the same write as the script call: the master processes one read
    // event per fenced write from us (and one for the replica's acknowledgement), where a
    // separate WAIT would cost a second one.
    let reads = |conn: &mut redis::Connection| -> i64 {
        let info: String = redis::cmd("INFO").arg("stats").query(conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let mut stats = master.connection();
    let writes = 60;
    let before = reads(&mut stats);
    for n in 0..writes {
        manager
            .save_position("AAPL", &mut obj(json!({"quantity": n})))
            .unwrap();
    }
    let per_write = (reads(&mut stats) - before) as f64 / f64::from(writes);
    println!("read events on the master per fenced write with wait_replicas=1: {per_write:.2}");
    // Measured: 2.02 with the WAIT pipelined, 3.02 with a separate WAIT.
    assert!(per_write < 2.5, "{per_write} read events per fenced write");
    replica.kill();
    let started = Instant::now();
    let err = manager
        .save_position("MSFT", &mut obj(json!({"quantity": 2})))
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::NotReplicated, "{err}");
    assert!(err.message().contains("master applied"), "{err}");
    assert!(
        elapsed >= wait_timeout && elapsed < wait_timeout + Duration::from_millis(700),
        "{elapsed:?}"
    );
    let stored: Option<String> = redis::cmd("GET")
        .arg("bot:not-replicated:position:MSFT")
        .query(&mut master.connection())
        .unwrap();
    assert!(stored.unwrap().contains("\"quantity\":2"));
    let err = manager.save_state(&mut obj(json!({"k": 2}))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReplicated, "{err}");
    println!("NotReplicated after {elapsed:?} with wait_timeout {wait_timeout:?} (replica killed)");
    // The final state saved by close() is not confirmed either, and close() says so.
    let err = manager.close().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReplicated, "{err}");
}

/// A direct URL to a replica is warned about, and so is missing persistence only while no
/// replica is waited for.
#[test]
fn startup_warns_about_a_replica_and_about_persistence() {
    let master = Node::data(None, None);
    let replica = Node::data(None, Some(master.port));
    let on_replica = StateManager::new(
        Config::new("warned")
            .redis_url(format!("redis://127.0.0.1:{}/0", replica.port))
            .install_signal_handlers(false),
    )
    .unwrap();
    let warnings = on_replica.startup_warnings().to_vec();
    assert!(
        warnings.iter().any(|w| w.contains("not a master")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("persistence")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("maxmemory")),
        "{warnings:?}"
    );
    drop(on_replica);
    let waiting = StateManager::new(
        Config::new("warned")
            .redis_url(format!("redis://127.0.0.1:{}/0", master.port))
            .wait_replicas(1)
            .install_signal_handlers(false),
    )
    .unwrap();
    assert!(
        waiting.startup_warnings().is_empty(),
        "{:?}",
        waiting.startup_warnings()
    );
    drop(waiting);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query::<()>(&mut master.connection())
        .unwrap();
    let persistent = StateManager::new(
        Config::new("warned")
            .redis_url(format!("redis://127.0.0.1:{}/0", master.port))
            .install_signal_handlers(false),
    )
    .unwrap();
    assert!(
        persistent.startup_warnings().is_empty(),
        "{:?}",
        persistent.startup_warnings()
    );
}

/// Nobody answers on the Sentinel ports: a bounded, clear `RedisUnavailable` error.
#[test]
fn unreachable_sentinels_are_a_bounded_clear_error() {
    let dead: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let url = format!(
        "redis+sentinel://:{DATA_PASSWORD}@{}/{SERVICE}",
        dead.join(",")
    );
    let started = Instant::now();
    let err = StateManager::new(
        Config::new("nobody")
            .redis_url(url)
            .connect_timeout(Duration::from_millis(300))
            .install_signal_handlers(false),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RedisUnavailable, "{err}");
    assert!(err.message().contains("no Redis master found"), "{err}");
    assert!(!err.message().contains(DATA_PASSWORD), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// The lease did not reach the replica (removed from it after the master was killed, as if
/// the last replication had been lost), and the replica is promoted: the primary stops calling itself primary as
/// soon as it learns of the new master, finds its token missing there and is demoted
/// (`on_demoted`), and its writes are refused meanwhile.
#[test]
fn a_lease_lost_in_the_failover_demotes_the_primary() {
    capture_logs();
    let mut cluster = Cluster::start(1);
    let url = cluster.url();
    let old_master = cluster.agreed_master();
    let replica_port = cluster.nodes[1].port;
    let config = ha_config(&url, "ha-lost", 0).lock_ttl(Duration::from_secs(20));
    let a = StateManager::new(config).unwrap();
    let demoted = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let sink = Arc::clone(&demoted);
    a.on_demoted(move |reason| {
        sink.lock()
            .unwrap()
            .push((Instant::now(), reason.to_owned()))
    });
    assert!(a.wait_until_primary(Some(Duration::from_secs(3))));
    let first_epoch = a.epoch().unwrap();
    cluster.node_mut(old_master).kill();
    // As if the last replication had been lost: the replica loses the lease key.
    let mut replica = cluster.node(replica_port).connection();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("replica-read-only")
        .arg("no")
        .query::<()>(&mut replica)
        .unwrap();
    // ... and the epoch INCR of that acquisition.
    let removed: i64 = redis::cmd("DEL")
        .arg("bot:ha-lost:primary_lock")
        .arg("bot:ha-lost:epoch")
        .query(&mut replica)
        .unwrap();
    assert_eq!(removed, 2, "the replica had the lease and the epoch");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("replica-read-only")
        .arg("yes")
        .query::<()>(&mut replica)
        .unwrap();
    // Until the switch the primary rides out the dead master (its renew deadline is 13 s).
    assert!(wait_for(Duration::from_secs(15), || cluster
        .master_port()
        .is_some_and(|p| p == replica_port)));
    let switched = Instant::now();
    // The store may have followed the first Sentinel's notice before all three agreed, and
    // the instance that held the lease may already have taken it back on the new master
    // (with a new epoch): what must have happened is the demotion.
    assert!(
        wait_for(Duration::from_secs(5), || !demoted
            .lock()
            .unwrap()
            .is_empty()),
        "never demoted after the switch"
    );
    // With fast failover the primary is standby the moment the master dies (its liveness
    // connection closes); without it, once it finds its token missing on the new master.
    let (at, reason) = demoted.lock().unwrap()[0].clone();
    assert!(
        reason.contains("renew deadline") || reason.contains("taken over or lost"),
        "{reason}"
    );
    if !a.is_primary() {
        let err = a
            .save_position("AAPL", &mut obj(json!({"quantity": 1})))
            .unwrap_err();
        // Refused either way: NotPrimary, or RedisUnavailable while it is standby because
        // the dead master closed the connection that vouched for it.
        assert!(
            matches!(
                err.kind(),
                ErrorKind::NotPrimary | ErrorKind::RedisUnavailable
            ),
            "{err}"
        );
        // Nothing was written on the new master by the deposed primary.
        let position: Option<String> = redis::cmd("GET")
            .arg("bot:ha-lost:position:AAPL")
            .query(&mut cluster.node(replica_port).connection())
            .unwrap();
        assert_eq!(position, None);
    }
    println!(
        "FAILOVER-TIMING lost lease: demoted {:.0} ms after the Sentinels agreed on the new \
         master (negative: before)",
        at.duration_since(switched).as_secs_f64() * 1000.0
            - switched.duration_since(at).as_secs_f64() * 1000.0
    );
    // The instance that held the lease takes it back on the new master at once, and its
    // epoch moves past the one the new master never saw (INCR alone would repeat it).
    assert!(a.wait_until_primary(Some(Duration::from_secs(5))));
    let epoch = a.epoch().unwrap();
    assert!(epoch > first_epoch, "epoch {epoch} after {first_epoch}");
    let stored: u64 = redis::cmd("GET")
        .arg("bot:ha-lost:epoch")
        .query(&mut cluster.node(replica_port).connection())
        .unwrap();
    assert_eq!(stored, epoch);
    drop(a);
}

// ---------------------------------------------------------------------------------------
// Seen-death failover across a master switch: a holder registered on the former master.

/// Nanoseconds on CLOCK_MONOTONIC, the clock shared by the test and its child processes.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const SWITCH_LOCK_TTL: Duration = Duration::from_secs(10);

/// Not a test of its own: the body of the child bot of
/// `a_master_switch_never_counts_a_frozen_holder_as_dead` (does nothing without
/// `QS_SENTINEL_CHILD_URL`). Prints `role <mono ns> <is_primary>` at each change of its
/// `is_primary()`, sampled every millisecond for at most 60 s.
#[test]
fn sentinel_child() {
    let Ok(url) = std::env::var("QS_SENTINEL_CHILD_URL") else {
        return;
    };
    let bot = std::env::var("QS_SENTINEL_CHILD_BOT").unwrap();
    let manager =
        StateManager::new(ha_config(&url, &bot, 1).lock_ttl(SWITCH_LOCK_TTL)).expect("child");
    let give_up = Instant::now() + Duration::from_secs(60);
    // Every sample, so a freeze shows as a gap (the process says nothing while stopped).
    while Instant::now() < give_up {
        let at = mono_ns();
        let primary = manager.is_primary();
        println!("role {at} {primary}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every sample `(mono ns, is_primary)` of one instance → the intervals in which it said
/// primary: runs of primary samples, each ending at its last primary sample (a frozen process
/// takes no samples: a gap over 20 ms ends a run too).
fn sampled_intervals(samples: &[(u64, bool)]) -> Vec<(u64, u64)> {
    let mut intervals = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    for &(at, primary) in samples {
        match (primary, run) {
            (true, Some((from, last))) if at - last <= 20_000_000 => run = Some((from, at)),
            (true, _) => {
                intervals.extend(run);
                run = Some((at, at));
            }
            (false, _) => intervals.extend(run.take()),
        }
    }
    intervals.extend(run);
    intervals
}

/// Role changes `(mono ns, is_primary)` of one instance → the intervals it said primary.
fn primary_intervals(changes: &[(u64, bool)], end: u64) -> Vec<(u64, u64)> {
    let mut intervals = Vec::new();
    let mut since = None;
    for &(at, primary) in changes {
        match (primary, since) {
            (true, None) => since = Some(at),
            (false, Some(from)) => {
                intervals.push((from, at));
                since = None;
            }
            _ => {}
        }
    }
    if let Some(from) = since {
        intervals.push((from, end));
    }
    intervals
}

/// The primary (a child process) is frozen, then the Sentinels switch masters. The standby
/// takes over once the holder's record stopped moving for the take-over wait (on the new
/// master too: `wait_replicas = 1` replicated it). After SIGCONT, never two primaries, and one
/// leads again.
#[test]
fn a_master_switch_while_the_holder_is_frozen_never_makes_two_primaries() {
    let cluster = Cluster::start(2);
    let url = cluster.url();
    let bot = "ha-frozen-switch";
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sentinel_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("QS_SENTINEL_CHILD_URL", &url)
        .env("QS_SENTINEL_CHILD_BOT", bot)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let child_pid = child.id() as i32;
    let changes = Arc::new(Mutex::new(Vec::<(u64, bool)>::new()));
    let reader = {
        let changes = Arc::clone(&changes);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The first line may follow the harness's "test sentinel_child ... ".
                let Some(at) = line.find("role ") else {
                    continue;
                };
                let mut parts = line[at..].split_whitespace().skip(1);
                let (Some(at), Some(primary)) = (parts.next(), parts.next()) else {
                    continue;
                };
                if let (Ok(at), Ok(primary)) = (at.parse(), primary.parse()) {
                    changes.lock().unwrap().push((at, primary));
                }
            }
        })
    };
    let child_primary = || changes.lock().unwrap().last().is_some_and(|c| c.1);
    assert!(
        wait_for(Duration::from_secs(10), child_primary),
        "the child bot leads: {:?}",
        changes.lock().unwrap()
    );
    let standby = StateManager::new(ha_config(&url, bot, 1).lock_ttl(SWITCH_LOCK_TTL)).unwrap();
    // The standby's role, sampled every millisecond on the shared clock.
    let sampling = Arc::new(AtomicBool::new(true));
    let standby = Arc::new(standby);
    let sampler = {
        let (sampling, standby) = (Arc::clone(&sampling), Arc::clone(&standby));
        std::thread::spawn(move || {
            let mut changes = Vec::new();
            let mut last = None;
            while sampling.load(Ordering::Relaxed) {
                let primary = standby.is_primary();
                if last != Some(primary) {
                    changes.push((mono_ns(), primary));
                    last = Some(primary);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            changes
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(child_primary() && !standby.is_primary());

    let frozen_at = mono_ns();
    libc_signal(child_pid, libc::SIGSTOP);
    let old = cluster.agreed_master();
    assert!(
        request_failover(&cluster, Duration::from_secs(5)),
        "SENTINEL FAILOVER was accepted"
    );
    let switched = wait_for(Duration::from_secs(10), || {
        cluster.master_port().is_some_and(|p| p != old)
    });
    let switched_after = Duration::from_nanos(mono_ns() - frozen_at);
    // The holder renewed at most lock_ttl / 3 before the freeze, so its lease runs at least
    // 2/3 lock_ttl (6.7 s) past it: a standby on the TTL path cannot lead within 5 s.
    let freeze = Duration::from_secs(5);
    std::thread::sleep(freeze.saturating_sub(switched_after));
    let thawed_at = mono_ns();
    libc_signal(child_pid, libc::SIGCONT);
    assert!(switched, "the Sentinels switched masters");
    assert!(
        switched_after + Duration::from_millis(500) < freeze,
        "the switch ({switched_after:?}) left time to watch the standby"
    );

    // Someone leads again within the lease TTL and a few seconds.
    let leads = wait_for(SWITCH_LOCK_TTL + Duration::from_secs(5), || {
        standby.is_primary() || child_primary()
    });
    std::thread::sleep(Duration::from_millis(500));
    sampling.store(false, Ordering::Relaxed);
    let standby_changes = sampler.join().unwrap();
    let end = mono_ns();
    libc_signal(child_pid, libc::SIGKILL);
    let _ = child.wait();
    let _ = reader.join();
    let child_changes = changes.lock().unwrap().clone();

    // A frozen holder is replaced after the take-over wait (it stops renewing), the master
    // switch or not; what must never happen is an overlap with it when it wakes.
    let standby_led = primary_intervals(&standby_changes, end);
    let _ = thawed_at;
    let mut overlap = 0;
    for (a_from, a_to) in sampled_intervals(&child_changes) {
        for (b_from, b_to) in &standby_led {
            overlap += a_to.min(*b_to).saturating_sub(a_from.max(*b_from));
        }
    }
    assert_eq!(overlap, 0, "ns of two primaries");
    assert!(leads, "someone leads again after the thaw");
    let took_over = standby_led
        .first()
        .map(|(from, _)| Duration::from_nanos(from.saturating_sub(frozen_at)));
    println!(
        "FAILOVER-TIMING frozen holder across a master switch: switched {:.0} ms after the \
         freeze, standby primary {took_over:?} after it, 0 ms of two primaries",
        switched_after.as_secs_f64() * 1000.0
    );
    drop(cluster);
}

/// `SENTINEL FAILOVER` sent to the first Sentinel that accepts it within `timeout`.
fn request_failover(cluster: &Cluster, timeout: Duration) -> bool {
    wait_for(timeout, || {
        cluster.sentinels.iter().any(|s| {
            s.try_connection().is_ok_and(|mut conn| {
                redis::cmd("SENTINEL")
                    .arg("failover")
                    .arg(SERVICE)
                    .query::<String>(&mut conn)
                    .is_ok()
            })
        })
    })
}

fn libc_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a child we started; no memory is shared.
    unsafe {
        libc::kill(pid, signal);
    }
}
