//! Several bot names, each run by two bot processes (sides A and B) against one cluster, and
//! the checks made on their logs once they are stopped: per bot name, the chaos analysis
//! (tests/chaos/analysis.rs) on the shared monotonic clock.

use std::time::{Duration, Instant};

use crate::analysis::{self, InstanceData};
use crate::bot::{mono_ns, BotOptions, Collected, Instance};

/// The two sides of one bot name, and every incarnation they had.
pub struct Pair {
    pub name: String,
    /// Every incarnation, in spawn order.
    pub instances: Vec<Instance>,
    /// Index in `instances` of each side's current incarnation.
    live: [Option<usize>; 2],
    incarnations: [u32; 2],
}

impl Pair {
    pub fn live(&self, side: usize) -> &Instance {
        &self.instances[self.live[side].expect("the side was started")]
    }

    /// The side whose current incarnation says primary (by its last logged sample).
    pub fn primary_side(&self) -> Option<usize> {
        (0..2).find(|&s| self.live(s).is_primary_now())
    }

    fn primaries_now(&self) -> usize {
        (0..2).filter(|&s| self.live(s).is_primary_now()).count()
    }

    fn describe(&self) -> String {
        let mut out = format!("bot {}:", self.name);
        for side in 0..2 {
            let i = self.live(side);
            let log = i.log.lock().unwrap();
            out.push_str(&format!(
                "\n  {} ready {} primary {} runs {} writes {} (last outcomes {:?}) last alive {} ms ago; other lines {:?}",
                i.writer,
                log.ready,
                log.primary_now,
                log.runs.len(),
                log.writes.len(),
                log.writes
                    .iter()
                    .rev()
                    .take(3)
                    .map(|w| w.outcome.clone())
                    .collect::<Vec<_>>(),
                mono_ns().saturating_sub(log.last_alive) / 1_000_000,
                log.other_lines
            ));
        }
        out
    }
}

pub struct Fleet {
    pub options: BotOptions,
    pub pairs: Vec<Pair>,
}

/// What one bot name's logs came to.
pub struct PairReport {
    pub name: String,
    pub instances: Vec<InstanceData>,
    /// Loads right after one's own acknowledged write that gave an older write of one's own.
    pub stale_loads: Vec<String>,
    pub read_backs: usize,
}

impl PairReport {
    pub fn acknowledged(&self) -> (usize, usize) {
        let writes = self.instances.iter().flat_map(|i| i.writes.iter());
        let (mut positions, mut fills) = (0, 0);
        for w in writes.filter(|w| w.ok) {
            if w.fill {
                fills += 1;
            } else {
                positions += 1;
            }
        }
        (positions, fills)
    }

    pub fn refused(&self) -> usize {
        self.instances
            .iter()
            .flat_map(|i| i.writes.iter())
            .filter(|w| !w.ok)
            .count()
    }

    /// The longest time between two consecutive acknowledged writes (completion times) of
    /// this bot name within `[from, to]`, with the edges counted: how long the bot could not
    /// write around a fault.
    pub fn longest_write_gap(&self, from: u64, to: u64) -> u64 {
        let mut done: Vec<u64> = self
            .instances
            .iter()
            .flat_map(|i| i.writes.iter())
            .filter(|w| w.ok && w.t_done >= from && w.t_done <= to)
            .map(|w| w.t_done)
            .collect();
        done.push(from);
        done.push(to);
        done.sort_unstable();
        done.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
    }

    /// The epoch primary at `t` (0: none).
    pub fn epoch_at(&self, t: u64) -> u64 {
        self.instances
            .iter()
            .flat_map(|i| i.runs.iter())
            .find(|&&(s, e, _)| s <= t && t <= e)
            .map_or(0, |&(_, _, epoch)| epoch)
    }

    /// The checks every scenario makes: no instant with two primaries, no acknowledged write
    /// sent while another instance was primary or fenced with an epoch already superseded,
    /// epochs increasing with time, and no load reading back an older write of one's own.
    /// Returns the failures (empty when all hold) and prints the figures.
    pub fn safety_failures(&self) -> Vec<String> {
        let (overlap_ns, overlap_details) = analysis::overlap(&self.instances);
        let stale_runs = analysis::stale_by_runs(&self.instances);
        let stale_epoch = analysis::stale_by_epoch(&self.instances);
        let epoch_order = analysis::epoch_order_violations(&self.instances);
        let (positions, fills) = self.acknowledged();
        let runs: usize = self.instances.iter().map(|i| i.runs.len()).sum();
        println!(
            "  {}: {} instances, {runs} primary runs, acknowledged {positions} save_position + \
             {fills} apply_fill, {} refused; two primaries {:.3} ms; stale acknowledged {} by \
             runs, {} by epoch; epoch order violations {}; read-backs {} ({} stale)",
            self.name,
            self.instances.len(),
            self.refused(),
            overlap_ns as f64 / 1e6,
            stale_runs.len(),
            stale_epoch.len(),
            epoch_order.len(),
            self.read_backs,
            self.stale_loads.len()
        );
        let origin = self
            .instances
            .iter()
            .flat_map(|i| i.runs.iter().map(|r| r.0))
            .min()
            .unwrap_or(0);
        for i in &self.instances {
            let runs: Vec<String> = i
                .runs
                .iter()
                .map(|&(start, end, epoch)| {
                    format!(
                        "{:.0}..{:.0} ms (epoch {epoch})",
                        (start - origin) as f64 / 1e6,
                        (end - origin) as f64 / 1e6
                    )
                })
                .collect();
            println!("    {} primary: {}", i.writer, runs.join(", "));
        }
        let mut failures = Vec::new();
        let mut add = |what: &str, items: &[String]| {
            if !items.is_empty() {
                failures.push(format!(
                    "{}: {what} ({}): {:?}",
                    self.name,
                    items.len(),
                    &items[..items.len().min(5)]
                ));
            }
        };
        add("two primaries at once", &overlap_details);
        add("acknowledged while another was primary", &stale_runs);
        add("acknowledged with a superseded epoch", &stale_epoch);
        add("epochs out of order", &epoch_order);
        add("a load gave an older write of one's own", &self.stale_loads);
        if positions + fills < 20 {
            failures.push(format!(
                "{}: only {} acknowledged writes: the bot hardly ran",
                self.name,
                positions + fills
            ));
        }
        failures
    }
}

