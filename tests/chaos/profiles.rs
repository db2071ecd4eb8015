//! The servers the chaos suite runs against, and the focused per-profile check: at the
//! default `lock_ttl` (30 s), a kill -9 of the primary is followed by the standby within 1 s,
//! and a 150 ms SIGSTOP of redis-server leaves the same primary (no demotion, same epoch).

use std::time::{Duration, Instant};

use super::analysis::{self, InstanceData};
use super::bot::{mono_ns, BotOptions, Instance};
use super::common::RedisServer;
use super::proxy::Proxy;

/// The user the bots log in as on the least-privilege profile.
pub const ACL_USER: &str = "bot";
pub const ACL_PASSWORD: &str = "pw";
/// The secret name `CONFIG` answers to on the profile without CONFIG and INFO: only the
/// harness knows it (the eviction fault needs `CONFIG SET maxmemory`).
pub const ADMIN_CONFIG: &str = "qs-admin-config";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    /// A plain redis-server; the bots connect as the default user.
    Plain,
    /// `--rename-command CONFIG <secret> --rename-command INFO ""`: the bots have neither.
    NoConfigInfo,
    /// The bots log in as `bot` (`ACL SETUSER bot on >pw ~bot:* &bot:* +@all -@dangerous
    /// -@admin`): keys and channels `bot:*` only, no dangerous or admin commands.
    LeastPrivilege,
}

