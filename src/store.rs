//! Redis connections, reconnection, and the Lua scripts every write goes through.
//!
//! Scripts live in `src/scripts/*.lua`, are compiled into the library and called by SHA
//! (`EVALSHA`); redis-rs loads a script once when the server does not know it yet.
//!
//! A store talks either to one node (`redis://`, `rediss://`, `unix://`) or to the current
//! master of a Sentinel-monitored service (`redis+sentinel://`, `rediss+sentinel://`). In the
//! second case it asks the Sentinels for the master (`SENTINEL get-master-addr-by-name`, then
//! `ROLE` on the node named), and finds the master again after a failover: when a connection
//! fails, when a node answers `READONLY` (it became a replica), and when a Sentinel announces
//! `+switch-master`. Every change of master bumps a *generation*; the lease re-checks its
//! token on the new master before it calls itself primary again (see `lease.rs`).
//!
//! Our own small discovery is used rather than redis-rs's `sentinel` feature: its blocking
//! client connects and reads without timeouts, and a frozen Sentinel would block a call for
//! ever (CONTRACT §6 bounds every call).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{
    Client, Connection, ConnectionAddr, ConnectionInfo, ConnectionLike, IntoConnectionInfo,
    RedisConnectionInfo, RedisResult, TlsCertificates, Value,
};

use crate::clock::millis;
use crate::config::{redact_url, Config, SentinelUrl, PASSWORD_ENV_VAR};
use crate::error::{Error, ErrorKind, Result};

pub(crate) struct Scripts {
    pub lease_acquire: redis::Script,
    pub lease_renew: redis::Script,
    pub lease_release: redis::Script,
    pub fenced_set: redis::Script,
    pub positions_write: redis::Script,
    pub positions_load: redis::Script,
    pub positions_adopt: redis::Script,
}

/// The scripts' sources, in the field order of [`Scripts`].
const SCRIPT_SOURCES: [&str; 7] = [
    include_str!("scripts/lease_acquire.lua"),
    include_str!("scripts/lease_renew.lua"),
    include_str!("scripts/lease_release.lua"),
    include_str!("scripts/fenced_set.lua"),
    include_str!("scripts/positions_write.lua"),
    include_str!("scripts/positions_load.lua"),
    include_str!("scripts/positions_adopt.lua"),
];

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let [lease_acquire, lease_renew, lease_release, fenced_set, positions_write, positions_load, positions_adopt] =
        SCRIPT_SOURCES.map(redis::Script::new);
    Scripts {
        lease_acquire,
        lease_renew,
        lease_release,
        fenced_set,
        positions_write,
        positions_load,
        positions_adopt,
    }
});

/// The Sentinel channel announcing a completed failover:
/// `<service> <old ip> <old port> <new ip> <new port>`.
const SWITCH_MASTER_CHANNEL: &str = "+switch-master";
/// Reconnection backoff: doubles from the first delay up to the cap, each delay jittered.
const BACKOFF_FIRST: Duration = Duration::from_millis(25);
const BACKOFF_CAP: Duration = Duration::from_secs(1);

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
    /// The shared connection and the master generation it was opened in.
    shared: Mutex<Option<(u64, Connection)>>,
    master: Arc<MasterState>,
}

enum Target {
    Direct(Client),
    Sentinel(SentinelTarget),
}

struct SentinelTarget {
    service: String,
    sentinels: Vec<Client>,
    /// Credentials and database of the data nodes.
    node_settings: RedisConnectionInfo,
    /// `None`: plain TCP; `Some(None)`: TLS with the system roots; `Some(Some(_))`: TLS with
    /// the CA (and client pair) configured.
    tls: Option<Option<TlsCertificates>>,
}

/// Which master a Sentinel-backed store talks to; shared with the `+switch-master` watcher.
#[derive(Default)]
struct MasterState {
    inner: Mutex<MasterAddr>,
    generation: AtomicU64,
    stopping: AtomicBool,
}

