//! The start-up report: what in the Redis node's configuration puts the promises at risk
//! (eviction, persistence, role, an unguarded split brain), each warning with a stable kind.
//! Read once at start (and by the operator tool), in one round trip.

use super::{Store, Target};
use crate::error::{Error, Result};

/// A problem of the Redis node's configuration, with a stable kind for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerWarning {
    /// The [`WarningKind`]'s name, one of [`warning_kind::EVERY`].
    pub kind: &'static str,
    pub message: String,
}

/// The Redis node's role and what in its configuration puts the promises at risk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    /// `master`, `slave`, …; `None` when the node refused to tell (an ACL without `role`).
    pub role: Option<String>,
    pub warnings: Vec<ServerWarning>,
}

/// What a [`ServerWarning`] is about. Each kind's name (`as_str`) is stable: a Prometheus
/// label value and the `kind` field of the warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarningKind {
    /// maxmemory-policy is not noeviction: the lease, state and positions may be evicted.
    EvictionPolicy,
    /// CONFIG GET maxmemory-policy refused (e.g. a managed Redis that renames CONFIG).
    EvictionPolicyUnreadable,
    /// No AOF, no RDB save rules and no replicas waited for: a restart loses everything.
    PersistenceOff,
    PersistenceUnreadable,
    /// The node is a replica: it refuses writes.
    NotMaster,
    RoleUnreadable,
    /// A Sentinel or cluster master with replicas, `wait_replicas` 0 and no
    /// `min-replicas-to-write`: after a partition the old master may accept a cut-off
    /// primary's renewals while a standby leads on a promoted replica.
    SplitBrainUnguarded,
}

impl WarningKind {
    /// Every kind, in a fixed order.
    pub const EVERY: [WarningKind; 7] = [
        WarningKind::EvictionPolicy,
        WarningKind::EvictionPolicyUnreadable,
        WarningKind::PersistenceOff,
        WarningKind::PersistenceUnreadable,
        WarningKind::NotMaster,
        WarningKind::RoleUnreadable,
        WarningKind::SplitBrainUnguarded,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            WarningKind::EvictionPolicy => "eviction_policy",
            WarningKind::EvictionPolicyUnreadable => "eviction_policy_unreadable",
            WarningKind::PersistenceOff => "persistence_off",
            WarningKind::PersistenceUnreadable => "persistence_unreadable",
            WarningKind::NotMaster => "not_master",
            WarningKind::RoleUnreadable => "role_unreadable",
            WarningKind::SplitBrainUnguarded => "split_brain_unguarded",
        }
    }
}

/// The names of the [`WarningKind`]s, as constants (the interface of the first releases).
pub mod warning_kind {
    use super::WarningKind;

    pub const EVICTION_POLICY: &str = WarningKind::EvictionPolicy.as_str();
    pub const EVICTION_POLICY_UNREADABLE: &str = WarningKind::EvictionPolicyUnreadable.as_str();
    pub const PERSISTENCE_OFF: &str = WarningKind::PersistenceOff.as_str();
    pub const PERSISTENCE_UNREADABLE: &str = WarningKind::PersistenceUnreadable.as_str();
    pub const NOT_MASTER: &str = WarningKind::NotMaster.as_str();
    pub const ROLE_UNREADABLE: &str = WarningKind::RoleUnreadable.as_str();
    pub const SPLIT_BRAIN_UNGUARDED: &str = WarningKind::SplitBrainUnguarded.as_str();
    /// The kinds of the first release (kept as it was for programs that name its type);
    /// [`EVERY`] has every kind.
    pub const ALL: [&str; 6] = names();
    /// Every kind's name, in the order of [`WarningKind::EVERY`].
    pub const EVERY: [&str; 7] = names();

    /// The names of the first `N` kinds of [`WarningKind::EVERY`].
    const fn names<const N: usize>() -> [&'static str; N] {
        let mut names = [""; N];
        let mut i = 0;
        while i < N {
            names[i] = WarningKind::EVERY[i].as_str();
            i += 1;
        }
        names
    }
}

impl Store {
    /// What in the Redis node's configuration puts the promises at risk, as messages.
    pub fn server_warnings(&self) -> Result<Vec<String>> {
        Ok(self
            .server_report()?
            .warnings
            .into_iter()
            .map(|warning| warning.message)
            .collect())
    }

