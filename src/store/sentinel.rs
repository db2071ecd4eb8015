//! Sentinel discovery: which master a `redis+sentinel://` store talks to. The Sentinels are
//! asked for the master (`SENTINEL get-master-addr-by-name`, then `ROLE` on the node named),
//! and a watcher thread listens for `+switch-master` to record a new master at once. Every
//! change of master bumps a *generation*; the lease re-checks its token on the new master
//! before it calls itself primary again (see `lease`).
//!
//! Our own small discovery is used rather than redis-rs's `sentinel` feature: its blocking
//! client connects and reads without timeouts, and a frozen Sentinel would block a call for
//! ever (docs/contract.md §6 bounds every call).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};

use super::backoff::{jittered, BACKOFF_CAP, BACKOFF_FIRST};
use super::errors::describe;
use super::nodes::NodeTemplate;
use crate::config::{Config, SentinelUrl};
use crate::error::{Error, Result};

/// The Sentinel channel announcing a completed failover:
/// `<service> <old ip> <old port> <new ip> <new port>`.
const SWITCH_MASTER_CHANNEL: &str = "+switch-master";

pub(super) struct SentinelTarget {
    pub(super) service: String,
    pub(super) sentinels: Vec<Client>,
    /// Credentials, database and TLS of the data nodes.
    pub(super) nodes: NodeTemplate,
}

/// Which master a Sentinel-backed store talks to; shared with the `+switch-master` watcher.
#[derive(Default)]
pub(super) struct MasterState {
    inner: Mutex<MasterAddr>,
    pub(super) generation: AtomicU64,
    pub(super) stopping: AtomicBool,
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
    pub(super) fn current(&self) -> (Option<(String, u16)>, u64) {
        let inner = self.inner.lock();
        (
            inner.current.clone(),
            self.generation.load(Ordering::Acquire),
        )
    }

    /// Records `addr` as the master; a different address than the last one is a new
    /// generation. Returns the generation `addr` belongs to.
    pub(super) fn set(&self, addr: (String, u16), how: &str) -> u64 {
        let mut inner = self.inner.lock();
        if let Some(last) = inner.last.as_ref().filter(|last| **last != addr) {
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            crate::relay::log_own!(
                Warn,
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

    pub(super) fn forget(&self) {
        self.inner.lock().current = None;
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

pub(super) fn sentinel_target(
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
    let nodes = NodeTemplate::new(
        url.db,
        url.username.as_deref(),
        url.password.as_deref(),
        tls,
    );
    Ok(SentinelTarget {
        service: url.service_name.clone(),
        sentinels,
        nodes,
    })
}

/// Listens on the Sentinels (one at a time, moving on when one fails) for `+switch-master`
/// about our service, and records the new master at once. Holds no reference to the store:
/// it ends when the store is dropped.
pub(super) fn spawn_switch_master_watcher(
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