pub const PROFILES: [Profile; 3] = [
    Profile::Plain,
    Profile::NoConfigInfo,
    Profile::LeastPrivilege,
];

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Plain => "plain",
            Profile::NoConfigInfo => "no CONFIG/INFO",
            Profile::LeastPrivilege => "least-privilege ACL user",
        }
    }

    /// redis-server arguments of this profile, on top of `base`.
    pub fn server_args(self, base: &[&'static str]) -> Vec<&'static str> {
        let mut args = base.to_vec();
        match self {
            Profile::Plain => {}
            Profile::NoConfigInfo => {
                args.extend(["--rename-command", "CONFIG", ADMIN_CONFIG]);
                args.extend(["--rename-command", "INFO", ""]);
            }
            Profile::LeastPrivilege => args.extend([
                "--user",
                ACL_USER,
                "on",
                ">pw",
                "~bot:*",
                "&bot:*",
                "+@all",
                "-@dangerous",
                "-@admin",
            ]),
        }
        args
    }

    pub fn start_server(self, base: &[&'static str]) -> RedisServer {
        let server = RedisServer::start_with(&self.server_args(base));
        self.check_server(&server);
        server
    }

    /// The profile is what it says: CONFIG and INFO unknown to a client, or the bot user
    /// refused `CONFIG`, `INFO`-free admin commands and keys outside `bot:*`.
    fn check_server(self, server: &RedisServer) {
        let mut conn = server.connection();
        match self {
            Profile::Plain => {}
            Profile::NoConfigInfo => {
                for command in ["CONFIG", "INFO"] {
                    let mut c = redis::cmd(command);
                    if command == "CONFIG" {
                        c.arg("GET").arg("maxmemory");
                    }
                    let reply: redis::RedisResult<redis::Value> = c.query(&mut conn);
                    assert!(reply.is_err(), "{command} still answers: {reply:?}");
                }
            }
            Profile::LeastPrivilege => {
                let client = redis::Client::open(server.url_as(ACL_USER, ACL_PASSWORD)).unwrap();
                let mut bot = client
                    .get_connection_with_timeout(Duration::from_secs(2))
                    .expect("log in as the ACL user");
                let refused = |reply: redis::RedisResult<redis::Value>| reply.is_err();
                assert!(refused(
                    redis::cmd("CONFIG")
                        .arg("GET")
                        .arg("maxmemory")
                        .query(&mut bot)
                ));
                assert!(refused(redis::cmd("FLUSHALL").query(&mut bot)));
                assert!(refused(redis::cmd("GET").arg("other:key").query(&mut bot)));
                assert!(!refused(redis::cmd("GET").arg("bot:x").query(&mut bot)));
            }
        }
    }

    /// The URL the bots use to reach `port` (the server's, or a proxy's).
    pub fn bot_url(self, port: u16) -> String {
        match self {
            Profile::LeastPrivilege => {
                format!("redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{port}/0")
            }
            _ => format!("redis://127.0.0.1:{port}/0"),
        }
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// What the focused check measured on one profile.
pub struct ProfileFigures {
    pub label: String,
    /// kill -9 of the primary → the standby's first `is_primary() == true`, in ns.
    pub kill_failovers: Vec<u64>,
    /// 150 ms SIGSTOPs of redis-server, each of which left the same primary.
    pub stalls: usize,
    pub overlap_ns: u64,
}

struct Pair {
    url: String,
    bot: String,
    slots: [Instance; 2],
    past: Vec<Instance>,
    spawned: u32,
}

impl Pair {
    fn spawn(&mut self, slot: usize) {
        self.spawned += 1;
        let writer = format!("{}{}", ['A', 'B'][slot], self.spawned);
        let fresh = Instance::spawn(
            &BotOptions::chaos(&self.url, 30_000, 120),
            &self.bot,
            &writer,
        );
        let old = std::mem::replace(&mut self.slots[slot], fresh);
        self.past.push(old);
        let give_up = Instant::now() + Duration::from_secs(25);
        while !self.slots[slot].log.lock().unwrap().ready {
            assert!(Instant::now() < give_up, "bot {writer} did not start");
            sleep_ms(5);
        }
    }

    fn primary(&self) -> Option<usize> {
        self.slots.iter().position(Instance::is_primary_now)
    }

    /// Both alive, exactly one primary, steadily for `steady_ms` (bounded: 20 s).
    fn settle(&self, steady_ms: u64) -> usize {
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut since: Option<Instant> = None;
        while Instant::now() < give_up {
            let alive = self
                .slots
                .iter()
                .all(|s| s.alive(Duration::from_millis(400)));
            let primaries = self.slots.iter().filter(|s| s.is_primary_now()).count();
            if alive && primaries == 1 {
                if since.get_or_insert_with(Instant::now).elapsed().as_millis()
                    >= u128::from(steady_ms)
                {
                    return self.primary().unwrap();
                }
            } else {
                since = None;
            }
            sleep_ms(5);
        }
        panic!("no steady single primary within 20 s");
    }
}

/// On a server of `profile` (the bots through a loopback proxy when `via_proxy`), at the
/// default `lock_ttl` of 30 s: `kills` kill -9 of the primary, each followed by the standby
/// within 1 s, and `stalls` 150 ms SIGSTOPs of redis-server that must not move the lease.
pub fn kill_and_stall(
    profile: Profile,
    via_proxy: bool,
    kills: usize,
    stalls: usize,
) -> ProfileFigures {
    let label = format!(
        "{}{}",
        profile.name(),
        if via_proxy {
            ", through a loopback proxy"
        } else {
            ""
        }
    );
    let server = profile.start_server(&["--maxmemory-policy", "noeviction"]);
    let proxy = via_proxy.then(|| Proxy::start(server.port));
    let port = proxy.as_ref().map_or(server.port, |p| p.port);
    let url = profile.bot_url(port);
    let bot = "focus".to_owned();
    let first = |writer: &str| Instance::spawn(&BotOptions::chaos(&url, 30_000, 120), &bot, writer);
    let mut pair = Pair {
        slots: [first("A0"), first("B0")],
        url: url.clone(),
        bot: bot.clone(),
        past: Vec::new(),
        spawned: 0,
    };
    for slot in 0..2 {
        let give_up = Instant::now() + Duration::from_secs(25);
        while !pair.slots[slot].log.lock().unwrap().ready {
            assert!(Instant::now() < give_up, "[{label}] bot did not start");
            sleep_ms(5);
        }
    }
    let mut kill_failovers = Vec::new();
    for _ in 0..kills {
        let p = pair.settle(500);
        let killed = pair.slots[p].writer.clone();
        let t0 = pair.slots[p].kill();
        let give_up = Instant::now() + Duration::from_secs(5);
        while !pair.slots[1 - p].is_primary_now() && Instant::now() < give_up {
            sleep_ms(2);
        }
        let started = pair.slots[1 - p]
            .log
            .lock()
            .unwrap()
            .runs
            .iter()
            .map(|r| r.start)
            .find(|&s| s > t0);
        let took = started.map(|s| s - t0);
        println!(
            "[{label}] kill -9 of the primary {killed}: the standby led after {}",
            took.map_or("(never)".to_owned(), |t| format!(
                "{:.0} ms",
                t as f64 / 1e6
            ))
        );
        kill_failovers.push(took.unwrap_or(u64::MAX));
        pair.spawn(p);
    }
    let mut stalled = 0;
    for _ in 0..stalls {
        let p = pair.settle(500);
        let runs_before: Vec<usize> = pair
            .slots
            .iter()
            .map(|s| s.log.lock().unwrap().runs.len())
            .collect();
        let epoch = pair.slots[p].log.lock().unwrap().runs.last().unwrap().epoch;
        server.freeze();
        sleep_ms(150);
        server.thaw();
        sleep_ms(800);
        let runs_after: Vec<usize> = pair
            .slots
            .iter()
            .map(|s| s.log.lock().unwrap().runs.len())
            .collect();
        let still = pair.slots[p].is_primary_now();
        let epoch_after = pair.slots[p].log.lock().unwrap().runs.last().unwrap().epoch;
        println!(
            "[{label}] 150 ms SIGSTOP of redis-server: {} still primary: {still}, epoch {epoch} → {epoch_after}, runs {runs_before:?} → {runs_after:?}",
            pair.slots[p].writer
        );
        assert!(
            still && runs_before == runs_after && epoch == epoch_after,
            "[{label}] a 150 ms Redis stall moved the lease: {} primary {still}, runs {runs_before:?} → {runs_after:?}, epoch {epoch} → {epoch_after}",
            pair.slots[p].writer
        );
        stalled += 1;
    }
    // No overlap anywhere in this check either.
    for slot in &mut pair.slots {
        slot.signal(libc::SIGSTOP);
    }
    let mut instances = Vec::new();
    for instance in pair.past.iter_mut().chain(pair.slots.iter_mut()) {
        instance.finish();
        let log = instance.log.lock().unwrap();
        instances.push(InstanceData::new(
            &instance.writer,
            &log.runs,
            log.writes.clone(),
            instance.ended_at.unwrap_or_else(mono_ns),
        ));
    }
    let (overlap_ns, details) = analysis::overlap(&instances);
    assert_eq!(overlap_ns, 0, "[{label}] two primaries: {details:?}");
    let stale = analysis::stale_by_runs(&instances);
    assert!(stale.is_empty(), "[{label}] stale writes: {stale:?}");
    kill_failovers.sort_unstable();
    ProfileFigures {
        label,
        kill_failovers,
        stalls: stalled,
        overlap_ns,
    }
}
