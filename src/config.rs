//! Options, their defaults (docs/contract.md §1, §2) and which URL a manager uses, from the
//! argument or the environment (§6); the URL grammar itself is `crate::url`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::keys::{validate_bot_name_for, KeyLayout};
// The URL grammar lives in `crate::url`; its types stay reachable here, where they were.
pub use crate::url::{
    redact_url, ClusterUrl, SentinelUrl, DEFAULT_REDIS_PORT, DEFAULT_SENTINEL_PORT,
};

/// Where the URL comes from when none is given, in this order.
pub const URL_ENV_VARS: [&str; 2] = ["QUANTSHIFT_REDIS_URL", "REDIS_URL"];
/// The password used when the URL carries none.
pub const PASSWORD_ENV_VAR: &str = "REDIS_PASSWORD";
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";
/// Credentials for the Sentinels, when they differ from the data nodes' (see
/// [`Config::sentinel_password`]).
pub const SENTINEL_USERNAME_ENV_VAR: &str = "QUANTSHIFT_SENTINEL_USERNAME";
pub const SENTINEL_PASSWORD_ENV_VAR: &str = "QUANTSHIFT_SENTINEL_PASSWORD";
/// PEM files for `rediss://` when [`Config::tls_ca_file`] (and the client pair) are not set.
pub const TLS_CA_FILE_ENV_VAR: &str = "QUANTSHIFT_TLS_CA_FILE";
pub const TLS_CERT_FILE_ENV_VAR: &str = "QUANTSHIFT_TLS_CERT_FILE";
pub const TLS_KEY_FILE_ENV_VAR: &str = "QUANTSHIFT_TLS_KEY_FILE";
/// The port of a Sentinel given without one.
/// The default `failover_tolerance`: the longest Redis stall or network blip that never
/// moves the lease (docs/failover.md says how it was chosen).
pub const DEFAULT_FAILOVER_TOLERANCE: Duration = Duration::from_millis(200);

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
    /// Replicas that must confirm the lease and every fenced write (`WAIT`); 0 waits for none.
    /// A write not confirmed within `wait_timeout` fails with
    /// [`NotReplicated`](crate::ErrorKind::NotReplicated) (the master has applied it).
    pub wait_replicas: u32,
    pub wait_timeout: Duration,
    /// PEM file of the CA that signed the server certificate (`rediss://`); `None`:
    /// `QUANTSHIFT_TLS_CA_FILE`, else the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for servers that require them (`tls-auth-clients`);
    /// `None`: `QUANTSHIFT_TLS_CERT_FILE` / `QUANTSHIFT_TLS_KEY_FILE`.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Credentials sent to the Sentinels of a `redis+sentinel://` URL (the URL's are for the
    /// data nodes); `None`: `QUANTSHIFT_SENTINEL_USERNAME` / `QUANTSHIFT_SENTINEL_PASSWORD`,
    /// else no `AUTH` to the Sentinels.
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    /// Fast failover (docs/contract.md §2): the primary renews every 100 ms and is primary only
    /// until `100 ms + failover_tolerance` after the start of its last successful renewal,
    /// so a standby takes over about that long (plus a 1 % clock margin and one look) after
    /// a primary stops renewing, on any Redis. Off: renewals every `lock_ttl / 3`, and a
    /// standby takes over `renew_deadline` (plus the margin) after the last one.
    pub fast_failover: bool,
    /// With fast failover: how long a Redis stall or network blip may last without moving
    /// the lease (default 200 ms). Longer tolerates longer stalls; failover takes longer by
    /// as much (docs/failover.md).
    pub failover_tolerance: Duration,
    /// How the bot's keys are named; `None`: hash-tagged with a cluster URL
    /// (`redis+cluster://`), plain otherwise (the seed's layout, so deployed bots keep their
    /// keys). The plain layout cannot run on a cluster.
    pub key_layout: Option<KeyLayout>,
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
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            sentinel_username: None,
            sentinel_password: None,
            fast_failover: true,
            failover_tolerance: DEFAULT_FAILOVER_TOLERANCE,
            key_layout: None,
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
    pub fn wait_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = replicas;
        self
    }
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }
    pub fn fast_failover(mut self, enabled: bool) -> Self {
        self.fast_failover = enabled;
        self
    }

    pub fn failover_tolerance(mut self, tolerance: Duration) -> Self {
        self.failover_tolerance = tolerance;
        self
    }
    pub fn key_layout(mut self, layout: KeyLayout) -> Self {
        self.key_layout = Some(layout);
        self
    }
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert_file = Some(cert.into());
        self.tls_key_file = Some(key.into());
        self
    }
    pub fn sentinel_username(mut self, username: impl Into<String>) -> Self {
        self.sentinel_username = Some(username.into());
        self
    }
    pub fn sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// `tls_ca_file`, else `QUANTSHIFT_TLS_CA_FILE`.
    pub fn effective_tls_ca_file(&self) -> Option<PathBuf> {
        self.tls_ca_file
            .clone()
            .or_else(|| env_nonempty(TLS_CA_FILE_ENV_VAR).map(PathBuf::from))
    }

    /// The client certificate and key, from the options else from the environment.
    pub fn effective_tls_client_cert(&self) -> Option<(PathBuf, PathBuf)> {
        let cert = self
            .tls_cert_file
            .clone()
            .or_else(|| env_nonempty(TLS_CERT_FILE_ENV_VAR).map(PathBuf::from));
        let key = self
            .tls_key_file
            .clone()
            .or_else(|| env_nonempty(TLS_KEY_FILE_ENV_VAR).map(PathBuf::from));
        cert.zip(key)
    }

    /// The Sentinels' username and password, from the options else from the environment.
    pub fn effective_sentinel_auth(&self) -> (Option<String>, Option<String>) {
        (
            self.sentinel_username
                .clone()
                .or_else(|| env_nonempty(SENTINEL_USERNAME_ENV_VAR)),
            self.sentinel_password
                .clone()
                .or_else(|| env_nonempty(SENTINEL_PASSWORD_ENV_VAR)),
        )
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

    /// The key layout in use: the one set, else hash-tagged for a cluster URL and plain
    /// otherwise. A plain layout set with a cluster URL is an `InvalidInput` error.
    pub fn effective_key_layout(&self) -> Result<KeyLayout> {
        let cluster = ClusterUrl::is_cluster(&self.effective_url());
        match self.key_layout {
            Some(KeyLayout::Plain) if cluster => Err(Error::invalid(
                "key_layout \"plain\" cannot run on a Redis Cluster (a bot's keys would scatter \
                 over hash slots and its scripts fail with CROSSSLOT): use \"hash_tagged\", the \
                 default with a redis+cluster:// URL, after moving the keys with \
                 `quantshift-state layout move`",
            )),
            Some(layout) => Ok(layout),
            None if cluster => Ok(KeyLayout::HashTagged),
            None => Ok(KeyLayout::Plain),
        }
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
        validate_bot_name_for(&self.bot_name, self.effective_key_layout()?)?;
        // Checked first: larger values overflow the clock arithmetic (`Instant + Duration`,
        // `lock_ttl * 2 / 3`) or the millisecond expiries Redis accepts.
        let given = [
            ("state_ttl", Some(self.state_ttl)),
            ("position_ttl", Some(self.position_ttl)),
            ("heartbeat_ttl", Some(self.heartbeat_ttl)),
            ("lock_ttl", Some(self.lock_ttl)),
            ("renew_deadline", self.renew_deadline),
            ("poll_interval", self.poll_interval),
            ("connect_timeout", Some(self.connect_timeout)),
            ("command_timeout", Some(self.command_timeout)),
            ("wait_timeout", Some(self.wait_timeout)),
            ("shutdown_timeout", Some(self.shutdown_timeout)),
            ("failover_tolerance", Some(self.failover_tolerance)),
        ];
        for (name, value) in given {
            if let Some(value) = value.filter(|v| *v > MAX_DURATION) {
                return Err(Error::invalid(format!(
                    "{name} must be at most {} days, got {value:?}",
                    MAX_DURATION.as_secs() / 86_400
                )));
            }
        }
        let at_least_a_millisecond = [
            ("state_ttl", self.state_ttl),
            ("position_ttl", self.position_ttl),
            ("heartbeat_ttl", self.heartbeat_ttl),
            ("lock_ttl", self.lock_ttl),
            ("renew_deadline", self.effective_renew_deadline()),
            ("poll_interval", self.effective_poll_interval()),
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("wait_timeout", self.wait_timeout),
            ("failover_tolerance", self.failover_tolerance),
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
        if self.wait_replicas > MAX_WAIT_REPLICAS {
            return Err(Error::invalid(format!(
                "wait_replicas must be at most {MAX_WAIT_REPLICAS}, got {}",
                self.wait_replicas
            )));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(Error::invalid(
                "tls_cert_file and tls_key_file go together: give both or neither",
            ));
        }
        let url = self.effective_url();
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://")
            || !matches!(
                scheme,
                "redis"
                    | "rediss"
                    | "unix"
                    | "redis+unix"
                    | "redis+sentinel"
                    | "rediss+sentinel"
                    | "redis+cluster"
                    | "rediss+cluster"
            )
        {
            return Err(Error::invalid(format!(
                "unsupported Redis URL {}: expected redis://, rediss://, unix://, \
                 redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://",
                redact_url(&url)
            )));
        }
        if SentinelUrl::is_sentinel(&url) {
            SentinelUrl::parse(&url)?;
        }
        if ClusterUrl::is_cluster(&url) {
            ClusterUrl::parse(&url)?;
        }
        let tls_url = matches!(scheme, "rediss" | "rediss+sentinel" | "rediss+cluster");
        if !tls_url && (self.tls_ca_file.is_some() || self.tls_cert_file.is_some()) {
            return Err(Error::invalid(format!(
                "TLS files are set but the Redis URL {} does not use TLS (use rediss://)",
                redact_url(&url)
            )));
        }
        Ok(())
    }
}

/// The longest duration accepted for any option: ten years.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Beyond any real deployment; a larger number is a mistake (a timeout passed as replicas).
const MAX_WAIT_REPLICAS: u32 = 64;

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
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
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("fast_failover", &self.fast_failover)
            .field("failover_tolerance", &self.failover_tolerance)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("sentinel_username", &self.sentinel_username)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "***"),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_parse_and_pick_the_hash_tagged_layout() {
        let url = ClusterUrl::parse("redis+cluster://bob:p%40ss@h1:7001,h2,[::1]:7003").unwrap();
        assert!(!url.tls);
        assert_eq!(
            url.seeds,
            vec![
                ("h1".to_owned(), 7001),
                ("h2".to_owned(), DEFAULT_REDIS_PORT),
                ("::1".to_owned(), 7003)
            ]
        );
        assert_eq!(url.username.as_deref(), Some("bob"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert!(!format!("{url:?}").contains("p@ss"));
        let url = ClusterUrl::parse("rediss+cluster://pw@127.0.0.1:7000/0").unwrap();
        assert!(url.tls && url.password.as_deref() == Some("pw") && url.username.is_none());
        for bad in [
            "redis+cluster://",
            "redis+cluster://h1,,h2",
            "redis+cluster://h1:0",
            "redis+cluster://h1/1",
            "redis+cluster://h1?x=1",
        ] {
            let err = ClusterUrl::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid cluster URL"), "{err}");
        }
        let config = Config::new("alpha").redis_url("redis+cluster://127.0.0.1:7000");
        config.validate().unwrap();
        assert_eq!(
            config.effective_key_layout().unwrap(),
            KeyLayout::HashTagged
        );
        let err = config
            .clone()
            .key_layout(KeyLayout::Plain)
            .validate()
            .expect_err("plain layout on a cluster");
        assert!(err.to_string().contains("CROSSSLOT"), "{err}");
        let err = Config::new("a{b}")
            .redis_url("redis+cluster://127.0.0.1:7000")
            .validate()
            .expect_err("braces in the name");
        assert!(err.to_string().contains("hash tag"), "{err}");
        let single = Config::new("a{b}").redis_url("redis://127.0.0.1:1");
        assert_eq!(single.effective_key_layout().unwrap(), KeyLayout::Plain);
        single.validate().unwrap();
        assert!(single.key_layout(KeyLayout::HashTagged).validate().is_err());
    }

    #[test]
    fn malformed_sentinel_urls_are_clear_errors_without_the_password() {
        for (url, expected) in [
            ("redis+sentinel://h1", "service name"),
            ("redis+sentinel://h1/", "service name"),
            ("redis+sentinel:///svc", "empty Sentinel address"),
            ("redis+sentinel://h1,,h2/svc", "empty Sentinel address"),
            ("redis+sentinel://h1:0/svc", "port"),
            ("redis+sentinel://h1:99999/svc", "port"),
            ("redis+sentinel://h1:x/svc", "port"),
            ("redis+sentinel://[::1/svc", "unclosed"),
            ("redis+sentinel://h1/svc/-1", "database"),
            ("redis+sentinel://h1/svc/abc", "database"),
            ("redis+sentinel://h1/svc/0/extra", "service_name[/db]"),
            ("redis+sentinel://h1/svc?sentinel_password=x", "query"),
            ("redis+sentinel://:s3cret%zz@h1/svc", "%-escape"),
        ] {
            let err = Config::new("bot").redis_url(url).validate().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{url}");
            assert!(err.message().contains(expected), "{url}: {err}");
            assert!(!err.message().contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn durability_and_tls_options_are_checked() {
        let c = Config::new("bot");
        assert_eq!(c.wait_replicas, 0);
        assert_eq!(c.wait_timeout, Duration::from_secs(1));
        let err = Config::new("bot")
            .redis_url("redis://127.0.0.1:1")
            .wait_replicas(1)
            .wait_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(err.message().contains("wait_timeout"), "{err}");
        let err = Config::new("bot")
            .redis_url("redis://127.0.0.1:1")
            .wait_replicas(1000)
            .validate()
            .unwrap_err();
        assert!(err.message().contains("wait_replicas"), "{err}");
        let err = Config::new("bot")
            .redis_url("redis://127.0.0.1:1")
            .tls_ca_file("/tmp/ca.pem")
            .validate()
            .unwrap_err();
        assert!(err.message().contains("does not use TLS"), "{err}");
        let debug = format!(
            "{:?}",
            Config::new("bot")
                .redis_url("redis+sentinel://:d4ta@h/svc")
                .sentinel_password("s3nt")
        );
        assert!(
            !debug.contains("d4ta") && !debug.contains("s3nt"),
            "{debug}"
        );
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
