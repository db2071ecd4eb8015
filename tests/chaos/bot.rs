//! The bot of the chaos and cluster suites: the test binary re-run as a child process
//! (`chaos_child`, `cluster_child`), and the parent's handle on it. Every time stamp is `CLOCK_MONOTONIC` in nanoseconds, one clock shared by
//! every process of the machine, so the parent can line up both bots' logs.
//!
//! Lines printed by a child:
//! - `READY <t>` once its manager is constructed;
//! - `R1 <t> <epoch>`: a run of `is_primary() == true` samples starts (t taken before the call);
//! - `R0 <t_last_true> <t_first_false>`: the run ended (t_last_true taken after the call);
//! - `A <t> <0|1>`: alive, every 100 ms;
//! - `W <P|F> <seq> <t_send> <t_done> <e1> <e2> <outcome>`: one write, its send time (before
//!   the call), its completion, the epoch read just before and just after (0: none), and
//!   `ok` or the error kind. `P` is `save_position("LAST", {"w", "seq", "e"})`; `F` is
//!   `apply_fill("FILLS", +1, price, fill_id = "<writer>-<seq>")`.
//! - `L <seq> <writer> <seq_loaded> <outcome>`: right after an acknowledged `P` write of
//!   `seq`, `load_positions()` found `LAST` written by `writer` with `seq_loaded` (`-` and 0
//!   when absent), or failed (`outcome` is the error kind). Reading one's own write back
//!   through the loads' cache (invalidated by Redis when `LAST` changes) must never give an
//!   older `seq` of the same writer.
//! - `S <t> <wake n> <wake max> <wake p99> <rtt n> <rtt max> <rtt p99> <dropped> <wake buckets>
//!   <rtt buckets>`: the lease's stall meter (`lease_stalls()`), every second; durations in
//!   µs, p99 the upper bound of its bucket, buckets comma-separated (`BUCKET_BOUNDS_MS`).
//!
//! No thread of the bot waits for its parent: the lines go through an unbounded queue to a
//! thread of their own that writes them to stdout (a parent slow to read, on a loaded
//! machine, delays only that thread), and the library's log records (`QS_BOT_LOG`: debug
//! for quantshift_core, on the same clock) go straight to a file, which the parent keeps.
//! `QS_BOT_BUSY_THREADS` starts that many threads that spin and allocate for the bot's whole
//! life, beside its lease (the chaos suite's `threads` contention).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use quantshift_core::{Config, HistogramSnapshot, StateManager};
use serde_json::json;

use super::analysis::InstanceData;

pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a child bot is started with.
#[derive(Clone, Debug)]
pub struct BotOptions {
    /// The test of the binary that runs [`child_main`] (`chaos_child`, `cluster_child`).
    pub child_test: &'static str,
    pub url: String,
    pub ttl_ms: u64,
    pub wait_replicas: u32,
    /// The child's own bound on its life.
    pub max_s: u64,
    /// Every how many acknowledged `P` writes the positions are loaded back (`L` lines).
    pub read_back_every: u64,
    /// Pause between two write attempts.
    pub pause_ms: u64,
    /// Where the bot's log (`<writer>.log`) and everything it printed (`<writer>.out`) are
    /// kept; nothing is kept without it.
    pub log_dir: Option<PathBuf>,
    /// Threads of the bot's own that spin and allocate beside its lease.
    pub busy_threads: u32,
}

impl BotOptions {
    /// The chaos suite's bot: every acknowledged `P` write read back, a write every 3 ms.
    pub fn chaos(url: &str, ttl_ms: u64, max_s: u64) -> Self {
        BotOptions {
            child_test: "chaos_child",
            url: url.to_owned(),
            ttl_ms,
            wait_replicas: 0,
            max_s,
            read_back_every: 1,
            pause_ms: 3,
            log_dir: None,
            busy_threads: 0,
        }
    }
}

/// The queue of the child's lines; a thread of its own writes them to stdout.
static OUT: OnceLock<Mutex<mpsc::Sender<String>>> = OnceLock::new();

