//! Real load for the chaos suite (`QS_CHAOS_CONTENTION`): `cpu` runs `2 × cores + 1`
//! processes that spin for the whole run (more runnable processes than cores: every process
//! of the run, Redis and the harness's proxies included, waits for a core); `threads` gives
//! each bot process three threads of its own that spin and allocate beside its lease; `both`
//! does both. The spinners are children of the test binary (`chaos_spinner`): each ends when
//! its stdin closes (the harness stopped them, or died) or after its own time bound.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contention {
    None,
    Cpu,
    Threads,
    Both,
}

/// The busy threads each bot process runs under `threads` and `both`.
pub const BUSY_THREADS: u32 = 3;

impl Contention {
    /// `QS_CHAOS_CONTENTION` (`cpu`, `threads`, `both`, `none`), or `default`.
    pub fn from_env(default: Contention) -> Contention {
        match std::env::var("QS_CHAOS_CONTENTION").as_deref() {
            Ok("cpu") => Contention::Cpu,
            Ok("threads") => Contention::Threads,
            Ok("both") => Contention::Both,
            Ok("none") | Ok("") => Contention::None,
            Ok(other) => panic!("QS_CHAOS_CONTENTION={other}: cpu, threads, both or none"),
            Err(_) => default,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Contention::None => "none",
            Contention::Cpu => "cpu",
            Contention::Threads => "threads",
            Contention::Both => "both",
        }
    }

    /// How many spinning processes: `2 × cores + 1`, or none.
    pub fn spinners(self) -> usize {
        match self {
            Contention::Cpu | Contention::Both => {
                2 * std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
            }
            _ => 0,
        }
    }

    pub fn busy_threads(self) -> u32 {
        match self {
            Contention::Threads | Contention::Both => BUSY_THREADS,
            _ => 0,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Contention::None => "no contention".to_owned(),
            _ => format!(
                "contention {}: {} spinning processes on {} cores, {} busy threads per bot",
                self.name(),
                self.spinners(),
                std::thread::available_parallelism().map_or(2, |n| n.get()),
                self.busy_threads()
            ),
        }
    }
}

/// The spinning processes of one run; stopped (killed and reaped) when dropped.
pub struct Spinners {
    children: Vec<Child>,
}

impl Spinners {
    /// Starts `contention.spinners()` processes, each bounded to `max_s` seconds.
    pub fn start(contention: Contention, max_s: u64) -> Spinners {
        let children = (0..contention.spinners())
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "chaos_spinner",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env("QS_SPIN_MAX_S", max_s.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("re-run the test binary as a spinner")
            })
            .collect();
        Spinners { children }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The spinner's body; returns at once unless `QS_SPIN_MAX_S` is set.
pub fn spinner_main() {
    let Some(max_s) = std::env::var("QS_SPIN_MAX_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    super::bot::exit_when_stdin_closes();
    let give_up = Instant::now() + Duration::from_secs(max_s);
    let mut x = 1u64;
    while Instant::now() < give_up {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    std::process::exit(0);
}
