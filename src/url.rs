//! The URL grammar: the multi-host forms `redis+sentinel://` and `redis+cluster://` (and
//! their TLS `rediss+` twins), parsed by one host-list parser, and the redaction that keeps
//! every password out of logs, errors and `repr()`. Single-server URLs (`redis://`,
//! `rediss://`, `unix://`) are redis-rs's own. Which URL a manager uses, and from which
//! environment variable, is `config`'s business.

use std::fmt;

use crate::error::{Error, Result};

/// The Sentinel port of a host given without one.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;
/// The port of a seed node given without one.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// The parts every multi-host URL begins with: `scheme://[[user:]password@]hosts[/path]`,
/// split but not yet read (the host list and the user info are read by [`MultiHost::hosts`]
/// and [`parse_userinfo`], in the order each URL kind reports its errors).
struct MultiHost<'a> {
    /// Says what is wrong, naming the URL kind and the redacted URL, never the password.
    kind: &'static str,
    redacted: String,
    tls: bool,
    userinfo: Option<&'a str>,
    hosts: &'a str,
    path: &'a str,
}

impl<'a> MultiHost<'a> {
    /// Splits `url`, whose scheme must be `redis+<scheme>://` or `rediss+<scheme>://` (TLS).
    /// Query parameters are refused (`query_hint` says what to use instead).
    fn split(url: &'a str, kind: &'static str, scheme: &str, query_hint: &str) -> Result<Self> {
        let redacted = redact_url(url);
        let bad = |what: &str| Error::invalid(format!("invalid {kind} URL {redacted}: {what}"));
        let (tls, rest) = if let Some(rest) = url.strip_prefix(&format!("redis+{scheme}://")) {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix(&format!("rediss+{scheme}://")) {
            (true, rest)
        } else {
            return Err(bad(&format!(
                "expected redis+{scheme}:// or rediss+{scheme}://"
            )));
        };
        if rest.contains('?') || rest.contains('#') {
            return Err(bad(&format!(
                "query parameters are not supported{query_hint}"
            )));
        }
        let (userinfo, hosts, path) = split_authority(rest);
        Ok(MultiHost {
            kind,
            redacted,
            tls,
            userinfo,
            hosts,
            path,
        })
    }

    fn bad(&self, what: &str) -> Error {
        Error::invalid(format!(
            "invalid {} URL {}: {what}",
            self.kind, self.redacted
        ))
    }

    /// The `[[user:]password@]` part, %-decoded.
    fn credentials(&self) -> Result<(Option<String>, Option<String>)> {
        parse_userinfo(self.userinfo).map_err(|why| self.bad(why))
    }

    /// The comma-separated host list: each `host[:port]` or `[v6]:port`, a `what` (for the
    /// errors), `default_port` where none is given.
    fn hosts(&self, what: &str, default_port: u16) -> Result<Vec<(String, u16)>> {
        self.hosts
            .split(',')
            .map(|part| parse_host_port(part, what, default_port).map_err(|why| self.bad(&why)))
            .collect()
    }
}

/// A parsed `redis+sentinel://[[user:]password@]host[:port][,host[:port]...]/service_name[/db]`
/// (or `rediss+sentinel://`, TLS to the Sentinels and the data nodes). The credentials are
/// the data nodes' ([`Config::sentinel_password`](crate::Config::sentinel_password) is the Sentinels').
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub tls: bool,
    pub sentinels: Vec<(String, u16)>,
    pub service_name: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("tls", &self.tls)
            .field("sentinels", &self.sentinels)
            .field("service_name", &self.service_name)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl SentinelUrl {
    pub fn is_sentinel(url: &str) -> bool {
        url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://")
    }

    /// Parses a Sentinel URL; every malformed part is a clear `InvalidInput` error that
    /// never repeats the password.
    pub fn parse(url: &str) -> Result<Self> {
        let url = MultiHost::split(
            url,
            "Sentinel",
            "sentinel",
            " (give Sentinel credentials with sentinel_password or QUANTSHIFT_SENTINEL_PASSWORD)",
        )?;
        let bad = |what: &str| url.bad(what);
        let (username, password) = url.credentials()?;
        let sentinels = url.hosts("Sentinel", DEFAULT_SENTINEL_PORT)?;
        let path = url.path;
        let mut segments = path.trim_start_matches('/').split('/');
        let service_name = segments.next().unwrap_or_default();
        if service_name.is_empty() {
            return Err(bad(
                "the service name (the path after the hosts) is missing",
            ));
        }
        let service_name = percent_decode(service_name)
            .filter(|s| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control()))
            .ok_or_else(|| {
                bad("the service name must be non-empty, without spaces or control characters")
            })?;
        let db = match segments.next() {
            None | Some("") => 0,
            Some(db) => db
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| bad(&format!("database {db:?} is not a non-negative integer")))?,
        };
        if segments.any(|s| !s.is_empty()) {
            return Err(bad("expected /service_name[/db] after the hosts"));
        }
        Ok(SentinelUrl {
            tls: url.tls,
            sentinels,
            service_name,
            db,
            username,
            password,
        })
    }
}

/// What follows `scheme://`, split into the user info (before the last `@`), the host list
/// and the path.
fn split_authority(rest: &str) -> (Option<&str>, &str, &str) {
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..], path),
        None => (None, authority, path),
    }
}