impl Fleet {
    /// Starts side A of every name, waits until each leads, then side B, and waits until the
    /// fleet is steady.
    pub fn start(options: BotOptions, names: &[String]) -> Self {
        let mut fleet = Fleet {
            options,
            pairs: names
                .iter()
                .map(|name| Pair {
                    name: name.clone(),
                    instances: Vec::new(),
                    live: [None, None],
                    incarnations: [0, 0],
                })
                .collect(),
        };
        for i in 0..fleet.pairs.len() {
            fleet.spawn(i, 0);
        }
        let all_lead = |fleet: &Fleet| fleet.pairs.iter().all(|p| p.instances[0].is_primary_now());
        if !wait(Duration::from_secs(20), || all_lead(&fleet)) {
            panic!("side A did not lead within 20 s:\n{}", fleet.describe());
        }
        for i in 0..fleet.pairs.len() {
            fleet.spawn(i, 1);
        }
        fleet.wait_steady(Duration::from_secs(20), "the start");
        fleet
    }

    /// Starts a new incarnation of one side (the previous one must be dead).
    pub fn spawn(&mut self, pair: usize, side: usize) {
        let p = &mut self.pairs[pair];
        if let Some(current) = p.live[side].map(|i| &p.instances[i]) {
            assert!(current.is_dead(), "{} is still running", current.writer);
        }
        let writer = format!("{}-{}{}", p.name, ['A', 'B'][side], p.incarnations[side]);
        p.incarnations[side] += 1;
        p.instances
            .push(Instance::spawn(&self.options, &p.name, &writer));
        p.live[side] = Some(p.instances.len() - 1);
    }

    pub fn describe(&self) -> String {
        self.pairs
            .iter()
            .map(Pair::describe)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every name: both sides ready and alive, exactly one of them primary.
    pub fn is_steady(&self) -> bool {
        self.pairs.iter().all(|p| {
            (0..2).all(|s| p.live(s).alive(Duration::from_millis(500))) && p.primaries_now() == 1
        })
    }

    /// Waits until the fleet is steady for 300 ms in a row (bounded); returns how long it
    /// took, and panics with every bot's state when it never is.
    pub fn wait_steady(&self, timeout: Duration, after: &str) -> Duration {
        let started = Instant::now();
        let give_up = started + timeout;
        let mut steady_since: Option<Instant> = None;
        while Instant::now() < give_up {
            if self.is_steady() {
                let since = *steady_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(300) {
                    return started.elapsed();
                }
            } else {
                steady_since = None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "the bots were not steady (each name: one primary, both alive) within {timeout:?} \
             after {after}:\n{}",
            self.describe()
        );
    }

    /// `kill -9` of the side of `pair` that is primary; returns its writer and the monotonic
    /// time of the kill.
    pub fn kill_primary(&mut self, pair: usize) -> (String, u64) {
        let p = &mut self.pairs[pair];
        let side = p
            .primary_side()
            .unwrap_or_else(|| panic!("{}: no side is primary", p.name));
        let index = p.live[side].unwrap();
        let instance = &mut p.instances[index];
        let at = instance.kill();
        (instance.writer.clone(), at)
    }

    /// Waits (bounded) until a live side of `pair` says primary.
    pub fn wait_primary(&self, pair: usize, timeout: Duration) -> bool {
        wait(timeout, || self.pairs[pair].primary_side().is_some())
    }

    /// The dead side of `pair` gets a new incarnation.
    pub fn respawn_dead(&mut self, pair: usize) {
        for side in 0..2 {
            if self.pairs[pair].live(side).is_dead() {
                self.spawn(pair, side);
            }
        }
    }

    /// Freezes every bot (SIGSTOP), so what Redis holds can be read without writes landing.
    pub fn freeze(&self) {
        for p in &self.pairs {
            for s in 0..2 {
                p.live(s).signal(libc::SIGSTOP);
            }
        }
    }

    /// Stops every bot, reads all their output and turns it into one report per name.
    pub fn finish(&mut self) -> Vec<PairReport> {
        let mut reports = Vec::new();
        for p in &mut self.pairs {
            let mut collected = Collected::default();
            for instance in &mut p.instances {
                collected.add(instance);
            }
            let Collected {
                instances,
                read_backs,
                stale_loads,
                ..
            } = collected;
            reports.push(PairReport {
                name: p.name.clone(),
                instances,
                stale_loads,
                read_backs,
            });
        }
        reports
    }
}

/// Polls `condition` every 2 ms until it holds or `timeout` passes.
pub fn wait(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + timeout;
    while Instant::now() < give_up {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    condition()
}
