//! Chaos: two bot processes with the same bot name against one real redis-server (AOF,
//! `appendfsync always`), each behind its own loopback TCP proxy, under seeded random faults:
//! kill -9 of a bot (then a new one), SIGSTOP of a bot past its TTL, SIGSTOP of redis-server
//! past the TTL, a Redis crash and restart with its AOF and one that lost every key, a cut /
//! delay / drop of one bot's network, a connection reset through one bot's proxy, and
//! `CLIENT KILL` of every client. With `lock_ttl` of 10 s or more (the default is 30 s), the
//! freezes and network faults last up to 3 s instead (short of the renew deadline: the
//! primary must then lead on, unreplaced).
//!
//! Checked from the bots' logs (on the shared monotonic clock) and from Redis at the end:
//! no instant where two instances both said primary; no acknowledged write sent while
//! another instance was primary; every failover after a kill within 1 s whatever the
//! `lock_ttl` (Redis sees the process die: seen-death failover); no acknowledged write lost
//! (the last position write, and every fill: the fills set holds every acknowledged fill id,
//! and the position's quantity equals the number of fills recorded), counting only writes
//! acknowledged after the last restart that lost every key.
//!
//! The short run is part of the test suite, and a second one of 25 s at the default
//! `lock_ttl` of 30 s (`QS_CHAOS_DEFAULT_TTL_SECONDS` changes its length). Longer, with figures:
//! `QS_CHAOS_SECONDS=900 cargo test --release --test chaos -- --nocapture`
//! (`QS_CHAOS_SEED` replays a seed, `QS_CHAOS_TTL_MS` changes `lock_ttl`, `QS_CHAOS_REPORT`
//! names a file for the summary).

#[path = "chaos/analysis.rs"]
mod analysis;
#[path = "chaos/bot.rs"]
mod bot;
mod common;
#[path = "chaos/proxy.rs"]
mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use analysis::InstanceData;
use bot::{mono_ns, Instance};
use common::RedisServer;
use proxy::{Mode, Proxy};

/// Not a test of its own: the body of the chaos bot processes (does nothing without
/// `QS_CHAOS_URL`).
#[test]
fn chaos_child() {
    bot::child_main();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    KillBot,
    FreezeBot,
    FreezeRedis,
    RestartRedis,
    RestartRedisEmpty,
    Network,
    ProxyReset,
    ClientKill,
}

const KINDS: [Kind; 8] = [
    Kind::KillBot,
    Kind::FreezeBot,
    Kind::FreezeRedis,
    Kind::RestartRedis,
    Kind::RestartRedisEmpty,
    Kind::Network,
    Kind::ProxyReset,
    Kind::ClientKill,
];

struct Slot {
    name: char,
    proxy: Proxy,
    current: Instance,
    past: Vec<Instance>,
    incarnations: u32,
}

struct Event {
    label: String,
    target_was_primary: bool,
    at_ms: f64,
}

struct Chaos {
    server: RedisServer,
    slots: Vec<Slot>,
    bot: String,
    ttl_ms: u64,
    max_s: u64,
    rng: fastrand::Rng,
    origin: u64,
    events: Vec<Event>,
    /// (writer killed while primary, monotonic ns of the kill)
    primary_kills: Vec<(String, u64)>,
    /// (writer frozen while primary, monotonic ns of the SIGSTOP)
    primary_freezes: Vec<(String, u64)>,
    /// Monotonic ns of the last restart that lost every key.
    last_wipe: u64,
    /// How often a kill -9 aims at the primary.
    kill_primary_odds: f64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

impl Chaos {
    /// How long a freeze or network fault lasts: past the TTL for short leases, otherwise up
    /// to 3 s (short of the renew deadline).
    fn hold(&mut self, past_ttl: u64, short: u64) -> u64 {
        if self.ttl_ms >= 10_000 {
            self.rng.u64(200..short.max(201))
        } else {
            past_ttl
        }
    }

    fn spawn_in(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        let writer = format!("{}{}", s.name, s.incarnations);
        s.incarnations += 1;
        let fresh = Instance::spawn(&s.proxy.url(), &self.bot, &writer, self.ttl_ms, self.max_s);
        let old = std::mem::replace(&mut s.current, fresh);
        s.past.push(old);
        self.wait_ready(slot);
    }

