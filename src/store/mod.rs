//! The store: the one place the library talks to Redis. A store talks to one node
//! (`redis://`, `rediss://`, `unix://`), to the current master of a Sentinel-monitored
//! service (`redis+sentinel://`, `rediss+sentinel://`), or to the primary that owns the bot's
//! slot in a Redis Cluster (`redis+cluster://`, `rediss+cluster://`), and finds the master
//! or owner again after a failover: when a connection fails, when a node answers `READONLY`
//! (it became a replica) or `MOVED` (the slot moved), and when a Sentinel announces
//! `+switch-master`. `ASK` (a slot being migrated) is followed for one command, `TRYAGAIN`
//! and `CLUSTERDOWN` are retried with a backoff within the command timeout: none of these
//! replies ran the command, so nothing is written twice.
//!
//! This module is the facade (open, run/read/write, the server's configuration checks); the
//! parts live beside it: `connection` (connecting, reconnection, TLS, error classification),
//! `sentinel` (master discovery and generations), `cluster` (the slot owner's discovery),
//! `nodes` (reaching a node found at run time), `scripts` (the Lua script registry),
//! `tracked` (connections whose reads Redis tracks) and `wait` (`WAIT` for replicas).

mod backoff;
mod cluster;
mod connection;
mod errors;
mod nodes;
mod report;
mod scripts;
mod sentinel;
mod tracked;
mod wait;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{Client, Connection, ConnectionAddr, RedisResult};

pub(crate) use errors::{describe, drops_connection, is_read_only};
pub(crate) use scripts::SCRIPTS;
pub(crate) use tracked::{Invalidated, TrackedConnection, TrackingRefused};

use crate::clock::millis;
use crate::config::{redact_url, ClusterUrl, Config, SentinelUrl};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::Keys;
use backoff::jittered;
use cluster::{cluster_target, parse_redirect_addr, Addr, ClusterTarget};
use connection::{connection_info, install_crypto_provider, tls_certificates};
pub use report::{warning_kind, ServerReport, ServerWarning, WarningKind};
use sentinel::{sentinel_target, spawn_switch_master_watcher, MasterState, SentinelTarget};

/// Opens connections with bounded connect and command timeouts, and keeps one shared
/// connection for the caller's operations, re-opened after any transport failure or change
/// of master.
pub(crate) struct Store {
    target: Target,
    redacted_url: String,
    tls: bool,
    connect_timeout: Duration,
    command_timeout: Duration,
    wait_replicas: u32,
    wait_timeout: Duration,
    /// The shared connection, the master generation it was opened in, and whether the last
    /// one was dropped because of an error.
    shared: Mutex<SharedConnection>,
    /// How many times the shared connection was opened again after an error dropped it.
    reconnections: AtomicU64,
    master: Arc<MasterState>,
}

/// The connection [`Store::run`] uses.
#[derive(Default)]
struct SharedConnection {
    /// `None` until the next call opens one.
    open: Option<(u64, Connection)>,
    /// An error dropped the last connection: opening the next one is a reconnection.
    lost_to_error: bool,
}

enum Target {
    Direct(Client),
    Sentinel(SentinelTarget),
    Cluster(ClusterTarget),
}

/// What a Redis error reply asks of the caller. None of these replies ran the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// An ordinary error (or one this kind of store cannot act on).
    No,
    /// The master or slot owner changed (`READONLY`, `MOVED`): recorded; connect again.
    Moved,
    /// The slot is being migrated and the keys are already at this node: send `ASKING` and
    /// the command there, once.
    Ask(Addr),
    /// `TRYAGAIN` (keys of a command split by a migration) or `CLUSTERDOWN`: try again soon.
    Later,
}

/// Attempts of one call across `MOVED` / `ASK` (a slot moves rarely; a loop is a bug).
const MAX_REDIRECTS: u32 = 5;
/// First pause before a `TRYAGAIN` / `CLUSTERDOWN` retry; doubles up to the command timeout.
const RETRY_FIRST: Duration = Duration::from_millis(10);

