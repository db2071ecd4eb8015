//! A model of one Redis server that runs the shipped Lua scripts (`src/scripts/*.lua`) in a
//! real Lua 5.1 interpreter against a simulated keyspace, so the model cannot drift from the
//! scripts. Only the commands those scripts use are implemented, with Redis's conversion
//! rules between Lua and RESP. `model_matches_redis_server` holds it to a real redis-server.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use mlua::{Function, Lua, MultiValue, Table, Value as LuaValue};

/// A RESP reply, as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Nil,
    Int(i64),
    Bulk(String),
    Status(String),
    Array(Vec<Resp>),
    /// An error reply; `raised`: from a failing `redis.call` (only its code is compared).
    Error {
        msg: String,
        raised: bool,
    },
}

impl Resp {
    /// The reply as the `redis` crate hands it to the lease's parsers.
    pub fn to_value(&self) -> redis::Value {
        match self {
            Resp::Nil => redis::Value::Nil,
            Resp::Int(i) => redis::Value::Int(*i),
            Resp::Bulk(s) => redis::Value::BulkString(s.as_bytes().to_vec()),
            Resp::Status(s) if s == "OK" => redis::Value::Okay,
            Resp::Status(s) => redis::Value::SimpleString(s.clone()),
            Resp::Array(items) => redis::Value::Array(items.iter().map(Resp::to_value).collect()),
            Resp::Error { .. } => redis::Value::Nil,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Str(String),
    Hash(BTreeMap<String, String>),
    ZSet(BTreeMap<String, f64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub data: Data,
    /// Absolute expiry in server milliseconds.
    pub expire_at: Option<i64>,
}

/// The keyspace and the server's clock.
#[derive(Debug, Clone, Default)]
pub struct Keyspace {
    pub keys: HashMap<String, Entry>,
    /// Server time in microseconds since the Unix epoch.
    pub now_us: i64,
    /// Messages published (channel, message), drained by the simulator.
    pub published: Vec<(String, String)>,
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

impl Keyspace {
    pub fn now_ms(&self) -> i64 {
        self.now_us.div_euclid(1000)
    }

    /// The live entry under `key` (expired ones are deleted first, as Redis does lazily).
    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        let now = self.now_ms();
        if self
            .keys
            .get(key)
            .is_some_and(|e| e.expire_at.is_some_and(|at| now > at))
        {
            self.keys.remove(key);
        }
        self.keys.get_mut(key)
    }

    pub fn live_keys(&mut self) -> Vec<String> {
        let mut names: Vec<String> = self.keys.keys().cloned().collect();
        names.sort();
        names.retain(|k| self.live(k).is_some());
        names
    }

    fn get_str(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.live(key) {
            None => Ok(None),
            Some(Entry {
                data: Data::Str(s), ..
            }) => Ok(Some(s.clone())),
            Some(_) => Err(WRONGTYPE.into()),
        }
    }

    fn hash(
        &mut self,
        key: &str,
        create: bool,
    ) -> Result<Option<&mut BTreeMap<String, String>>, String> {
        if self.live(key).is_none() {
            if !create {
                return Ok(None);
            }
            self.keys.insert(
                key.to_owned(),
                Entry {
                    data: Data::Hash(BTreeMap::new()),
                    expire_at: None,
                },
            );
        }
        match self.keys.get_mut(key) {
            Some(Entry {
                data: Data::Hash(h),
                ..
            }) => Ok(Some(h)),
            _ => Err(WRONGTYPE.into()),
        }
    }

    fn zset(
        &mut self,
        key: &str,
        create: bool,
    ) -> Result<Option<&mut BTreeMap<String, f64>>, String> {
        if self.live(key).is_none() {
            if !create {
                return Ok(None);
            }
            self.keys.insert(
                key.to_owned(),
                Entry {
                    data: Data::ZSet(BTreeMap::new()),
                    expire_at: None,
                },
            );
        }
        match self.keys.get_mut(key) {
            Some(Entry {
                data: Data::ZSet(z),
                ..
            }) => Ok(Some(z)),
            _ => Err(WRONGTYPE.into()),
        }
    }

    /// Runs one command (as `redis.call` or from a client). Errors are Redis error texts.
    pub fn command(&mut self, args: &[&str]) -> Result<Resp, String> {
        let first = args.first().copied().unwrap_or_default();
        let upper;
        let name = if first.bytes().all(|b| !b.is_ascii_lowercase()) {
            first
        } else {
            upper = first.to_ascii_uppercase();
            upper.as_str()
        };
        let arity = |n: usize| -> Result<(), String> {
            if args.len() < n {
                Err(format!(
                    "ERR wrong number of arguments for '{}' command",
                    name.to_lowercase()
                ))
            } else {
                Ok(())
            }
        };
        match name {
            "GET" => {
                arity(2)?;
                Ok(self.get_str(args[1])?.map_or(Resp::Nil, Resp::Bulk))
            }
            "SET" => {
                arity(3)?;
                let mut expire_at = None;
                let mut rest = args[3..].iter();
                while let Some(option) = rest.next() {
                    match option.to_ascii_uppercase().as_str() {
                        "PX" => {
                            let ms = rest.next().ok_or("ERR syntax error")?;
                            let ms: i64 = ms
                                .parse()
                                .map_err(|_| "ERR value is not an integer or out of range")?;
                            if ms <= 0 {
                                return Err("ERR invalid expire time in 'set' command".into());
                            }
                            expire_at = Some(self.now_ms() + ms);
                        }
                        _ => return Err("ERR syntax error".into()),
                    }
                }
                self.keys.insert(
                    args[1].to_owned(),
                    Entry {
                        data: Data::Str(args[2].to_owned()),
                        expire_at,
                    },
                );
                Ok(Resp::Status("OK".into()))
            }
            "DEL" => {
                arity(2)?;
                let mut n = 0;
                for key in &args[1..] {
                    if self.live(key).is_some() {
                        self.keys.remove(*key);
                        n += 1;
                    }
                }
                Ok(Resp::Int(n))
            }
            "PEXPIRE" => {
                arity(3)?;
                let ms: i64 = args[2]
                    .parse()
                    .map_err(|_| "ERR value is not an integer or out of range")?;
                let now = self.now_ms();
                match self.live(args[1]) {
                    None => Ok(Resp::Int(0)),
                    Some(_) if ms <= 0 => {
                        self.keys.remove(args[1]);
                        Ok(Resp::Int(1))
                    }
                    Some(entry) => {
                        entry.expire_at = Some(now + ms);
                        Ok(Resp::Int(1))
                    }
                }
            }
            "HGET" => {
                arity(3)?;
                Ok(self
                    .hash(args[1], false)?
                    .and_then(|h| h.get(args[2]).cloned())
                    .map_or(Resp::Nil, Resp::Bulk))
            }
            "HMGET" => {
                arity(3)?;
                let hash = self.hash(args[1], false)?;
                Ok(Resp::Array(
                    args[2..]
                        .iter()
                        .map(|f| {
                            hash.as_ref()
                                .and_then(|h| h.get(*f).cloned())
                                .map_or(Resp::Nil, Resp::Bulk)
                        })
                        .collect(),
                ))
            }
            "HSET" => {
                if args.len() < 4 || !args.len().is_multiple_of(2) {
                    return Err("ERR wrong number of arguments for 'hset' command".into());
                }
                let hash = self.hash(args[1], true)?.expect("created");
                let mut added = 0;
                for pair in args[2..].chunks(2) {
                    if hash
                        .insert(pair[0].to_owned(), pair[1].to_owned())
                        .is_none()
                    {
                        added += 1;
                    }
                }
                Ok(Resp::Int(added))
            }
            "HINCRBY" => {
                arity(4)?;
                let by: i64 = args[3]
                    .parse()
                    .map_err(|_| "ERR value is not an integer or out of range")?;
                let hash = self.hash(args[1], true)?.expect("created");
                let current: i64 = match hash.get(args[2]) {
                    None => 0,
                    Some(v) => v.parse().map_err(|_| "ERR hash value is not an integer")?,
                };
                let new = current
                    .checked_add(by)
                    .ok_or("ERR increment or decrement would overflow")?;
                hash.insert(args[2].to_owned(), new.to_string());
                Ok(Resp::Int(new))
            }
            "TIME" => Ok(Resp::Array(vec![
                Resp::Bulk(self.now_us.div_euclid(1_000_000).to_string()),
                Resp::Bulk(self.now_us.rem_euclid(1_000_000).to_string()),
            ])),
            "ZADD" => {
                arity(4)?;
                if !args.len().is_multiple_of(2) {
                    return Err("ERR syntax error".into());
                }
                let mut pairs = Vec::new();
                for pair in args[2..].chunks(2) {
                    let score = parse_score(pair[0]).ok_or("ERR value is not a valid float")?;
                    pairs.push((score, pair[1].to_owned()));
                }
                let zset = self.zset(args[1], true)?.expect("created");
                let mut added = 0;
                for (score, member) in pairs {
                    if zset.insert(member, score).is_none() {
                        added += 1;
                    }
                }
                Ok(Resp::Int(added))
            }
            "ZREMRANGEBYSCORE" => {
                arity(4)?;
                let (min, min_excl) =
                    parse_bound(args[2]).ok_or("ERR min or max is not a float")?;
                let (max, max_excl) =
                    parse_bound(args[3]).ok_or("ERR min or max is not a float")?;
                let Some(zset) = self.zset(args[1], false)? else {
                    return Ok(Resp::Int(0));
                };
                let before = zset.len();
                zset.retain(|_, s| {
                    let above = if min_excl { *s > min } else { *s >= min };
                    let below = if max_excl { *s < max } else { *s <= max };
                    !(above && below)
                });
                let removed = before - zset.len();
                if zset.is_empty() {
                    self.keys.remove(args[1]);
                }
                Ok(Resp::Int(removed as i64))
            }
            "PUBLISH" => {
                arity(3)?;
                self.published
                    .push((args[1].to_owned(), args[2].to_owned()));
                Ok(Resp::Int(0))
            }
            "FLUSHALL" => {
                self.keys.clear();
                Ok(Resp::Status("OK".into()))
            }
            _ => Err(format!("ERR unknown command '{}'", args[0])),
        }
    }
}

fn parse_score(s: &str) -> Option<f64> {
    match s {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok().filter(|f| !f.is_nan()),
    }
}

fn parse_bound(s: &str) -> Option<(f64, bool)> {
    match s.strip_prefix('(') {
        Some(rest) => parse_score(rest).map(|f| (f, true)),
        None => parse_score(s).map(|f| (f, false)),
    }
}

/// A Lua number as Redis passes it to a command (integral values print as integers).
fn number_arg(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e17 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// The scripts the lease ships, compiled once per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Take,
    Renew,
    Release,
    Observe,
    FencedSet,
}

impl Script {
    pub const ALL: [Script; 5] = [
        Script::Take,
        Script::Renew,
        Script::Release,
        Script::Observe,
        Script::FencedSet,
    ];

    pub fn source(self) -> &'static str {
        match self {
            Script::Take => include_str!("../../src/scripts/lease_take.lua"),
            Script::Renew => include_str!("../../src/scripts/lease_renew.lua"),
            Script::Release => include_str!("../../src/scripts/lease_release.lua"),
            Script::Observe => include_str!("../../src/scripts/lease_observe.lua"),
            Script::FencedSet => include_str!("../../src/scripts/fenced_set.lua"),
        }
    }
}

/// A Redis server model: a keyspace plus a Lua state with the scripts loaded.
pub struct Model {
    lua: Lua,
    pub space: Rc<RefCell<Keyspace>>,
    scripts: Vec<Function>,
}

fn to_lua(lua: &Lua, reply: Resp) -> mlua::Result<LuaValue> {
    Ok(match reply {
        Resp::Nil => LuaValue::Boolean(false),
        Resp::Int(i) => LuaValue::Integer(i),
        Resp::Bulk(s) => LuaValue::String(lua.create_string(s)?),
        Resp::Status(s) => {
            let t = lua.create_table()?;
            t.raw_set("ok", s)?;
            LuaValue::Table(t)
        }
        Resp::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
        Resp::Error { msg, .. } => return Err(mlua::Error::RuntimeError(msg)),
    })
}

/// Redis's Lua → RESP conversion of a script's return value.
fn from_lua(value: LuaValue) -> mlua::Result<Resp> {
    Ok(match value {
        LuaValue::Nil => Resp::Nil,
        LuaValue::Boolean(false) => Resp::Nil,
        LuaValue::Boolean(true) => Resp::Int(1),
        LuaValue::Integer(i) => Resp::Int(i),
        LuaValue::Number(n) => Resp::Int(n as i64),
        LuaValue::String(s) => Resp::Bulk(s.to_str()?.to_owned()),
        LuaValue::Table(t) => table_reply(t)?,
        other => Resp::Error {
            msg: format!("ERR unsupported script reply {}", other.type_name()),
            raised: true,
        },
    })
}

fn table_reply(t: Table) -> mlua::Result<Resp> {
    if let LuaValue::String(err) = t.raw_get::<LuaValue>("err")? {
        return Ok(Resp::Error {
            msg: err.to_str()?.to_owned(),
            raised: false,
        });
    }
    if let LuaValue::String(ok) = t.raw_get::<LuaValue>("ok")? {
        return Ok(Resp::Status(ok.to_str()?.to_owned()));
    }
    let mut items = Vec::new();
    let mut i = 1;
    loop {
        let v: LuaValue = t.raw_get(i)?;
        if v.is_nil() {
            break;
        }
        items.push(from_lua(v)?);
        i += 1;
    }
    Ok(Resp::Array(items))
}

impl Model {
    pub fn new() -> Self {
        let lua = Lua::new();
        let space = Rc::new(RefCell::new(Keyspace::default()));
        let redis = lua.create_table().expect("table");
        let for_call = Rc::clone(&space);
        let call = lua
            .create_function(move |lua, args: MultiValue| {
                let mut strings = Vec::with_capacity(args.len());
                let mut numbers = Vec::new();
                for arg in &args {
                    match arg {
                        LuaValue::String(s) => strings.push(Some(s.to_str()?)),
                        LuaValue::Integer(i) => {
                            numbers.push(i.to_string());
                            strings.push(None);
                        }
                        LuaValue::Number(n) => {
                            numbers.push(number_arg(*n));
                            strings.push(None);
                        }
                        _ => {
                            return Err(mlua::Error::RuntimeError(
                                "ERR Lua redis lib command arguments must be strings or integers"
                                    .into(),
                            ))
                        }
                    }
                }
                let mut next_number = numbers.iter();
                let words: Vec<&str> = strings
                    .iter()
                    .map(|s| match s {
                        Some(s) => &**s,
                        None => next_number.next().expect("counted").as_str(),
                    })
                    .collect();
                let reply = for_call.borrow_mut().command(&words);
                match reply {
                    Ok(reply) => to_lua(lua, reply),
                    Err(msg) => Err(mlua::Error::RuntimeError(msg)),
                }
            })
            .expect("redis.call");
        redis.raw_set("call", call).expect("set");
        let error_reply = lua
            .create_function(|lua, msg: String| {
                let t = lua.create_table()?;
                t.raw_set("err", msg)?;
                Ok(t)
            })
            .expect("redis.error_reply");
        redis.raw_set("error_reply", error_reply).expect("set");
        lua.globals().raw_set("redis", redis).expect("set");
        let scripts = Script::ALL
            .iter()
            .map(|s| {
                lua.load(s.source())
                    .set_name(format!("{s:?}"))
                    .into_function()
                    .expect("the shipped script compiles")
            })
            .collect();
        Model {
            lua,
            space,
            scripts,
        }
    }

    pub fn reset(&mut self) {
        *self.space.borrow_mut() = Keyspace::default();
    }

    pub fn set_time_us(&mut self, now_us: i64) {
        self.space.borrow_mut().now_us = now_us;
    }

    /// `EVALSHA` of a shipped script.
    pub fn eval(&mut self, script: Script, keys: &[&str], argv: &[&str]) -> Resp {
        let globals = self.lua.globals();
        let run = || -> mlua::Result<Resp> {
            globals.raw_set("KEYS", self.lua.create_sequence_from(keys.iter().copied())?)?;
            globals.raw_set("ARGV", self.lua.create_sequence_from(argv.iter().copied())?)?;
            let index = Script::ALL
                .iter()
                .position(|s| *s == script)
                .expect("known");
            let value: LuaValue = self.scripts[index].call(())?;
            from_lua(value)
        };
        match run() {
            Ok(resp) => resp,
            Err(err) => Resp::Error {
                msg: match err {
                    mlua::Error::CallbackError { cause, .. } => cause.to_string(),
                    other => other.to_string(),
                },
                raised: true,
            },
        }
    }

    /// A plain command from a client.
    pub fn command(&mut self, args: &[&str]) -> Resp {
        match self.space.borrow_mut().command(args) {
            Ok(reply) => reply,
            Err(msg) => Resp::Error { msg, raised: false },
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}
