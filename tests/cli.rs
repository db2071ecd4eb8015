//! The operator tool `quantshift-state` against real redis-server processes and real bot
//! processes (this test binary re-run as a bot, see `common::ChildBot`).

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{child_bot_main, manager, obj, signal, wait_for, ChildBot, RedisServer};
use quantshift_core::Inspector;
use serde_json::{json, Value};

const TOOL: &str = env!("CARGO_BIN_EXE_quantshift-state");
/// Lease TTL of the child bots.
const TTL_MS: u64 = 3000;

#[test]
fn child_bot() {
    child_bot_main();
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The tool with the Redis environment variables cleared (so nothing reaches a real
/// 127.0.0.1:6379), plus `env`.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(TOOL);
    cmd.args(args)
        .env_remove("QUANTSHIFT_REDIS_URL")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A running tool whose output is collected as it comes.
struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    mut from: impl Read + Send + 'static,
    into: &Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    let into = Arc::clone(into);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut chunk) {
            into.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    })
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        // Outputs redirected elsewhere (a terminal) are not collected.
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, &stdout));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(err, &stderr));
        }
        Running {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until the output so far contains `needle`.
    fn wait_for_output(&self, needle: &str) {
        assert!(
            wait_for(Duration::from_secs(10), || self
                .stdout_so_far()
                .contains(needle)),
            "no {needle:?} in the output: {}",
            self.stdout_so_far()
        );
    }

    /// Waits (bounded) for the tool to exit and collects its output.
    fn finish(mut self, timeout: Duration) -> Run {
        let give_up = Instant::now() + timeout;
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() >= give_up {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("quantshift-state did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let text = |bytes: &Arc<Mutex<Vec<u8>>>| {
            String::from_utf8(bytes.lock().unwrap().clone()).expect("UTF-8 output")
        };
        Run {
            code,
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
        }
    }
}

fn tool_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    Running::start(command(args, env)).finish(Duration::from_secs(30))
}

fn tool(args: &[&str]) -> Run {
    tool_env(args, &[])
}

fn json_of(run: &Run) -> Value {
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|err| panic!("not JSON ({err}): {run:?}"))
}

/// The instance id a bot process gets: `hostname:pid`.
fn instance_id(bot: &ChildBot) -> String {
    let host = gethostname::gethostname()
        .to_string_lossy()
        .replace(':', "_");
    format!("{host}:{}", bot.pid())
}

fn inspector(server: &RedisServer) -> Inspector {
    Inspector::connect(Some(&server.url()), Duration::from_secs(2)).unwrap()
}

/// Starts a bot process and waits until it is primary.
fn primary_bot(server: &RedisServer, bot: &str) -> ChildBot {
    let child = ChildBot::spawn(server, bot, TTL_MS, false);
    assert!(
        wait_for(Duration::from_secs(10), || child.has_line("primary")),
        "the bot process did not become primary: {:?}",
        child.lines().last()
    );
    child
}

/// The lines a bot printed after it first became primary.
fn since_promotion(bot: &ChildBot) -> Vec<String> {
    bot.lines()
        .into_iter()
        .skip_while(|l| l != "primary")
        .collect()
}

/// Waits until the live standbys of `bot` are exactly `ids`.
fn wait_for_standbys(server: &RedisServer, bot: &str, ids: &[&str]) {
    let inspector = inspector(server);
    assert!(
        wait_for(Duration::from_secs(10), || {
            inspector.status(bot).unwrap().standbys() == ids
        }),
        "standbys of {bot}: {:?}, expected {ids:?}",
        inspector.status(bot).unwrap().standbys()
    );
}

