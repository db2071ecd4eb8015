//! Options, their defaults (CONTRACT §1, §2) and the URL / environment rules (§6).

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::keys::validate_bot_name;

/// Where the URL comes from when none is given, in this order.
pub const URL_ENV_VARS: [&str; 2] = ["QUANTSHIFT_REDIS_URL", "REDIS_URL"];
/// The password used when the URL carries none.
pub const PASSWORD_ENV_VAR: &str = "REDIS_PASSWORD";
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";

/// Options of a [`StateManager`](crate::StateManager), built with chained setters:
///
/// ```no_run
/// use std::time::Duration;
/// let config = quantshift_core::Config::new("equity-bot")
///     .redis_url("redis://127.0.0.1:6379/0")
///     .lock_ttl(Duration::from_secs(30));
/// ```
#[derive(Clone)]
pub struct Config {
    pub bot_name: String,
    /// `None`: `QUANTSHIFT_REDIS_URL`, else `REDIS_URL`, else [`DEFAULT_URL`].
    pub redis_url: Option<String>,
    pub state_ttl: Duration,
    pub position_ttl: Duration,
    pub heartbeat_ttl: Duration,
    pub lock_ttl: Duration,
    /// `None`: two thirds of `lock_ttl`.
    pub renew_deadline: Option<Duration>,
    /// `None`: `min(1 s, lock_ttl / 10)`.
    pub poll_interval: Option<Duration>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub install_signal_handlers: bool,
    pub shutdown_timeout: Duration,
    /// Serialized values above this size are refused before anything is sent.
    pub max_payload_bytes: usize,
}

impl Config {
    pub fn new(bot_name: impl Into<String>) -> Self {
        Config {
            bot_name: bot_name.into(),
            redis_url: None,
            state_ttl: Duration::from_secs(3600),
            position_ttl: Duration::from_secs(86_400),
            heartbeat_ttl: Duration::from_secs(60),
            lock_ttl: Duration::from_secs(30),
            renew_deadline: None,
            poll_interval: None,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            install_signal_handlers: true,
            shutdown_timeout: Duration::from_secs(20),
            max_payload_bytes: 16 * 1024 * 1024,
        }
    }

    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }
    pub fn state_ttl(mut self, ttl: Duration) -> Self {
        self.state_ttl = ttl;
        self
    }
    pub fn position_ttl(mut self, ttl: Duration) -> Self {
        self.position_ttl = ttl;
        self
    }
    pub fn heartbeat_ttl(mut self, ttl: Duration) -> Self {
        self.heartbeat_ttl = ttl;
        self
    }
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }
    pub fn renew_deadline(mut self, deadline: Duration) -> Self {
        self.renew_deadline = Some(deadline);
        self
    }
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = Some(interval);
        self
    }
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }
    pub fn install_signal_handlers(mut self, install: bool) -> Self {
        self.install_signal_handlers = install;
        self
    }
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// The lease renewal period: a third of `lock_ttl`.
    pub fn renew_interval(&self) -> Duration {
        self.lock_ttl / 3
    }

    pub fn effective_renew_deadline(&self) -> Duration {
        self.renew_deadline.unwrap_or(self.lock_ttl * 2 / 3)
    }

    pub fn effective_poll_interval(&self) -> Duration {
        self.poll_interval
            .unwrap_or_else(|| (self.lock_ttl / 10).min(Duration::from_secs(1)))
    }

    /// The URL this configuration connects to, after the environment rules.
    pub fn effective_url(&self) -> String {
        self.redis_url
            .clone()
            .or_else(|| {
                URL_ENV_VARS
                    .iter()
                    .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
            })
            .unwrap_or_else(|| DEFAULT_URL.to_owned())
    }

    /// Checks names, durations and their order; every problem is a clear
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) error.
    pub fn validate(&self) -> Result<()> {
        validate_bot_name(&self.bot_name)?;
        let at_least_a_millisecond = [
            ("state_ttl", self.state_ttl),
            ("position_ttl", self.position_ttl),
            ("heartbeat_ttl", self.heartbeat_ttl),
            ("lock_ttl", self.lock_ttl),
            ("renew_deadline", self.effective_renew_deadline()),
            ("poll_interval", self.effective_poll_interval()),
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ];
        for (name, value) in at_least_a_millisecond {
            if value < Duration::from_millis(1) {
                return Err(Error::invalid(format!(
                    "{name} must be at least 1 ms, got {value:?}"
                )));
            }
        }
        let (ttl, deadline, interval) = (
            self.lock_ttl,
            self.effective_renew_deadline(),
            self.renew_interval(),
        );
        if !(ttl > deadline && deadline > interval) {
            return Err(Error::invalid(format!(
                "lease timing must satisfy lock_ttl > renew_deadline > renew interval (lock_ttl / 3); \
                 got lock_ttl={ttl:?}, renew_deadline={deadline:?}, renew interval={interval:?}"
            )));
        }
        if self.max_payload_bytes == 0 {
            return Err(Error::invalid("max_payload_bytes must be positive"));
        }
        let url = self.effective_url();
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://") || !matches!(scheme, "redis" | "rediss" | "unix" | "redis+unix") {
            return Err(Error::invalid(format!(
                "unsupported Redis URL {}: expected redis://, rediss:// or unix://",
                redact_url(&url)
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bot_name", &self.bot_name)
            .field("redis_url", &redact_url(&self.effective_url()))
            .field("lock_ttl", &self.lock_ttl)
            .field("renew_deadline", &self.effective_renew_deadline())
            .field("poll_interval", &self.effective_poll_interval())
            .field("state_ttl", &self.state_ttl)
            .field("position_ttl", &self.position_ttl)
            .field("heartbeat_ttl", &self.heartbeat_ttl)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced by `***`, safe for logs, errors and `repr()`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    // Several userinfo@host parts can stand in one authority (Sentinel lists); the
    // credentials are everything before the last '@'.
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split_once(':').map(|(user, _)| user);
            let hidden = match user {
                Some(user) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            format!("{scheme}://{hidden}{}{path}", &authority[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_every_password_form() {
        assert_eq!(
            redact_url("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://bob:s3cret@host/0"),
            "redis://bob:***@host/0"
        );
        assert_eq!(redact_url("redis://s3cret@host"), "redis://***@host");
        assert_eq!(redact_url("redis://host:1/0"), "redis://host:1/0");
        assert!(!redact_url("redis://u:p@ss@host/0").contains("p@ss"));
    }

    #[test]
    fn inverted_timing_is_refused() {
        let err = Config::new("bot")
            .redis_url("redis://127.0.0.1:1")
            .lock_ttl(Duration::from_secs(3))
            .renew_deadline(Duration::from_secs(4))
            .validate()
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert!(err.message().contains("lock_ttl > renew_deadline"));
        let err = Config::new("bot")
            .redis_url("redis://127.0.0.1:1")
            .lock_ttl(Duration::from_secs(3))
            .renew_deadline(Duration::from_millis(900))
            .validate()
            .unwrap_err();
        assert!(err.message().contains("renew interval"));
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::new("bot");
        assert_eq!(c.renew_interval(), Duration::from_secs(10));
        assert_eq!(c.effective_renew_deadline(), Duration::from_secs(20));
        assert_eq!(c.effective_poll_interval(), Duration::from_secs(1));
        let fast = Config::new("bot").lock_ttl(Duration::from_secs(2));
        assert_eq!(fast.effective_poll_interval(), Duration::from_millis(200));
    }
}
