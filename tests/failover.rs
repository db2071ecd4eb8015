//! Key-only fast failover and vanished leases (issues 10 and 18), with real bot processes and
//! a real redis-server: a killed, frozen or partitioned primary is replaced within a second at
//! the default `lock_ttl`, and wakes as standby; a Redis stall shorter than the tolerance never
//! moves the lease; Redis restarts, `CLIENT KILL` and `FLUSHALL` never make two primaries, with
//! fast failover on or off.
//!
//! The bot processes sample `is_primary()` every millisecond and print each sample with the
//! monotonic clock (shared by every process of the machine), so overlap is measured exactly.

mod common;
// Only the drop mode (a partition without FIN) is used here.
#[path = "chaos/proxy.rs"]
mod proxy;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fast_config, obj, signal, wait_for, RedisServer};
use quantshift_core::{Config, StateManager};

/// The default lease of docs/contract.md §2.
const DEFAULT_TTL_MS: u64 = 30_000;

/// These tests measure timing with several processes: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Not a test of its own: the body of the sampling bot processes (nothing without `QSF_URL`).
#[test]
fn failover_child() {
    let Ok(url) = std::env::var("QSF_URL") else {
        return;
    };
    let bot = std::env::var("QSF_BOT").unwrap();
    let ttl: u64 = std::env::var("QSF_TTL_MS").unwrap().parse().unwrap();
    let fast = std::env::var("QSF_FAST").as_deref() != Ok("0");
    let config = Config::new(bot)
        .redis_url(url)
        .lock_ttl(Duration::from_millis(ttl))
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .install_signal_handlers(false)
        .fast_failover(fast);
    let manager = StateManager::new(config).expect("child manager");
    println!("ready {}", manager.instance_id());
    let give_up = Instant::now() + Duration::from_secs(90);
    let mut n: u64 = 0;
    while Instant::now() < give_up {
        n += 1;
        let at = mono_ns();
        let primary = manager.is_primary();
        // A write every 10 samples: refusals are what demote a primary that missed a flush.
        let wrote = if n.is_multiple_of(10) {
            match manager.save_position("TICK", &mut obj(serde_json::json!({"n": n}))) {
                Ok(()) => "ok",
                Err(_) => "refused",
            }
        } else {
            "-"
        };
        println!("S {at} {} {wrote}", u8::from(primary));
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One sample: monotonic ns, primary, write outcome ("ok", "refused" or "-").
#[derive(Clone, Debug)]
struct Sample {
    at: u64,
    primary: bool,
    wrote: String,
}

struct Bot {
    child: Child,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Bot {
    fn spawn(url: &str, bot: &str, ttl_ms: u64, fast: bool) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "failover_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("QSF_URL", url)
            .env("QSF_BOT", bot)
            .env("QSF_TTL_MS", ttl_ms.to_string())
            .env("QSF_FAST", if fast { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("re-run the test binary as a bot");
        let stdout = child.stdout.take().unwrap();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&samples);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = line.rsplit(" ... ").next().unwrap_or(&line).to_owned();
                let parts: Vec<&str> = line.split_whitespace().collect();
                if let ["S", at, primary, wrote] = parts.as_slice() {
                    sink.lock().unwrap().push(Sample {
                        at: at.parse().unwrap_or(0),
                        primary: *primary == "1",
                        wrote: (*wrote).to_owned(),
                    });
                }
            }
        });
        let bot = Bot { child, samples };
        assert!(
            wait_for(Duration::from_secs(10), || bot.len() > 0),
            "the bot process did not start"
        );
        bot
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn len(&self) -> usize {
        self.samples.lock().unwrap().len()
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    fn primary_now(&self) -> bool {
        self.samples
            .lock()
            .unwrap()
            .last()
            .is_some_and(|s| s.primary)
    }

    fn wait_primary(&self, timeout: Duration) -> bool {
        wait_for(timeout, || self.primary_now())
    }

    /// Whether a write acknowledged after `since` (monotonic ns) was sampled.
    fn wrote_since(&self, since: u64) -> bool {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.at > since && s.wrote == "ok")
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        signal(self.pid(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs of consecutive primary samples, as (first, last) monotonic ns.
fn runs(samples: &[Sample]) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let mut open: Option<(u64, u64)> = None;
    for s in samples {
        match (&mut open, s.primary) {
            (Some((_, last)), true) => *last = s.at,
            (None, true) => open = Some((s.at, s.at)),
            (Some(run), false) => {
                runs.push(*run);
                open = None;
            }
            (None, false) => {}
        }
    }
    runs.extend(open);
    runs
}

/// Nanoseconds during which both sample streams said primary.
fn overlap_ns(a: &[Sample], b: &[Sample]) -> u64 {
    let mut total = 0;
    for (a0, a1) in runs(a) {
        for (b0, b1) in runs(b) {
            let (lo, hi) = (a0.max(b0), a1.min(b1));
            if hi >= lo {
                total += (hi - lo).max(1);
            }
        }
    }
    total
}

fn client_kill_all(server: &RedisServer) {
    let mut conn = server.connection();
    for kind in ["normal", "pubsub"] {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .arg("SKIPME")
            .arg("yes")
            .query(&mut conn)
            .unwrap();
    }
}

fn median_and_max(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], *times.last().unwrap())
}

#[test]
fn a_killed_primary_is_replaced_within_half_a_second_at_the_default_ttl() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut times = Vec::new();
    for trial in 0..5u64 {
        let bot_name = format!("kill{trial}");
        let mut primary = Bot::spawn(&server.url(), &bot_name, DEFAULT_TTL_MS, true);
        assert!(primary.wait_primary(Duration::from_secs(5)));
        let standby = StateManager::new(fast_config(&server, &bot_name, DEFAULT_TTL_MS)).unwrap();
        // Kill at a different moment of the standby's look cycle each time.
        std::thread::sleep(Duration::from_millis(300 + 23 * trial));
        assert!(!standby.is_primary());
        signal(primary.pid(), libc::SIGKILL);
        let killed = Instant::now();
        let _ = primary.child.wait();
        assert!(
            standby.wait_until_primary(Some(Duration::from_secs(5))),
            "no takeover within 5 s of kill -9 (lock_ttl 30 s)"
        );
        times.push(killed.elapsed());
        standby
            .save_position("TICK", &mut obj(serde_json::json!({"n": trial})))
            .unwrap();
    }
    let (median, max) = median_and_max(times.clone());
    println!("FAILOVER kill -9 at lock_ttl 30 s: median {median:?}, max {max:?} ({times:?})");
    assert!(median < Duration::from_millis(500), "{times:?}");
    assert!(max < Duration::from_millis(1000), "{times:?}");
}

#[test]
fn a_primary_frozen_past_its_deadline_is_replaced_and_wakes_as_standby() {
    let _serial = serial();
    let server = RedisServer::start();
    let primary = Bot::spawn(&server.url(), "freeze", DEFAULT_TTL_MS, true);
    assert!(primary.wait_primary(Duration::from_secs(5)));
    let standby = StateManager::new(fast_config(&server, "freeze", DEFAULT_TTL_MS)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(primary.pid(), libc::SIGSTOP);
    let frozen = Instant::now();
    assert!(
        standby.wait_until_primary(Some(Duration::from_secs(3))),
        "a frozen primary was not replaced (lock_ttl 30 s)"
    );
    let took = frozen.elapsed();
    println!("FAILOVER primary frozen at lock_ttl 30 s: replaced after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    std::thread::sleep(Duration::from_millis(300));
    let resumed = mono_ns();
    signal(primary.pid(), libc::SIGCONT);
    assert!(wait_for(Duration::from_secs(2), || primary
        .samples()
        .iter()
        .any(|s| s.at > resumed)));
    std::thread::sleep(Duration::from_millis(300));
    let after: Vec<Sample> = primary
        .samples()
        .into_iter()
        .filter(|s| s.at > resumed)
        .collect();
    assert!(
        after.iter().all(|s| !s.primary && s.wrote != "ok"),
        "the woken primary said primary or wrote while another instance led"
    );
    assert!(standby.is_primary());
}

#[test]
fn a_redis_stall_shorter_than_the_tolerance_never_moves_the_lease() {
    let _serial = serial();
    let server = RedisServer::start();
    let primary = Bot::spawn(&server.url(), "stall", DEFAULT_TTL_MS, true);
    assert!(primary.wait_primary(Duration::from_secs(5)));
    let standby = Bot::spawn(&server.url(), "stall", DEFAULT_TTL_MS, true);
    std::thread::sleep(Duration::from_millis(300));
    let epoch = || -> u64 {
        redis::cmd("GET")
            .arg("bot:stall:epoch")
            .query(&mut server.connection())
            .unwrap()
    };
    let before = epoch();
    let started = mono_ns();
    for round in 0..5u64 {
        signal(server.pid(), libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(150));
        signal(server.pid(), libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(400 + 37 * round));
    }
    assert_eq!(epoch(), before, "the lease changed hands");
    let primary_samples: Vec<Sample> = primary
        .samples()
        .into_iter()
        .filter(|s| s.at > started)
        .collect();
    assert!(
        primary_samples.iter().all(|s| s.primary),
        "the primary demoted during a 150 ms stall"
    );
    assert!(!standby.samples().iter().any(|s| s.primary));
}

#[test]
fn a_frozen_primary_whose_connections_were_killed_is_replaced_and_wakes_as_standby() {
    let _serial = serial();
    let server = RedisServer::start();
    let primary = Bot::spawn(&server.url(), "frozen-kill", DEFAULT_TTL_MS, true);
    assert!(primary.wait_primary(Duration::from_secs(5)));
    let standby = StateManager::new(fast_config(&server, "frozen-kill", DEFAULT_TTL_MS)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(primary.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(50));
    client_kill_all(&server);
    let killed = Instant::now();
    assert!(standby.wait_until_primary(Some(Duration::from_secs(3))));
    let took = killed.elapsed();
    println!("FAILOVER frozen primary, connections killed: replaced after {took:?}");
    assert!(
        took >= Duration::from_millis(150),
        "taken before the grace: {took:?}"
    );
    let resumed = mono_ns();
    signal(primary.pid(), libc::SIGCONT);
    assert!(wait_for(Duration::from_secs(2), || primary
        .samples()
        .iter()
        .any(|s| s.at > resumed)));
    let first = primary
        .samples()
        .into_iter()
        .find(|s| s.at > resumed)
        .unwrap();
    assert!(
        !first.primary,
        "the first look after SIGCONT said primary while another instance was"
    );
    assert!(standby.is_primary());
}

#[test]
fn killing_every_client_never_makes_two_primaries_and_one_leads_again() {
    let _serial = serial();
    let server = RedisServer::start();
    let a = Bot::spawn(&server.url(), "client-kill", DEFAULT_TTL_MS, true);
    assert!(a.wait_primary(Duration::from_secs(5)));
    let b = Bot::spawn(&server.url(), "client-kill", DEFAULT_TTL_MS, true);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        client_kill_all(&server);
        let killed = mono_ns();
        // Samples taken before the close reached the bots may still say primary: look at
        // those from 200 ms on.
        let later = killed + 200_000_000;
        let leads = || {
            a.samples()
                .iter()
                .chain(b.samples().iter())
                .any(|s| s.at > later && s.primary)
        };
        assert!(
            wait_for(Duration::from_secs(5), leads),
            "nobody leads within 5 s of CLIENT KILL"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(overlap_ns(&a.samples(), &b.samples()), 0);
}

#[test]
fn a_partition_without_fin_is_replaced_after_the_takeover_wait() {
    let _serial = serial();
    let server = RedisServer::start();
    let ttl = DEFAULT_TTL_MS;
    let proxy = proxy::Proxy::start(server.port);
    let primary = Bot::spawn(&proxy.url(), "partition", ttl, true);
    assert!(primary.wait_primary(Duration::from_secs(5)));
    let standby = Bot::spawn(&server.url(), "partition", ttl, true);
    std::thread::sleep(Duration::from_millis(300));
    let cut = mono_ns();
    proxy.set_mode(proxy::Mode::Drop);
    assert!(
        standby.wait_primary(Duration::from_secs(6)),
        "no takeover after the lease expired"
    );
    let took = Duration::from_nanos(
        standby
            .samples()
            .iter()
            .find(|s| s.at > cut && s.primary)
            .unwrap()
            .at
            - cut,
    );
    println!("FAILOVER partition without FIN at lock_ttl 30 s: taken over after {took:?}");
    // The take-over wait (316 ms) counts from the last renewal seen, at most 100 ms old.
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(1),
        "taken over after {took:?}"
    );
    proxy.set_mode(proxy::Mode::Pass);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(overlap_ns(&primary.samples(), &standby.samples()), 0);
}

/// A primary and a standby process while Redis restarts three times without keeping any key,
/// then while an operator runs FLUSHALL.
fn vanished_leases_never_make_two_primaries(fast: bool) {
    let _serial = serial();
    let mut server = RedisServer::start();
    let bot_name = format!("vanish-{fast}");
    // Without fast failover a lost lease is claimed `renew_deadline` (plus 2 %) later: keep
    // that short.
    let ttl = if fast { DEFAULT_TTL_MS } else { 1500 };
    let a = Bot::spawn(&server.url(), &bot_name, ttl, fast);
    assert!(a.wait_primary(Duration::from_secs(5)));
    let b = Bot::spawn(&server.url(), &bot_name, ttl, fast);
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        server.kill();
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
        let back = mono_ns();
        assert!(
            wait_for(Duration::from_secs(3), || a.wrote_since(back)
                || b.wrote_since(back)),
            "round {round}: nobody wrote within 3 s of Redis answering"
        );
        println!(
            "restart {round} (fast_failover {fast}): writes again after {} ms",
            (mono_ns() - back) / 1_000_000
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut conn = server.connection();
    redis::cmd("FLUSHALL").query::<()>(&mut conn).unwrap();
    let flushed = mono_ns();
    assert!(
        wait_for(Duration::from_secs(3), || a.wrote_since(flushed)
            || b.wrote_since(flushed)),
        "nobody wrote within 3 s of FLUSHALL"
    );
    std::thread::sleep(Duration::from_millis(500));
    let overlap = overlap_ns(&a.samples(), &b.samples());
    println!(
        "vanished leases (fast_failover {fast}): overlap {:.3} ms",
        overlap as f64 / 1e6
    );
    assert_eq!(overlap, 0, "two primaries at once");
}

#[test]
fn restarts_without_persistence_and_flushall_never_make_two_primaries() {
    vanished_leases_never_make_two_primaries(true);
}

#[test]
fn restarts_without_persistence_and_flushall_never_make_two_primaries_without_fast_failover() {
    vanished_leases_never_make_two_primaries(false);
}

#[test]
fn a_lone_instance_writes_again_within_1_5_s_of_a_restart_that_lost_the_data() {
    let _serial = serial();
    for fast in [true, false] {
        let mut server = RedisServer::start();
        // Without fast failover the claim of the lost lease waits `renew_deadline` (+ 2 %):
        // 0.5 s here, so the same bound holds.
        let ttl = if fast { DEFAULT_TTL_MS } else { 750 };
        let lone =
            StateManager::new(fast_config(&server, "lone", ttl).fast_failover(fast)).unwrap();
        assert!(lone.wait_until_primary(Some(Duration::from_secs(3))));
        let epoch = lone.epoch().unwrap();
        server.kill();
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
        let back = Instant::now();
        let mut primary_while_refused = Duration::ZERO;
        let wrote = wait_for(Duration::from_millis(1500), || {
            let was_primary = lone.is_primary();
            let started = Instant::now();
            let ok = lone
                .save_position("X", &mut obj(serde_json::json!({"n": 1})))
                .is_ok();
            if !ok && was_primary {
                primary_while_refused += started.elapsed();
            }
            ok
        });
        println!(
            "lone instance (fast_failover {fast}): writes again {:?} after Redis answered",
            back.elapsed()
        );
        assert!(wrote, "no write within 1.5 s (fast_failover {fast})");
        assert!(lone.epoch().unwrap() > epoch, "the lease was taken anew");
        assert!(primary_while_refused < Duration::from_millis(500));
    }
}

#[test]
fn with_aof_a_restart_keeps_the_data_and_the_epoch_never_goes_back() {
    let _serial = serial();
    let mut server = RedisServer::start_with(&[
        "--maxmemory-policy",
        "noeviction",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let a = Bot::spawn(&server.url(), "aof", DEFAULT_TTL_MS, true);
    assert!(a.wait_primary(Duration::from_secs(5)));
    let b = Bot::spawn(&server.url(), "aof", DEFAULT_TTL_MS, true);
    std::thread::sleep(Duration::from_millis(300));
    let read = |server: &RedisServer| -> (String, u64) {
        let mut conn = server.connection();
        let holder: String = redis::cmd("GET")
            .arg("bot:aof:primary_lock")
            .query(&mut conn)
            .unwrap();
        let epoch: u64 = redis::cmd("GET")
            .arg("bot:aof:epoch")
            .query(&mut conn)
            .unwrap();
        (holder, epoch)
    };
    let before = read(&server);
    server.kill();
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    let back = mono_ns();
    // Down longer than the tolerance: the holder demoted; one instance leads again soon.
    assert!(wait_for(Duration::from_secs(3), || a.wrote_since(back)
        || b.wrote_since(back)));
    let after = read(&server);
    assert!(after.1 >= before.1, "the epoch went backwards");
    assert_eq!(overlap_ns(&a.samples(), &b.samples()), 0);
}

#[test]
fn fast_failover_off_waits_for_the_lease_to_expire() {
    let _serial = serial();
    let server = RedisServer::start();
    let ttl = 2000;
    let mut primary = Bot::spawn(&server.url(), "no-fast", ttl, false);
    assert!(primary.wait_primary(Duration::from_secs(5)));
    let standby =
        StateManager::new(fast_config(&server, "no-fast", ttl).fast_failover(false)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(primary.pid(), libc::SIGKILL);
    let killed = Instant::now();
    let _ = primary.child.wait();
    assert!(standby.wait_until_primary(Some(Duration::from_secs(5))));
    let took = killed.elapsed();
    println!("FAILOVER kill -9 with fast_failover off at lock_ttl 2 s: {took:?}");
    // renew_deadline × 1.02 after the last renewal, which was at most lock_ttl / 3 before.
    assert!(
        took >= Duration::from_millis(ttl * 2 / 3 * 102 / 100 - ttl / 3 - 50),
        "{took:?}"
    );
}
