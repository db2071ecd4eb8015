//! The lease's wire protocol as data: what the machine asks for ([`Command`]), what comes
//! back ([`Reply`]), what a standby sees ([`Record`]), and each command as the Lua script
//! (`src/scripts/lease_*.lua`) and arguments that carry it ([`Command::call`]). No IO here
//! and no decisions; the replies are parsed where the Redis client is (`src/lease/protocol.rs`
//! of quantshift_core).

/// Monotonic nanoseconds of one instance's clock (never compared across instances).
pub type Nanos = u64;

/// The lease record (`bot:{bot}:lease_record`) as one observation saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// No record: an empty Redis, or one that lost the record (flush, eviction, restart).
    Absent,
    /// Given up by its holder (`token` is empty); `seq` makes this release unique.
    Released { seq: u64, epoch: u64 },
    /// Held or claimed by `token`; `seq` moves on every renewal; `deadline_ms` is the
    /// holder's declared self-demotion deadline.
    Held {
        token: String,
        seq: u64,
        deadline_ms: u64,
        epoch: u64,
    },
}

impl Record {
    pub fn epoch(&self) -> u64 {
        match self {
            Record::Absent => 0,
            Record::Released { epoch, .. } | Record::Held { epoch, .. } => *epoch,
        }
    }

    /// What a take must find for it to happen (compare-and-set on the whole record).
    pub fn expectation(&self) -> Expect {
        match self {
            Record::Absent => Expect::Absent,
            Record::Released { seq, .. } => Expect::Record {
                token: String::new(),
                seq: *seq,
            },
            Record::Held { token, seq, .. } => Expect::Record {
                token: token.clone(),
                seq: *seq,
            },
        }
    }
}

/// The record a take expects to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Absent,
    Record { token: String, seq: u64 },
}

/// Work the machine wants done on Redis; `id` comes back with the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Read the lease record (`HMGET`); `presence` also records this instance among the
    /// live ones.
    Observe { id: u64, presence: bool },
    /// Renew `token` if the lock key and the record still carry it; `refresh` also resets
    /// the lock key's TTL and writes the heartbeat and presence, `presence` the presence only.
    Renew {
        id: u64,
        token: String,
        refresh: bool,
        presence: bool,
    },
    /// Replace the record found as `expect` with `token` (claim or take-over), handing out
    /// an epoch above `floor_epoch`.
    Take {
        id: u64,
        expect: Expect,
        token: String,
        floor_epoch: u64,
        deadline_ms: u64,
    },
    /// Give `token` up if it is still the record's, and announce it unless `quiet`; with
    /// `lock_only`, only delete the lock key if it carries `token` (a retired token).
    Release {
        id: u64,
        token: String,
        quiet: bool,
        lock_only: bool,
    },
}

impl Command {
    pub fn id(&self) -> u64 {
        match self {
            Command::Observe { id, .. }
            | Command::Renew { id, .. }
            | Command::Take { id, .. }
            | Command::Release { id, .. } => *id,
        }
    }
}

/// The keys a lease command touches (the bot's, from `Keys`).
#[derive(Debug, Clone, Copy)]
pub struct LeaseKeys<'a> {
    pub lock: &'a str,
    pub epoch: &'a str,
    pub record: &'a str,
    pub heartbeat: &'a str,
    pub instances: &'a str,
    pub channel: &'a str,
}

/// What every call of one instance carries besides the command.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    pub instance_id: &'a str,
    pub lock_ttl_ms: u64,
    pub heartbeat_ttl_ms: u64,
    /// How long one presence entry counts this instance as live.
    pub presence_ttl_ms: u64,
    /// The heartbeat key's value (an ISO-8601 UTC time).
    pub heartbeat: &'a str,
}

/// The lease scripts (`src/scripts/lease_*.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseScript {
    Take,
    Renew,
    Release,
    Observe,
}

