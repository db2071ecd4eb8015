//! A local Redis Cluster for the behaviour tests: 3 primaries and 3 replicas of real
//! `redis-server --cluster-enabled yes` processes on free loopback ports (client and bus port
//! both picked free, never 6379 unless the kernel hands it out), joined with
//! `redis-cli --cluster create`, in a temporary directory. Everything is killed and the
//! directory removed on drop (and each server dies with the thread that started it:
//! `PR_SET_PDEATHSIG`, so a test killed mid-run leaves nothing behind).
//!
//! The operations an operator runs are here, each waiting (bounded in count and time) until
//! the cluster has settled: `CLUSTER FAILOVER` on a replica, `kill -9` of a node and the
//! replica promotion that follows, the restart of a killed node, and the migration of one slot
//! between primaries by the standard procedure (`CLUSTER SETSLOT … IMPORTING / MIGRATING`,
//! `MIGRATE` in batches of `CLUSTER GETKEYSINSLOT`, `CLUSTER SETSLOT … NODE` on every primary).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `cluster-node-timeout`: how long a node may be unreachable before it is marked failed
/// (the replica's election follows about a second later).
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// The longest any harness operation waits for the cluster to settle.
const SETTLE: Duration = Duration::from_secs(30);

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// One `redis-server` of the cluster.
pub struct Node {
    pub port: u16,
    pub bus_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args([
                "--cluster-config-file",
                &format!("nodes-{}.conf", self.port),
            ])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .args(["--maxmemory-policy", "noeviction", "--loglevel", "notice"])
            // A replica's full sync starts at once (the default waits 5 s for more replicas).
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if bus_port_settable() {
            command.args(["--cluster-port", &self.bus_port.to_string()]);
        }
        // SAFETY: prctl(2) in the forked child before exec; async-signal-safe, touches no
        // memory of the parent. The server dies with the thread that started it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .expect("redis-server must be installed (bash scripts/setup.sh installs it)");
        self.child = Some(child);
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            if let Ok(mut conn) = connect(self.port) {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return true;
                }
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on a child we started and have not reaped yet.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the server's log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A slot range and the nodes serving it, as one node sees it (`CLUSTER SHARDS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
    pub primary: u16,
    /// Replica ports of this primary, with whether the node is seen as up (not failed).
    pub replicas: Vec<(u16, bool)>,
}

impl Shard {
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(lo, hi)| lo <= slot && slot <= hi)
    }
}

pub struct LocalCluster {
    pub nodes: Vec<Node>,
    root: PathBuf,
    /// When the cluster was started and how long the start took.
    pub start_took: Duration,
}

/// A free loopback port (bound and released; a retry covers the rare race).
/// Whether the `redis-server` on PATH takes `--cluster-port` (Redis 7.0 and Valkey); before
/// 7.0 the cluster bus is always at the port + 10 000.
fn bus_port_settable() -> bool {
    static SETTABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SETTABLE.get_or_init(|| {
        let out = Command::new("redis-server")
            .arg("--version")
            .output()
            .expect("redis-server must be installed (bash scripts/setup.sh installs it)");
        let text = String::from_utf8_lossy(&out.stdout);
        let major = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
            .unwrap_or(7);
        major >= 7
    })
}

/// A free port for a node and one for its cluster bus (the port + 10 000 where the bus port
/// cannot be set).
fn free_node_ports(taken: &BTreeSet<u16>) -> (u16, u16) {
    if bus_port_settable() {
        let port = free_port(taken);
        let mut with_port = taken.clone();
        with_port.insert(port);
        return (port, free_port(&with_port));
    }
    for _ in 0..100 {
        let port = free_port(taken);
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if !taken.contains(&bus) && TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return (port, bus);
        }
    }
    panic!("no free loopback port with a free bus port in 100 tries");
}

fn free_port(taken: &BTreeSet<u16>) -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind a free loopback port")
            .local_addr()
            .unwrap()
            .port();
        if !taken.contains(&port) {
            return port;
        }
    }
    panic!("no free loopback port in 100 tries");
}

/// A connection to one node with short timeouts (no cluster routing: the harness addresses
/// nodes one by one).
pub fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?;
    let conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(conn)
}

fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::VerbatimString { text, .. } => Some(text.clone()),
        redis::Value::Okay => Some("OK".to_owned()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(value: &redis::Value) -> Option<i64> {
    match value {
        redis::Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// The field/value pairs of a RESP2 flat array or a RESP3 map.
fn pairs(value: &redis::Value) -> Vec<(String, &redis::Value)> {
    match value {
        redis::Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => Some((text(k)?, v)),
                _ => None,
            })
            .collect(),
        redis::Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

fn items(value: &redis::Value) -> &[redis::Value] {
    match value {
        redis::Value::Array(items) | redis::Value::Set(items) => items,
        _ => &[],
    }
}

/// `field:value` lines of `INFO` or `CLUSTER INFO`.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        line.trim()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::to_owned)
    })
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
fn settle(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + timeout;
    while Instant::now() < give_up {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

impl LocalCluster {
    /// Starts 3 primaries and 3 replicas and waits until every node says `cluster_state:ok`,
    /// every node sees the same slot owners and every replica is in sync.
    pub fn start() -> Self {
        let started = Instant::now();
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("qs-cluster-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            root,
            start_took: Duration::ZERO,
        };
        let mut taken = BTreeSet::new();
        for _ in 0..6 {
            let mut tries = 0;
            loop {
                tries += 1;
                let (port, bus_port) = free_node_ports(&taken);
                taken.insert(port);
                taken.insert(bus_port);
                let dir = cluster.root.join(port.to_string());
                std::fs::create_dir_all(&dir).unwrap();
                let mut node = Node {
                    port,
                    bus_port,
                    dir,
                    child: None,
                };
                if node.spawn() {
                    cluster.nodes.push(node);
                    break;
                }
                node.kill();
                assert!(
                    tries < 5,
                    "could not start a cluster node on a free loopback port"
                );
            }
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_settled("cluster create");
        cluster.start_took = started.elapsed();
        cluster
    }

    /// `redis+cluster://` with two seed nodes (the first two started).
    pub fn seed_url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    /// A seed URL naming every node, for clients that must find the cluster while any node
    /// is down.
    pub fn all_seeds_url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    pub fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    pub fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.port)
            .collect()
    }

    /// A connection to one node (panics if it cannot be had).
    pub fn conn(&self, port: u16) -> redis::Connection {
        connect(port).unwrap_or_else(|err| panic!("connect to cluster node {port}: {err}"))
    }

    /// A connection to any running node.
    fn any_conn(&self) -> redis::Connection {
        for port in self.running_ports() {
            if let Ok(conn) = connect(port) {
                return conn;
            }
        }
        panic!("no cluster node answers");
    }

    pub fn node_id(&self, port: u16) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.conn(port))
            .unwrap_or_else(|err| panic!("CLUSTER MYID on {port}: {err}"))
    }

    pub fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.any_conn())
            .expect("CLUSTER KEYSLOT")
    }

    /// One node's view of the shards (`CLUSTER SHARDS`, Redis 7; `CLUSTER SLOTS` before).
    pub fn shards_seen_by(&self, port: u16) -> redis::RedisResult<Vec<Shard>> {
        let mut conn = connect(port)?;
        match redis::cmd("CLUSTER")
            .arg("SHARDS")
            .query::<redis::Value>(&mut conn)
        {
            Ok(value) => Ok(parse_shards(&value)),
            // An older server without CLUSTER SHARDS.
            Err(err) if err.code() == Some("ERR") => {
                let value: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn)?;
                Ok(parse_slots(&value))
            }
            Err(err) => Err(err),
        }
    }

    /// The shards as every running node sees them, when they all agree on the slot owners and
    /// on the replicas of each owner.
    pub fn agreed_shards(&self) -> Option<Vec<Shard>> {
        type View = BTreeMap<u16, (Vec<(u16, u16)>, BTreeSet<u16>)>;
        let mut agreed: Option<View> = None;
        let mut shards = None;
        for port in self.running_ports() {
            let seen = self.shards_seen_by(port).ok()?;
            let view: View = seen
                .iter()
                .filter(|s| !s.slots.is_empty())
                .map(|s| {
                    let replicas = s.replicas.iter().map(|(p, _)| *p).collect();
                    (s.primary, (s.slots.clone(), replicas))
                })
                .collect();
            match &agreed {
                None => {
                    agreed = Some(view);
                    shards = Some(seen);
                }
                Some(first) if *first == view => {}
                Some(_) => return None,
            }
        }
        shards
    }

    /// The shards, once every running node agrees (bounded wait).
    pub fn shards(&self) -> Vec<Shard> {
        let give_up = Instant::now() + SETTLE;
        loop {
            if let Some(shards) = self.agreed_shards() {
                return shards;
            }
            assert!(
                Instant::now() < give_up,
                "the nodes did not agree on the slot owners within {SETTLE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The ports of the primaries that own slots.
    pub fn primaries(&self) -> Vec<u16> {
        self.shards()
            .iter()
            .filter(|s| !s.slots.is_empty())
            .map(|s| s.primary)
            .collect()
    }

    /// The primary owning `slot`, as every running node agrees.
    pub fn owner_of_slot(&self, slot: u16) -> u16 {
        self.shards()
            .iter()
            .find(|s| s.owns(slot))
            .unwrap_or_else(|| panic!("no owner of slot {slot}"))
            .primary
    }

    /// The primary owning the slot of `key`.
    pub fn owner_of_key(&self, key: &str) -> u16 {
        self.owner_of_slot(self.keyslot(key))
    }

    /// The replicas of a primary (online ones).
    pub fn replicas_of(&self, primary: u16) -> Vec<u16> {
        self.shards()
            .iter()
            .find(|s| s.primary == primary)
            .map(|s| {
                s.replicas
                    .iter()
                    .filter(|(_, online)| *online)
                    .map(|(p, _)| *p)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names `"<prefix><i>"` whose hash-tagged keys (`bot:{name}:…`) lie on `count` different
    /// primaries, one name per primary.
    pub fn names_on_distinct_primaries(&self, prefix: &str, count: usize) -> Vec<String> {
        let mut names = Vec::new();
        let mut owners = BTreeSet::new();
        for i in 0..1000 {
            let name = format!("{prefix}{i}");
            let owner = self.owner_of_key(&format!("bot:{{{name}}}:state"));
            if owners.insert(owner) {
                names.push(name);
                if names.len() == count {
                    return names;
                }
            }
        }
        panic!("no {count} names with prefix {prefix:?} on distinct primaries");
    }

    fn cluster_state(port: u16) -> Option<String> {
        let mut conn = connect(port).ok()?;
        let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).ok()?;
        info_field(&info, "cluster_state")
    }

    /// Whether a replica's link to its primary is up and the initial sync is done.
    fn replica_synced(port: u16) -> Option<bool> {
        let mut conn = connect(port).ok()?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn)
            .ok()?;
        match info_field(&info, "role")?.as_str() {
            "slave" => Some(
                info_field(&info, "master_link_status").as_deref() == Some("up")
                    && info_field(&info, "master_sync_in_progress").as_deref() == Some("0"),
            ),
            _ => Some(true),
        }
    }

    /// Every running node says `cluster_state:ok`, all agree on the slot owners and on who
    /// replicates whom, every slot is owned, every running replica is in sync, and no slot is
    /// left migrating or importing.
    pub fn is_settled(&self) -> bool {
        let running = self.running_ports();
        if !running
            .iter()
            .all(|&p| Self::cluster_state(p).as_deref() == Some("ok"))
        {
            return false;
        }
        if !running
            .iter()
            .all(|&p| Self::replica_synced(p) == Some(true))
        {
            return false;
        }
        let Some(shards) = self.agreed_shards() else {
            return false;
        };
        let covered: u32 = shards
            .iter()
            .flat_map(|s| s.slots.iter())
            .map(|&(lo, hi)| u32::from(hi - lo) + 1)
            .sum();
        if covered != 16384 {
            return false;
        }
        // Every running node is a primary owning slots or an online replica of one.
        let placed: BTreeSet<u16> = shards
            .iter()
            .filter(|s| !s.slots.is_empty())
            .flat_map(|s| {
                std::iter::once(s.primary).chain(
                    s.replicas
                        .iter()
                        .filter(|(_, online)| *online)
                        .map(|(p, _)| *p),
                )
            })
            .collect();
        if !running.iter().all(|p| placed.contains(p)) {
            return false;
        }
        // No open migration: CLUSTER NODES marks it as [slot->-id] / [slot-<-id].
        running.iter().all(|&p| {
            connect(p)
                .ok()
                .and_then(|mut c| {
                    redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query::<String>(&mut c)
                        .ok()
                })
                .is_some_and(|nodes| !nodes.contains("->-") && !nodes.contains("-<-"))
        })
    }

    /// Waits (bounded) until [`is_settled`](Self::is_settled); panics with the nodes' logs.
    pub fn wait_settled(&self, after: &str) {
        if settle(SETTLE, || self.is_settled()) {
            return;
        }
        let mut report = format!("the cluster did not settle within {SETTLE:?} after {after}:\n");
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let state = Self::cluster_state(node.port);
            let nodes: String = connect(node.port)
                .ok()
                .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query(&mut c).ok())
                .unwrap_or_default();
            report.push_str(&format!(
                "node {} state {state:?}\n{nodes}\nlog:\n{}\n",
                node.port,
                node.log_tail(15)
            ));
        }
        panic!("{report}");
    }

    /// Waits (bounded) until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self, timeout: Duration) -> bool {
        settle(timeout, || {
            self.running_ports()
                .iter()
                .all(|&p| Self::cluster_state(p).as_deref() == Some("ok"))
        })
    }

    /// `kill -9` of one node (reaped at once).
    pub fn kill_node(&mut self, port: u16) {
        self.node_mut(port).kill();
    }

    /// `kill -9` of a primary, then waits until a replica has taken its slots over and the
    /// cluster is ok again; returns the new owner and how long the promotion took (from the
    /// kill to every running node saying ok with the new owner).
    pub fn kill_primary_and_wait_promotion(&mut self, primary: u16) -> (u16, Duration) {
        let shards = self.shards();
        let shard = shards
            .iter()
            .find(|s| s.primary == primary)
            .unwrap_or_else(|| panic!("{primary} is not a primary"))
            .clone();
        let slot = shard.slots[0].0;
        self.kill_node(primary);
        let killed = Instant::now();
        let promoted = settle(SETTLE, || {
            self.running_ports()
                .iter()
                .all(|&p| Self::cluster_state(p).as_deref() == Some("ok"))
                && self
                    .agreed_shards()
                    .and_then(|s| s.iter().find(|s| s.owns(slot)).map(|s| s.primary))
                    .is_some_and(|owner| owner != primary)
        });
        let took = killed.elapsed();
        if !promoted {
            self.wait_settled(&format!("kill -9 of primary {primary}"));
        }
        (self.owner_of_slot(slot), took)
    }

    /// Starts a killed node again on its ports with its `nodes.conf` (its data is gone: no
    /// persistence); it rejoins as a replica. Waits until the cluster is settled.
    pub fn restart_node(&mut self, port: u16) {
        let node = self.node_mut(port);
        assert!(!node.is_running(), "node {port} is still running");
        assert!(
            node.spawn(),
            "redis-server did not come back on port {port}"
        );
        self.wait_settled(&format!("restart of node {port}"));
    }

    /// `CLUSTER FAILOVER` (the coordinated manual failover) on a replica of `primary`; waits
    /// until the replica owns the slots on every node and the old primary is its synced
    /// replica. Returns the new primary.
    pub fn failover(&self, primary: u16) -> u16 {
        let replica = *self
            .replicas_of(primary)
            .first()
            .unwrap_or_else(|| panic!("primary {primary} has no online replica"));
        let slot = self
            .shards()
            .iter()
            .find(|s| s.primary == primary)
            .unwrap()
            .slots[0]
            .0;
        // A manual failover the server gives up on (its own 5 s limit, "Manual failover timed
        // out") is asked for again, as an operator would. Redis 6.2 gives up on a failback
        // soon after a failover of the same shard: the former primary keeps its clients paused
        // for 10 s after handing over (fixed in 7.0, redis/redis#9618), and as a replica it
        // applies nothing of its new primary's stream meanwhile, so it cannot catch up.
        const ATTEMPTS: usize = 4;
        const SERVER_LIMIT: Duration = Duration::from_secs(6);
        for attempt in 1..=ATTEMPTS {
            let _: () = redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .query(&mut self.conn(replica))
                .unwrap_or_else(|err| panic!("CLUSTER FAILOVER on {replica}: {err}"));
            let done = settle(SERVER_LIMIT, || {
                self.agreed_shards()
                    .and_then(|s| s.iter().find(|s| s.owns(slot)).map(|s| s.primary))
                    == Some(replica)
            });
            if done {
                self.wait_settled(&format!("CLUSTER FAILOVER on {replica}"));
                return replica;
            }
            eprintln!(
                "CLUSTER FAILOVER on {replica}: slot {slot} not handed over within \
                 {SERVER_LIMIT:?} (attempt {attempt} of {ATTEMPTS}); asking again"
            );
        }
        panic!(
            "CLUSTER FAILOVER on {replica}: slot {slot} still not on it after {ATTEMPTS} attempts; \
             log of {replica}:\n{}",
            self.node(replica).log_tail(20)
        );
    }

    /// Whether the nodes offer atomic slot migration (`CLUSTER MIGRATESLOTS`, Valkey 9).
    pub fn offers_atomic_migration(&self) -> bool {
        let docs: redis::Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg("CLUSTER|MIGRATESLOTS")
            .query(&mut self.any_conn())
            .expect("COMMAND INFO");
        matches!(docs, redis::Value::Array(items) if items.iter().any(|i| !matches!(i, redis::Value::Nil)))
    }

    /// Moves `slot` from its owner to the primary `to` with the server's atomic slot migration
    /// (`CLUSTER MIGRATESLOTS`, Valkey 9): the target copies the slot and takes it over in one
    /// step. Waits (bounded) until every node names `to` as the owner.
    pub fn migrate_slot_atomically(&self, slot: u16, to: u16) {
        let from = self.owner_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let _: () = redis::cmd("CLUSTER")
            .arg("MIGRATESLOTS")
            .arg("SLOTSRANGE")
            .arg(slot)
            .arg(slot)
            .arg("NODE")
            .arg(self.node_id(to))
            .query(&mut self.conn(from))
            .unwrap_or_else(|err| panic!("CLUSTER MIGRATESLOTS {slot} from {from} to {to}: {err}"));
        let moved = settle(SETTLE, || {
            self.agreed_shards()
                .and_then(|s| s.iter().find(|s| s.owns(slot)).map(|s| s.primary))
                == Some(to)
        });
        if !moved {
            let jobs: redis::Value = redis::cmd("CLUSTER")
                .arg("GETSLOTMIGRATIONS")
                .query(&mut self.conn(from))
                .unwrap_or(redis::Value::Nil);
            panic!(
                "slot {slot}: not on {to} within {SETTLE:?} of CLUSTER MIGRATESLOTS; \
                 migrations on {from}: {jobs:?}\nlog of {to}:\n{}",
                self.node(to).log_tail(20)
            );
        }
        self.wait_settled(&format!("CLUSTER MIGRATESLOTS {slot} to {to}"));
    }

    /// Moves `slot` from its owner to the primary `to` by the standard procedure, `batch` keys
    /// per `MIGRATE`, sleeping `pause` between batches (the slot stays half-moved meanwhile).
    /// Returns how many keys were moved.
    pub fn migrate_slot(&self, slot: u16, to: u16, batch: usize, pause: Duration) -> usize {
        let from = self.owner_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let from_id = self.node_id(from);
        let to_id = self.node_id(to);
        let mut src = self.conn(from);
        let mut dst = self.conn(to);
        let setslot = |conn: &mut redis::Connection, how: &str, id: &str| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(how)
                .arg(id)
                .query(conn)
                .unwrap_or_else(|err| panic!("CLUSTER SETSLOT {slot} {how} {id}: {err}"));
        };
        setslot(&mut dst, "IMPORTING", &from_id);
        setslot(&mut src, "MIGRATING", &to_id);
        let mut moved = 0;
        let give_up = Instant::now() + SETTLE;
        for round in 0.. {
            assert!(
                round < 100_000 && Instant::now() < give_up,
                "slot {slot}: keys still on {from} after {round} MIGRATE rounds"
            );
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(batch)
                .query(&mut src)
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let reply: redis::RedisResult<String> = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut src);
            match reply {
                Ok(_) => moved += keys.len(),
                Err(err) => panic!("MIGRATE {keys:?} from {from} to {to}: {err}"),
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        // The destination first, then the source, then every other primary.
        setslot(&mut dst, "NODE", &to_id);
        setslot(&mut src, "NODE", &to_id);
        for port in self.primaries() {
            if port != from && port != to {
                if let Ok(mut conn) = connect(port) {
                    setslot(&mut conn, "NODE", &to_id);
                }
            }
        }
        let done = settle(SETTLE, || {
            self.agreed_shards()
                .and_then(|s| s.iter().find(|s| s.owns(slot)).map(|s| s.primary))
                == Some(to)
        });
        if !done {
            self.wait_settled(&format!("migration of slot {slot} to {to}"));
        }
        self.wait_settled(&format!("migration of slot {slot} to {to}"));
        moved
    }

    /// Whether every server process of the cluster is gone (for the harness's own test).
    pub fn pids(&self) -> Vec<i32> {
        self.nodes.iter().filter_map(Node::pid).collect()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `CLUSTER SHARDS`: per shard `slots` (flat start/end pairs) and `nodes` (maps with `port`,
/// `role`, `health`).
fn parse_shards(value: &redis::Value) -> Vec<Shard> {
    let mut shards = Vec::new();
    for shard in items(value) {
        let fields = pairs(shard);
        let mut slots = Vec::new();
        let mut primary = None;
        let mut replicas = Vec::new();
        for (name, v) in &fields {
            match name.as_str() {
                "slots" => {
                    let bounds: Vec<i64> = items(v).iter().filter_map(int).collect();
                    for pair in bounds.chunks(2) {
                        if let [lo, hi] = pair {
                            slots.push((*lo as u16, *hi as u16));
                        }
                    }
                }
                "nodes" => {
                    for node in items(v) {
                        let node_fields = pairs(node);
                        let get = |key: &str| {
                            node_fields
                                .iter()
                                .find(|(k, _)| k == key)
                                .and_then(|(_, v)| text(v))
                        };
                        let Some(port) = get("port").and_then(|p| p.parse::<u16>().ok()) else {
                            continue;
                        };
                        // Redis 7.0 says `loading` for a replica whose gossiped replication
                        // offset is still 0 (an empty primary), in sync or not: only `fail`
                        // counts as down (the harness checks the sync with INFO).
                        let online = get("health").as_deref() != Some("fail");
                        match get("role").as_deref() {
                            Some("master") if online => primary = Some(port),
                            // Valkey keeps a failed primary in its shard, still `master`,
                            // after a replica took over: it serves nothing.
                            Some("master") => replicas.push((port, false)),
                            _ => replicas.push((port, online)),
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(primary) = primary {
            shards.push(Shard {
                slots,
                primary,
                replicas,
            });
        }
    }
    shards
}

/// `CLUSTER SLOTS`: `[start, end, [ip, port, id], [replica…]…]` per range.
fn parse_slots(value: &redis::Value) -> Vec<Shard> {
    let mut by_primary: BTreeMap<u16, Shard> = BTreeMap::new();
    for range in items(value) {
        let parts = items(range);
        let (Some(lo), Some(hi)) = (parts.first().and_then(int), parts.get(1).and_then(int)) else {
            continue;
        };
        let port_of = |node: &redis::Value| items(node).get(1).and_then(int).map(|p| p as u16);
        let Some(primary) = parts.get(2).and_then(port_of) else {
            continue;
        };
        let shard = by_primary.entry(primary).or_insert_with(|| Shard {
            slots: Vec::new(),
            primary,
            replicas: Vec::new(),
        });
        shard.slots.push((lo as u16, hi as u16));
        for replica in parts.iter().skip(3).filter_map(port_of) {
            if !shard.replicas.iter().any(|(p, _)| *p == replica) {
                shard.replicas.push((replica, true));
            }
        }
    }
    by_primary.into_values().collect()
}