    fn wait_ready(&self, slot: usize) {
        let give_up = Instant::now() + Duration::from_secs(25);
        while Instant::now() < give_up {
            if self.slots[slot].current.log.lock().unwrap().ready {
                return;
            }
            sleep_ms(5);
        }
        let lines = self.slots[slot]
            .current
            .log
            .lock()
            .unwrap()
            .other_lines
            .clone();
        panic!(
            "bot {} did not start within 25 s: {lines:?}",
            self.slots[slot].current.writer
        );
    }

    fn primary_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.current.is_primary_now())
    }

    /// Whether Redis vouches for both bots on its current run: the holder's liveness channel
    /// in the lease record has a subscriber and was recorded on this run, and both bots have
    /// a liveness channel. Right after a restart of Redis each bot registers a new one (within
    /// about 250 ms) and the holder records it; a holder killed before that is replaced when
    /// its lease expires (docs/failover.md), which is not what a kill fault measures.
    fn vouched(&self) -> bool {
        let Ok(mut conn) = redis::Client::open(self.server.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(1)))
        else {
            return false;
        };
        let record: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("bot:{}:lease_record", self.bot))
            .query(&mut conn)
            .unwrap_or_default();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut conn)
            .unwrap_or_default();
        let run_id = info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(str::trim);
        let (Some(channel), Some(recorded_run)) = (record.get("channel"), record.get("run_id"))
        else {
            return false;
        };
        let holder_subscribed = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query::<(String, u64)>(&mut conn)
            .is_ok_and(|(_, subscribers)| subscribers > 0);
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(format!("bot:{}:alive:*", self.bot))
            .query(&mut conn)
            .unwrap_or_default();
        holder_subscribed && run_id == Some(recorded_run.as_str()) && channels.len() >= 2
    }

    /// Both bots alive and exactly one primary, steadily for 300 ms, and Redis vouching for
    /// both (bounded: 30 s).
    fn settle(&self) {
        let give_up = Instant::now() + Duration::from_secs(30);
        let mut steady_since: Option<Instant> = None;
        while Instant::now() < give_up {
            let alive = self
                .slots
                .iter()
                .all(|s| s.current.alive(Duration::from_millis(400)));
            let primaries = self
                .slots
                .iter()
                .filter(|s| s.current.is_primary_now())
                .count();
            if alive && primaries == 1 {
                let since = *steady_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(300) && self.vouched() {
                    return;
                }
            } else {
                steady_since = None;
            }
            sleep_ms(5);
        }
        panic!(
            "no steady single primary within 30 s after the last fault (events so far: {})",
            self.events.len()
        );
    }

    fn pick_target(&mut self, p_primary: f64) -> usize {
        match self.primary_slot() {
            Some(i) if self.rng.f64() < p_primary => i,
            Some(i) => 1 - i,
            None => self.rng.usize(0..2),
        }
    }

    fn record(&mut self, label: String, target_was_primary: bool, t0: u64) {
        let at_ms = (t0 - self.origin) as f64 / 1e6;
        println!("[{at_ms:>10.1} ms] {label}");
        self.events.push(Event {
            label,
            target_was_primary,
            at_ms,
        });
    }

    fn inject(&mut self, kind: Kind) {
        let ttl = self.ttl_ms;
        match kind {
            Kind::KillBot => {
                let i = self.pick_target(self.kill_primary_odds);
                let was_primary = self.slots[i].current.is_primary_now();
                let writer = self.slots[i].current.writer.clone();
                let t0 = self.slots[i].current.kill();
                if was_primary {
                    self.primary_kills.push((writer.clone(), t0));
                    // Wait (bounded) for the other to take over before a new bot joins.
                    let other = 1 - i;
                    let give_up = Instant::now() + Duration::from_millis(ttl * 3 + 3000);
                    while Instant::now() < give_up && !self.slots[other].current.is_primary_now() {
                        sleep_ms(2);
                    }
                }
                self.record(
                    format!("kill -9 {writer} (primary: {was_primary})"),
                    was_primary,
                    t0,
                );
                sleep_ms(self.rng.u64(0..500));
                self.spawn_in(i);
            }
            Kind::FreezeBot => {
                let i = self.pick_target(0.75);
                let was_primary = self.slots[i].current.is_primary_now();
                let writer = self.slots[i].current.writer.clone();
                let past = ttl + self.rng.u64(200..1200);
                let hold = self.hold(past, 3000);
                let t0 = mono_ns();
                self.slots[i].current.signal(libc::SIGSTOP);
                if was_primary {
                    self.primary_freezes.push((writer.clone(), t0));
                }
                sleep_ms(hold);
                self.slots[i].current.signal(libc::SIGCONT);
                self.record(
                    format!("SIGSTOP {writer} for {hold} ms (primary: {was_primary})"),
                    was_primary,
                    t0,
                );
            }
            Kind::FreezeRedis => {
                let past = ttl + self.rng.u64(200..1200);
                let hold = self.hold(past, 3000);
                let t0 = mono_ns();
                self.server.freeze();
                sleep_ms(hold);
                self.server.thaw();
                self.record(format!("SIGSTOP redis-server for {hold} ms"), false, t0);
            }
            Kind::RestartRedis => {
                let down = self.rng.u64(0..800);
                let t0 = mono_ns();
                self.server.kill();
                sleep_ms(down);
                self.server.restart();
                self.record(
                    format!("kill -9 redis-server, restarted after {down} ms (AOF)"),
                    false,
                    t0,
                );
            }
            Kind::RestartRedisEmpty => {
                let down = self.rng.u64(0..800);
                let t0 = mono_ns();
                self.server.kill();
                sleep_ms(down);
                self.server.restart_empty();
                self.last_wipe = mono_ns();
                self.record(
                    format!(
                        "kill -9 redis-server, restarted empty after {down} ms (every key lost)"
                    ),
                    false,
                    t0,
                );
            }
            Kind::ProxyReset => {
                let i = self.pick_target(0.7);
                let was_primary = self.slots[i].current.is_primary_now();
                let writer = self.slots[i].current.writer.clone();
                let t0 = mono_ns();
                self.slots[i].proxy.set_mode(Mode::Cut);
                sleep_ms(20);
                self.slots[i].proxy.set_mode(Mode::Pass);
                self.record(
                    format!("connection reset through {writer}'s proxy (primary: {was_primary})"),
                    was_primary,
                    t0,
                );
            }
            Kind::ClientKill => {
                let t0 = mono_ns();
                let mut conn = self.server.connection();
                for kind in ["normal", "pubsub"] {
                    let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg(kind)
                        .arg("SKIPME")
                        .arg("yes")
                        .query(&mut conn);
                }
                self.record("CLIENT KILL of every client".to_owned(), false, t0);
            }
            Kind::Network => {
                let i = self.pick_target(0.7);
                let was_primary = self.slots[i].current.is_primary_now();
                let writer = self.slots[i].current.writer.clone();
                let (mode, hold) = match self.rng.u8(0..3) {
                    0 => {
                        let past = self.rng.u64(300..2 * ttl + 300);
                        (Mode::Cut, self.hold(past, 3000))
                    }
                    1 => {
                        let past = self.rng.u64(ttl..3 * ttl);
                        (
                            Mode::Delay(Duration::from_millis(self.rng.u64(50..=400))),
                            self.hold(past, 3000),
                        )
                    }
                    _ => {
                        let past = ttl + self.rng.u64(200..1200);
                        (Mode::Drop, self.hold(past, 3000))
                    }
                };
                let t0 = mono_ns();
                self.slots[i].proxy.set_mode(mode);
                sleep_ms(hold);
                self.slots[i].proxy.set_mode(Mode::Pass);
                self.record(
                    format!("network {mode:?} between {writer} and Redis for {hold} ms (primary: {was_primary})"),
                    was_primary,
                    t0,
                );
            }
        }
    }
}

