//! The lease thread's stall meter (`StateManager::lease_stalls`): it counts, it reaches other
//! processes through Redis (`Inspector`, as `quantshift-state status` reads it), and a host
//! stall between half the tolerance and the tolerance is warned about, by name, while the
//! primary keeps its lease. Real redis-server processes, a real bot process stopped with
//! SIGSTOP / SIGCONT.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{child_bot_main, manager, signal, wait_for, ChildBot, RedisServer};
use quantshift_core::{Inspector, BUCKET_BOUNDS_MS};

#[test]
fn child_bot() {
    child_bot_main();
}

#[test]
fn the_meter_counts_a_primary_s_renewals_and_a_standby_s_looks() {
    let server = RedisServer::start();
    let primary = manager(&server, "meter", 3000);
    assert!(primary.wait_until_primary(Some(Duration::from_secs(5))));
    let standby = manager(&server, "meter", 3000);
    assert!(!standby.is_primary());
    std::thread::sleep(Duration::from_secs(2));
    for (who, manager) in [("primary", &primary), ("standby", &standby)] {
        let stalls = manager.lease_stalls();
        // A renewal or a look every 100 ms: about 20 in 2 s.
        assert!(stalls.round_trip.count >= 5, "{who}: {stalls:?}");
        assert!(stalls.wake_late.count >= 5, "{who}: {stalls:?}");
        assert_eq!(stalls.tolerance, Duration::from_millis(200), "{who}");
        assert_eq!(stalls.round_trip.buckets.len(), BUCKET_BOUNDS_MS.len() + 1);
        assert_eq!(
            stalls.round_trip.buckets.iter().sum::<u64>(),
            stalls.round_trip.count
        );
        assert!(stalls.round_trip.max >= stalls.round_trip.quantile(0.99));
        assert!(stalls.round_trip.sum >= stalls.round_trip.max);
        assert_eq!(stalls.dropped_records, 0, "{who}");
    }
    // What another process reads: both live instances' meters, as published.
    let inspector = Inspector::connect(Some(&server.url()), Duration::from_secs(2)).unwrap();
    let status = inspector.status("meter").unwrap();
    let ids: Vec<&str> = status
        .lease_stalls
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert!(
        ids.contains(&primary.instance_id()) && ids.contains(&standby.instance_id()),
        "{status:?}"
    );
    for (_, stalls) in &status.lease_stalls {
        assert!(stalls.round_trip.count > 0, "{status:?}");
    }
    standby.close().unwrap();
    // A closed manager's summary goes with it.
    let status = inspector.status("meter").unwrap();
    assert!(
        status
            .lease_stalls
            .iter()
            .all(|(id, _)| id != standby.instance_id()),
        "{status:?}"
    );
    primary.close().unwrap();
}

/// The primary in a child process is stopped (SIGSTOP) for 150 ms, more than half the
/// default tolerance of 200 ms and less than the tolerance: its lease thread wakes up to
/// 150 ms late, and the event thread logs the warning that names `failover_tolerance`. The
/// stall is shorter than the tolerance, so the primary keeps its lease: same epoch, never
/// demoted, and the standby here never takes over. Where in its 100 ms renewal period a stop
/// falls decides how late the thread wakes (50 to 150 ms), so it is stopped again (at most 8
/// times) until the warning comes.
#[test]
fn a_stall_between_half_the_tolerance_and_the_tolerance_is_warned_and_keeps_the_lease() {
    let server = RedisServer::start();
    let bot = ChildBot::spawn_with_env(
        &server,
        "stalled",
        3000,
        false,
        // A logger that prints every record as `log LEVEL message` (and does not sleep).
        &[("QS_CHILD_LOG_SLEEP_MS", "0")],
    );
    assert!(
        wait_for(Duration::from_secs(10), || bot.has_line("primary")),
        "the bot process did not become primary: {:?}",
        bot.lines().last()
    );
    let standby = manager(&server, "stalled", 3000);
    let took_over = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&took_over);
    standby.on_promoted(move |_| flag.store(true, Ordering::SeqCst));
    let inspector = Inspector::connect(Some(&server.url()), Duration::from_secs(2)).unwrap();
    let child_id = format!(
        "{}:{}",
        gethostname::gethostname()
            .to_string_lossy()
            .replace(':', "_"),
        bot.pid()
    );
    let before = inspector.status("stalled").unwrap();
    assert_eq!(before.holder.as_deref(), Some(child_id.as_str()));
    let epoch = before.epoch;
    let warned = |bot: &ChildBot| {
        bot.lines().into_iter().find(|l| {
            l.starts_with("log WARN")
                && (l.contains("ms late") || l.contains("lease round trip took"))
                && l.contains("against a failover_tolerance of 200 ms")
        })
    };
    let mut stops = 0;
    while warned(&bot).is_none() && stops < 8 {
        std::thread::sleep(Duration::from_millis(700));
        signal(bot.pid(), libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(150));
        signal(bot.pid(), libc::SIGCONT);
        stops += 1;
        // The event thread logs what the lease thread queued.
        wait_for(Duration::from_millis(300), || warned(&bot).is_some());
    }
    let warning = warned(&bot).unwrap_or_else(|| {
        panic!(
            "no stall warning after {stops} stops of 150 ms: {:?}",
            bot.lines()
                .iter()
                .filter(|l| l.starts_with("log "))
                .collect::<Vec<_>>()
        )
    });
    eprintln!("after {stops} stop(s) of 150 ms: {warning}");
    assert!(warning.contains("Raise failover_tolerance"), "{warning}");
    // It kept the lease: never demoted, the same epoch, the standby never took over.
    std::thread::sleep(Duration::from_millis(500));
    let demoted: Vec<String> = bot
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("log") && l.contains("is now standby"))
        .collect();
    assert!(demoted.is_empty(), "{demoted:?}");
    let status = inspector.status("stalled").unwrap();
    assert_eq!(status.epoch, epoch);
    assert_eq!(status.holder.as_deref(), Some(child_id.as_str()));
    assert!(!took_over.load(Ordering::SeqCst) && !standby.is_primary());
    // The stall reached the meter the child published (within about a second).
    assert!(
        wait_for(Duration::from_secs(3), || {
            inspector
                .status("stalled")
                .unwrap()
                .lease_stalls
                .iter()
                .any(|(id, stalls)| {
                    *id == child_id
                        && stalls.wake_late.max.max(stalls.round_trip.max)
                            >= Duration::from_millis(100)
                })
        }),
        "{:?}",
        inspector.status("stalled").unwrap().lease_stalls
    );
    standby.close().unwrap();
}