#[derive(Default)]
struct MasterAddr {
    /// `None` when unknown: the next connection asks the Sentinels.
    current: Option<(String, u16)>,
    /// The last master known, to tell a change of master from finding the same one again.
    last: Option<(String, u16)>,
}

impl MasterState {
    /// The master to try first and the generation it belongs to.
    fn current(&self) -> (Option<(String, u16)>, u64) {
        let inner = self.inner.lock();
        (
            inner.current.clone(),
            self.generation.load(Ordering::Acquire),
        )
    }

    /// Records `addr` as the master; a different address than the last one is a new
    /// generation. Returns the generation `addr` belongs to.
    fn set(&self, addr: (String, u16), how: &str) -> u64 {
        let mut inner = self.inner.lock();
        if let Some(last) = inner.last.as_ref().filter(|last| **last != addr) {
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            log::warn!(
                "Redis master changed from {}:{} to {}:{} ({how}); generation {generation}",
                last.0,
                last.1,
                addr.0,
                addr.1
            );
        }
        inner.last = Some(addr.clone());
        inner.current = Some(addr);
        self.generation.load(Ordering::Acquire)
    }

    fn forget(&self) {
        self.inner.lock().current = None;
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

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
        let (target, tls) = if SentinelUrl::is_sentinel(&url) {
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
            shared: Mutex::new(None),
            master,
        })
    }

    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// Bumped each time the Redis master changes (Sentinel); always 0 for one node.
    pub fn generation(&self) -> u64 {
        self.master.generation.load(Ordering::Acquire)
    }

    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    pub fn wait_replicas(&self) -> u32 {
        self.wait_replicas
    }

    /// A new dedicated connection whose reads and writes time out after `command_timeout`.
    pub fn connect_with_timeout(&self, command_timeout: Duration) -> Result<Connection> {
        self.connect_tagged(command_timeout).map(|(_, conn)| conn)
    }

    /// Like [`connect_with_timeout`](Self::connect_with_timeout), with the master generation
    /// the connection belongs to: once [`generation`](Self::generation) moves past it, the
    /// connection may lead to a former master.
    pub fn connect_tagged(&self, command_timeout: Duration) -> Result<(u64, Connection)> {
        let (conn, generation) = match &self.target {
            Target::Direct(client) => {
                let conn = client
                    .get_connection_with_timeout(self.connect_timeout)
                    .map_err(|err| self.unavailable(err))?;
                (conn, 0)
            }
            Target::Sentinel(target) => {
                let (generation, conn) = self.connect_master(target, command_timeout)?;
                (conn, generation)
            }
        };
        conn.set_read_timeout(Some(command_timeout))
            .and_then(|()| conn.set_write_timeout(Some(command_timeout)))
            .map_err(|err| self.unavailable(err))?;
        let mut conn = conn;
        if self.wait_replicas > 0 {
            // Script calls carry a WAIT behind them: never let one meet NOSCRIPT first.
            preload_scripts(&mut conn);
        }
        Ok((generation, conn))
    }

    /// Runs `op` on the shared connection, opening it first if needed. A transport failure
    /// drops the connection, since a reply may still be in flight on it; the next call opens
    /// a fresh one. A `READONLY` reply (the node became a replica: nothing was written) makes
    /// a Sentinel-backed store find the master again and run `op` once more there; nothing
    /// else is retried here, since a write whose reply was lost may have been applied.
    pub fn run<T>(&self, mut op: impl FnMut(&mut Connection) -> RedisResult<T>) -> Result<T> {
        match self.run_once(&mut op) {
            Err(Failure::Redis(err))
                if is_read_only(&err) && matches!(self.target, Target::Sentinel(_)) =>
            {
                log::warn!(
                    "Redis at {} answered READONLY: finding the master again",
                    self.redacted_url
                );
                self.master.forget();
                self.run_once(&mut op).map_err(|failure| self.fail(failure))
            }
            other => other.map_err(|failure| self.fail(failure)),
        }
    }

    fn run_once<T>(
        &self,
        op: &mut impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> std::result::Result<T, Failure> {
        let mut slot = self.shared.lock();
        if slot
            .as_ref()
            .is_some_and(|(generation, _)| *generation != self.generation())
        {
            // Opened before the last change of master: it may lead to a former master.
            *slot = None;
        }
        let conn = match slot.as_mut() {
            Some((_, conn)) => conn,
            None => {
                let tagged = self
                    .connect_tagged(self.command_timeout)
                    .map_err(Failure::Connect)?;
                &mut slot.insert(tagged).1
            }
        };
        op(conn).map_err(|err| {
            if drops_connection(&err) || is_read_only(&err) {
                *slot = None;
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
                log::debug!("retrying a read once after: {err}");
                self.run(&op)
            }
            other => other,
        }
    }

    /// A fenced write: [`run`](Self::run), and when `wait_replicas` > 0, `WAIT` for that
    /// many replicas on the same connection, sent right behind the script call so both cost
    /// one round trip. Not confirmed within `wait_timeout`:
    /// [`NotReplicated`](ErrorKind::NotReplicated), although the master applied the write.
    pub fn write<T>(
        &self,
        mut op: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T> {
        if self.wait_replicas == 0 {
            return self.run(|conn| op(conn));
        }
        let wait = redis::cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(millis(self.wait_timeout))
            .get_packed_command();
        let (value, acked) = self.run(|conn| {
            conn.set_read_timeout(Some(self.command_timeout + self.wait_timeout))?;
            let mut behind = WaitBehind {
                conn: &mut *conn,
                wait: &wait,
                acked: None,
            };
            let value = op(&mut behind);
            let acked = behind.acked.take();
            conn.set_read_timeout(Some(self.command_timeout))?;
            let value = value?;
            let acked = match acked {
                Some(acked) => acked?,
                // The write sent no script call: WAIT on its own.
                None => self.wait(conn, self.wait_timeout, self.command_timeout)?,
            };
            Ok((value, acked))
        })?;
        if acked < i64::from(self.wait_replicas) {
            return Err(self.not_replicated(acked, self.wait_timeout));
        }
        Ok(value)
    }

    /// `WAIT wait_replicas timeout` on `conn`: the number of replicas that confirmed the
    /// connection's writes. The read timeout is raised for the wait and set back to
    /// `restore` after it.
    pub fn wait(
        &self,
        conn: &mut Connection,
        timeout: Duration,
        restore: Duration,
    ) -> RedisResult<i64> {
        // WAIT with 0 ms blocks for ever: never send it.
        let timeout_ms = millis(timeout);
        conn.set_read_timeout(Some(restore + timeout))?;
        let acked = redis::cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(timeout_ms)
            .query(conn);
        conn.set_read_timeout(Some(restore))?;
        acked
    }

    /// Whether the lease write just made on `conn` reached `wait_replicas` replicas (always
    /// true when none are required). Bounded by `timeout` as well as `wait_timeout`.
    pub fn lease_replicated(&self, conn: &mut Connection, timeout: Duration) -> RedisResult<bool> {
        if self.wait_replicas == 0 {
            return Ok(true);
        }
        let acked = self.wait(conn, self.wait_timeout.min(timeout), timeout)?;
        Ok(acked >= i64::from(self.wait_replicas))
    }

    pub fn not_replicated(&self, acked: i64, timeout: Duration) -> Error {
        Error::new(
            ErrorKind::NotReplicated,
            format!(
                "the Redis master applied the write, but only {acked} of the {} replicas \
                 required (wait_replicas) confirmed it within {timeout:?}; it may be lost if \
                 the master fails before they catch up",
                self.wait_replicas
            ),
        )
    }

    /// What is unsafe in the server's configuration for us (CONTRACT §6, issue 5): an
    /// eviction policy other than `noeviction` may evict the lease, state and positions;
    /// without persistence and without replicas to wait for, a restart loses them; and a
    /// replica refuses our writes.
    pub fn server_warnings(&self) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        match self.config_get("maxmemory-policy") {
            Ok(policy) => {
                if policy != "noeviction" {
                    warnings.push(format!(
                        "Redis maxmemory-policy is {policy:?}: under memory pressure it may evict the \
                         lease, state and positions (all carry TTLs); set maxmemory-policy noeviction"
                    ));
                }
            }
            Err(err) if err.kind() == ErrorKind::RedisUnavailable => return Err(err),
            Err(err) => warnings.push(format!(
                "cannot read Redis maxmemory-policy ({err}); make sure it is noeviction"
            )),
        }
        if self.wait_replicas == 0 {
            let persistence = self
                .config_get("appendonly")
                .and_then(|aof| Ok((aof, self.config_get("save")?)));
            match persistence {
                Ok((aof, save)) => {
                    if aof != "yes" && save.trim().is_empty() {
                        warnings.push(
                            "Redis persistence is off (appendonly no and no save rules) and \
                             wait_replicas is 0: a restart of Redis loses the lease epoch, the \
                             state and the positions; set appendonly yes, or wait for replicas"
                                .to_owned(),
                        );
                    }
                }
                Err(err) if err.kind() == ErrorKind::RedisUnavailable => return Err(err),
                Err(err) => warnings.push(format!(
                    "cannot read the Redis persistence settings ({err}); make sure appendonly is \
                     yes or wait_replicas is set"
                )),
            }
        }
        let role: Result<Vec<redis::Value>> = self.read(|conn| redis::cmd("ROLE").query(conn));
        match role {
            Ok(role) => {
                let name = role
                    .first()
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                    .unwrap_or_default();
                if name != "master" {
                    warnings.push(format!(
                        "the Redis node at {} is a {name}, not a master: it refuses writes \
                         (READONLY); point the URL at the master, or use redis+sentinel://",
                        self.redacted_url
                    ));
                }
            }
            Err(err) if err.kind() == ErrorKind::RedisUnavailable => return Err(err),
            Err(err) => warnings.push(format!("cannot read the Redis node's role ({err})")),
        }
        Ok(warnings)
    }

    fn config_get(&self, name: &str) -> Result<String> {
        let pair: Vec<String> =
            self.read(|conn| redis::cmd("CONFIG").arg("GET").arg(name).query(conn))?;
        Ok(pair.get(1).cloned().unwrap_or_default())
    }

    /// A connection to the current master: the one known if it still says `master`, else
    /// the one the Sentinels name, retried with a jittered exponential backoff for at most
    /// `connect_timeout`.
    fn connect_master(
        &self,
        target: &SentinelTarget,
        command_timeout: Duration,
    ) -> Result<(u64, Connection)> {
        let give_up = Instant::now() + self.connect_timeout;
        let mut delay = BACKOFF_FIRST;
        loop {
            let attempt = self.connect_master_once(target, command_timeout);
            match attempt {
                Ok(found) => return Ok(found),
                Err(err) => {
                    let pause = jittered(delay);
                    if Instant::now() + pause >= give_up || self.master.is_stopping() {
                        return Err(err);
                    }
                    log::debug!("no Redis master yet, retrying in {pause:?}: {err}");
                    std::thread::sleep(pause);
                    delay = (delay * 2).min(BACKOFF_CAP);
                }
            }
        }
    }

    fn connect_master_once(
        &self,
        target: &SentinelTarget,
        command_timeout: Duration,
    ) -> Result<(u64, Connection)> {
        // Each address is tried once per attempt, so a dead master that every Sentinel still
        // names costs one connect timeout, not one per Sentinel.
        let mut unusable: Vec<(String, u16)> = Vec::new();
        let (known, generation) = self.master.current();
        if let Some(addr) = known {
            match self.open_master(target, &addr, command_timeout) {
                Ok(conn) => return Ok((generation, conn)),
                Err(err) => {
                    log::info!(
                        "Redis master {}:{} is not usable ({err}); asking the Sentinels",
                        addr.0,
                        addr.1
                    );
                    self.master.forget();
                    unusable.push(addr);
                }
            }
        }
        let mut problems = Vec::new();
        for sentinel in &target.sentinels {
            let where_ = describe_addr(sentinel.get_connection_info().addr());
            let named = sentinel
                .get_connection_with_timeout(self.connect_timeout)
                .and_then(|mut conn| {
                    conn.set_read_timeout(Some(command_timeout))?;
                    conn.set_write_timeout(Some(command_timeout))?;
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(&target.service)
                        .query::<Option<(String, u16)>>(&mut conn)
                });
            let addr = match named {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    problems.push(format!("{where_} does not know {:?}", target.service));
                    continue;
                }
                Err(err) => {
                    problems.push(format!("{where_}: {}", self.describe_connect(&err)));
                    continue;
                }
            };
            if unusable.contains(&addr) {
                problems.push(format!(
                    "{where_} still names {}:{}, which is not usable",
                    addr.0, addr.1
                ));
                continue;
            }
            match self.open_master(target, &addr, command_timeout) {
                Ok(conn) => {
                    let generation = self.master.set(addr, "named by the Sentinels");
                    return Ok((generation, conn));
                }
                Err(err) => {
                    problems.push(format!(
                        "master {}:{} named by {where_}: {err}",
                        addr.0, addr.1
                    ));
                    unusable.push(addr);
                }
            }
        }
        Err(Error::unavailable(format!(
            "no Redis master found for service {:?} through the Sentinels of {}: {}",
            target.service,
            self.redacted_url,
            problems.join("; ")
        )))
    }

    /// Connects to `addr` and checks it says `master` (a Sentinel may still name a former one).
    fn open_master(
        &self,
        target: &SentinelTarget,
        addr: &(String, u16),
        command_timeout: Duration,
    ) -> std::result::Result<Connection, String> {
        let client = target.node_client(addr).map_err(|err| describe(&err))?;
        let mut conn = client
            .get_connection_with_timeout(self.connect_timeout)
            .map_err(|err| self.describe_connect(&err))?;
        conn.set_read_timeout(Some(command_timeout))
            .and_then(|()| conn.set_write_timeout(Some(command_timeout)))
            .map_err(|err| describe(&err))?;
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query(&mut conn)
            .map_err(|err| describe(&err))?;
        let name = role
            .first()
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            .unwrap_or_default();
        if name == "master" {
            Ok(conn)
        } else {
            Err(format!("the node is a {name}, not the master"))
        }
    }

    fn unavailable(&self, err: redis::RedisError) -> Error {
        Error::unavailable(format!(
            "cannot reach Redis at {}: {}",
            self.redacted_url,
            self.describe_connect(&err)
        ))
    }

    /// A connection error, spelled out when the TLS handshake failed.
    fn describe_connect(&self, err: &redis::RedisError) -> String {
        let text = describe(err);
        if !self.tls {
            return text;
        }
        let lower = text.to_ascii_lowercase();
        if lower.contains("invalid peer certificate") || lower.contains("certificate not valid") {
            format!(
                "TLS handshake failed, the server's certificate was refused ({text}); check \
                 tls_ca_file / QUANTSHIFT_TLS_CA_FILE and that the certificate names this host"
            )
        } else if lower.contains("alert") {
            format!(
                "TLS handshake failed, the server refused this client ({text}); a server that \
                 requires client certificates needs tls_cert_file and tls_key_file \
                 (QUANTSHIFT_TLS_CERT_FILE / QUANTSHIFT_TLS_KEY_FILE)"
            )
        } else if lower.contains("tls")
            || lower.contains("handshake")
            || lower.contains("certificate")
        {
            format!("TLS handshake failed ({text})")
        } else {
            text
        }
    }

    fn classify(&self, err: redis::RedisError) -> Error {
        if drops_connection(&err) {
            self.unavailable(err)
        } else {
            Error::from(err)
        }
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

/// A connection that sends a packed `WAIT` in the same write as each script call (`EVALSHA`)
/// and keeps the last `WAIT` reply: a fenced write and its replication check in one round
/// trip. Other commands (`SCRIPT LOAD` after `NOSCRIPT`) pass through.
struct WaitBehind<'a> {
    conn: &'a mut Connection,
    wait: &'a [u8],
    acked: Option<RedisResult<i64>>,
}

impl ConnectionLike for WaitBehind<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        if !is_evalsha(cmd) {
            return self.conn.req_packed_command(cmd);
        }
        let both = [cmd, self.wait].concat();
        let mut replies = self.conn.req_packed_commands(&both, 0, 2)?.into_iter();
        let (Some(reply), Some(waited)) = (replies.next(), replies.next()) else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "expected the replies of a script call and of WAIT",
            )));
        };
        self.acked = Some(redis::from_redis_value::<i64>(waited).map_err(Into::into));
        Ok(reply)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.conn.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.conn.is_open()
    }
}