impl Store {
    pub fn open(config: &Config) -> Result<Self> {
        let url = config.effective_url();
        let redacted_url = redact_url(&url);
        let certs = if url.starts_with("rediss") {
            install_crypto_provider();
            tls_certificates(config)?
        } else {
            None
        };
        let master = Arc::new(MasterState::default());
        let (target, tls) = if ClusterUrl::is_cluster(&url) {
            let parsed = ClusterUrl::parse(&url)?;
            // Every key of the bot has the state key's slot in the hash-tagged layout.
            let layout = config.effective_key_layout()?;
            let slot_key = Keys::with_layout(&config.bot_name, layout).state;
            let tls = parsed.tls;
            (
                Target::Cluster(cluster_target(&parsed, slot_key, certs)),
                tls,
            )
        } else if SentinelUrl::is_sentinel(&url) {
            let parsed = SentinelUrl::parse(&url)?;
            let target = sentinel_target(config, &parsed, certs, &redacted_url)?;
            spawn_switch_master_watcher(
                Arc::clone(&master),
                target.sentinels.clone(),
                target.service.clone(),
                config.connect_timeout,
            )?;
            (Target::Sentinel(target), parsed.tls)
        } else {
            let info = connection_info(&url, &redacted_url)?;
            let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
            let client = match certs {
                Some(certs) if tls => Client::build_with_tls(info, certs),
                _ => Client::open(info),
            }
            .map_err(|err| {
                Error::invalid(format!(
                    "cannot use Redis URL {redacted_url}: {}",
                    describe(&err)
                ))
            })?;
            (Target::Direct(client), tls)
        };
        Ok(Store {
            target,
            redacted_url,
            tls,
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            wait_replicas: config.wait_replicas,
            wait_timeout: config.wait_timeout,
            shared: Mutex::new(SharedConnection::default()),
            reconnections: AtomicU64::new(0),
            master,
        })
    }

    /// The read timeout of the shared connection ([`run`](Self::run)).
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// Bumped each time the node serving the bot changes (a new Sentinel master, a new
    /// owner of the bot's cluster slot); always 0 for one node.
    pub fn generation(&self) -> u64 {
        self.master.generation.load(Ordering::Acquire)
    }

