//! Redis / Valkey Cluster: which node serves a bot. In the hash-tagged layout every key and
//! channel of a bot hashes to one slot, so one primary (the slot's owner) serves the bot, and
//! the store talks to it as it talks to a Sentinel's master: the owner is found from the
//! cluster's own map (`CLUSTER SHARDS`, `CLUSTER SLOTS` on servers before 7.0) asked of the
//! nodes already known and the URL's seed nodes, checked with `ROLE`, and found again when a
//! reply says it moved (`MOVED`, `READONLY`), when the cluster is down or a connection fails.
//! Each new owner is a new *generation*, exactly as a new Sentinel master is, so the lease
//! re-checks its token there before it calls itself primary again.
//!
//! Our own routing is used rather than redis-rs's `ClusterConnection`: that one has no
//! pub/sub (the lease's notices), sends `WAIT` to every primary (a write is on one), and would
//! hide which node answered, which the lease needs to tell one connection's observations
//! from another's.

use std::time::Duration;

use parking_lot::Mutex;
use redis::{Connection, TlsCertificates, Value};

use super::connection::Named;
use super::errors::describe;
use super::nodes::NodeTemplate;
use super::Store;
use crate::config::ClusterUrl;
use crate::error::{Error, Result};

/// A node's address as the cluster names it.
pub(super) type Addr = (String, u16);

/// Bounds the nodes remembered from the cluster's maps (a cluster has at most ~1 000).
const MAX_KNOWN_NODES: usize = 1024;

pub(super) struct ClusterTarget {
    /// A key of the bot: its hash tag names the slot (`CLUSTER KEYSLOT` asks the server, so
    /// no hashing is written here).
    slot_key: String,
    /// The slot, once a node told it.
    slot: Mutex<Option<u16>>,
    seeds: Vec<Addr>,
    /// Every node the cluster's maps named, asked before the seeds (they may be gone).
    known: Mutex<Vec<Addr>>,
    pub(super) nodes: NodeTemplate,
}

/// What a node's map says about the bot's slot.
struct SlotOwner {
    slot: u16,
    /// `None` when no healthy primary serves the slot (a failover under way).
    owner: Option<Addr>,
    /// The healthy primaries of every slot range.
    primaries: Vec<Addr>,
    nodes: Vec<Addr>,
}

impl SlotOwner {
    fn new(slot: u16) -> Self {
        SlotOwner {
            slot,
            owner: None,
            primaries: Vec::new(),
            nodes: Vec::new(),
        }
    }
}

pub(super) fn cluster_target(
    url: &ClusterUrl,
    slot_key: String,
    certs: Option<TlsCertificates>,
) -> ClusterTarget {
    let tls = url.tls.then_some(certs);
    ClusterTarget {
        slot_key,
        slot: Mutex::new(None),
        seeds: url.seeds.clone(),
        known: Mutex::new(Vec::new()),
        nodes: NodeTemplate::new(0, url.username.as_deref(), url.password.as_deref(), tls),
    }
}

impl ClusterTarget {
    pub(super) fn slot(&self) -> Option<u16> {
        *self.slot.lock()
    }

    /// The nodes to ask for the map: those the cluster named, then the seeds.
    fn candidates(&self) -> Vec<Addr> {
        let mut candidates = self.known.lock().clone();
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        candidates
    }

    fn remember(&self, nodes: &[Addr]) {
        let mut known = self.known.lock();
        for node in nodes {
            if !known.contains(node) && known.len() < MAX_KNOWN_NODES {
                known.push(node.clone());
            }
        }
    }
}

impl Store {
    /// A connection to the primary serving the bot's slot: the one known if it still says
    /// `master`, else the one the cluster's map names.
    pub(super) fn connect_owner_once(
        &self,
        target: &ClusterTarget,
        command_timeout: Duration,
    ) -> Result<(u64, Connection)> {
        let mut unusable: Vec<Addr> = Vec::new();
        if let Some(found) = self.known_master(
            &target.nodes,
            command_timeout,
            &mut unusable,
            "reading the cluster's map",
        ) {
            return Ok(found);
        }
        let mut problems = Vec::new();
        for node in target.candidates() {
            let found = self
                .open_node(&target.nodes, &node, command_timeout)
                .and_then(|mut conn| {
                    slot_owner(&mut conn, &target.slot_key, &node).map_err(|err| describe(&err))
                });
            let map = match found {
                Ok(map) => map,
                Err(err) if err.contains("cluster support disabled") => {
                    return Err(Error::invalid(format!(
                        "{} is a cluster URL, but the server at {}:{} is not a cluster node \
                         (cluster support disabled): use redis:// or rediss:// for one server",
                        self.redacted_url, node.0, node.1
                    )));
                }
                Err(err) => {
                    problems.push(format!("{}:{}: {err}", node.0, node.1));
                    continue;
                }
            };
            *target.slot.lock() = Some(map.slot);
            target.remember(&map.nodes);
            let Some(owner) = map.owner else {
                problems.push(format!(
                    "{}:{} knows no healthy primary for slot {}",
                    node.0, node.1, map.slot
                ));
                continue;
            };
            let by = format!("{}:{}", node.0, node.1);
            let named = Named {
                what: format!("primary {}:{} of slot {}", owner.0, owner.1, map.slot),
                addr: owner,
                by: &by,
                how: "the cluster's map",
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
            "no cluster node serving the bot's slot found from {}: {}",
            self.redacted_url,
            problems.join("; ")
        )))
    }
}