/// Prints one line of the child's protocol without waiting for the parent to read it.
fn out(line: String) {
    let sender = OUT.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let stdout = std::io::stdout();
            while let Ok(line) = receiver.recv() {
                let mut lock = stdout.lock();
                let _ = writeln!(lock, "{line}");
                // Whatever else is queued goes in the same write.
                while let Ok(more) = receiver.try_recv() {
                    let _ = writeln!(lock, "{more}");
                }
                let _ = lock.flush();
            }
        });
        Mutex::new(sender)
    });
    let _ = sender.lock().unwrap().send(line);
}

/// The library's records to `path`, stamped with [`mono_ns`] (the parent lines them up with
/// the runs); warnings of the dependencies too.
fn log_to(path: &str) {
    let Ok(file) = std::fs::File::create(path) else {
        return;
    };
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .filter_module("quantshift_core", log::LevelFilter::Debug)
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {} {} {}",
                mono_ns(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .target(env_logger::Target::Pipe(Box::new(file)))
        .try_init();
}

/// Spins and allocates for ever (the process's other work, competing with its lease).
fn busy(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut total = 0u64;
    loop {
        let n = rng.usize(1..64 * 1024);
        let v: Vec<u64> = (0..n as u64).map(|i| i.wrapping_mul(total | 1)).collect();
        total = total.wrapping_add(v.iter().fold(0u64, |a, &b| a.rotate_left(5) ^ b));
        if rng.u8(..) == 0 {
            let text = format!("{total:x}{}", "x".repeat(rng.usize(0..4096)));
            total = total.wrapping_add(text.len() as u64);
        }
        std::hint::black_box(total);
    }
}

fn snapshot_fields(h: &HistogramSnapshot) -> (u64, u64, u64) {
    (
        h.count,
        h.max.as_micros() as u64,
        h.quantile(0.99).as_micros() as u64,
    )
}

fn buckets(h: &HistogramSnapshot) -> String {
    h.buckets
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints the stall meter every second.
fn report_stalls(manager: &StateManager, give_up: Instant) {
    while Instant::now() < give_up {
        std::thread::sleep(Duration::from_secs(1));
        let s = manager.lease_stalls();
        let (wn, wmax, wp99) = snapshot_fields(&s.wake_late);
        let (rn, rmax, rp99) = snapshot_fields(&s.round_trip);
        out(format!(
            "S {} {wn} {wmax} {wp99} {rn} {rmax} {rp99} {} {} {}",
            mono_ns(),
            s.dropped_records,
            buckets(&s.wake_late),
            buckets(&s.round_trip)
        ));
    }
}

/// Bounds a child of the harness (a bot, a spinner): it exits when its stdin closes (the
/// harness stopped it, or died).
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
}

/// The child's body; returns at once unless `QS_BOT_URL` is set.
pub fn child_main() {
    let Ok(url) = std::env::var("QS_BOT_URL") else {
        return;
    };
    let bot = std::env::var("QS_BOT_NAME").unwrap();
    let writer = std::env::var("QS_BOT_WRITER").unwrap();
    let ttl = env_u64("QS_BOT_TTL_MS", 1000);
    let max_s = env_u64("QS_BOT_MAX_S", 300);
    let wait_replicas = env_u64("QS_BOT_WAIT_REPLICAS", 0) as u32;
    let read_back_every = env_u64("QS_BOT_READ_BACK_EVERY", 1).max(1);
    let pause = Duration::from_millis(env_u64("QS_BOT_PAUSE_MS", 3));
    if let Ok(path) = std::env::var("QS_BOT_LOG") {
        log_to(&path);
    }
    for n in 0..env_u64("QS_BOT_BUSY_THREADS", 0) {
        std::thread::spawn(move || busy(n));
    }
    // Bounded: the child ends when its parent goes away (stdin closes) or after max_s.
    exit_when_stdin_closes();
    let give_up = Instant::now() + Duration::from_secs(max_s);
    let config = Config::new(bot)
        .redis_url(url)
        .lock_ttl(Duration::from_millis(ttl))
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .wait_replicas(wait_replicas)
        .install_signal_handlers(false);
    let started = Instant::now();
    let manager = loop {
        match StateManager::new(config.clone()) {
            Ok(manager) => break Arc::new(manager),
            Err(err) => {
                out(format!("E start {err}"));
                if started.elapsed() > Duration::from_secs(20) {
                    std::process::exit(3);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    out(format!("READY {}", mono_ns()));
    let sampler = Arc::clone(&manager);
    std::thread::spawn(move || sample(&sampler, give_up));
    let meter = Arc::clone(&manager);
    std::thread::spawn(move || report_stalls(&meter, give_up));
    write(&manager, &writer, give_up, read_back_every, pause);
    // Never a graceful release: the parent kills us; this is only the safety bound.
    std::process::exit(0);
}

fn sample(manager: &StateManager, give_up: Instant) {
    let mut in_run = false;
    let mut last_true = 0;
    let mut last_alive = 0;
    while Instant::now() < give_up {
        let before = mono_ns();
        let primary = manager.is_primary();
        let after = mono_ns();
        if primary && !in_run {
            let epoch = manager.epoch().unwrap_or(0);
            out(format!("R1 {before} {epoch}"));
            in_run = true;
        } else if !primary && in_run {
            out(format!("R0 {last_true} {before}"));
            in_run = false;
        }
        if primary {
            last_true = after;
        }
        if after - last_alive >= 100_000_000 {
            out(format!("A {after} {}", u8::from(primary)));
            last_alive = after;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn write(
    manager: &StateManager,
    writer: &str,
    give_up: Instant,
    read_back_every: u64,
    pause: Duration,
) {
    let mut tick: u64 = 0;
    let mut seq: u64 = 0;
    while Instant::now() < give_up {
        tick += 1;
        // While standby, try now and then (the refusal is checked too), not every tick.
        if manager.is_primary() || tick.is_multiple_of(25) {
            seq += 1;
            let fill = seq % 2 == 1;
            let t_send = mono_ns();
            let e1 = manager.epoch().unwrap_or(0);
            let result = if fill {
                let price = 100.0 + (seq % 7) as f64;
                manager
                    .apply_fill("FILLS", 1.0, price, Some(&format!("{writer}-{seq}")))
                    .map(|_| ())
            } else {
                let mut data = json!({"w": writer, "seq": seq, "e": e1})
                    .as_object()
                    .unwrap()
                    .clone();
                manager.save_position("LAST", &mut data)
            };
            let e2 = manager.epoch().unwrap_or(0);
            let t_done = mono_ns();
            let outcome = match result {
                Ok(()) => "ok".to_owned(),
                Err(err) => format!("{:?}", err.kind()),
            };
            let kind = if fill { 'F' } else { 'P' };
            out(format!(
                "W {kind} {seq} {t_send} {t_done} {e1} {e2} {outcome}"
            ));
            if !fill && outcome == "ok" && (seq / 2).is_multiple_of(read_back_every) {
                read_back(manager, seq);
            }
        }
        std::thread::sleep(pause);
    }
}

/// Loads the positions right after writing `LAST` = `seq` and prints what `LAST` was.
fn read_back(manager: &StateManager, seq: u64) {
    match manager.load_positions() {
        Ok(positions) => {
            let last = positions.iter().find(|(symbol, _)| symbol == "LAST");
            let (writer, loaded) = last.map_or(("-".to_owned(), 0), |(_, v)| {
                (
                    v["w"].as_str().unwrap_or("?").to_owned(),
                    v["seq"].as_u64().unwrap_or(0),
                )
            });
            out(format!("L {seq} {writer} {loaded} ok"));
        }
        Err(err) => out(format!("L {seq} - 0 {:?}", err.kind())),
    }
}

/// One `L` line: a load right after an acknowledged write of `LAST`.
#[derive(Debug, Clone)]
pub struct ReadBack {
    pub seq: u64,
    pub writer: String,
    pub loaded: u64,
    pub ok: bool,
}

#[derive(Debug, Clone)]
pub struct Run {
    pub start: u64,
    /// `None` while open; closed by `R0`, or by the parent at the instance's death.
    pub end: Option<u64>,
    pub epoch: u64,
}

#[derive(Debug, Clone)]
pub struct WriteRecord {
    pub fill: bool,
    pub seq: u64,
    pub t_send: u64,
    pub t_done: u64,
    pub e1: u64,
    pub e2: u64,
    pub ok: bool,
    pub outcome: String,
}

impl WriteRecord {
    /// The epoch the write was fenced with, when certain: the same lease was held just
    /// before and just after the call (epochs are unique per acquisition).
    pub fn exact_epoch(&self) -> Option<u64> {
        (self.e1 != 0 && self.e1 == self.e2).then_some(self.e1)
    }
}

/// The last `S` line: the lease's stall meter (µs; p99 the upper bound of its bucket).
#[derive(Debug, Clone, Default)]
#[allow(dead_code)] // read by the chaos suite's report, not by the cluster suite
pub struct Stalls {
    pub wake_count: u64,
    pub wake_max_us: u64,
    pub wake_p99_us: u64,
    pub rtt_count: u64,
    pub rtt_max_us: u64,
    pub rtt_p99_us: u64,
    pub dropped_records: u64,
    pub wake_buckets: Vec<u64>,
    pub rtt_buckets: Vec<u64>,
}

#[allow(dead_code)]
impl Stalls {
    /// How many of the histogram's values were above `ms` (a bucket bound).
    pub fn above(buckets: &[u64], ms: u64) -> u64 {
        let from = quantshift_core::BUCKET_BOUNDS_MS
            .iter()
            .position(|&b| b == ms)
            .map_or(buckets.len(), |i| i + 1);
        buckets.iter().skip(from).sum()
    }
}

#[derive(Debug, Default)]
pub struct InstanceLog {
    pub ready: bool,
    pub runs: Vec<Run>,
    pub writes: Vec<WriteRecord>,
    pub read_backs: Vec<ReadBack>,
    pub primary_now: bool,
    pub last_alive: u64,
    pub stalls: Option<Stalls>,
    pub other_lines: Vec<String>,
}

impl InstanceLog {
    fn parse(&mut self, line: &str) {
        // libtest's `test chaos_child ... ` (or `cluster_child`) has no newline before our
        // first line.
        let line = line.rsplit(" ... ").next().unwrap_or(line);
        let parts: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| {
            parts
                .get(i)
                .and_then(|p| p.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match parts.first().copied() {
            Some("READY") => {
                self.ready = true;
                self.last_alive = num(1);
            }
            Some("R1") => {
                self.runs.push(Run {
                    start: num(1),
                    end: None,
                    epoch: num(2),
                });
                self.primary_now = true;
                self.last_alive = num(1);
            }
            Some("R0") => {
                if let Some(run) = self.runs.last_mut() {
                    run.end = Some(num(1));
                }
                self.primary_now = false;
                self.last_alive = num(2);
            }
            Some("A") => self.last_alive = num(1),
            Some("W") if parts.len() >= 8 => self.writes.push(WriteRecord {
                fill: parts[1] == "F",
                seq: num(2),
                t_send: num(3),
                t_done: num(4),
                e1: num(5),
                e2: num(6),
                ok: parts[7] == "ok",
                outcome: parts[7].to_owned(),
            }),
            Some("S") if parts.len() >= 11 => {
                let list = |i: usize| -> Vec<u64> {
                    parts[i].split(',').filter_map(|n| n.parse().ok()).collect()
                };
                self.stalls = Some(Stalls {
                    wake_count: num(2),
                    wake_max_us: num(3),
                    wake_p99_us: num(4),
                    rtt_count: num(5),
                    rtt_max_us: num(6),
                    rtt_p99_us: num(7),
                    dropped_records: num(8),
                    wake_buckets: list(9),
                    rtt_buckets: list(10),
                });
            }
            Some("L") if parts.len() >= 5 => self.read_backs.push(ReadBack {
                seq: num(1),
                writer: parts[2].to_owned(),
                loaded: num(3),
                ok: parts[4] == "ok",
            }),
            _ => {
                if self.other_lines.len() < 50 && !line.is_empty() {
                    self.other_lines.push(line.to_owned());
                }
            }
        }
    }
}

/// What stopped instances left for the analysis.
#[derive(Default)]
pub struct Collected {
    pub instances: Vec<InstanceData>,
    /// Loads right after one's own acknowledged write, those that failed, and those that gave
    /// an older write of one's own.
    pub read_backs: usize,
    pub read_back_errors: usize,
    pub stale_loads: Vec<String>,
    /// Each instance's last stall meter reading, by writer.
    pub stalls: Vec<(String, Stalls)>,
}

impl Collected {
    /// Stops `instance` and adds what its log says.
    pub fn add(&mut self, instance: &mut Instance) {
        instance.finish();
        let log = instance.log.lock().unwrap();
        for read in &log.read_backs {
            self.read_backs += 1;
            self.read_back_errors += usize::from(!read.ok);
            if read.ok && read.writer == instance.writer && read.loaded < read.seq {
                self.stale_loads.push(format!(
                    "{}: wrote LAST seq {}, the next load gave its seq {}",
                    instance.writer, read.seq, read.loaded
                ));
            }
        }
        if let Some(stalls) = &log.stalls {
            self.stalls.push((instance.writer.clone(), stalls.clone()));
        }
        self.instances.push(InstanceData::new(
            &instance.writer,
            &log.runs,
            log.writes.clone(),
            instance.ended_at.unwrap(),
        ));
    }
}

/// One incarnation of a bot process.
pub struct Instance {
    pub writer: String,
    pub child: Child,
    pub log: Arc<Mutex<InstanceLog>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Monotonic ns once the process is known dead (after `waitpid`).
    pub ended_at: Option<u64>,
}

impl Instance {
    pub fn spawn(options: &BotOptions, bot: &str, writer: &str) -> Self {
        let kept = |suffix: &str| {
            options
                .log_dir
                .as_ref()
                .map(|dir| dir.join(format!("{writer}.{suffix}")))
        };
        let mut command = Command::new(std::env::current_exe().unwrap());
        if let Some(path) = kept("log") {
            command.env("QS_BOT_LOG", path);
        }
        let mut child = command
            .args([
                "--exact",
                options.child_test,
                "--nocapture",
                "--test-threads=1",
            ])
            .env("QS_BOT_URL", &options.url)
            .env("QS_BOT_NAME", bot)
            .env("QS_BOT_WRITER", writer)
            .env("QS_BOT_TTL_MS", options.ttl_ms.to_string())
            .env("QS_BOT_MAX_S", options.max_s.to_string())
            .env("QS_BOT_WAIT_REPLICAS", options.wait_replicas.to_string())
            .env(
                "QS_BOT_READ_BACK_EVERY",
                options.read_back_every.to_string(),
            )
            .env("QS_BOT_PAUSE_MS", options.pause_ms.to_string())
            .env("QS_BOT_BUSY_THREADS", options.busy_threads.to_string())
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("re-run the test binary as a bot");
        let stdout = child.stdout.take().unwrap();
        grow_pipe(&stdout);
        let log = Arc::new(Mutex::new(InstanceLog::default()));
        let sink = Arc::clone(&log);
        let mut tee = kept("out")
            .and_then(|path| std::fs::File::create(path).ok())
            .map(std::io::BufWriter::new);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(file) = tee.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
                sink.lock().unwrap().parse(&line);
            }
            if let Some(file) = tee.as_mut() {
                let _ = file.flush();
            }
        });
        Instance {
            writer: writer.to_owned(),
            child,
            log,
            reader: Some(reader),
            ended_at: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn is_dead(&self) -> bool {
        self.ended_at.is_some()
    }

    pub fn signal(&self, sig: i32) {
        if !self.is_dead() {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe {
                libc::kill(self.pid(), sig);
            }
        }
    }

    /// SIGKILL (after SIGCONT, in case it is stopped), reaped; returns when the signal was
    /// sent, and keeps when the process was known dead (`ended_at`).
    pub fn kill(&mut self) -> u64 {
        let sent = mono_ns();
        if self.ended_at.is_some() {
            return sent;
        }
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.ended_at = Some(mono_ns());
        sent
    }

    /// Kills the process and waits until all its output was read.
    pub fn finish(&mut self) {
        self.kill();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    pub fn is_primary_now(&self) -> bool {
        !self.is_dead() && self.log.lock().unwrap().primary_now
    }

    /// Ready and printed something within the last `within` (a frozen bot is not alive).
    pub fn alive(&self, within: Duration) -> bool {
        if self.is_dead() {
            return false;
        }
        let log = self.log.lock().unwrap();
        log.ready && mono_ns().saturating_sub(log.last_alive) < within.as_nanos() as u64
    }
}

/// A pipe of 1 MiB where the system allows it (64 KiB otherwise): a bot's lines wait there,
/// not in the bot, while the parent is slow to read them.
fn grow_pipe(stdout: &std::process::ChildStdout) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(2) on a pipe descriptor we own; failure leaves the pipe as it was.
    unsafe {
        libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.finish();
    }
}