    /// Runs `op` on the shared connection, opening it first if needed. A transport failure
    /// drops the connection, since a reply may still be in flight on it; the next call opens
    /// a fresh one. A reply saying the master or slot owner changed (`READONLY`, `MOVED`),
    /// that the slot is being migrated (`ASK`) or that the cluster cannot serve it yet
    /// (`TRYAGAIN`, `CLUSTERDOWN`) ran nothing, so `op` runs again where and when it should;
    /// nothing else is retried here, since a write whose reply was lost may have been applied.
    pub fn run<T>(&self, mut op: impl FnMut(&mut Connection) -> RedisResult<T>) -> Result<T> {
        let give_up = Instant::now() + self.command_timeout;
        let mut pause = RETRY_FIRST;
        let mut redirects = 0;
        let mut ask = None;
        loop {
            let outcome = match ask.take() {
                Some(addr) => self.ask(&addr, &mut op).map_err(Failure::Redis),
                None => self.run_once(&mut op),
            };
            let Err(Failure::Redis(err)) = &outcome else {
                return outcome.map_err(|failure| self.fail(failure));
            };
            match self.redirect_of(err) {
                Redirect::Moved if redirects < MAX_REDIRECTS => redirects += 1,
                Redirect::Ask(addr) if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    ask = Some(addr);
                }
                Redirect::Later if Instant::now() + pause < give_up => {
                    crate::relay::log_own!(
                        Debug,
                        "Redis Cluster asked to try again: {}",
                        describe(err)
                    );
                    std::thread::sleep(jittered(pause));
                    pause *= 2;
                }
                _ => return outcome.map_err(|failure| self.fail(failure)),
            }
        }
    }

    /// Whether this store talks to a Redis Cluster (each bot served by its slot's owner).
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Every key matching `pattern`: on the node, or on every primary of a cluster (a SCAN:
    /// operator use only, never on a bot's path).
    pub fn scan_keys(&self, pattern: &str) -> Result<Vec<String>> {
        match &self.target {
            Target::Cluster(target) => self.scan_cluster(target, pattern),
            _ => self.read(|conn| scan(conn, pattern)),
        }
    }

    /// What `err` asks of the caller, with a change of master or owner recorded (the next
    /// connection goes to the new one, a new generation).
    pub(crate) fn redirect_of(&self, err: &redis::RedisError) -> Redirect {
        let cluster = matches!(self.target, Target::Cluster(_));
        let server = match err.kind() {
            redis::ErrorKind::Server(kind) => Some(kind),
            _ => None,
        };
        use redis::ServerErrorKind as Kind;
        match server {
            _ if is_read_only(err) && !matches!(self.target, Target::Direct(_)) => {
                crate::relay::log_own!(
                    Warn,
                    "Redis at {} answered READONLY: finding the master again",
                    self.redacted_url
                );
                self.master.forget();
                Redirect::Moved
            }
            Some(Kind::Moved) => {
                let Target::Cluster(target) = &self.target else {
                    return Redirect::No;
                };
                let moved = err.redirect_node().and_then(|(addr, slot)| {
                    // Only the bot's own slot says where the bot is served now.
                    (target.slot() == Some(slot)).then(|| parse_redirect_addr(addr))?
                });
                match moved {
                    Some(addr) => {
                        self.master.set(addr, "MOVED");
                    }
                    None => self.master.forget(),
                }
                Redirect::Moved
            }
            Some(Kind::Ask) if cluster => {
                match err
                    .redirect_node()
                    .and_then(|(addr, _)| parse_redirect_addr(addr))
                {
                    Some(addr) => Redirect::Ask(addr),
                    None => Redirect::Later,
                }
            }
            Some(Kind::TryAgain) if cluster => Redirect::Later,
            Some(Kind::ClusterDown) if cluster => {
                // The owner may be failing over: read the map again on the next connection.
                self.master.forget();
                Redirect::Later
            }
            _ => Redirect::No,
        }
    }

    /// Runs `op` once on a new connection to `addr` behind `ASKING` (a slot being migrated
    /// whose keys already are at `addr`). The scripts are loaded first, so that `op`'s first
    /// command is the one `ASKING` admits.
    pub(crate) fn ask<T>(
        &self,
        addr: &Addr,
        op: &mut impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let Target::Cluster(target) = &self.target else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "ASK outside a cluster",
            )));
        };
        let mut conn = self
            .open_node(&target.nodes, addr, self.command_timeout)
            .map_err(|why| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("cluster node {}:{} (ASK): {why}", addr.0, addr.1),
                ))
            })?;
        scripts::preload_scripts(&mut conn);
        redis::cmd("ASKING").query::<()>(&mut conn)?;
        op(&mut conn)
    }

    fn run_once<T>(
        &self,
        op: &mut impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> std::result::Result<T, Failure> {
        let mut shared = self.shared.lock();
        if shared
            .open
            .as_ref()
            .is_some_and(|(generation, _)| *generation != self.generation())
        {
            // Opened before the last change of master: it may lead to a former master.
            shared.open = None;
        }
        let shared = &mut *shared;
        let conn = match shared.open.as_mut() {
            Some((_, conn)) => conn,
            None => {
                let tagged = self
                    .connect_tagged(self.command_timeout)
                    .map_err(Failure::Connect)?;
                if std::mem::take(&mut shared.lost_to_error) {
                    self.reconnections.fetch_add(1, Ordering::AcqRel);
                }
                &mut shared.open.insert(tagged).1
            }
        };
        op(conn).map_err(|err| {
            if drops_connection(&err)
                || is_read_only(&err)
                || matches!(
                    err.kind(),
                    redis::ErrorKind::Server(
                        redis::ServerErrorKind::Moved | redis::ServerErrorKind::ClusterDown
                    )
                )
            {
                shared.open = None;
                shared.lost_to_error = true;
            }
            Failure::Redis(err)
        })
    }

    fn fail(&self, failure: Failure) -> Error {
        match failure {
            Failure::Connect(err) => err,
            Failure::Redis(err) => self.classify(err),
        }
    }

    /// Like [`run`](Self::run), but retried once on a fresh connection when the first attempt
    /// failed in transport: only for reads, which are safe to repeat.
    pub fn read<T>(&self, op: impl Fn(&mut Connection) -> RedisResult<T>) -> Result<T> {
        match self.run(&op) {
            Err(err) if err.kind() == ErrorKind::RedisUnavailable => {
                crate::relay::log_own!(Debug, "retrying a read once after: {err}");
                self.run(&op)
            }
            other => other,
        }
    }

    /// Runs one fenced write (a script) and, with `wait_replicas` > 0, its `WAIT` in the same
    /// pipeline: one round trip. `NotReplicated` when fewer replicas confirmed it in time.
    pub fn write_script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        if self.wait_replicas == 0 {
            return self.run(|conn| invocation.invoke(conn));
        }
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation)
            .cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(millis(self.wait_timeout));
        let (value, acked): (redis::Value, i64) = self.run(|conn| {
            conn.set_read_timeout(Some(self.command_timeout + self.wait_timeout))?;
            let mut outcome = pipe.query(conn);
            if matches!(&outcome, Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
            {
                // Not run, so nothing to wait for yet: load it and send both again.
                invocation.load(conn)?;
                outcome = pipe.query(conn);
            }
            conn.set_read_timeout(Some(self.command_timeout))?;
            outcome
        })?;
        if acked < i64::from(self.wait_replicas) {
            return Err(self.not_replicated(acked, self.wait_timeout));
        }
        Ok(redis::from_redis_value(value).map_err(redis::RedisError::from)?)
    }
}