impl Store {
    /// Every key matching `pattern` on every primary of the cluster (a SCAN of each: operator
    /// use only). The map is read from the first node that answers.
    pub(super) fn scan_cluster(
        &self,
        target: &ClusterTarget,
        pattern: &str,
    ) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for node in target.candidates() {
            let map = self
                .open_node(&target.nodes, &node, self.command_timeout)
                .and_then(|mut conn| {
                    slot_owner(&mut conn, &target.slot_key, &node).map_err(|err| describe(&err))
                });
            let map = match map {
                Ok(map) => map,
                Err(err) => {
                    problems.push(format!("{}:{}: {err}", node.0, node.1));
                    continue;
                }
            };
            target.remember(&map.nodes);
            let mut keys = Vec::new();
            for primary in &map.primaries {
                let mut conn = self
                    .open_node(&target.nodes, primary, self.command_timeout)
                    .map_err(|err| {
                        Error::unavailable(format!(
                            "cluster primary {}:{} of {}: {err}",
                            primary.0, primary.1, self.redacted_url
                        ))
                    })?;
                keys.extend(super::scan(&mut conn, pattern).map_err(|err| self.classify(err))?);
            }
            return Ok(keys);
        }
        Err(Error::unavailable(format!(
            "no cluster node of {} answered: {}",
            self.redacted_url,
            problems.join("; ")
        )))
    }
}

/// Asks `conn` (the node at `asked`) the slot of `slot_key` and who serves it, in one round
/// trip: `CLUSTER SHARDS`, or `CLUSTER SLOTS` where that is unknown (before 7.0).
fn slot_owner(
    conn: &mut Connection,
    slot_key: &str,
    asked: &Addr,
) -> redis::RedisResult<SlotOwner> {
    let (slot, shards): (u16, Value) = redis::pipe()
        .cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(slot_key)
        .cmd("CLUSTER")
        .arg("SHARDS")
        .query(conn)
        .or_else(|err| match err.kind() {
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension => {
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(slot_key)
                    .query(conn)?;
                Ok((slot, Value::Nil))
            }
            _ => Err(err),
        })?;
    let parsed = if matches!(shards, Value::Nil) {
        let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query(conn)?;
        parse_cluster_slots(&slots, slot, &asked.0)
    } else {
        parse_cluster_shards(&shards, slot, &asked.0)
    };
    parsed.ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "unreadable cluster map",
            format!("the node's CLUSTER SHARDS / SLOTS reply for slot {slot} could not be read"),
        ))
    })
}

/// The fields of a RESP3 map or a RESP2 flat `[name, value, ...]` array.
fn fields(value: &Value) -> Vec<(String, &Value)> {
    let name = |v: &Value| redis::from_redis_value_ref::<String>(v).unwrap_or_default();
    match value {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (name(k), v)).collect(),
        Value::Array(items) => items
            .chunks_exact(2)
            .map(|pair| (name(&pair[0]), &pair[1]))
            .collect(),
        _ => Vec::new(),
    }
}

fn field<'a>(fields: &[(String, &'a Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
}

fn number(value: Option<&Value>) -> Option<i64> {
    value.and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
}

/// A node's address; an empty or unknown (`?`) host is the host that was asked, as the
/// cluster specification says.
fn address(host: Option<String>, port: Option<i64>, asked_host: &str) -> Option<Addr> {
    let port = u16::try_from(port?).ok().filter(|p| *p != 0)?;
    let host = host
        .filter(|h| !h.is_empty() && h != "?")
        .unwrap_or_else(|| asked_host.to_owned());
    Some((host, port))
}

