//! Redis connections, reconnection, and the Lua scripts every write goes through.
//!
//! Scripts live in `src/scripts/*.lua`, are compiled into the library and called by SHA
//! (`EVALSHA`); redis-rs loads a script once when the server does not know it yet.

use std::sync::LazyLock;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Connection, ConnectionInfo, IntoConnectionInfo, RedisResult};

use crate::config::{redact_url, Config, PASSWORD_ENV_VAR};
use crate::error::{Error, Result};

pub(crate) struct Scripts {
    pub lease_acquire: redis::Script,
    pub lease_renew: redis::Script,
    pub lease_release: redis::Script,
    pub fenced_set: redis::Script,
    pub positions_write: redis::Script,
    pub positions_load: redis::Script,
    pub positions_adopt: redis::Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    lease_acquire: redis::Script::new(include_str!("scripts/lease_acquire.lua")),
    lease_renew: redis::Script::new(include_str!("scripts/lease_renew.lua")),
    lease_release: redis::Script::new(include_str!("scripts/lease_release.lua")),
    fenced_set: redis::Script::new(include_str!("scripts/fenced_set.lua")),
    positions_write: redis::Script::new(include_str!("scripts/positions_write.lua")),
    positions_load: redis::Script::new(include_str!("scripts/positions_load.lua")),
    positions_adopt: redis::Script::new(include_str!("scripts/positions_adopt.lua")),
});

/// Opens connections to one Redis node with bounded connect and command timeouts, and keeps
/// one shared connection for the caller's operations, re-opened after any transport failure.
pub(crate) struct Store {
    client: redis::Client,
    redacted_url: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    shared: Mutex<Option<Connection>>,
}

impl Store {
    pub fn open(config: &Config) -> Result<Self> {
        let url = config.effective_url();
        let redacted_url = redact_url(&url);
        let info = connection_info(&url, &redacted_url)?;
        let client = redis::Client::open(info).map_err(|err| {
            Error::invalid(format!(
                "cannot use Redis URL {redacted_url}: {}",
                err.category()
            ))
        })?;
        Ok(Store {
            client,
            redacted_url,
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            shared: Mutex::new(None),
        })
    }

    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// A new dedicated connection whose reads and writes time out after `command_timeout`.
    pub fn connect_with_timeout(&self, command_timeout: Duration) -> Result<Connection> {
        let conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)
            .map_err(|err| self.unavailable(err))?;
        conn.set_read_timeout(Some(command_timeout))
            .and_then(|()| conn.set_write_timeout(Some(command_timeout)))
            .map_err(|err| self.unavailable(err))?;
        Ok(conn)
    }

    pub fn connect(&self) -> Result<Connection> {
        self.connect_with_timeout(self.command_timeout)
    }

    /// Runs `op` on the shared connection, opening it first if needed. A transport failure
    /// drops the connection, since a reply may still be in flight on it; the next call opens
    /// a fresh one. Nothing is retried here: a write whose reply was lost may have been applied.
    pub fn run<T>(&self, op: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Result<T> {
        let mut slot = self.shared.lock();
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(self.connect()?),
        };
        op(conn).map_err(|err| {
            if drops_connection(&err) {
                *slot = None;
            }
            self.classify(err)
        })
    }

    /// Like [`run`](Self::run), but retried once on a fresh connection when the first attempt
    /// failed in transport: only for reads, which are safe to repeat.
    pub fn read<T>(&self, op: impl Fn(&mut Connection) -> RedisResult<T>) -> Result<T> {
        match self.run(&op) {
            Err(err) if err.kind() == crate::ErrorKind::RedisUnavailable => {
                log::debug!("retrying a read once after: {err}");
                self.run(&op)
            }
            other => other,
        }
    }

    /// What is unsafe in the server's configuration for us (CONTRACT §6): an eviction
    /// policy other than `noeviction` may evict the lease, state and positions.
    pub fn server_warnings(&self) -> Result<Vec<String>> {
        let policy: Result<Vec<String>> = self.read(|conn| {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query(conn)
        });
        let mut warnings = Vec::new();
        match policy {
            Ok(pair) => {
                let policy = pair.get(1).cloned().unwrap_or_default();
                if policy != "noeviction" {
                    warnings.push(format!(
                        "Redis maxmemory-policy is {policy:?}: under memory pressure it may evict the \
                         lease, state and positions (all carry TTLs); set maxmemory-policy noeviction"
                    ));
                }
            }
            Err(err) if err.kind() == crate::ErrorKind::RedisUnavailable => return Err(err),
            Err(err) => warnings.push(format!(
                "cannot read Redis maxmemory-policy ({err}); make sure it is noeviction"
            )),
        }
        Ok(warnings)
    }

    fn unavailable(&self, err: redis::RedisError) -> Error {
        Error::unavailable(format!(
            "cannot reach Redis at {}: {}",
            self.redacted_url,
            describe(&err)
        ))
    }

    fn classify(&self, err: redis::RedisError) -> Error {
        if drops_connection(&err) {
            self.unavailable(err)
        } else {
            Error::from(err)
        }
    }
}

/// Whether the error leaves the connection unusable (or in an unknown state).
pub(crate) fn drops_connection(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
}

/// The error's text without anything the URL carried.
pub(crate) fn describe(err: &redis::RedisError) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else {
        err.to_string()
    }
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