/// Every key matching `pattern` on the node of `conn`, in batches.
pub(crate) fn scan(conn: &mut Connection, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        found.extend(batch);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Ends the `+switch-master` watcher within one read timeout.
        self.master.stopping.store(true, Ordering::Release);
    }
}

enum Failure {
    Connect(Error),
    Redis(redis::RedisError),
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use super::*;

    /// A throwaway `redis-server` on a free loopback port, killed on drop.
    struct Server {
        port: u16,
        child: Child,
    }

    impl Server {
        fn start() -> Server {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            let server = Server { port, child };
            let give_up = Instant::now() + Duration::from_secs(10);
            while server.client().get_connection().is_err() {
                assert!(Instant::now() < give_up, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            server
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        fn client(&self) -> Client {
            Client::open(self.url()).expect("a loopback Redis URL")
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn ping(store: &Store) -> Result<String> {
        store.run(|conn| redis::cmd("PING").query(conn))
    }

    #[test]
    fn the_shared_connection_counts_reopenings_after_an_error_only() {
        let server = Server::start();
        let config = Config::new("store-test")
            .redis_url(server.url())
            .connect_timeout(Duration::from_millis(500))
            .command_timeout(Duration::from_millis(500));
        let store = Store::open(&config).expect("open the store");
        assert_eq!(ping(&store).expect("first ping"), "PONG");
        assert_eq!(
            store.reconnections.load(Ordering::Acquire),
            0,
            "the first open is no reconnection"
        );
        // A server error leaves the connection usable: not dropped, not reopened.
        let refused: Result<()> = store.run(|conn| redis::cmd("NO-SUCH-COMMAND").query(conn));
        assert!(refused.is_err());
        assert_eq!(ping(&store).expect("ping after a server error"), "PONG");
        assert_eq!(store.reconnections.load(Ordering::Acquire), 0);

        for expected in 1..=2 {
            let mut admin = server.client().get_connection().expect("admin connection");
            let killed: i64 = redis::cmd("CLIENT")
                .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
                .query(&mut admin)
                .expect("CLIENT KILL");
            assert!(killed >= 1, "the store's connection was killed");
            let lost = ping(&store).expect_err("the killed connection fails");
            assert_eq!(lost.kind(), ErrorKind::RedisUnavailable);
            assert_eq!(
                store.reconnections.load(Ordering::Acquire),
                expected - 1,
                "not reopened yet"
            );
            assert_eq!(ping(&store).expect("ping on a new connection"), "PONG");
            assert_eq!(store.reconnections.load(Ordering::Acquire), expected);
            assert_eq!(ping(&store).expect("ping again"), "PONG");
            assert_eq!(
                store.reconnections.load(Ordering::Acquire),
                expected,
                "no reopening while it works"
            );
        }
    }
}