/// Whether a packed command is `EVALSHA` (`*<n>\r\n$7\r\nEVALSHA\r\n...`).
fn is_evalsha(packed: &[u8]) -> bool {
    let Some(start) = packed.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    packed[start + 2..]
        .get(..13)
        .is_some_and(|head| head.eq_ignore_ascii_case(b"$7\r\nEVALSHA\r\n"))
}

/// Loads every script on a new connection, so a script call never meets `NOSCRIPT` (a new
/// master after a failover, a restarted server) and its `WAIT` is not sent twice. A failure
/// here is left to the calls themselves, which load a missing script by themselves.
fn preload_scripts(conn: &mut Connection) {
    let mut pipe = redis::pipe();
    for source in SCRIPT_SOURCES {
        pipe.cmd("SCRIPT").arg("LOAD").arg(source);
    }
    if let Err(err) = pipe.query::<Vec<String>>(conn) {
        log::debug!("could not preload the Lua scripts: {}", describe(&err));
    }
}

impl SentinelTarget {
    fn node_client(&self, addr: &(String, u16)) -> RedisResult<Client> {
        let (host, port) = addr.clone();
        let node_addr = match &self.tls {
            None => ConnectionAddr::Tcp(host, port),
            Some(_) => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
        };
        let info = node_addr
            .into_connection_info()?
            .set_redis_settings(self.node_settings.clone());
        match &self.tls {
            Some(Some(certs)) => Client::build_with_tls(info, certs.clone()),
            _ => Client::open(info),
        }
    }
}