fn kind_of(label: &str) -> &'static str {
    if label.contains("restarted empty") {
        "redis restart, every key lost"
    } else if label.starts_with("kill -9 redis") {
        "redis restart (kill -9, AOF)"
    } else if label.starts_with("connection reset") {
        "connection reset through the proxy"
    } else if label.starts_with("CLIENT KILL") {
        "CLIENT KILL of every client"
    } else if label.starts_with("kill -9") {
        "bot kill -9"
    } else if label.starts_with("SIGSTOP redis") {
        "redis SIGSTOP"
    } else if label.starts_with("SIGSTOP") {
        "bot SIGSTOP"
    } else if label.contains("Cut") {
        "network cut"
    } else if label.contains("Delay") {
        "network delay"
    } else {
        "network drop (stall)"
    }
}

/// One chaos run at a time: two at once would share the two cores and blur the timings.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn two_bots_under_random_faults_never_overlap_and_lose_nothing() {
    let _one_at_a_time = serial();
    let seconds = env_u64("QS_CHAOS_SECONDS").unwrap_or(75);
    let ttl_ms = env_u64("QS_CHAOS_TTL_MS").unwrap_or(1000);
    chaos_run(seconds, ttl_ms, 0.8);
}

/// The same faults at the default `lock_ttl` (30 s), briefly: a killed primary is replaced
/// within 1 s only because Redis sees its connections close (the lease would take 20–30 s
/// to expire); freezes and network faults stay short of the renew deadline. Skipped in a
/// long run (`QS_CHAOS_SECONDS`), which picks its own `lock_ttl`.
#[test]
fn at_the_default_lock_ttl_faults_never_overlap_and_kills_are_followed_within_a_second() {
    if env_u64("QS_CHAOS_SECONDS").is_some() {
        return;
    }
    let _one_at_a_time = serial();
    // Every round of faults has a kill: here it always aims at the primary.
    let primary_kills = chaos_run(
        env_u64("QS_CHAOS_DEFAULT_TTL_SECONDS").unwrap_or(25),
        30_000,
        1.0,
    );
    assert!(primary_kills > 0, "the primary was killed at least once");
}

