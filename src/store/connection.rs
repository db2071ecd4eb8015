//! Connecting and reconnecting: dedicated connections with bounded connect and command
//! timeouts, the current master of a Sentinel-monitored service found again with a jittered
//! exponential backoff, TLS setup for `rediss://`, and how Redis errors are classified and
//! described (never with anything the URL carried).

use std::path::Path;
use std::time::{Duration, Instant};

use redis::{Connection, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};

use super::backoff::{jittered, BACKOFF_CAP, BACKOFF_FIRST};
use super::errors::{describe, drops_connection};
use super::nodes::NodeTemplate;
use super::scripts::preload_scripts;
use super::sentinel::SentinelTarget;
use super::{Store, Target};
use crate::config::{Config, PASSWORD_ENV_VAR};
use crate::error::{Error, ErrorKind, Result};

/// A master as a discovery source named it.
pub(super) struct Named<'a> {
    pub addr: (String, u16),
    /// What it is, with its address, for the errors (`master 10.0.0.5:6379`).
    pub what: String,
    /// Who named it (`Sentinel 10.0.0.9:26379`, `127.0.0.1:7001`).
    pub by: &'a str,
    /// How it was found, for the log of a new generation.
    pub how: &'static str,
}

impl Store {
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
                let (generation, conn) =
                    self.with_backoff(|| self.connect_master_once(target, command_timeout))?;
                (conn, generation)
            }
            Target::Cluster(target) => {
                let (generation, conn) =
                    self.with_backoff(|| self.connect_owner_once(target, command_timeout))?;
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

    /// `attempt` retried with a jittered exponential backoff for at most `connect_timeout`:
    /// finding the current master (Sentinel) or the slot's owner (cluster) again may take a
    /// failover's time.
    fn with_backoff(
        &self,
        mut attempt: impl FnMut() -> Result<(u64, Connection)>,
    ) -> Result<(u64, Connection)> {
        let give_up = Instant::now() + self.connect_timeout;
        let mut delay = BACKOFF_FIRST;
        loop {
            match attempt() {
                Ok(found) => return Ok(found),
                // A wrong URL stays wrong.
                Err(err) if err.kind() == ErrorKind::InvalidInput => return Err(err),
                Err(err) => {
                    let pause = jittered(delay);
                    if Instant::now() + pause >= give_up || self.master.is_stopping() {
                        return Err(err);
                    }
                    crate::relay::log_own!(
                        Debug,
                        "no Redis master yet, retrying in {pause:?}: {err}"
                    );
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
        if let Some(found) = self.known_master(
            &target.nodes,
            command_timeout,
            &mut unusable,
            "asking the Sentinels",
        ) {
            return Ok(found);
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
            let named = Named {
                what: format!("master {}:{}", addr.0, addr.1),
                addr,
                by: &where_,
                how: "named by the Sentinels",
            };
            if let Some(found) = self.try_named(
                &target.nodes,
                named,
                command_timeout,
                &mut unusable,
                &mut problems,
            ) {
                return Ok(found);
            }
        }
        Err(Error::unavailable(format!(
            "no Redis master found for service {:?} through the Sentinels of {}: {}",
            target.service,
            self.redacted_url,
            problems.join("; ")
        )))
    }

    /// The master `named.addr` that a Sentinel or a cluster node named: connected to and
    /// checked (unless known to be unusable in this attempt), a new generation when it says
    /// `master`; otherwise the problem is recorded and the address marked unusable.
    pub(super) fn try_named(
        &self,
        nodes: &NodeTemplate,
        named: Named<'_>,
        command_timeout: Duration,
        unusable: &mut Vec<(String, u16)>,
        problems: &mut Vec<String>,
    ) -> Option<(u64, Connection)> {
        let Named {
            addr,
            what,
            by,
            how,
        } = named;
        if unusable.contains(&addr) {
            problems.push(format!(
                "{by} still names {}:{}, which is not usable",
                addr.0, addr.1
            ));
            return None;
        }
        match self.open_master(nodes, &addr, command_timeout) {
            Ok(conn) => Some((self.master.set(addr, how), conn)),
            Err(err) => {
                problems.push(format!("{what} named by {by}: {err}"));
                unusable.push(addr);
                None
            }
        }
    }

    /// A connection to the master (or slot owner) known from before, if it still says
    /// `master`; otherwise it is forgotten and added to `unusable`, and `None` says to look
    /// for the new one (`then` says how, for the log).
    pub(super) fn known_master(
        &self,
        nodes: &NodeTemplate,
        command_timeout: Duration,
        unusable: &mut Vec<(String, u16)>,
        then: &str,
    ) -> Option<(u64, Connection)> {
        let (known, generation) = self.master.current();
        let addr = known?;
        match self.open_master(nodes, &addr, command_timeout) {
            Ok(conn) => Some((generation, conn)),
            Err(err) => {
                crate::relay::log_own!(
                    Info,
                    "Redis node {}:{} is not usable ({err}); {then}",
                    addr.0,
                    addr.1
                );
                self.master.forget();
                unusable.push(addr);
                None
            }
        }
    }

    /// A connection to the node at `addr` with both timeouts set.
    pub(super) fn open_node(
        &self,
        nodes: &NodeTemplate,
        addr: &(String, u16),
        command_timeout: Duration,
    ) -> std::result::Result<Connection, String> {
        let client = nodes.client(addr).map_err(|err| describe(&err))?;
        let conn = client
            .get_connection_with_timeout(self.connect_timeout)
            .map_err(|err| self.describe_connect(&err))?;
        conn.set_read_timeout(Some(command_timeout))
            .and_then(|()| conn.set_write_timeout(Some(command_timeout)))
            .map_err(|err| describe(&err))?;
        Ok(conn)
    }

    /// Connects to `addr` and checks it says `master` (a Sentinel or a cluster node may still
    /// name a former one).
    pub(super) fn open_master(
        &self,
        nodes: &NodeTemplate,
        addr: &(String, u16),
        command_timeout: Duration,
    ) -> std::result::Result<Connection, String> {
        let mut conn = self.open_node(nodes, addr, command_timeout)?;
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

    pub(super) fn unavailable(&self, err: redis::RedisError) -> Error {
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

    pub(super) fn classify(&self, err: redis::RedisError) -> Error {
        if drops_connection(&err) {
            self.unavailable(err)
        } else {
            Error::from(err)
        }
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
pub(super) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The CA (and client pair) for `rediss://` from the options or the environment; `None`
/// uses the system's roots.
pub(super) fn tls_certificates(config: &Config) -> Result<Option<TlsCertificates>> {
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

pub(super) fn connection_info(url: &str, redacted_url: &str) -> Result<ConnectionInfo> {
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
    fn backoff_is_jittered_within_bounds() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d < Duration::from_millis(100));
        }
    }
}