fn sentinel_target(
    config: &Config,
    url: &SentinelUrl,
    certs: Option<TlsCertificates>,
    redacted_url: &str,
) -> Result<SentinelTarget> {
    let tls = url.tls.then_some(certs);
    let (sentinel_user, sentinel_password) = config.effective_sentinel_auth();
    let mut sentinel_settings = RedisConnectionInfo::default();
    if let Some(user) = &sentinel_user {
        sentinel_settings = sentinel_settings.set_username(user);
    }
    if let Some(password) = &sentinel_password {
        sentinel_settings = sentinel_settings.set_password(password);
    }
    let mut sentinels = Vec::with_capacity(url.sentinels.len());
    for (host, port) in &url.sentinels {
        let addr = match &tls {
            None => ConnectionAddr::Tcp(host.clone(), *port),
            Some(_) => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
        };
        let client = addr
            .into_connection_info()
            .map(|info| info.set_redis_settings(sentinel_settings.clone()))
            .and_then(|info| match &tls {
                Some(Some(certs)) => Client::build_with_tls(info, certs.clone()),
                _ => Client::open(info),
            })
            .map_err(|err| {
                Error::invalid(format!(
                    "cannot use Sentinel {host}:{port} of {redacted_url}: {}",
                    describe(&err)
                ))
            })?;
        sentinels.push(client);
    }
    let mut node_settings = RedisConnectionInfo::default().set_db(url.db);
    if let Some(user) = &url.username {
        node_settings = node_settings.set_username(user);
    }
    let password = url.password.clone().or_else(|| {
        std::env::var(PASSWORD_ENV_VAR)
            .ok()
            .filter(|p| !p.is_empty())
    });
    if let Some(password) = password {
        node_settings = node_settings.set_password(password);
    }
    Ok(SentinelTarget {
        service: url.service_name.clone(),
        sentinels,
        node_settings,
        tls,
    })
}

