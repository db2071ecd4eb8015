//! What must hold in every schedule, checked as the simulation runs: never two primaries,
//! no stale write acknowledged, liveness within its bound, no flapping.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TwoPrimaries,
    /// A stall shorter than the tolerance moved the lease (invariant (e)).
    StallMovedLease,
    /// A take long after the last fault ended (invariant (f)).
    Flap,
    FencedWrite,
    Liveness,
    Spin,
    ScriptError,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: Kind,
    pub at: u64,
    pub what: String,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub commands: u64,
    pub takes: u64,
    pub writes_acked: u64,
    pub primary_ns: u64,
    pub liveness_checks: u64,
    /// Stall meter samples taken (late wake-ups, round trips).
    pub stalls: u64,
    /// Host stalls injected (freezes, late wake-ups, late reads).
    pub stalls_injected: u64,
    /// A late holder got its lease back at once (a Demoted, then a Promoted with one epoch).
    pub regains: u64,
    pub short_stall_schedules: u64,
}

/// `LEASE_SIM_STRICT_LIVENESS=1`: expect liveness even while an orphaned lock key blocks takes.
pub(super) fn strict_liveness() -> bool {
    std::env::var_os("LEASE_SIM_STRICT_LIVENESS").is_some_and(|v| v == "1")
}

impl<'a> Sim<'a> {
    pub(super) fn fail(&mut self, kind: Kind, what: String) {
        if self.violation.is_none() {
            self.log(|| format!("VIOLATION {kind:?}: {what}"));
            self.violation = Some(Violation {
                kind,
                at: self.now,
                what,
            });
        }
    }

    pub(super) fn primary_now(&self, j: usize) -> bool {
        let s = &self.insts[j];
        s.open.is_some_and(|(a, b)| a <= self.now && self.now < b)
    }

    pub(super) fn quiet_changed(&mut self) {
        self.quiet_epoch += 1;
        self.quiet_from = (self.active == 0).then_some(self.now);
        if self.active == 0 {
            let epoch = self.quiet_epoch;
            let at = self.now + self.s.liveness_bound();
            self.at(at, Ev::Liveness { epoch });
        }
    }

    pub(super) fn liveness(&mut self, epoch: u64) {
        if epoch != self.quiet_epoch {
            return;
        }
        if !self
            .insts
            .iter()
            .any(|s| s.alive && !s.frozen && !s.stopping)
        {
            return;
        }
        self.stats.liveness_checks += 1;
        let bound = self.s.liveness_bound();
        let from = self.now - bound;
        let mut seen = self.last_final_end > from;
        for s in &self.insts {
            if let Some((a, b)) = s.open {
                seen |= a <= self.now && b > from;
            }
        }
        if !seen {
            let what = format!(
                "no instance was primary in [{:.3} ms, {:.3} ms] with no fault in effect",
                from as f64 / 1e6,
                self.now as f64 / 1e6
            );
            self.fail(Kind::Liveness, what);
        }
        let at = self.now + bound;
        self.at(at, Ev::Liveness { epoch });
    }

    pub(super) fn publish(&mut self, i: usize, view: View) {
        if view == self.insts[i].view {
            return;
        }
        self.insts[i].view = view;
        let previous = self.insts[i].open.take();
        let mut next = None;
        if view.deadline != 0 {
            let s = &self.insts[i];
            let a = s.real(view.primary_from).max(self.now);
            let b = s.real(view.deadline);
            if a < b {
                next = Some((a, b));
            }
        }
        if let Some((a0, b0)) = previous {
            let b0 = b0.min(self.now);
            match next {
                // Contiguous: one interval.
                Some((a, b)) if a0 < b0 && a <= b0 => {
                    next = Some((a0, b));
                }
                _ => {
                    if a0 < b0 {
                        self.finalize(i, a0, b0);
                    }
                }
            }
        }
        if let (Some(t), Some((a, b))) = (self.trace.as_mut(), next) {
            if previous.is_none_or(|(a0, _)| a0 != a) {
                t.push(format!(
                    "{:>10.3} ms  i{i} primary from {:.3} ms (until {:.3} ms unless renewed), view {view:?}",
                    self.now as f64 / 1e6,
                    a as f64 / 1e6,
                    b as f64 / 1e6
                ));
            }
        }
        if next.is_none() && previous.is_some() {
            self.log(|| format!("i{i} not primary (view {view:?})"));
        }
        self.insts[i].open = next;
    }

    pub(super) fn finalize(&mut self, i: usize, a: u64, b: u64) {
        self.stats.primary_ns += b - a;
        self.last_final_end = self.last_final_end.max(b);
        for &(j, c, d) in &self.finals {
            if j != i && c < b && a < d {
                let what = format!(
                    "i{i} primary in [{:.6}, {:.6}) ms and i{j} in [{:.6}, {:.6}) ms",
                    a as f64 / 1e6,
                    b as f64 / 1e6,
                    c as f64 / 1e6,
                    d as f64 / 1e6
                );
                self.fail(Kind::TwoPrimaries, what);
                return;
            }
        }
        for j in 0..self.insts.len() {
            if let (true, Some((c, d))) = (j != i, self.insts[j].open) {
                if c < b && a < d {
                    let what = format!(
                        "i{i} primary in [{:.6}, {:.6}) ms and i{j} from {:.6} ms (view {:?})",
                        a as f64 / 1e6,
                        b as f64 / 1e6,
                        c as f64 / 1e6,
                        self.insts[j].view
                    );
                    self.fail(Kind::TwoPrimaries, what);
                    return;
                }
            }
        }
        self.finals.retain(|&(_, _, d)| d + 60_000 * MS > a);
        self.finals.push((i, a, b));
    }
}