/// Runs the faults for `seconds`, checks the run, and returns how many kills hit a primary.
fn chaos_run(seconds: u64, ttl_ms: u64, kill_primary_odds: f64) -> usize {
    let seed = env_u64("QS_CHAOS_SEED").unwrap_or_else(|| fastrand::u64(..));
    println!(
        "chaos seed {seed} (replay: QS_CHAOS_SEED={seed}), {seconds} s of faults, lock_ttl {ttl_ms} ms"
    );
    let server = RedisServer::start_with(&[
        "--maxmemory-policy",
        "noeviction",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let bot = "chaos".to_owned();
    let max_s = seconds + 180;
    let mut slots = Vec::new();
    for name in ['A', 'B'] {
        let proxy = Proxy::start(server.port);
        let writer = format!("{name}0");
        let current = Instance::spawn(&proxy.url(), &bot, &writer, ttl_ms, max_s);
        slots.push(Slot {
            name,
            proxy,
            current,
            past: Vec::new(),
            incarnations: 1,
        });
    }
    let mut chaos = Chaos {
        server,
        slots,
        bot: bot.clone(),
        ttl_ms,
        max_s,
        rng: fastrand::Rng::with_seed(seed),
        origin: mono_ns(),
        events: Vec::new(),
        primary_kills: Vec::new(),
        primary_freezes: Vec::new(),
        last_wipe: 0,
        kill_primary_odds,
    };
    chaos.wait_ready(0);
    chaos.wait_ready(1);
    let started = Instant::now();
    let run_for = Duration::from_secs(seconds);
    let max_events = seconds as usize; // bounded in count as well as in time
    let mut round = Vec::new();
    while started.elapsed() < run_for && chaos.events.len() < max_events {
        chaos.settle();
        let quiet = chaos.rng.u64(200..1500);
        sleep_ms(quiet);
        // Every kind once per round, in a random order.
        if round.is_empty() {
            round = KINDS.to_vec();
            chaos.rng.shuffle(&mut round);
        }
        let kind = round.pop().unwrap();
        chaos.inject(kind);
    }
    chaos.settle();
    sleep_ms(500);

    // Freeze both bots, read what Redis holds, then stop them.
    for slot in &chaos.slots {
        slot.current.signal(libc::SIGSTOP);
    }
    sleep_ms(300);
    let mut conn = chaos.server.connection();
    let get = |conn: &mut redis::Connection, key: &str| -> Option<String> {
        redis::cmd("GET").arg(key).query(conn).unwrap()
    };
    let last = get(&mut conn, &format!("bot:{bot}:position:LAST"));
    let fills_position = get(&mut conn, &format!("bot:{bot}:position:FILLS"));
    let fill_members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("bot:{bot}:fills"))
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    let mut instances = Vec::new();
    // Loads right after one's own acknowledged write that gave an older write of one's own.
    let (mut read_backs, mut read_back_errors) = (0usize, 0usize);
    let mut stale_loads = Vec::new();
    for slot in &mut chaos.slots {
        for instance in slot
            .past
            .iter_mut()
            .chain(std::iter::once(&mut slot.current))
        {
            instance.finish();
            let log = instance.log.lock().unwrap();
            for read in &log.read_backs {
                read_backs += 1;
                read_back_errors += usize::from(!read.ok);
                if read.ok && read.writer == instance.writer && read.loaded < read.seq {
                    stale_loads.push(format!(
                        "{}: wrote LAST seq {}, the next load gave its seq {}",
                        instance.writer, read.seq, read.loaded
                    ));
                }
            }
            instances.push(InstanceData::new(
                &instance.writer,
                &log.runs,
                log.writes.clone(),
                instance.ended_at.unwrap(),
            ));
        }
    }

    // The figures.
    let (overlap_ns, overlap_details) = analysis::overlap(&instances);
    let stale_runs = analysis::stale_by_runs(&instances);
    let stale_epoch = analysis::stale_by_epoch(&instances);
    let epoch_order = analysis::epoch_order_violations(&instances);
    // Seen death: Redis sees a killed bot's connections close; the standby takes over after
    // the 150 ms grace, whatever lock_ttl is.
    let bound_ns = 1_000 * 1_000_000;
    let mut failovers: Vec<u64> = Vec::new();
    let mut missing_failovers = Vec::new();
    for (writer, at) in &chaos.primary_kills {
        match analysis::failover_after(&instances, writer, *at) {
            Some(took) => failovers.push(took),
            None => missing_failovers.push(writer.clone()),
        }
    }
    failovers.sort_unstable();
    let mut freeze_failovers: Vec<u64> = chaos
        .primary_freezes
        .iter()
        .filter_map(|(writer, at)| analysis::failover_after(&instances, writer, *at))
        .collect();
    freeze_failovers.sort_unstable();
    let final_last = last.as_deref().map(|raw| {
        let v: serde_json::Value = serde_json::from_str(raw).expect("LAST is JSON");
        (
            v["w"].as_str().unwrap_or_default().to_owned(),
            v["seq"].as_u64().unwrap_or(0),
            v["e"].as_u64().unwrap_or(0),
        )
    });
    // Writes acknowledged before the last restart that lost every key are gone with it.
    let last_wipe = chaos.last_wipe;
    let since_wipe: Vec<InstanceData> = instances
        .iter()
        .map(|i| InstanceData {
            writer: i.writer.clone(),
            runs: i.runs.clone(),
            writes: i
                .writes
                .iter()
                .filter(|w| w.t_send > last_wipe)
                .cloned()
                .collect(),
        })
        .collect();
    let lost = analysis::lost_position_writes(
        &since_wipe,
        final_last.as_ref().map(|(w, s, e)| (w.as_str(), *s, *e)),
    );
    let recorded: BTreeSet<String> = fill_members
        .iter()
        .filter_map(|m| m.strip_prefix("FILLS\u{1f}").map(str::to_owned))
        .collect();
    let mut lost_fills = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let (mut acked_positions, mut acked_fills, mut uncertain_epoch) = (0, 0, 0);
    for i in &instances {
        for w in &i.writes {
            *outcomes.entry(w.outcome.clone()).or_default() += 1;
            if !w.ok {
                continue;
            }
            if w.exact_epoch().is_none() {
                uncertain_epoch += 1;
            }
            if w.fill {
                acked_fills += 1;
                let id = format!("{}-{}", i.writer, w.seq);
                if w.t_send > last_wipe && !recorded.contains(&id) {
                    lost_fills.push(id);
                }
            } else {
                acked_positions += 1;
            }
        }
    }
    let quantity = fills_position
        .as_deref()
        .map(|raw| {
            serde_json::from_str::<serde_json::Value>(raw).unwrap()["quantity"]
                .as_f64()
                .unwrap_or(f64::NAN)
        })
        .unwrap_or(0.0);

    let mut per_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in &chaos.events {
        let entry = per_kind.entry(kind_of(&e.label)).or_default();
        entry.0 += 1;
        entry.1 += usize::from(e.target_was_primary);
    }
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "seed {seed}; lock_ttl {ttl_ms} ms; {seconds} s of faults; {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(summary, "events injected: {}", chaos.events.len());
    for (kind, (n, on_primary)) in &per_kind {
        let _ = writeln!(summary, "  {kind}: {n} ({on_primary} aimed at the primary)");
    }
    let _ = writeln!(summary, "bot incarnations: {}", instances.len());
    let _ = writeln!(
        summary,
        "primary runs: {}",
        instances.iter().map(|i| i.runs.len()).sum::<usize>()
    );
    let _ = writeln!(
        summary,
        "overlap (both primary): {:.3} ms",
        overlap_ns as f64 / 1e6
    );
    let _ = writeln!(
        summary,
        "acknowledged writes sent while the other was primary: {} (by epoch: {})",
        stale_runs.len(),
        stale_epoch.len()
    );
    let _ = writeln!(summary, "epochs out of order: {}", epoch_order.len());
    let _ = writeln!(
        summary,
        "failover after kill -9 of the primary: n={} min {:.0} ms, median {:.0} ms, max {:.0} ms (bound {} ms); none seen: {}",
        failovers.len(),
        analysis::percentile_ms(&failovers, 0.0),
        analysis::percentile_ms(&failovers, 0.5),
        analysis::percentile_ms(&failovers, 1.0),
        bound_ns / 1_000_000,
        missing_failovers.len()
    );
    let _ = writeln!(
        summary,
        "takeover after SIGSTOP of the primary: n={} min {:.0} ms, median {:.0} ms, max {:.0} ms",
        freeze_failovers.len(),
        analysis::percentile_ms(&freeze_failovers, 0.0),
        analysis::percentile_ms(&freeze_failovers, 0.5),
        analysis::percentile_ms(&freeze_failovers, 1.0),
    );
    let _ = writeln!(summary, "acknowledged writes: {acked_positions} save_position, {acked_fills} apply_fill ({uncertain_epoch} with the role changing during the call)");
    let _ = writeln!(summary, "write outcomes: {outcomes:?}");
    let _ = writeln!(
        summary,
        "acknowledged position writes lost: {}; acknowledged fills lost: {}",
        lost.len(),
        lost_fills.len()
    );
    let _ = writeln!(
        summary,
        "fills recorded in Redis: {}; position quantity: {quantity}",
        recorded.len()
    );
    let _ = writeln!(
        summary,
        "loads right after one's own write: {read_backs} ({read_back_errors} failed); giving an older write: {}",
        stale_loads.len()
    );
    println!("---- chaos summary ----\n{summary}");
    if let Ok(path) = std::env::var("QS_CHAOS_REPORT") {
        let mut text = summary.clone();
        for e in &chaos.events {
            let _ = writeln!(text, "[{:>10.1} ms] {}", e.at_ms, e.label);
        }
        std::fs::write(path, text).unwrap();
    }
    let show = |v: &[String]| v.iter().take(10).cloned().collect::<Vec<_>>().join("\n");

    assert!(
        acked_positions > 50 && acked_fills > 50,
        "too few writes acknowledged to judge:\n{summary}"
    );
    assert!(
        chaos.events.len() >= KINDS.len().min(max_events),
        "too few faults injected:\n{summary}"
    );
    assert_eq!(
        overlap_ns,
        0,
        "two primaries at once (seed {seed}):\n{}",
        show(&overlap_details)
    );
    assert!(
        stale_runs.is_empty(),
        "stale writes acknowledged (seed {seed}):\n{}",
        show(&stale_runs)
    );
    assert!(
        stale_epoch.is_empty(),
        "stale writes acknowledged (seed {seed}):\n{}",
        show(&stale_epoch)
    );
    assert!(
        epoch_order.is_empty(),
        "epochs out of order (seed {seed}):\n{}",
        show(&epoch_order)
    );
    assert!(
        missing_failovers.is_empty(),
        "no failover after killing {missing_failovers:?} (seed {seed})"
    );
    assert!(
        failovers.iter().all(|&f| f <= bound_ns),
        "a failover took over {} ms (seed {seed}):\n{summary}",
        bound_ns / 1_000_000
    );
    assert!(
        lost.is_empty(),
        "acknowledged position writes lost (seed {seed}):\n{}",
        show(&lost)
    );
    assert!(
        stale_loads.is_empty(),
        "a load missed the loader's own acknowledged write (seed {seed}):\n{}",
        show(&stale_loads)
    );
    assert!(read_backs > 50, "too few loads to judge:\n{summary}");
    assert!(
        lost_fills.is_empty(),
        "acknowledged fills lost (seed {seed}): {:?}",
        &lost_fills[..lost_fills.len().min(10)]
    );
    assert_eq!(
        quantity,
        recorded.len() as f64,
        "fills not conserved (seed {seed}):\n{summary}"
    );
    for bad in ["CorruptData", "InvalidInput"] {
        assert!(
            !outcomes.contains_key(bad),
            "a write failed with {bad} (seed {seed}):\n{summary}"
        );
    }
    chaos.primary_kills.len()
}