/// Listens on the Sentinels (one at a time, moving on when one fails) for `+switch-master`
/// about our service, and records the new master at once. Holds no reference to the store:
/// it ends when the store is dropped.
fn spawn_switch_master_watcher(
    master: Arc<MasterState>,
    sentinels: Vec<Client>,
    service: String,
    connect_timeout: Duration,
) -> Result<()> {
    std::thread::Builder::new()
        .name("quantshift-sentinel".into())
        .spawn(move || {
            let mut next = 0usize;
            let mut delay = BACKOFF_FIRST;
            while !master.is_stopping() {
                let client = &sentinels[next % sentinels.len()];
                next = next.wrapping_add(1);
                let subscribed = client
                    .get_connection_with_timeout(connect_timeout)
                    .and_then(|conn| {
                        conn.set_write_timeout(Some(connect_timeout))?;
                        Ok(conn)
                    });
                let Ok(mut conn) = subscribed else {
                    pause_unless_stopping(&master, jittered(delay));
                    delay = (delay * 2).min(BACKOFF_CAP);
                    continue;
                };
                let mut pubsub = conn.as_pubsub();
                if pubsub.subscribe(SWITCH_MASTER_CHANNEL).is_err()
                    || pubsub
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .is_err()
                {
                    pause_unless_stopping(&master, jittered(delay));
                    delay = (delay * 2).min(BACKOFF_CAP);
                    continue;
                }
                delay = BACKOFF_FIRST;
                while !master.is_stopping() {
                    match pubsub.get_message() {
                        Ok(message) => {
                            let payload: String = message.get_payload().unwrap_or_default();
                            if let Some(addr) = parse_switch_master(&payload, &service) {
                                master.set(addr, "+switch-master from a Sentinel");
                            }
                        }
                        Err(err) if err.is_timeout() => {}
                        Err(_) => break,
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|err| Error::unavailable(format!("cannot start the Sentinel watcher: {err}")))
}

fn parse_switch_master(payload: &str, service: &str) -> Option<(String, u16)> {
    let parts: Vec<&str> = payload.split_whitespace().collect();
    match parts.as_slice() {
        [name, _, _, host, port] if *name == service => {
            Some((host.to_string(), port.parse().ok()?))
        }
        _ => None,
    }
}

fn pause_unless_stopping(master: &MasterState, pause: Duration) {
    let until = Instant::now() + pause;
    while !master.is_stopping() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20).min(pause));
    }
}

/// `delay` scaled by a random factor in [0.5, 1.0), so reconnecting clients spread out.
fn jittered(delay: Duration) -> Duration {
    let random = getrandom::u32().unwrap_or(u32::MAX / 2);
    let factor = 0.5 + f64::from(random) / f64::from(u32::MAX) / 2.0;
    delay.mul_f64(factor)
}

/// Whether the error leaves the connection unusable (or in an unknown state).
pub(crate) fn drops_connection(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
}

/// A `READONLY` reply: the node is a replica now, and wrote nothing.
pub(crate) fn is_read_only(err: &redis::RedisError) -> bool {
    matches!(
        err.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
    ) || err.code() == Some("READONLY")
}

/// The error's text without anything the URL carried.
pub(crate) fn describe(err: &redis::RedisError) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else {
        err.to_string()
    }
}