/// `CLUSTER SHARDS`: `[{slots: [start, end, ...], nodes: [{ip, endpoint, port, tls-port,
/// role, health, ...}, ...]}, ...]`. The owner is the shard's `master` with health `online`.
fn parse_cluster_shards(reply: &Value, slot: u16, asked_host: &str) -> Option<SlotOwner> {
    let Value::Array(shards) = reply else {
        return None;
    };
    let mut found = SlotOwner::new(slot);
    for shard in shards {
        let shard = fields(shard);
        let Some(Value::Array(ranges)) = field(&shard, "slots") else {
            return None;
        };
        let bounds: Vec<i64> = ranges.iter().filter_map(|v| number(Some(v))).collect();
        let serves = bounds
            .chunks_exact(2)
            .any(|range| range[0] <= i64::from(slot) && i64::from(slot) <= range[1]);
        let Some(Value::Array(nodes)) = field(&shard, "nodes") else {
            return None;
        };
        for node in nodes {
            let node = fields(node);
            // A TLS cluster announces its TLS port beside (or instead of) the plain one.
            let port = number(field(&node, "tls-port")).or_else(|| number(field(&node, "port")));
            let host = text(field(&node, "endpoint")).or_else(|| text(field(&node, "ip")));
            let Some(addr) = address(host, port, asked_host) else {
                continue;
            };
            let primary = text(field(&node, "role")).as_deref() == Some("master");
            let online = text(field(&node, "health")).as_deref() == Some("online");
            if primary && online && !bounds.is_empty() {
                if serves {
                    found.owner = Some(addr.clone());
                }
                found.primaries.push(addr.clone());
            }
            found.nodes.push(addr);
        }
    }
    Some(found)
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replica..., ], ...]`; the first
/// node of a range is its primary.
fn parse_cluster_slots(reply: &Value, slot: u16, asked_host: &str) -> Option<SlotOwner> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut found = SlotOwner::new(slot);
    for range in ranges {
        let Value::Array(range) = range else {
            return None;
        };
        let (start, end) = (number(range.first())?, number(range.get(1))?);
        for (i, node) in range.iter().skip(2).enumerate() {
            let Value::Array(node) = node else {
                continue;
            };
            let Some(addr) = address(text(node.first()), number(node.get(1)), asked_host) else {
                continue;
            };
            if i == 0 {
                if start <= i64::from(slot) && i64::from(slot) <= end {
                    found.owner = Some(addr.clone());
                }
                if !found.primaries.contains(&addr) {
                    found.primaries.push(addr.clone());
                }
            }
            found.nodes.push(addr);
        }
    }
    Some(found)
}

/// The `host:port` of a `MOVED` / `ASK` reply (an IPv6 host keeps its colons).
pub(super) fn parse_redirect_addr(text: &str) -> Option<Addr> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_owner_is_read_from_cluster_shards_and_cluster_slots() {
        let node = |ip: &str, port: i64, role: &str, health: &str| {
            Value::Array(vec![
                bulk("id"),
                bulk("x"),
                bulk("port"),
                Value::Int(port),
                bulk("ip"),
                bulk(ip),
                bulk("endpoint"),
                bulk(ip),
                bulk("role"),
                bulk(role),
                bulk("health"),
                bulk(health),
            ])
        };
        let shard = |start: i64, end: i64, nodes: Vec<Value>| {
            Value::Array(vec![
                bulk("slots"),
                Value::Array(vec![Value::Int(start), Value::Int(end)]),
                bulk("nodes"),
                Value::Array(nodes),
            ])
        };
        let shards = Value::Array(vec![
            shard(
                0,
                8191,
                vec![
                    node("10.0.0.1", 7000, "master", "online"),
                    node("10.0.0.2", 7001, "replica", "online"),
                ],
            ),
            shard(
                8192,
                16383,
                vec![
                    node("10.0.0.3", 7002, "master", "fail"),
                    node("", 7003, "master", "online"),
                ],
            ),
        ]);
        let low = parse_cluster_shards(&shards, 100, "seed").unwrap();
        assert_eq!(low.owner, Some(("10.0.0.1".to_owned(), 7000)));
        assert_eq!(low.nodes.len(), 4);
        let high = parse_cluster_shards(&shards, 9000, "seed").unwrap();
        assert_eq!(
            high.owner,
            Some(("seed".to_owned(), 7003)),
            "the failed one is skipped"
        );

        let slots = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            Value::Array(vec![bulk("10.0.0.9"), Value::Int(7009), bulk("id")]),
            Value::Array(vec![bulk("10.0.0.8"), Value::Int(7008), bulk("id")]),
        ])]);
        let owner = parse_cluster_slots(&slots, 5, "seed").unwrap();
        assert_eq!(owner.owner, Some(("10.0.0.9".to_owned(), 7009)));
        assert!(parse_cluster_slots(&bulk("nonsense"), 5, "seed").is_none());
    }

    #[test]
    fn redirect_addresses_parse() {
        assert_eq!(
            parse_redirect_addr("127.0.0.1:7001"),
            Some(("127.0.0.1".to_owned(), 7001))
        );
        assert_eq!(
            parse_redirect_addr("::1:7001"),
            Some(("::1".to_owned(), 7001))
        );
        assert_eq!(parse_redirect_addr("nohost"), None);
        assert_eq!(parse_redirect_addr(":7001"), None);
    }
}