/// One command as Redis sees it: a script with its `KEYS` and `ARGV`, or a plain command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call<'a> {
    Script {
        script: LeaseScript,
        keys: Vec<&'a str>,
        args: Vec<String>,
    },
    Plain(Vec<String>),
}

impl Command {
    /// The script (or plain command) that carries this command, with its arguments: the
    /// one place that knows each script's `KEYS` and `ARGV` order.
    pub fn call<'a>(&self, keys: &LeaseKeys<'a>, context: &CallContext<'_>) -> Call<'a> {
        let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
        match self {
            Command::Observe { presence: true, .. } => Call::Script {
                script: LeaseScript::Observe,
                keys: vec![keys.record, keys.instances],
                args: vec![
                    context.presence_ttl_ms.to_string(),
                    context.instance_id.to_owned(),
                ],
            },
            Command::Observe { .. } => Call::Plain(
                ["HMGET", keys.record]
                    .into_iter()
                    .chain(RECORD_FIELDS)
                    .map(str::to_owned)
                    .collect(),
            ),
            Command::Renew {
                token,
                refresh,
                presence,
                ..
            } => Call::Script {
                script: LeaseScript::Renew,
                keys: vec![keys.lock, keys.record, keys.heartbeat, keys.instances],
                args: vec![
                    token.clone(),
                    match (refresh, presence) {
                        (true, _) => "1",
                        (false, true) => "2",
                        (false, false) => "0",
                    }
                    .to_owned(),
                    context.lock_ttl_ms.to_string(),
                    context.heartbeat.to_owned(),
                    context.heartbeat_ttl_ms.to_string(),
                    context.instance_id.to_owned(),
                    context.presence_ttl_ms.to_string(),
                ],
            },
            Command::Take {
                expect,
                token,
                floor_epoch,
                deadline_ms,
                ..
            } => {
                let (present, expected, seq) = match expect {
                    Expect::Absent => (false, "", 0),
                    Expect::Record { token, seq } => (true, token.as_str(), *seq),
                };
                Call::Script {
                    script: LeaseScript::Take,
                    keys: vec![
                        keys.lock,
                        keys.epoch,
                        keys.record,
                        keys.heartbeat,
                        keys.instances,
                    ],
                    args: vec![
                        flag(present),
                        expected.to_owned(),
                        seq.to_string(),
                        token.clone(),
                        context.lock_ttl_ms.to_string(),
                        deadline_ms.to_string(),
                        floor_epoch.to_string(),
                        context.heartbeat.to_owned(),
                        context.heartbeat_ttl_ms.to_string(),
                        context.instance_id.to_owned(),
                        context.presence_ttl_ms.to_string(),
                    ],
                }
            }
            Command::Release {
                token,
                quiet,
                lock_only,
                ..
            } => Call::Script {
                script: LeaseScript::Release,
                keys: vec![keys.lock, keys.record],
                args: vec![
                    token.clone(),
                    if *quiet { "" } else { keys.channel }.to_owned(),
                    format!("{RELEASED_NOTICE} {}", context.instance_id),
                    flag(*lock_only),
                ],
            },
        }
    }
}

/// What a command's round trip gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Observed(Record),
    Renewed {
        seq: u64,
    },
    /// The lock key or the record no longer carries the token.
    RenewRefused,
    Taken {
        epoch: u64,
    },
    /// The record was no longer what the take expected.
    TakeRefused,
    /// The lock key carries a token the record does not name: wait for it to expire.
    TakeBlocked,
    Released {
        released: bool,
    },
    /// An error or a timeout: the command may or may not have run.
    Failed,
}

/// Messages on the lease channel (`bot:{bot}:lease`): a holder gave the lease up.
pub const RELEASED_NOTICE: &str = "released";
/// An operator asks the primary to hand the lease over (`quantshift-state handover`).
pub const HANDOVER_REQUEST: &str = "handover";

/// The fields of the lease record a look reads, in order.
pub const RECORD_FIELDS: [&str; 4] = ["token", "seq", "deadline_ms", "epoch"];