fn describe_addr(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("Sentinel {host}:{port}")
        }
        other => format!("Sentinel {other}"),
    }
}

/// rustls needs a process-wide crypto provider; ours is `ring`. An application that
/// installed another one first keeps it.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The CA (and client pair) for `rediss://` from the options or the environment; `None`
/// uses the system's roots.
fn tls_certificates(config: &Config) -> Result<Option<TlsCertificates>> {
    let ca = config.effective_tls_ca_file();
    let client = config.effective_tls_client_cert();
    if ca.is_none() && client.is_none() {
        return Ok(None);
    }
    let root_cert = ca
        .as_deref()
        .map(|path| read_pem("tls_ca_file", path))
        .transpose()?;
    let client_tls = client
        .map(|(cert, key)| {
            Ok::<_, Error>(redis::ClientTlsConfig {
                client_cert: read_pem("tls_cert_file", &cert)?,
                client_key: read_pem("tls_key_file", &key)?,
            })
        })
        .transpose()?;
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|err| Error::invalid(format!("cannot read {what} {}: {err}", path.display())))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::invalid(format!(
            "{what} {} is not a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

fn connection_info(url: &str, redacted_url: &str) -> Result<ConnectionInfo> {
    let url = match url.strip_prefix("unix://") {
        // redis-rs spells the Unix-socket scheme redis+unix://; accept the common unix:// too.
        Some(path) => format!("redis+unix://{path}"),
        None => url.to_owned(),
    };
    let info = url.as_str().into_connection_info().map_err(|err| {
        Error::invalid(format!(
            "invalid Redis URL {redacted_url}: {}",
            err.category()
        ))
    })?;
    if info.redis_settings().password().is_some() {
        return Ok(info);
    }
    match std::env::var(PASSWORD_ENV_VAR) {
        Ok(password) if !password.is_empty() => {
            let settings = info.redis_settings().clone().set_password(password);
            Ok(info.set_redis_settings(settings))
        }
        _ => Ok(info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_master_notices_are_parsed_for_our_service_only() {
        assert_eq!(
            parse_switch_master("svc 127.0.0.1 6380 127.0.0.1 6381", "svc"),
            Some(("127.0.0.1".to_owned(), 6381))
        );
        assert_eq!(
            parse_switch_master("other 127.0.0.1 6380 127.0.0.1 6381", "svc"),
            None
        );
        assert_eq!(parse_switch_master("svc 127.0.0.1 6380", "svc"), None);
        assert_eq!(
            parse_switch_master("svc 127.0.0.1 6380 127.0.0.1 x", "svc"),
            None
        );
    }

    #[test]
    fn script_calls_are_recognised_in_packed_form() {
        let evalsha = redis::cmd("EVALSHA").arg("abc").arg(0).get_packed_command();
        assert!(is_evalsha(&evalsha));
        let lower = redis::cmd("evalsha").arg("abc").arg(0).get_packed_command();
        assert!(is_evalsha(&lower));
        for other in ["EVAL", "GET", "SCRIPT"] {
            assert!(!is_evalsha(
                &redis::cmd(other).arg("x").get_packed_command()
            ));
        }
        assert!(!is_evalsha(b""));
    }

    #[test]
    fn backoff_is_jittered_within_bounds() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d < Duration::from_millis(100));
        }
    }

    #[test]
    fn a_change_of_master_is_a_new_generation() {
        let state = MasterState::default();
        assert_eq!(state.set(("a".into(), 1), "test"), 0);
        assert_eq!(state.set(("a".into(), 1), "test"), 0);
        state.forget();
        assert_eq!(state.current().0, None);
        assert_eq!(state.set(("b".into(), 1), "test"), 1);
        assert_eq!(state.current(), (Some(("b".into(), 1)), 1));
    }
}
