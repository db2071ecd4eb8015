//! The faults a schedule injects into Redis and the hosts, as they strike.

use super::invariants::strict_liveness;
use super::*;

impl<'a> Sim<'a> {
    pub(super) fn fault(&mut self, index: usize) {
        let fault = self.s.faults[index].1;
        self.log(|| format!("FAULT {fault:?}"));
        if fault.lasts() {
            self.active += 1;
        }
        match fault {
            Fault::Join { clock } => self.join(clock),
            Fault::Crash { inst } => {
                let i = self.pick(inst);
                if self.insts[i].alive {
                    // A frozen one stays counted as a fault until its freeze was to end.
                    self.exit(i, "crashed");
                }
            }
            Fault::Stop { inst } => {
                let i = self.pick(inst);
                if self.insts[i].alive && !self.insts[i].frozen && !self.insts[i].stopping {
                    self.insts[i].stopping = true;
                    self.handle(i, Input::Stop);
                }
            }
            Fault::LateWake { inst, dur } | Fault::LateRead { inst, dur } => {
                let i = self.pick(inst);
                self.stats.stalls_injected += 1;
                let s = &mut self.insts[i];
                if matches!(fault, Fault::LateWake { .. }) {
                    s.late_wake = Some(dur);
                } else {
                    s.late_read = Some(dur);
                }
                // In effect until it surely happened (the next wake-up or reply) and ended.
                let at = self.now + self.s.params.poll_interval.max(self.s.command_timeout) + dur;
                self.at(at, Ev::StallEnd);
            }
            Fault::Freeze { inst, dur } => {
                let i = self.pick(inst);
                self.stats.stalls_injected += 1;
                if self.insts[i].alive && !self.insts[i].frozen {
                    self.insts[i].frozen = true;
                    let at = self.now + dur;
                    self.at(at, Ev::Unfreeze { inst: i });
                } else {
                    self.active -= 1;
                }
            }
            Fault::Restart { down, mode } => {
                self.set_server_time();
                match mode {
                    Restart::Persisted => {}
                    Restart::Empty => self.model.space.borrow_mut().keys.clear(),
                    Restart::Snapshot { age } => self.rollback(age),
                }
                self.server_up = false;
                self.reset_connections();
                let at = self.now + down;
                self.at(at, Ev::ServerUp);
            }
            Fault::Promote { lag } => {
                self.rollback(lag);
                self.reset_connections();
            }
            Fault::FlushAll => {
                self.model.command(&["FLUSHALL"]);
            }
            Fault::Evict(key) => {
                let key = match key {
                    LeaseKey::Lock => KEYS.lock.as_str(),
                    LeaseKey::Record => KEYS.record.as_str(),
                    LeaseKey::Epoch => KEYS.epoch.as_str(),
                };
                self.model.command(&["DEL", key]);
                if key == KEYS.record.as_str() && !strict_liveness() {
                    self.orphan_lock();
                }
            }
            Fault::HalfClose { inst } => {
                let i = self.pick(inst);
                if let Some(conn) = self.insts[i].conn.as_mut() {
                    conn.half_closed = true;
                }
            }
            Fault::Partition { inst, dur, dir } => {
                let i = self.pick(inst);
                let until = self.now + dur;
                self.insts[i].partitions.push((until, dir));
                self.at(until, Ev::PartitionEnd { inst: i });
            }
            Fault::Storm { dur, loss, long } => {
                let until = self.now + dur;
                self.storms.push((until, loss, long));
                self.at(until, Ev::StormEnd);
            }
        }
        self.quiet_changed();
    }

    pub(super) fn rollback(&mut self, age: u64) {
        let target = self.now.saturating_sub(age);
        let keys = self
            .snapshots
            .iter()
            .rev()
            .find(|(at, _)| *at <= target)
            .or(self.snapshots.front())
            .map(|(_, keys)| keys.clone())
            .unwrap_or_default();
        self.model.space.borrow_mut().keys = keys;
    }

    /// The lock key outlives an evicted record: `lease_take.lua` refuses every take
    /// (`TakeBlocked`) until it expires, so liveness is not expected before then.
    pub(super) fn orphan_lock(&mut self) {
        let expire_at = self
            .model
            .space
            .borrow()
            .keys
            .get(KEYS.lock.as_str())
            .and_then(|e| e.expire_at);
        if let Some(ms) = expire_at {
            let real = ((ms * 1000 - BASE_US).max(0) as u64) * 1_000 + 2 * MS;
            self.log(|| format!("the lock key is orphaned until {:.3} ms", real as f64 / 1e6));
            self.active += 1;
            self.at(real, Ev::OrphanEnd);
        }
    }
}