#[test]
fn status_shows_primary_standbys_and_the_check_exit_codes() {
    let server = RedisServer::start();
    let url = server.url();
    // No bot at all: nothing leads.
    let empty = tool(&["--url", &url, "status", "--check"]);
    assert_eq!(empty.code, Some(2), "{empty:?}");
    assert!(empty.stdout.contains("no bots found"), "{empty:?}");
    assert!(empty.stdout.contains("(role: master)"), "{empty:?}");

    let a = primary_bot(&server, "alpha");
    let a_id = instance_id(&a);
    // A primary alone: standby missing.
    let alone = tool(&["status", "alpha", "--check", "--url", &url]);
    assert_eq!(alone.code, Some(1), "{alone:?}");
    let row = alone
        .stdout
        .lines()
        .find(|l| l.starts_with("alpha "))
        .unwrap_or_else(|| panic!("no row for alpha: {alone:?}"));
    assert!(row.contains("standby missing"), "{row}");
    assert!(row.contains(&a_id), "{row}");
    // Without --check the same state is a successful read.
    assert_eq!(tool(&["--url", &url, "status", "alpha"]).code, Some(0));

    let b = ChildBot::spawn(&server, "alpha", TTL_MS, false);
    let b_id = instance_id(&b);
    wait_for_standbys(&server, "alpha", &[&b_id]);
    let healthy = tool(&["--url", &url, "status", "--check"]);
    assert_eq!(healthy.code, Some(0), "{healthy:?}");
    let header = healthy
        .stdout
        .lines()
        .find(|l| l.starts_with("BOT "))
        .unwrap();
    for column in [
        "HEALTH",
        "PRIMARY",
        "EPOCH",
        "RENEWED",
        "DEADLINE",
        "HEARTBEAT",
        "STATE UPDATED",
        "POSITIONS",
        "STANDBYS",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = healthy
        .stdout
        .lines()
        .find(|l| l.starts_with("alpha "))
        .unwrap();
    assert!(
        row.contains(" ok ") && row.contains(&a_id) && row.contains(&b_id),
        "{row}"
    );
    assert!(row.contains(" ago"), "heartbeat and state ages: {row}");

    // JSON: every field, with values that match the bots.
    let run = tool(&["--url", &url, "status", "--json", "alpha"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let doc = json_of(&run);
    assert_eq!(doc["redis"]["role"], "master");
    assert_eq!(doc["redis"]["url"], url.as_str());
    // A noeviction server: no eviction-policy warning (others, e.g. on persistence, may be).
    let warnings = doc["redis"]["warnings"].as_array().unwrap();
    assert!(
        !warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("maxmemory-policy")),
        "{warnings:?}"
    );
    let bot = &doc["bots"][0];
    assert_eq!(bot["bot"], "alpha");
    assert_eq!(bot["primary"], a_id.as_str());
    assert_eq!(bot["standbys"], json!([b_id]));
    assert_eq!(bot["health"], "ok");
    // Epochs carry the server's time in ms (they never go backwards, even after a flush).
    assert!(bot["epoch"].as_u64().unwrap() > 1_000_000_000_000);
    assert_eq!(
        bot["positions"], 1,
        "the child bot writes the position TICK"
    );
    let lease = bot["lease_ttl_seconds"].as_f64().unwrap();
    assert!(lease > 0.0 && lease <= 3.0, "{lease}");
    assert!(bot["heartbeat_age_seconds"].as_f64().unwrap() < 5.0);
    assert!(bot["state_age_seconds"].as_f64().unwrap() < 30.0);
    assert!(bot["state_last_update"].as_str().unwrap().starts_with("20"));

    // Several bots: the worst health wins; a bot without keys has no primary.
    let worst = tool(&[
        "--url", &url, "status", "alpha", "ghost", "--check", "--json",
    ]);
    assert_eq!(worst.code, Some(2), "{worst:?}");
    let doc = json_of(&worst);
    assert_eq!(doc["bots"][1]["bot"], "ghost");
    assert_eq!(doc["bots"][1]["primary"], Value::Null);
    assert_eq!(doc["bots"][1]["health"], "no primary");
    assert!(
        worst
            .stderr
            .contains("note: bot \"ghost\" has no keys in this database"),
        "{worst:?}"
    );
    assert!(!worst.stderr.contains("\"alpha\""), "{worst:?}");

    // Every bot found when none is named.
    let c = primary_bot(&server, "beta");
    let all = json_of(&tool(&["--url", &url, "status", "--json"]));
    let names: Vec<&str> = all["bots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bot"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    let check = tool(&["--url", &url, "status", "--check"]);
    assert_eq!(check.code, Some(1), "beta has no standby: {check:?}");
    drop(c);

    // The primary dies: once its lease is gone and the standby took over, the standby
    // leads alone.
    signal(a.pid(), libc::SIGKILL);
    assert!(wait_for(Duration::from_secs(10), || b.has_line("primary")));
    let run = tool(&["--url", &url, "status", "alpha", "--json"]);
    assert_eq!(json_of(&run)["bots"][0]["primary"], b_id.as_str());
    assert!(json_of(&run)["bots"][0]["epoch"].as_u64() > bot["epoch"].as_u64());
}

/// A standby killed with SIGKILL and one closed leave `status` (and the exporter's standbys)
/// within about the presence TTL (1.5 s) and at once; the holder's renewal age and deadline
/// are the server's, and each live instance's stall meter is shown.
#[test]
fn killed_and_closed_standbys_leave_the_status_and_the_holder_renewal_is_shown() {
    let server = RedisServer::start();
    let url = server.url();
    let a = primary_bot(&server, "live");
    let a_id = instance_id(&a);
    let mut b = ChildBot::spawn(&server, "live", TTL_MS, false);
    let b_id = instance_id(&b);
    let c = manager(&server, "live", TTL_MS);
    let c_id = c.instance_id().to_owned();
    let inspector = inspector(&server);
    let mut both = [b_id.clone(), c_id.clone()];
    both.sort();
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    wait_for_standbys(&server, "live", &both);
    // Every live instance published its stall meter (every second), the primary's with
    // its renewals' round trips.
    assert!(
        wait_for(Duration::from_secs(5), || {
            let status = inspector.status("live").unwrap();
            status.lease_stalls.len() == 3
                && status
                    .lease_stalls
                    .iter()
                    .any(|(id, stalls)| *id == a_id && stalls.round_trip.count > 0)
        }),
        "{:?}",
        inspector.status("live").unwrap()
    );

    // The live holder: renewed within the last renewal period or so, its deadline ahead.
    let run = tool(&["--url", &url, "status", "live", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let doc = json_of(&run);
    let bot = &doc["bots"][0];
    assert_eq!(bot["primary"], a_id.as_str(), "{doc}");
    let renewal_age = bot["lease_renewal_age_seconds"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&renewal_age), "{doc}");
    let deadline = bot["lease_deadline_in_seconds"].as_f64().unwrap();
    assert!(deadline > 0.0 && deadline <= 0.31, "{doc}");
    assert_eq!(bot["lease_deadline_passed"], false, "{doc}");
    // The old field stays for scripts that read it.
    assert!(bot["lease_ttl_seconds"].as_f64().unwrap() > 0.0, "{doc}");
    let stalls = &bot["lease_stalls"][a_id.as_str()];
    assert!(stalls["round_trip"]["count"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(stalls["tolerance_seconds"], 0.2, "{doc}");
    assert!(
        stalls["wake_late"]["p99_seconds"].as_f64().is_some(),
        "{doc}"
    );
    for id in [&b_id, &c_id] {
        assert!(bot["lease_stalls"][id.as_str()].is_object(), "{id}: {doc}");
    }
    let table = tool(&["--url", &url, "status", "live"]);
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("live "))
        .unwrap_or_else(|| panic!("{table:?}"));
    assert!(row.contains("ms ago") && row.contains(" in "), "{row}");
    assert!(table.stdout.contains("WOKE LATE MAX"), "{table:?}");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains(&a_id) && l.contains("primary") && l.contains("200ms")),
        "{table:?}"
    );

    // One standby dies without a word, the other closes.
    let started = Instant::now();
    signal(b.pid(), libc::SIGKILL);
    b.wait_exit(Duration::from_secs(5));
    let killed_at = started.elapsed();
    c.close().unwrap();
    let closed_at = started.elapsed();
    let mut c_gone = None;
    let mut b_gone = None;
    let give_up = Instant::now() + Duration::from_secs(10);
    while (c_gone.is_none() || b_gone.is_none()) && Instant::now() < give_up {
        let status = inspector.status("live").unwrap();
        let seen = |id: &str| status.instances.iter().any(|i| i == id);
        if c_gone.is_none() && !seen(&c_id) {
            c_gone = Some(started.elapsed().saturating_sub(closed_at));
        }
        if b_gone.is_none() && !seen(&b_id) {
            b_gone = Some(started.elapsed().saturating_sub(killed_at));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (b_gone, c_gone) = (b_gone.expect("killed standby"), c_gone.expect("closed one"));
    eprintln!("left the status: closed standby after {c_gone:?}, killed standby after {b_gone:?}");
    assert!(c_gone < Duration::from_millis(500), "closed: {c_gone:?}");
    assert!(b_gone < Duration::from_millis(2000), "killed: {b_gone:?}");
    let run = tool(&["--url", &url, "status", "live", "--json", "--check"]);
    assert_eq!(run.code, Some(1), "standby missing: {run:?}");
    let doc = json_of(&run);
    assert_eq!(doc["bots"][0]["standbys"], json!([]), "{doc}");
    assert_eq!(doc["bots"][0]["instances"], json!([a_id]), "{doc}");
    let published: Vec<&String> = doc["bots"][0]["lease_stalls"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(published, [&a_id], "{doc}");
    let metrics = scrape_once(&url);
    assert!(
        metrics.contains("quantshift_bot_standbys{bot=\"live\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("quantshift_bot_lease_renewal_age_seconds{bot=\"live\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "quantshift_lease_round_trip_seconds_count{{bot=\"live\",instance_id=\"{a_id}\"}} "
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&b_id) && !metrics.contains(&c_id),
        "{metrics}"
    );

    // The holder dies too: nobody renews, and its deadline passes while the lock key lives on.
    signal(a.pid(), libc::SIGKILL);
    assert!(
        wait_for(Duration::from_secs(5), || {
            inspector
                .status("live")
                .unwrap()
                .deadline_in_ms
                .is_some_and(|ms| ms < -500)
        }),
        "{:?}",
        inspector.status("live").unwrap()
    );
    let doc = json_of(&tool(&["--url", &url, "status", "live", "--json"]));
    assert_eq!(doc["bots"][0]["lease_deadline_passed"], true, "{doc}");
    assert!(
        doc["bots"][0]["lease_renewal_age_seconds"]
            .as_f64()
            .unwrap()
            > 0.5
    );
    let table = tool(&["--url", &url, "status", "live"]);
    assert!(table.stdout.contains("passed "), "{table:?}");
}

#[test]
fn status_shows_the_server_policy_warning() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let url = server.url();
    let run = tool(&["--url", &url, "status"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("WARNING: ") && run.stdout.contains("allkeys-lru"),
        "{run:?}"
    );
    let doc = json_of(&tool(&["--url", &url, "status", "--json"]));
    let warnings = doc["redis"]["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| {
            let w = w.as_str().unwrap();
            w.contains("allkeys-lru") && w.contains("noeviction")
        }),
        "{warnings:?}"
    );
}

#[test]
fn positions_as_a_table_and_as_json() {
    let server = RedisServer::start();
    let url = server.url();
    let writer = manager(&server, "book", 3000);
    assert!(writer.wait_until_primary(Some(Duration::from_secs(3))));
    writer
        .save_position(
            "BTC/USD",
            &mut obj(json!({"quantity": 0.5, "entry_price": 42000.0, "side": "long"})),
        )
        .unwrap();
    writer
        .save_position(
            "ES:FUT",
            &mut obj(json!({"quantity": -2, "entry_price": 5000.25, "side": "short"})),
        )
        .unwrap();
    writer
        .save_position("日経225", &mut obj(json!({"quantity": 1})))
        .unwrap();

    let run = tool(&["--url", &url, "positions", "book", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let doc = json_of(&run);
    let symbols: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(symbols, ["BTC/USD", "ES:FUT", "日経225"]);
    assert_eq!(doc["ES:FUT"]["quantity"], -2);
    assert_eq!(doc["ES:FUT"]["entry_price"], 5000.25);
    assert_eq!(doc["BTC/USD"]["side"], "long");
    assert!(doc["日経225"]["last_update"]
        .as_str()
        .unwrap()
        .starts_with("20"));

    let table = tool(&["positions", "--url", &url, "book"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["SYMBOL", "quantity", "entry_price", "side", "last_update"],
        "{table:?}"
    );
    let es: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&es[..4], ["ES:FUT", "-2", "5000.25", "short"], "{table:?}");
    let nikkei: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(&nikkei[..4], ["日経225", "1", "-", "-"], "{table:?}");
    assert_eq!(lines[4], "3 positions");

    let none = tool(&["--url", &url, "positions", "idle"]);
    assert_eq!(none.code, Some(0));
    assert_eq!(none.stdout.trim(), "bot \"idle\" has no positions");
    assert_eq!(
        json_of(&tool(&["--url", &url, "positions", "idle", "--json"])),
        json!({})
    );

    // A value the library did not write: a clear error naming the key.
    redis::cmd("SET")
        .arg("bot:book:position:BAD")
        .arg("[1, 2]")
        .query::<()>(&mut server.connection())
        .unwrap();
    let corrupt = tool(&["--url", &url, "positions", "book"]);
    assert_eq!(corrupt.code, Some(3), "{corrupt:?}");
    assert!(
        corrupt.stderr.contains("BAD") && corrupt.stderr.contains("not an object"),
        "{corrupt:?}"
    );
    assert!(corrupt.stderr.contains("did not write"), "{corrupt:?}");

    // A bot name that could reach another bot's keys is refused before any read.
    let bad = tool(&["--url", &url, "positions", "book:x"]);
    assert_eq!(bad.code, Some(3), "{bad:?}");
    assert!(bad.stderr.contains("contains ':'"), "{bad:?}");
    writer.close().unwrap();
}

/// Parses `handover took 12.3 ms` from the tool's output.
fn handover_millis(run: &Run) -> f64 {
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("new primary: "))
        .unwrap_or_else(|| panic!("no new primary reported: {run:?}"));
    let took = line.split("handover took ").nth(1).unwrap();
    took.trim_end_matches(" ms").parse().unwrap()
}

#[test]
fn handover_between_two_bot_processes() {
    let server = RedisServer::start();
    let url = server.url();
    let a = primary_bot(&server, "relay");
    let b = ChildBot::spawn(&server, "relay", TTL_MS, false);
    let (a_id, b_id) = (instance_id(&a), instance_id(&b));
    let inspector = inspector(&server);
    let mut times = Vec::new();
    let mut from = (&a, a_id.as_str());
    let mut to = (&b, b_id.as_str());
    for round in 1..=3u64 {
        // The previous primary holds off for one TTL, then is a live standby again.
        wait_for_standbys(&server, "relay", &[to.1]);
        let epoch = inspector.status("relay").unwrap().epoch.unwrap();
        let run = tool(&["--url", &url, "handover", "relay", "--timeout", "10"]);
        assert_eq!(run.code, Some(0), "round {round}: {run:?}");
        assert!(
            run.stdout.starts_with(&format!(
                "handover of bot \"relay\": primary {} (epoch {epoch}), standbys: {}",
                from.1, to.1
            )),
            "{run:?}"
        );
        let new_epoch: u64 = run
            .stdout
            .split(&format!("new primary: {} (epoch ", to.1))
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no new primary line: {run:?}"));
        assert!(new_epoch > epoch, "{run:?}");
        let took = handover_millis(&run);
        assert!(took > 0.0 && took < 1000.0, "round {round}: {took} ms");
        times.push(took);
        // The new primary announced itself, and the old one no longer writes.
        assert!(wait_for(Duration::from_secs(2), || {
            to.0.lines()
                .iter()
                .rev()
                .find(|l| l.starts_with("tick "))
                .is_some_and(|l| l.contains(" true ok"))
        }));
        assert!(wait_for(Duration::from_secs(2), || {
            from.0
                .lines()
                .iter()
                .rev()
                .find(|l| l.starts_with("tick "))
                .is_some_and(|l| l.contains(" false NotPrimary"))
        }));
        let now = inspector.status("relay").unwrap();
        assert_eq!(now.holder.as_deref(), Some(to.1));
        assert_eq!(now.epoch, Some(new_epoch));
        std::mem::swap(&mut from, &mut to);
        // The old primary leaves the lease alone for one TTL before it competes again.
        std::thread::sleep(Duration::from_millis(TTL_MS + 300));
    }
    eprintln!("handover times (ms) between two bot processes: {times:?}");
}

#[test]
fn handover_refuses_without_a_standby_unless_forced() {
    let server = RedisServer::start();
    let url = server.url();
    let nobody = tool(&["--url", &url, "handover", "solo"]);
    assert_eq!(nobody.code, Some(4), "{nobody:?}");
    assert!(nobody.stderr.contains("has no primary"), "{nobody:?}");

    let a = primary_bot(&server, "solo");
    let a_id = instance_id(&a);
    let solo_epoch = inspector(&server).status("solo").unwrap().epoch;
    assert!(solo_epoch.is_some());
    let refused = tool(&["--url", &url, "handover", "solo"]);
    assert_eq!(refused.code, Some(4), "{refused:?}");
    assert!(
        refused.stderr.contains("has no live standby") && refused.stderr.contains("--force"),
        "{refused:?}"
    );
    // Nothing was asked of the primary: it still leads, on the same epoch, and writes.
    let inspector = inspector(&server);
    let status = inspector.status("solo").unwrap();
    assert_eq!(status.holder.as_deref(), Some(a_id.as_str()));
    assert_eq!(status.epoch, solo_epoch);
    assert!(!since_promotion(&a).iter().any(|l| l.contains(" false ")));

    // --force sends it anyway: the primary steps down, nobody else takes over, and after one
    // poll interval the old primary takes the lease back itself (a new epoch).
    let forced = tool(&[
        "--url",
        &url,
        "handover",
        "solo",
        "--force",
        "--timeout",
        "0.5",
    ]);
    assert_eq!(forced.code, Some(4), "{forced:?}");
    assert!(forced.stdout.contains("none seen (--force)"), "{forced:?}");
    assert!(
        forced.stderr.contains(&format!(
            "nobody took over bot \"solo\" within 500ms: {a_id} holds the lease"
        )),
        "{forced:?}"
    );
    assert!(wait_for(Duration::from_secs(2), || since_promotion(&a)
        .iter()
        .any(|l| l.contains(" false NotPrimary"))));
    assert!(wait_for(Duration::from_secs(10), || inspector
        .status("solo")
        .unwrap()
        .epoch
        > solo_epoch));
    assert_eq!(
        inspector.status("solo").unwrap().holder.as_deref(),
        Some(a_id.as_str())
    );
}

#[test]
fn watch_refreshes_until_its_count_or_ctrl_c() {
    let server = RedisServer::start();
    let url = server.url();
    let a = primary_bot(&server, "seen");
    let a_id = instance_id(&a);
    let started = Instant::now();
    let run = tool(&[
        "--url",
        &url,
        "watch",
        "seen",
        "--interval",
        "0.2",
        "--count",
        "3",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        run.stdout.matches("quantshift-state watch seen").count(),
        3,
        "{run:?}"
    );
    assert_eq!(
        run.stdout.matches(&format!("primary    {a_id}\n")).count(),
        3,
        "{run:?}"
    );
    assert!(run.stdout.contains("health     standby missing"), "{run:?}");
    assert!(
        !run.stdout.contains('\x1b'),
        "no screen control codes into a pipe"
    );

    // JSON lines while the primary changes hands, then Ctrl-C: exit 0.
    let b = ChildBot::spawn(&server, "seen", TTL_MS, false);
    let b_id = instance_id(&b);
    wait_for_standbys(&server, "seen", &[&b_id]);
    let watcher = Running::start(command(
        &[
            "--url",
            &url,
            "watch",
            "seen",
            "--json",
            "--interval",
            "0.05",
        ],
        &[],
    ));
    let screen = Running::start(command(
        &["--url", &url, "watch", "seen", "--interval", "0.05"],
        &[],
    ));
    watcher.wait_for_output("\n");
    screen.wait_for_output("positions  ");
    let handover = tool(&["--url", &url, "handover", "seen"]);
    assert_eq!(handover.code, Some(0), "{handover:?}");
    watcher.wait_for_output(&format!("\"primary\":\"{b_id}\""));
    // The text view lists the change of primary.
    screen.wait_for_output(&format!(" primary {a_id} -> {b_id}\n"));
    signal(screen.child.id() as i32, libc::SIGINT);
    let screen = screen.finish(Duration::from_secs(5));
    assert_eq!(screen.code, Some(0), "{screen:?}");
    assert!(screen.stdout.contains("change     "), "{screen:?}");
    signal(watcher.child.id() as i32, libc::SIGINT);
    let watched = watcher.finish(Duration::from_secs(5));
    assert_eq!(
        watched.code,
        Some(0),
        "Ctrl-C ends watch with 0: {watched:?}"
    );
    let frames: Vec<Value> = watched
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(frames.len() >= 2, "{watched:?}");
    assert_eq!(frames[0]["bot"]["primary"], a_id.as_str());
    assert_eq!(frames.last().unwrap()["bot"]["primary"], b_id.as_str());
    assert!(frames.iter().all(|f| f["redis"]["role"] == "master"));

    // Redis going away is shown in the view, and the view goes on.
    let mut server = server;
    let watcher = Running::start(command(
        &[
            "--url",
            &url,
            "watch",
            "seen",
            "--interval",
            "0.1",
            "--count",
            "4",
        ],
        &[],
    ));
    watcher.wait_for_output("positions  ");
    server.kill();
    let run = watcher.finish(Duration::from_secs(30));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!("primary    {b_id}")),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("ERROR      cannot reach Redis"),
        "{run:?}"
    );
    drop((a, b));
}

#[test]
fn unreachable_or_invalid_redis_is_a_clear_error_without_the_password() {
    let secret = "hunter2-Zq9";
    // Nobody listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://admin:{secret}@127.0.0.1:{port}/0");
    for args in [
        vec!["--url", url.as_str(), "status"],
        vec!["--url", url.as_str(), "positions", "x", "--json"],
        vec!["--url", url.as_str(), "handover", "x"],
        vec!["--url", url.as_str(), "watch", "x", "--count", "1"],
    ] {
        let run = tool(&args);
        assert_eq!(run.code, Some(3), "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(&format!(
                "cannot reach Redis at redis://admin:***@127.0.0.1:{port}/0"
            )),
            "{run:?}"
        );
        assert!(!run.all().contains(secret), "{run:?}");
    }
    // A server that accepts but never answers: bounded by the tool's timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!(
        "redis://:{secret}@127.0.0.1:{}/0",
        silent.local_addr().unwrap().port()
    );
    let started = Instant::now();
    let run = tool(&["--url", &silent_url, "status"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("timed out"), "{run:?}");
    assert!(!run.all().contains(secret), "{run:?}");

    for bad in [
        format!("ftp://:{secret}@127.0.0.1:{port}"),
        format!("redis://:{secret}@[not-a-host"),
        "not a url".to_owned(),
    ] {
        let run = tool(&["status", "--url", &bad]);
        assert_eq!(run.code, Some(3), "{bad}: {run:?}");
        assert!(run.stderr.contains("Redis URL"), "{run:?}");
        assert!(!run.all().contains(secret), "{run:?}");
    }
    // The environment's URL is used when --url is absent, with the same redaction.
    let run = tool_env(&["status"], &[("QUANTSHIFT_REDIS_URL", &url)]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains(&format!("127.0.0.1:{port}")), "{run:?}");
    assert!(!run.all().contains(secret), "{run:?}");
}

#[test]
fn a_password_protected_redis_via_url_or_environment() {
    let secret = "s3cret-Pw-77";
    let server = RedisServer::start();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(secret)
        .query::<()>(&mut server.connection())
        .unwrap();
    let plain = server.url();
    let with_password = format!("redis://:{secret}@127.0.0.1:{}/0", server.port);
    let run = tool(&["--url", &with_password, "status", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        json_of(&run)["redis"]["url"],
        format!("redis://:***@127.0.0.1:{}/0", server.port)
    );
    assert!(!run.all().contains(secret), "{run:?}");
    let table = tool(&["--url", &with_password, "status"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    assert!(!table.all().contains(secret), "{table:?}");

    // QUANTSHIFT_REDIS_URL wins over REDIS_URL; the password may come from REDIS_PASSWORD.
    let dead = "redis://127.0.0.1:1/0";
    let run = tool_env(
        &["status", "--json"],
        &[
            ("QUANTSHIFT_REDIS_URL", &plain),
            ("REDIS_URL", dead),
            ("REDIS_PASSWORD", secret),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(json_of(&run)["redis"]["url"], plain.as_str());
    assert!(!run.all().contains(secret), "{run:?}");
    let run = tool_env(&["status"], &[("REDIS_URL", &with_password)]);
    assert_eq!(run.code, Some(0), "{run:?}");

    // A wrong or missing password: refused, and neither password is printed.
    let wrong = format!("redis://:not-{secret}@127.0.0.1:{}/0", server.port);
    let run = tool(&["--url", &wrong, "status"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(!run.all().contains(secret), "{run:?}");
    let run = tool(&["--url", &plain, "status"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("quantshift-state: error: "), "{run:?}");
}

#[test]
fn help_and_command_line_errors() {
    let main = tool(&["--help"]);
    assert_eq!(main.code, Some(0));
    for word in [
        "status",
        "positions",
        "handover",
        "watch",
        "Exit codes",
        "QUANTSHIFT_REDIS_URL",
    ] {
        assert!(main.stdout.contains(word), "{main:?}");
    }
    assert_eq!(
        tool(&[]).code,
        Some(64),
        "no command: help and a usage code"
    );
    for command in ["status", "positions", "handover", "watch"] {
        for form in [
            vec![command, "--help"],
            vec!["help", command],
            vec!["-h", command],
        ] {
            let run = tool(&form);
            assert_eq!(run.code, Some(0), "{form:?}: {run:?}");
            // `-h COMMAND` is the main help, whose usage lists every command's line.
            let usage = format!("quantshift-state [--url URL] {command}");
            let usage = if form[0] == "-h" {
                usage
            } else {
                format!("Usage: {usage}")
            };
            assert!(run.stdout.contains(&usage), "{form:?}: {run:?}");
        }
    }
    assert!(tool(&["status", "--help"]).stdout.contains("2  no primary"));
    assert!(tool(&["-V"]).stdout.starts_with("quantshift-state "));
    // clap's wording, with the tool's name in front and the command's usage after it.
    for (args, message) in [
        (vec!["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (
            vec!["positions"],
            "the following required arguments were not provided:\n  <BOT>",
        ),
        (vec!["handover", "a", "b"], "unexpected argument 'b' found"),
        (vec!["status", "--jsn"], "unexpected argument '--jsn' found"),
        (
            vec!["handover", "a", "--timeout"],
            "a value is required for '--timeout <SECS>'",
        ),
        (
            vec!["handover", "a", "--timeout", "soon"],
            "invalid value 'soon' for '--timeout <SECS>': must be a number of seconds",
        ),
        (
            vec!["watch", "a", "--interval", "0"],
            "invalid value '0' for '--interval <SECS>': must be a number of seconds from 0.05",
        ),
        (
            vec!["watch", "a", "--count", "-1"],
            "invalid value '-1' for '--count <N>': must be a positive whole number",
        ),
        (
            vec!["watch", "a", "--json=yes"],
            "unexpected value 'yes' for '--json'",
        ),
    ] {
        let run = tool(&args);
        assert_eq!(run.code, Some(64), "{args:?}: {run:?}");
        assert!(
            run.stderr
                .starts_with(&format!("quantshift-state: error: {message}")),
            "{args:?}: {run:?}"
        );
        assert!(run.stderr.contains("--help'"), "{run:?}");
    }
    assert!(
        tool(&["status", "--jsn"])
            .stderr
            .contains("a similar argument exists: '--json'"),
        "a suggestion for a misspelt option"
    );
    // Shell completions, without Redis.
    for shell in ["bash", "zsh", "fish"] {
        let run = tool(&["completions", shell]);
        assert_eq!(run.code, Some(0), "{shell}: {run:?}");
        for word in ["quantshift-state", "handover", "interval"] {
            assert!(run.stdout.contains(word), "{shell}: {word}: {run:?}");
        }
    }
    assert_eq!(tool(&["completions", "tcsh"]).code, Some(64));
}

/// `Inspector::lease_holder`, the cheap read `handover` polls.
#[test]
fn the_lease_holder_read_matches_the_status() {
    let server = RedisServer::start();
    let inspector = inspector(&server);
    assert_eq!(inspector.lease_holder("lh").unwrap(), (None, None));
    let a = manager(&server, "lh", 3000);
    assert!(a.wait_until_primary(Some(Duration::from_secs(3))));
    let (holder, epoch) = inspector.lease_holder("lh").unwrap();
    assert_eq!(holder.as_deref(), Some(a.instance_id()));
    assert_eq!(epoch, a.epoch());
    let status = inspector.status("lh").unwrap();
    assert_eq!((status.holder, status.epoch), (holder, epoch));
    a.close().unwrap();
    assert_eq!(inspector.lease_holder("lh").unwrap(), (None, epoch));
    let err = inspector.lease_holder("l:h").unwrap_err();
    assert_eq!(err.kind(), quantshift_core::ErrorKind::InvalidInput);
}

#[test]
fn watch_redraws_the_screen_on_a_terminal() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let server = RedisServer::start();
    let url = server.url();
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills in two new descriptors, owned from here on.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    // SAFETY: both descriptors were just created and nothing else owns them.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = command(
        &[
            "--url",
            &url,
            "watch",
            "nobody",
            "--interval",
            "0.05",
            "--count",
            "2",
        ],
        &[],
    );
    cmd.stdout(Stdio::from(slave));
    let run = Running::start(cmd).finish(Duration::from_secs(30));
    assert_eq!(run.code, Some(0), "{run:?}");
    // The terminal side: read what the tool drew (EIO once the tool closed its side).
    let mut screen = Vec::new();
    let _ = std::fs::File::from(master).read_to_end(&mut screen);
    let screen = String::from_utf8_lossy(&screen);
    assert_eq!(screen.matches("\x1b[H\x1b[2J").count(), 2, "{screen:?}");
    assert!(screen.contains("health     no primary"), "{screen:?}");
}

/// A Sentinel (`redis-server --sentinel`) on a free loopback port, monitoring one master.
struct Sentinel {
    port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl Sentinel {
    fn start(service: &str, master_port: u16, master_password: &str) -> Self {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir =
                std::env::temp_dir().join(format!("qs-cli-sentinel-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {service} 127.0.0.1 {master_port} 1\n\
                     sentinel auth-pass {service} {master_password}\n",
                    dir.display()
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            let mut sentinel = Sentinel { port, child, dir };
            let url = format!("redis://127.0.0.1:{port}/");
            let up = wait_for(Duration::from_secs(10), || {
                redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                    .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn))
                    .is_ok()
                    || matches!(sentinel.child.try_wait(), Ok(Some(_)))
            });
            if up && matches!(sentinel.child.try_wait(), Ok(None)) {
                return sentinel;
            }
        }
        panic!("could not start a Sentinel on a free loopback port");
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn status_through_sentinel_and_on_a_replica() {
    let secret = "sentinel-data-Pw5";
    let master = RedisServer::start();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(secret)
        .query::<()>(&mut master.connection())
        .unwrap();
    let sentinel = Sentinel::start("qsvc", master.port, secret);
    let url = format!(
        "redis+sentinel://:{secret}@127.0.0.1:{}/qsvc",
        sentinel.port
    );
    let run = tool(&["--url", &url, "status", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let doc = json_of(&run);
    assert_eq!(doc["redis"]["role"], "master", "{run:?}");
    assert_eq!(
        doc["redis"]["url"],
        format!("redis+sentinel://:***@127.0.0.1:{}/qsvc", sentinel.port)
    );
    assert!(!run.all().contains(secret), "{run:?}");
    let wrong_service = format!(
        "redis+sentinel://:{secret}@127.0.0.1:{}/nosuch",
        sentinel.port
    );
    let run = tool(&["--url", &wrong_service, "status"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(!run.all().contains(secret), "{run:?}");

    // Pointed at a replica: its role, and a warning that it is not the master.
    let replica = RedisServer::start_with(&[
        "--maxmemory-policy",
        "noeviction",
        "--replicaof",
        "127.0.0.1",
        &master.port.to_string(),
    ]);
    let run = tool(&["--url", &replica.url(), "status", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let doc = json_of(&run);
    assert_eq!(doc["redis"]["role"], "slave", "{run:?}");
    assert!(
        doc["redis"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("not a master")),
        "{run:?}"
    );
}

/// Calls of each command since the last `CONFIG RESETSTAT` (commands run by scripts
/// included).
fn command_calls(conn: &mut redis::Connection) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_status_is_one_script_call_also_after_a_script_flush() {
    let server = RedisServer::start();
    let m = manager(&server, "tx", TTL_MS);
    assert!(m.wait_until_primary(Some(Duration::from_secs(5))));
    for symbol in ["A", "B", "C"] {
        m.save_position(symbol, &mut obj(json!({"quantity": 1})))
            .unwrap();
    }
    m.save_state(&mut obj(json!({"x": 1}))).unwrap();
    // Nothing else talks to Redis while the commands are counted: the manager is closed, a
    // lease is set by hand, and one position expired.
    m.close().unwrap();
    drop(m);
    let mut conn = server.connection();
    let mut run = |args: &[&str]| redis::cmd(args[0]).arg(&args[1..]).query::<()>(&mut conn);
    run(&["SET", "bot:tx:primary_lock", "host:7:nonce", "PX", "60000"]).unwrap();
    run(&["DEL", "bot:tx:position:C"]).unwrap();
    let inspector = inspector(&server);
    // A restarted Redis forgets its scripts: the call fails on NOSCRIPT, and the status
    // loads the script and reads again.
    for flush in [false, true] {
        inspector.status("tx").unwrap();
        if flush {
            run(&["SCRIPT", "FLUSH"]).unwrap();
        }
        run(&["CONFIG", "RESETSTAT"]).unwrap();
        let status = inspector.status("tx").unwrap();
        assert_eq!(status.positions, 2);
        assert_eq!(status.holder.as_deref(), Some("host:7"));
        assert!(status.lease_ttl.unwrap() > Duration::from_secs(50));
        assert!(status.epoch.unwrap() > 1_000_000_000_000);
        assert!(status.state_age.is_some() && status.heartbeat_age.is_some());
        let calls = command_calls(&mut server.connection());
        let reads = if flush { 2 } else { 1 };
        let expected: std::collections::HashMap<String, u64> = [
            ("evalsha", reads),
            ("smembers", 1),
            ("mget", 1),
            ("get", 4),
            ("exists", 1),
            ("pttl", 1),
            ("zrangebyscore", 1),
            ("time", 1),
            ("hmget", 1),
            ("hgetall", 1),
            ("script|load", reads - 1),
            ("config|resetstat", 1),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| (name.to_owned(), n))
        .collect();
        assert_eq!(calls, expected);
    }
}

#[test]
fn a_status_names_a_key_of_another_redis_type() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let inspector = inspector(&server);
    let mut run = |args: &[&str]| redis::cmd(args[0]).arg(&args[1..]).query::<()>(&mut conn);
    run(&["RPUSH", "bot:wt:heartbeat", "by hand"]).unwrap();
    let err = inspector.status("wt").unwrap_err();
    assert_eq!(err.kind(), quantshift_core::ErrorKind::CorruptData, "{err}");
    assert!(
        err.message()
            .contains("bot:wt:heartbeat holds a Redis list, not the string"),
        "{err}"
    );
    run(&["DEL", "bot:wt:heartbeat"]).unwrap();
    run(&["SADD", "bot:wt:positions", "AAPL"]).unwrap();
    run(&["HSET", "bot:wt:position:AAPL", "f", "by hand"]).unwrap();
    let err = inspector.status("wt").unwrap_err();
    assert!(
        err.message()
            .contains("bot:wt:position:AAPL holds a Redis hash, not the string"),
        "{err}"
    );
    // Several bots in one round trip: each has its own outcome.
    run(&["SET", "bot:fine:epoch", "4"]).unwrap();
    let all = inspector.statuses(&["wt", "fine", "a:b", "none"]).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].as_ref().unwrap_err().message(), err.message());
    assert_eq!(all[1].as_ref().unwrap().epoch, Some(4));
    let invalid = all[2].as_ref().unwrap_err();
    assert_eq!(
        invalid.kind(),
        quantshift_core::ErrorKind::InvalidInput,
        "{invalid}"
    );
    assert_eq!(all[3].as_ref().unwrap().epoch, None);
}

/// The server warnings are read in one pipeline whose replies are judged one by one: a user
/// that may not run `CONFIG` still gets the role checked, and each unreadable setting is named.
#[test]
fn server_warnings_name_each_unreadable_setting() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let inspector = Inspector::connect(Some(&server.url()), Duration::from_secs(2)).unwrap();
    let kinds = inspector.server().unwrap().warning_kinds;
    assert!(kinds.contains(&"eviction_policy"), "{kinds:?}");
    assert!(!kinds.contains(&"not_master"), "{kinds:?}");

    for (user, denied, expected, absent) in [
        (
            "noconfig",
            "-config",
            &["eviction_policy_unreadable", "persistence_unreadable"][..],
            &["eviction_policy", "role_unreadable", "not_master"][..],
        ),
        (
            "norole",
            "-role",
            &["eviction_policy", "role_unreadable"][..],
            &["not_master", "eviction_policy_unreadable"][..],
        ),
    ] {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(">pw-of-a-test-user")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg(denied)
            .query::<()>(&mut server.connection())
            .unwrap();
        let url = format!(
            "redis://{user}:pw-of-a-test-user@127.0.0.1:{}/0",
            server.port
        );
        let status = Inspector::connect(Some(&url), Duration::from_secs(2))
            .unwrap()
            .server()
            .unwrap();
        let warnings: Vec<(&str, String)> = status
            .warning_kinds
            .into_iter()
            .zip(status.warnings)
            .collect();
        for kind in expected {
            assert!(
                warnings.iter().any(|(k, _)| k == kind),
                "{user}: {warnings:?}"
            );
        }
        for kind in absent {
            assert!(
                !warnings.iter().any(|(k, _)| k == kind),
                "{user}: {warnings:?}"
            );
        }
        assert!(
            !warnings
                .iter()
                .any(|(_, m)| m.contains("pw-of-a-test-user")),
            "{warnings:?}"
        );
    }
}

/// Every key of `bot` in `layout`'s naming (`bot:NAME:*` or `bot:{NAME}:*`), sorted.
fn keys_of(conn: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(conn).unwrap();
    keys.sort();
    keys
}

/// A key's value, whatever its type, as comparable text (members and fields sorted).
fn value_of(conn: &mut redis::Connection, key: &str) -> String {
    let kind: String = redis::cmd("TYPE").arg(key).query(conn).unwrap();
    let mut items: Vec<String> = match kind.as_str() {
        "string" => vec![redis::cmd("GET").arg(key).query(conn).unwrap()],
        "set" => redis::cmd("SMEMBERS").arg(key).query(conn).unwrap(),
        "hash" => {
            let pairs: Vec<(String, String)> = redis::cmd("HGETALL").arg(key).query(conn).unwrap();
            pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
        }
        "zset" => {
            let pairs: Vec<(String, String)> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(conn)
                .unwrap();
            pairs.into_iter().map(|(m, s)| format!("{m}@{s}")).collect()
        }
        other => panic!("{key}: unexpected type {other}"),
    };
    items.sort();
    format!("{kind}:{}", items.join(","))
}

/// Each key with its value: equal snapshots hold the same keys and values.
fn snapshot(conn: &mut redis::Connection) -> Vec<(String, String)> {
    keys_of(conn, "*")
        .into_iter()
        .map(|key| {
            let value = value_of(conn, &key);
            (key, value)
        })
        .collect()
}

fn pttl(conn: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(conn).unwrap()
}

fn tagged_manager(server: &RedisServer, bot: &str) -> quantshift_core::StateManager {
    quantshift_core::StateManager::new(
        common::fast_config(server, bot, 3000).key_layout(quantshift_core::KeyLayout::HashTagged),
    )
    .expect("start a state manager in the hash-tagged layout")
}

#[test]
fn layout_move_carries_every_key_with_its_ttl_and_refuses_while_a_lease_is_held() {
    let server = RedisServer::start();
    let url = server.url();
    let mut conn = server.connection();
    // A bot that ran in the plain layout: state, positions (one with a fill), a heartbeat,
    // then a clean stop (its lease released).
    let writer = manager(&server, "mover", 3000);
    assert!(writer.wait_until_primary(Some(Duration::from_secs(3))));
    writer
        .save_state(&mut obj(
            json!({"strategy": "moving_average", "daily_pnl": 150.5}),
        ))
        .unwrap();
    writer
        .save_position(
            "AAPL",
            &mut obj(json!({"quantity": 10, "entry_price": 150.0})),
        )
        .unwrap();
    writer
        .apply_fill("BTC/USD", 0.5, 42000.0, Some("fill-1"))
        .unwrap();
    writer.heartbeat().unwrap();
    writer.close().unwrap();
    // A position of the predecessor: no entry in the positions set.
    redis::cmd("SET")
        .arg("bot:mover:position:LEGACY")
        .arg(r#"{"quantity": 3}"#)
        .arg("EX")
        .arg(5000)
        .query::<()>(&mut conn)
        .unwrap();
    // Another bot's keys are never touched.
    let bystander = manager(&server, "mover2", 3000);
    assert!(bystander.wait_until_primary(Some(Duration::from_secs(3))));
    bystander
        .save_position("AAPL", &mut obj(json!({"quantity": 1})))
        .unwrap();
    bystander.close().unwrap();

    // A lease held (an instance running): refused, nothing moved.
    let holder = manager(&server, "mover", 3000);
    assert!(holder.wait_until_primary(Some(Duration::from_secs(3))));
    let before = snapshot(&mut conn);
    let refused = tool(&[
        "--url",
        &url,
        "layout",
        "move",
        "mover",
        "--to",
        "hash_tagged",
    ]);
    assert_eq!(refused.code, Some(5), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("holds its lease in the plain layout")
            && refused
                .stderr
                .contains("stop every instance of the bot first")
            && refused.stderr.contains("nothing was moved"),
        "{refused:?}"
    );
    assert_eq!(snapshot(&mut conn), before, "a refused move wrote");
    // Stopped cleanly: the lease released (the lease record's token emptied).
    holder.close().unwrap();
    // A closed instance leaves the live instances and the stall meter summaries at once, and
    // a dead one lapses within seconds: entries of a crashed instance that would still count
    // for long, so that every key is there when it moves.
    redis::pipe()
        .cmd("ZADD")
        .arg("bot:mover:instances")
        .arg(i64::MAX / 2)
        .arg("host:1")
        .cmd("PEXPIRE")
        .arg("bot:mover:instances")
        .arg(600_000)
        .cmd("HSET")
        .arg("bot:mover:lease_stalls")
        .arg("host:1")
        .arg(format!("{} {{\"v\":1}}", i64::MAX / 2))
        .cmd("PEXPIRE")
        .arg("bot:mover:lease_stalls")
        .arg(600_000)
        .query::<()>(&mut conn)
        .unwrap();

    let epoch: u64 = redis::cmd("GET")
        .arg("bot:mover:epoch")
        .query(&mut conn)
        .unwrap();
    let plain_keys = keys_of(&mut conn, "bot:mover:*");
    assert!(plain_keys.len() >= 11, "{plain_keys:?}");
    assert!(
        plain_keys.contains(&"bot:mover:lease_stalls".to_owned()),
        "{plain_keys:?}"
    );
    let state_ttl = pttl(&mut conn, "bot:mover:state");
    let legacy_ttl = pttl(&mut conn, "bot:mover:position:LEGACY");
    assert!(state_ttl > 0 && legacy_ttl > 0);

    // Dry run: the list of what would move, and nothing written.
    let before = snapshot(&mut conn);
    let dry = tool(&[
        "--url",
        &url,
        "layout",
        "move",
        "mover",
        "--to",
        "hash_tagged",
        "--dry-run",
    ]);
    assert_eq!(dry.code, Some(0), "{dry:?}");
    for key in &plain_keys {
        assert!(
            dry.stdout.contains(&format!("would move {key} -> ")),
            "{key}: {dry:?}"
        );
    }
    assert!(
        dry.stdout.contains("nothing was written (dry run)"),
        "{dry:?}"
    );
    assert_eq!(snapshot(&mut conn), before, "a dry run wrote");

    // The move: every plain key is at its tagged name, with its value and TTL.
    let values: Vec<(String, String)> = before
        .iter()
        .filter(|(key, _)| plain_keys.contains(key))
        .cloned()
        .collect();
    let started = Instant::now();
    let run = tool(&["--url", &url, "layout", "move", "mover", "--to", "tagged"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let elapsed = i64::try_from(started.elapsed().as_millis()).unwrap();
    assert!(
        run.stdout.contains(&format!(
            "moved {} key(s) from plain to hash_tagged (3 position(s))",
            plain_keys.len()
        )),
        "{run:?}"
    );
    assert_eq!(keys_of(&mut conn, "bot:mover:*"), Vec::<String>::new());
    for (key, value) in &values {
        let moved = key.replacen("bot:mover:", "bot:{mover}:", 1);
        assert_eq!(
            &value_of(&mut conn, &moved),
            value,
            "{moved} holds another value than {key} held"
        );
    }
    let epoch_now: u64 = redis::cmd("GET")
        .arg("bot:{mover}:epoch")
        .query(&mut conn)
        .unwrap();
    assert_eq!(epoch_now, epoch, "the fencing epoch moved unchanged");
    assert_eq!(pttl(&mut conn, "bot:{mover}:epoch"), -1);
    for (key, ttl_before) in [("state", state_ttl), ("position:LEGACY", legacy_ttl)] {
        let ttl = pttl(&mut conn, &format!("bot:{{mover}}:{key}"));
        // The TTL carried over: what was left, less the time the test took since.
        assert!(
            ttl > 0 && ttl <= ttl_before && ttl >= ttl_before - elapsed - 60_000,
            "{key}: {ttl} ms left, {ttl_before} ms before"
        );
    }
    assert!(
        keys_of(&mut conn, "bot:mover2:*").len() >= 3,
        "the other bot's keys stay"
    );

    // A run cut short, finished by the next one: a key back at its old name (not moved yet),
    // one at both names (the old one wins: no bot ran since), the epoch at both names (the
    // higher stays: an epoch never goes back), the rest already moved.
    redis::cmd("RENAME")
        .arg("bot:{mover}:position:AAPL")
        .arg("bot:mover:position:AAPL")
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("SET")
        .arg("bot:mover:heartbeat")
        .arg("2030-01-01T00:00:00.000000")
        .arg("PX")
        .arg(60_000)
        .query::<()>(&mut conn)
        .unwrap();
    let again = tool(&[
        "--url",
        &url,
        "layout",
        "move",
        "mover",
        "--to",
        "hash_tagged",
    ]);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(
        again
            .stdout
            .contains("moved 2 key(s) from plain to hash_tagged (1 position(s))"),
        "{again:?}"
    );
    assert!(
        again.stdout.contains("already moved: bot:{mover}:state"),
        "{again:?}"
    );
    assert_eq!(keys_of(&mut conn, "bot:mover:*"), Vec::<String>::new());
    let heartbeat: String = redis::cmd("GET")
        .arg("bot:{mover}:heartbeat")
        .query(&mut conn)
        .unwrap();
    assert_eq!(heartbeat, "2030-01-01T00:00:00.000000");
    let epoch_now: u64 = redis::cmd("GET")
        .arg("bot:{mover}:epoch")
        .query(&mut conn)
        .unwrap();
    assert_eq!(epoch_now, epoch);
    // Once more: nothing left to move.
    let idle = tool(&[
        "--url",
        &url,
        "layout",
        "move",
        "mover",
        "--to",
        "hash_tagged",
    ]);
    assert_eq!(idle.code, Some(0), "{idle:?}");
    assert!(idle.stdout.contains("nothing left to move"), "{idle:?}");
    let snapshot_after = snapshot(&mut conn);

    // The tool reads the moved bot in the tagged layout, and not in the plain one.
    let status = tool(&[
        "--url",
        &url,
        "--key-layout",
        "hash_tagged",
        "status",
        "mover",
        "--json",
    ]);
    assert_eq!(status.code, Some(0), "{status:?}");
    let doc = json_of(&status);
    assert_eq!(doc["bots"][0]["epoch"], epoch);
    // LEGACY joined the positions set when the second instance became primary.
    assert_eq!(doc["bots"][0]["positions"], 3);
    let plain = tool(&["--url", &url, "status", "mover", "--json"]);
    assert_eq!(
        json_of(&plain)["bots"][0]["epoch"],
        Value::Null,
        "{plain:?}"
    );
    let positions = json_of(&tool(&[
        "--url",
        &url,
        "--key-layout",
        "tagged",
        "positions",
        "mover",
        "--json",
    ]));
    let symbols: Vec<&String> = positions.as_object().unwrap().keys().collect();
    assert_eq!(symbols, ["AAPL", "BTC/USD", "LEGACY"]);
    assert_eq!(snapshot(&mut conn), snapshot_after, "reads wrote");

    // A manager in the tagged layout carries on: its state, its positions, a higher epoch.
    let resumed = tagged_manager(&server, "mover");
    assert!(resumed.wait_until_primary(Some(Duration::from_secs(3))));
    assert!(resumed.epoch().unwrap() > epoch);
    let state = resumed.load_state().unwrap().unwrap();
    assert_eq!(state["strategy"], "moving_average");
    assert_eq!(state["daily_pnl"], 150.5);
    let loaded: Vec<String> = resumed
        .load_positions()
        .unwrap()
        .into_iter()
        .map(|(symbol, _)| symbol)
        .collect();
    for symbol in ["AAPL", "BTC/USD", "LEGACY"] {
        assert!(loaded.iter().any(|s| s == symbol), "{symbol}: {loaded:?}");
    }
    // The fill moved too: applied once, never twice.
    let after = resumed
        .apply_fill("BTC/USD", 0.5, 42000.0, Some("fill-1"))
        .unwrap()
        .unwrap();
    assert_eq!(after["quantity"], 0.5);
    resumed.close().unwrap();

    // And back, with the keys of the tagged run.
    let back = tool(&["--url", &url, "layout", "move", "mover", "--to", "plain"]);
    assert_eq!(back.code, Some(0), "{back:?}");
    assert_eq!(keys_of(&mut conn, "bot:{mover}:*"), Vec::<String>::new());
    assert!(keys_of(&mut conn, "bot:mover:*").len() >= 9);
}

#[test]
fn the_key_layout_option_and_layout_move_refusals() {
    let server = RedisServer::start();
    let url = server.url();
    let tagged = tagged_manager(&server, "tagged-bot");
    assert!(tagged.wait_until_primary(Some(Duration::from_secs(3))));
    tagged
        .save_position("ES", &mut obj(json!({"quantity": 2})))
        .unwrap();
    for layout in ["hash_tagged", "hash-tagged", "tagged"] {
        let run = tool(&[
            "--url",
            &url,
            "status",
            "tagged-bot",
            "--check",
            "--key-layout",
            layout,
        ]);
        // A primary, no standby.
        assert_eq!(run.code, Some(1), "{layout}: {run:?}");
    }
    let positions = tool(&[
        "--url",
        &url,
        "--key-layout",
        "hash_tagged",
        "positions",
        "tagged-bot",
        "--json",
    ]);
    assert_eq!(json_of(&positions)["ES"]["quantity"], 2, "{positions:?}");
    let handover = tool(&[
        "--url",
        &url,
        "--key-layout",
        "hash_tagged",
        "handover",
        "tagged-bot",
    ]);
    assert!(
        handover.stderr.contains("has no live standby"),
        "the tagged lease is seen: {handover:?}"
    );
    let watch = tool(&[
        "--url",
        &url,
        "--key-layout",
        "hash_tagged",
        "watch",
        "tagged-bot",
        "--count",
        "1",
        "--json",
    ]);
    assert_eq!(watch.code, Some(0), "{watch:?}");
    assert_eq!(json_of(&watch)["bot"]["positions"], 1, "{watch:?}");
    // In the plain layout (the default on one server) the bot has no keys.
    let plain = tool(&["--url", &url, "status", "tagged-bot", "--check"]);
    assert_eq!(plain.code, Some(2), "{plain:?}");
    assert!(plain.stderr.contains("has no keys"), "{plain:?}");
    // Every bot found in the tagged layout.
    let all = json_of(&tool(&[
        "--url",
        &url,
        "--key-layout",
        "hash_tagged",
        "status",
        "--json",
    ]));
    assert_eq!(all["bots"][0]["bot"], "tagged-bot", "{all}");
    // Braces are the hash tag's.
    let braces = tool(&[
        "--url",
        &url,
        "--key-layout",
        "hash_tagged",
        "watch",
        "a{b}",
        "--count",
        "1",
    ]);
    assert_eq!(braces.code, Some(3), "{braces:?}");

    for (args, code, message) in [
        (
            vec!["--key-layout", "cluster", "status"],
            64,
            "invalid value 'cluster' for '--key-layout <LAYOUT>': unknown key layout",
        ),
        (
            vec![
                "--url",
                "redis+cluster://127.0.0.1:1",
                "--key-layout",
                "plain",
                "status",
            ],
            3,
            "key_layout \"plain\" cannot run on a Redis Cluster",
        ),
        (
            vec!["layout", "move", "x"],
            64,
            "the following required arguments were not provided:\n  --to <LAYOUT>",
        ),
        (
            vec!["layout", "move", "x", "--to", "sideways"],
            64,
            "invalid value 'sideways' for '--to <LAYOUT>'",
        ),
        (
            vec![
                "--key-layout",
                "plain",
                "layout",
                "move",
                "x",
                "--to",
                "tagged",
            ],
            64,
            "--key-layout does not apply to `layout move`",
        ),
        (
            vec![
                "--url",
                "redis+cluster://127.0.0.1:1",
                "layout",
                "move",
                "x",
                "--to",
                "tagged",
            ],
            3,
            "layout move works on one Redis server",
        ),
        (
            vec!["--url", &url, "layout", "move", "a{b}", "--to", "plain"],
            3,
            "reserves for the hash tag",
        ),
        (
            vec!["--url", &url, "layout", "move", "a:b", "--to", "plain"],
            3,
            "contains ':'",
        ),
    ] {
        let run = tool(&args);
        assert_eq!(run.code, Some(code), "{args:?}: {run:?}");
        assert!(
            run.stderr.starts_with("quantshift-state: error: ") && run.stderr.contains(message),
            "{args:?}: {run:?}"
        );
    }
    // A lease held in the destination layout refuses too.
    let refused = tool(&[
        "--url",
        &url,
        "layout",
        "move",
        "tagged-bot",
        "--to",
        "hash_tagged",
    ]);
    assert_eq!(refused.code, Some(5), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("holds its lease in the hash_tagged layout"),
        "{refused:?}"
    );
    // Nothing of a bot: said, exit 0.
    let none = tool(&["--url", &url, "layout", "move", "ghost", "--to", "tagged"]);
    assert_eq!(none.code, Some(0), "{none:?}");
    assert!(none.stdout.contains("nothing to move"), "{none:?}");
    // The help says why a running bot refuses, and how to reach a cluster.
    let help = tool(&["layout", "move", "--help"]);
    assert_eq!(help.code, Some(0), "{help:?}");
    for needle in [
        "Usage: quantshift-state [--url URL] layout move BOT --to hash_tagged|plain [--dry-run]",
        "would lose writes it acknowledged",
        "redis-cli --cluster import",
        "--dry-run",
    ] {
        assert!(help.stdout.contains(needle), "{needle}: {help:?}");
    }
    let main = tool(&["--help"]);
    assert!(main.stdout.contains("5   layout move refused"), "{main:?}");
    assert!(main.stdout.contains("--key-layout"), "{main:?}");
    tagged.close().unwrap();
}

/// `quantshift-state metrics --listen 127.0.0.1:0` on `url`: one scrape of /metrics, then the
/// exporter is stopped.
fn scrape_once(url: &str) -> String {
    use std::io::{BufRead, Read, Write};
    let mut exporter = std::process::Command::new(TOOL)
        .args(["--url", url, "metrics", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the exporter");
    let mut banner = String::new();
    std::io::BufReader::new(exporter.stderr.take().unwrap())
        .read_line(&mut banner)
        .expect("the exporter's first line");
    let address = banner
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect to the exporter");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let _ = exporter.kill();
    let _ = exporter.wait();
    response
}

/// `quantshift-state` on a Redis Cluster (3 primaries + 3 replicas): status, positions,
/// watch and the exporter's scrape of bots whose slots are on different primaries, read through the seed nodes.
#[test]
fn status_positions_and_watch_on_a_cluster() {
    let cluster = cluster::LocalCluster::start();
    let url = cluster.seed_url();
    let names = cluster.names_on_distinct_primaries("cli-", 3);
    let managers: Vec<quantshift_core::StateManager> = names
        .iter()
        .map(|name| {
            let config = quantshift_core::Config::new(name)
                .redis_url(&url)
                .lock_ttl(Duration::from_millis(3000))
                .install_signal_handlers(false);
            quantshift_core::StateManager::new(config).expect("a manager on the cluster")
        })
        .collect();
    for manager in &managers {
        assert!(manager.wait_until_primary(Some(Duration::from_secs(5))));
        manager
            .save_position("AAPL", &mut obj(json!({"quantity": 10})))
            .unwrap();
        manager
            .save_state(&mut obj(json!({"strategy": "cluster"})))
            .unwrap();
    }

    // One bot, then all three in one call: each read on the primary that owns its slot.
    let one = tool(&["--url", &url, "status", &names[0], "--json"]);
    assert_eq!(one.code, Some(0), "{one:?}");
    let doc = json_of(&one);
    assert_eq!(
        doc["bots"][0]["primary"],
        managers[0].instance_id(),
        "{doc}"
    );
    assert_eq!(doc["bots"][0]["positions"], 1, "{doc}");
    let mut args = vec!["--url", url.as_str(), "status", "--check", "--json"];
    args.extend(names.iter().map(String::as_str));
    let all = tool(&args);
    // Primaries without standbys.
    assert_eq!(all.code, Some(1), "{all:?}");
    let doc = json_of(&all);
    for (i, manager) in managers.iter().enumerate() {
        assert_eq!(doc["bots"][i]["bot"], names[i].as_str(), "{doc}");
        assert_eq!(doc["bots"][i]["primary"], manager.instance_id(), "{doc}");
        assert_eq!(doc["bots"][i]["positions"], 1, "{doc}");
    }
    // The table, and the bots found when none is named (keys on every primary).
    let table = tool(&["--url", &url, "status"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    for name in &names {
        assert!(
            table.stdout.lines().any(|l| l.starts_with(name.as_str())),
            "{name}: {table:?}"
        );
    }
    let positions = tool(&["--url", &url, "positions", &names[1], "--json"]);
    assert_eq!(positions.code, Some(0), "{positions:?}");
    assert_eq!(json_of(&positions)["AAPL"]["quantity"], 10);
    let watch = tool(&["--url", &url, "watch", &names[2], "--count", "1", "--json"]);
    assert_eq!(watch.code, Some(0), "{watch:?}");
    assert_eq!(
        json_of(&watch)["bot"]["primary"],
        managers[2].instance_id(),
        "{watch:?}"
    );
    // The exporter: one scrape of every bot found, each read on its own primary.
    let metrics = scrape_once(&url);
    for name in &names {
        assert!(
            metrics.contains(&format!("quantshift_bot_has_primary{{bot=\"{name}\"}} 1")),
            "{name}: {metrics}"
        );
    }
    assert!(metrics.contains("quantshift_redis_up 1"), "{metrics}");
    // The plain layout cannot run there.
    let plain = tool(&["--url", &url, "--key-layout", "plain", "status"]);
    assert_eq!(plain.code, Some(3), "{plain:?}");
    for manager in &managers {
        manager.close().unwrap();
    }
}
