//! What the chaos run checks, computed from the bots' logs (pure functions, tested on
//! hand-made logs below so that each check is known to fire).

use super::bot::{Run, WriteRecord};

/// The closed runs of `is_primary() == true` samples and the writes of one bot incarnation.
#[derive(Debug, Clone)]
pub struct InstanceData {
    pub writer: String,
    /// Every run closed: an open run ends at the process' death.
    pub runs: Vec<(u64, u64, u64)>,
    pub writes: Vec<WriteRecord>,
}

impl InstanceData {
    pub fn new(writer: &str, runs: &[Run], writes: Vec<WriteRecord>, died_at: u64) -> Self {
        InstanceData {
            writer: writer.to_owned(),
            runs: runs
                .iter()
                .map(|r| (r.start, r.end.unwrap_or(died_at).max(r.start), r.epoch))
                .collect(),
            writes,
        }
    }
}

/// Total nanoseconds during which two different instances both said primary: the
/// intersections of their runs of consecutive `true` samples.
pub fn overlap(instances: &[InstanceData]) -> (u64, Vec<String>) {
    let mut total = 0;
    let mut details = Vec::new();
    for (i, a) in instances.iter().enumerate() {
        for b in &instances[i + 1..] {
            for &(a0, a1, ae) in &a.runs {
                for &(b0, b1, be) in &b.runs {
                    let (lo, hi) = (a0.max(b0), a1.min(b1));
                    if hi > lo {
                        total += hi - lo;
                        details.push(format!(
                            "{} (epoch {ae}) and {} (epoch {be}) both primary for {:.3} ms from t={lo}",
                            a.writer,
                            b.writer,
                            (hi - lo) as f64 / 1e6
                        ));
                    }
                }
            }
        }
    }
    (total, details)
}

/// Acknowledged writes sent while another instance was primary (inside one of its runs).
pub fn stale_by_runs(instances: &[InstanceData]) -> Vec<String> {
    let mut out = Vec::new();
    for a in instances {
        for w in a.writes.iter().filter(|w| w.ok) {
            for b in instances.iter().filter(|b| b.writer != a.writer) {
                if let Some(&(b0, b1, be)) = b
                    .runs
                    .iter()
                    .find(|&&(b0, b1, _)| b0 <= w.t_send && w.t_send <= b1)
                {
                    out.push(format!(
                        "{} write seq {} sent at t={} acknowledged while {} was primary \
                         (epoch {be}, t={b0}..{b1})",
                        a.writer, w.seq, w.t_send, b.writer
                    ));
                }
            }
        }
    }
    out
}

/// Acknowledged writes fenced with epoch e (certain) and sent after any instance had become
/// primary with a newer epoch: the fence should have refused them, whatever the timing.
pub fn stale_by_epoch(instances: &[InstanceData]) -> Vec<String> {
    let mut newer_since: Vec<(u64, u64)> = instances
        .iter()
        .flat_map(|i| i.runs.iter().map(|&(start, _, epoch)| (epoch, start)))
        .filter(|&(epoch, _)| epoch > 0)
        .collect();
    newer_since.sort_unstable();
    let mut out = Vec::new();
    for a in instances {
        for w in a.writes.iter().filter(|w| w.ok) {
            let Some(e) = w.exact_epoch() else { continue };
            if let Some(&(epoch, start)) = newer_since
                .iter()
                .find(|&&(epoch, start)| epoch > e && start < w.t_send)
            {
                out.push(format!(
                    "{} write seq {} fenced with epoch {e}, sent at t={}, acknowledged although \
                     epoch {epoch} was primary since t={start}",
                    a.writer, w.seq, w.t_send
                ));
            }
        }
    }
    out
}

/// Runs whose epoch does not increase with their start time.
pub fn epoch_order_violations(instances: &[InstanceData]) -> Vec<String> {
    let mut runs: Vec<(u64, u64, &str)> = instances
        .iter()
        .flat_map(|i| i.runs.iter().map(|&(s, _, e)| (s, e, i.writer.as_str())))
        .filter(|&(_, e, _)| e > 0)
        .collect();
    runs.sort_unstable();
    runs.windows(2)
        .filter(|w| w[1].1 <= w[0].1 && w[1].2 != w[0].2)
        .map(|w| {
            format!(
                "{} became primary with epoch {} at t={} after {} had epoch {} at t={}",
                w[1].2, w[1].1, w[1].0, w[0].2, w[0].1, w[0].0
            )
        })
        .collect()
}