    /// The node's role and [`server_warnings`](Self::server_warnings) with the kind of each
    /// (for monitoring). One round trip: the settings and the role are read in one pipeline,
    /// each reply judged on its own, so that an ACL refusing `CONFIG` still lets the role be
    /// judged, and one refusing `ROLE` the settings.
    pub fn server_report(&self) -> Result<ServerReport> {
        let check_persistence = self.wait_replicas == 0;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
        pipe.cmd("ROLE");
        // Where the master may be replaced by a replica without anyone's say (Sentinel, a
        // cluster), an unconfirmed lease renewal on a cut-off master is a hazard.
        let check_split_brain =
            self.wait_replicas == 0 && !matches!(self.target, Target::Direct(_));
        if check_persistence {
            pipe.cmd("CONFIG").arg("GET").arg("appendonly");
            pipe.cmd("CONFIG").arg("GET").arg("save");
        }
        if check_split_brain {
            pipe.cmd("CONFIG").arg("GET").arg("min-replicas-to-write");
        }
        let replies: Vec<redis::Value> = self.read(|conn| pipe.query(conn))?;
        let mut replies = replies.into_iter();
        let mut next = || replies.next().unwrap_or(redis::Value::Nil);
        let (policy, role) = (config_value(next()), next());
        let persistence = check_persistence.then(|| {
            let (aof, save) = (config_value(next()), config_value(next()));
            aof.and_then(|aof| Ok((aof, save?)))
        });
        let min_replicas = check_split_brain.then(|| config_value(next()));

        let mut warnings = Vec::new();
        let mut warn = |kind: WarningKind, message: String| {
            warnings.push(ServerWarning {
                kind: kind.as_str(),
                message,
            });
        };
        match policy {
            Ok(policy) if policy == "noeviction" => {}
            Ok(policy) => warn(
                WarningKind::EvictionPolicy,
                format!(
                    "Redis maxmemory-policy is {policy:?}: under memory pressure it may \
                     evict the lease, state and positions (all carry TTLs); set \
                     maxmemory-policy noeviction"
                ),
            ),
            Err(err) => warn(
                WarningKind::EvictionPolicyUnreadable,
                format!("cannot read Redis maxmemory-policy ({err}); make sure it is noeviction"),
            ),
        }
        match persistence {
            Some(Ok((aof, save))) if aof != "yes" && save.trim().is_empty() => warn(
                WarningKind::PersistenceOff,
                "Redis persistence is off (appendonly no and no save rules) and wait_replicas \
                 is 0: a restart of Redis loses the lease epoch, the state and the positions; \
                 set appendonly yes, or wait for replicas"
                    .to_owned(),
            ),
            None | Some(Ok(_)) => {}
            Some(Err(err)) => warn(
                WarningKind::PersistenceUnreadable,
                format!(
                    "cannot read the Redis persistence settings ({err}); make sure \
                     appendonly is yes or wait_replicas is set"
                ),
            ),
        }
        let role = reply_value::<Vec<redis::Value>>(role);
        // ROLE of a master: ["master", offset, [[ip, port, offset], ...]].
        let replicas = match role.as_ref().ok().and_then(|role| role.get(2)) {
            Some(redis::Value::Array(replicas)) => replicas.len(),
            _ => 0,
        };
        let role = role.map(|role| {
            role.first()
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .unwrap_or_default()
        });
        let guarded = |setting: &Result<String>| matches!(setting, Ok(n) if n.trim().parse::<u64>().is_ok_and(|n| n > 0));
        if let Some(setting) = min_replicas.filter(|s| replicas > 0 && !guarded(s)) {
            let read = match setting {
                Ok(_) => "is 0".to_owned(),
                Err(err) => format!("cannot be read ({err})"),
            };
            warn(
                WarningKind::SplitBrainUnguarded,
                format!(
                    "the Redis master has {replicas} replica(s) a failover may promote, \
                     wait_replicas is 0 and min-replicas-to-write {read}: a primary bot cut off \
                     together with this master could keep renewing its lease there while a \
                     standby leads on the promoted replica; set wait_replicas to 1 (or \
                     min-replicas-to-write 1 on the masters; docs/failover.md)"
                ),
            );
        }
        match &role {
            Ok(name) => {
                if name != "master" {
                    warn(
                        WarningKind::NotMaster,
                        format!(
                            "the Redis node at {} is a {name}, not a master: it refuses writes \
                             (READONLY); point the URL at the master, or use redis+sentinel://",
                            self.redacted_url
                        ),
                    );
                }
            }
            Err(err) => warn(
                WarningKind::RoleUnreadable,
                format!("cannot read the Redis node's role ({err})"),
            ),
        }
        Ok(ServerReport {
            role: role.ok(),
            warnings,
        })
    }
}

/// One reply of a pipeline sent with `ignore_errors`: its error reply as an error.
fn reply_value<T: redis::FromRedisValue>(reply: redis::Value) -> Result<T> {
    if let redis::Value::ServerError(err) = reply {
        return Err(redis::RedisError::from(err).into());
    }
    redis::from_redis_value(reply).map_err(|err| redis::RedisError::from(err).into())
}

/// The value of a `CONFIG GET name` reply. An empty reply (a service that hides its
/// settings, or a setting this server does not have) is unknown, never the value `""`.
fn config_value(reply: redis::Value) -> Result<String> {
    let pair: Vec<String> = reply_value(reply)?;
    pair.get(1).cloned().ok_or_else(|| {
        Error::unavailable(
            "the server answered CONFIG GET with nothing (setting hidden or unknown)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_get_reply_is_unknown_not_an_empty_value() {
        let bulk = |s: &str| redis::Value::BulkString(s.as_bytes().to_vec());
        assert!(config_value(redis::Value::Array(vec![])).is_err());
        assert_eq!(
            config_value(redis::Value::Array(vec![bulk("save"), bulk("")])).unwrap(),
            ""
        );
        assert_eq!(
            config_value(redis::Value::Array(vec![
                bulk("maxmemory-policy"),
                bulk("noeviction")
            ]))
            .unwrap(),
            "noeviction"
        );
    }

    #[test]
    fn every_kind_has_one_name_and_the_constants_are_those_names() {
        let names: Vec<&str> = WarningKind::EVERY.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, warning_kind::EVERY);
        assert_eq!(warning_kind::ALL, warning_kind::EVERY[..6]);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }
}