/// The `[[user:]password@]` part of a URL, %-decoded; an empty user or password is none.
fn parse_userinfo(
    userinfo: Option<&str>,
) -> std::result::Result<(Option<String>, Option<String>), &'static str> {
    let Some(info) = userinfo else {
        return Ok((None, None));
    };
    let (user, password) = match info.split_once(':') {
        Some((user, password)) => (Some(user), password),
        // `password@host`: the contract's `[[user:]password@]`.
        None => (None, info),
    };
    let user = user
        .filter(|u| !u.is_empty())
        .map(|u| percent_decode(u).ok_or("bad %-escape in the user name"))
        .transpose()?;
    let password = percent_decode(password).ok_or("bad %-escape in the password")?;
    Ok((user, Some(password).filter(|p| !p.is_empty())))
}

/// A parsed `redis+cluster://[[user:]password@]host[:port][,host[:port]...][/0]` URL (or
/// `rediss+cluster://`, TLS to every node): seed nodes of a Redis or Valkey Cluster, from
/// which the node serving each bot is found. The credentials are every node's.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    pub tls: bool,
    pub seeds: Vec<(String, u16)>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterUrl")
            .field("tls", &self.tls)
            .field("seeds", &self.seeds)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ClusterUrl {
    pub fn is_cluster(url: &str) -> bool {
        url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://")
    }

    /// Parses a cluster URL; every malformed part is a clear `InvalidInput` error that never
    /// repeats the password.
    pub fn parse(url: &str) -> Result<Self> {
        let url = MultiHost::split(url, "cluster", "cluster", "")?;
        if !matches!(url.path, "" | "/" | "/0") {
            return Err(
                url.bad("a cluster has only database 0: nothing but /0 may follow the hosts")
            );
        }
        let (username, password) = url.credentials()?;
        let mut seeds = Vec::new();
        for seed in url.hosts("seed node", DEFAULT_REDIS_PORT)? {
            if !seeds.contains(&seed) {
                seeds.push(seed);
            }
        }
        Ok(ClusterUrl {
            tls: url.tls,
            seeds,
            username,
            password,
        })
    }
}

/// `host[:port]` or `[v6]:port` of a `what` (Sentinel, seed node) in a host list.
fn parse_host_port(
    part: &str,
    what: &str,
    default_port: u16,
) -> std::result::Result<(String, u16), String> {
    if part.is_empty() {
        return Err(format!("empty {what} address in the host list"));
    }
    let (host, port) = if let Some(rest) = part.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed [ in {part:?}"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected text after ] in {part:?}")),
            },
        }
    } else {
        match part.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (part, None),
        }
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "@/?#,".contains(c))
    {
        return Err(format!("bad {what} host {host:?}"));
    }
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad {what} port {port:?} (1-65535)"))?,
    };
    Ok((host.to_owned(), port))
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with any password replaced by `***`, safe for logs, errors and `repr()`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The credentials are everything before the last '@', even when an unencoded '/', '?'
    // or '#' in the password would end the authority early for a URL parser.
    if let Some(at) = rest.rfind('@') {
        let hidden = match rest[..at].split_once(':') {
            Some((user, _)) => format!("{user}:***"),
            None => "***".to_owned(),
        };
        let tail = redact_url(&format!("{scheme}://{}", &rest[at + 1..]));
        return format!("{scheme}://{hidden}@{}", &tail[scheme.len() + 3..]);
    }
    // Any `password=` query parameter (some clients accept one) is hidden as well.
    if let Some((before, query)) = rest.split_once('?') {
        let hidden: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        return format!(
            "{}?{}",
            redact_url(&format!("{scheme}://{before}")),
            hidden.join("&")
        );
    }
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
        for url in [
            "redis://:pa/ss@host/0",
            "redis://u:pa?ss@host/0",
            "redis://u:pa#ss@host/0",
            "redis+sentinel://:pa/ss@h1,h2/svc",
        ] {
            assert!(
                !redact_url(url).contains("ss@"),
                "{url}: {}",
                redact_url(url)
            );
        }
        assert_eq!(
            redact_url("redis://:pa/ss@h:1/0?password=x"),
            "redis://:***@h:1/0?password=***"
        );
    }

    #[test]
    fn redaction_covers_sentinel_urls() {
        let url = "redis+sentinel://u:s3cret@h1:26379,h2,[::1]:26380/svc/2";
        let hidden = redact_url(url);
        assert_eq!(
            hidden,
            "redis+sentinel://u:***@h1:26379,h2,[::1]:26380/svc/2"
        );
        let hidden = redact_url("rediss+sentinel://s3cret@h1/svc");
        assert_eq!(hidden, "rediss+sentinel://***@h1/svc");
        let hidden = redact_url("redis://:p4ss@h/0?sentinel_password=s3cret&x=1");
        assert!(
            !hidden.contains("s3cret") && !hidden.contains("p4ss"),
            "{hidden}"
        );
        assert!(hidden.contains("x=1"));
    }

    #[test]
    fn sentinel_urls_parse() {
        let url =
            SentinelUrl::parse("redis+sentinel://bob:p%40ss@h1:26380,h2,[::1]/mymaster/3").unwrap();
        assert!(!url.tls);
        assert_eq!(
            url.sentinels,
            vec![
                ("h1".to_owned(), 26380),
                ("h2".to_owned(), DEFAULT_SENTINEL_PORT),
                ("::1".to_owned(), DEFAULT_SENTINEL_PORT)
            ]
        );
        assert_eq!(url.service_name, "mymaster");
        assert_eq!(url.db, 3);
        assert_eq!(url.username.as_deref(), Some("bob"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert!(!format!("{url:?}").contains("p@ss"));
        let url = SentinelUrl::parse("rediss+sentinel://pw@127.0.0.1/svc").unwrap();
        assert!(url.tls);
        assert_eq!(url.password.as_deref(), Some("pw"));
        assert_eq!(url.username, None);
        assert_eq!(url.db, 0);
    }
}