/// How long after `killed_at` another instance than `killed` became primary.
pub fn failover_after(instances: &[InstanceData], killed: &str, killed_at: u64) -> Option<u64> {
    instances
        .iter()
        .filter(|i| i.writer != killed)
        .flat_map(|i| i.runs.iter().map(|&(start, _, _)| start))
        .filter(|&start| start > killed_at)
        .min()
        .map(|start| start - killed_at)
}

/// The value left in `LAST` against the acknowledged `save_position` writes: Redis applies
/// fenced writes in (epoch, per-writer sequence) order, so the final value must be at least
/// the greatest acknowledged one. `final_value` is (writer, seq, epoch read before its send).
/// Returns the acknowledged writes the final value does not cover.
pub fn lost_position_writes(
    instances: &[InstanceData],
    final_value: Option<(&str, u64, u64)>,
) -> Vec<String> {
    // The final write's epoch: certain when its writer logged it with the same epoch before
    // and after; else its pre-send epoch is a lower bound.
    let final_key = final_value.map(|(writer, seq, e)| {
        let exact = instances
            .iter()
            .filter(|i| i.writer == writer)
            .flat_map(|i| i.writes.iter())
            .find(|w| !w.fill && w.seq == seq)
            .and_then(WriteRecord::exact_epoch);
        (exact.unwrap_or(e), seq, writer)
    });
    let mut lost = Vec::new();
    for a in instances {
        for w in a.writes.iter().filter(|w| w.ok && !w.fill) {
            let Some(e) = w.exact_epoch() else { continue };
            let covered = match final_key {
                None => false,
                Some((fe, fseq, fwriter)) => {
                    (fe, fseq) >= (e, w.seq) && (fe > e || fwriter == a.writer)
                }
            };
            if !covered {
                lost.push(format!(
                    "{} save_position seq {} (epoch {e}, acknowledged at t={}) is not in Redis, \
                     which holds {:?}",
                    a.writer, w.seq, w.t_done, final_value
                ));
            }
        }
    }
    lost
}

pub fn percentile_ms(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted_ns.len() - 1) as f64 * p).round() as usize;
    sorted_ns[index] as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(seq: u64, t_send: u64, e: u64, ok: bool) -> WriteRecord {
        WriteRecord {
            fill: false,
            seq,
            t_send,
            t_done: t_send + 1,
            e1: e,
            e2: e,
            ok,
            outcome: if ok { "ok".into() } else { "NotPrimary".into() },
        }
    }

    fn inst(writer: &str, runs: Vec<(u64, u64, u64)>, writes: Vec<WriteRecord>) -> InstanceData {
        InstanceData {
            writer: writer.into(),
            runs,
            writes,
        }
    }

    #[test]
    fn the_checks_fire_on_bad_logs_and_stay_quiet_on_good_ones() {
        let good = vec![
            inst("A0", vec![(100, 200, 1)], vec![write(1, 150, 1, true)]),
            inst(
                "B0",
                vec![(300, 400, 2)],
                vec![write(1, 350, 2, true), write(2, 150, 0, false)],
            ),
        ];
        assert_eq!(overlap(&good).0, 0);
        assert!(stale_by_runs(&good).is_empty());
        assert!(stale_by_epoch(&good).is_empty());
        assert!(epoch_order_violations(&good).is_empty());
        assert_eq!(failover_after(&good, "A0", 210), Some(90));
        assert!(lost_position_writes(&good, Some(("B0", 1, 2))).is_empty());
        // The final value is older than an acknowledged write: lost.
        assert_eq!(lost_position_writes(&good, Some(("A0", 1, 1))).len(), 1);
        assert_eq!(lost_position_writes(&good, None).len(), 2);

        let bad = vec![
            inst("A0", vec![(100, 320, 1)], vec![write(1, 310, 1, true)]),
            inst("B0", vec![(300, 400, 1)], vec![]),
        ];
        assert_eq!(overlap(&bad).0, 20);
        assert_eq!(stale_by_runs(&bad).len(), 1);
        assert_eq!(epoch_order_violations(&bad).len(), 1);
        let bad_epoch = vec![
            inst("A0", vec![(100, 200, 1)], vec![write(1, 260, 1, true)]),
            inst("B0", vec![(250, 400, 2)], vec![]),
        ];
        assert_eq!(stale_by_epoch(&bad_epoch).len(), 1);
        // Same epoch, another writer, lower bound only: not covered.
        assert_eq!(lost_position_writes(&good, Some(("B0", 9, 1))).len(), 2);
    }
}
