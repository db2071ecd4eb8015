//! The lease thread's rules, one at a time.
use super::*;
use crate::protocol::Record;

const MS: Nanos = MILLI;

fn driver() -> Driver {
    let params = Params::from_periods(crate::machine::Periods::FAST_DEFAULT);
    let timeouts = DriverParams {
        lease_command_timeout: 200 * MS,
        command_timeout: 1_000 * MS,
    };
    Driver::new(params, timeouts, "i".into(), 7)
}

fn action(ready: Ready) -> Action {
    ready.action.expect("the lease thread's step has an action")
}

fn woke() -> Happened {
    Happened::Woke { timed_out: true }
}

#[test]
fn it_connects_first_and_backs_off_doubling_after_failures() {
    let mut d = driver();
    assert_eq!(
        action(d.step(0, 1, Happened::Woke { timed_out: false })),
        Action::Connect { timeout: 200 * MS }
    );
    let failed = || Happened::ConnectFailed {
        error: "refused".into(),
    };
    let ready = d.step(MS, 1, failed());
    assert!(matches!(ready.warnings[..], [Warning::Unreachable { .. }]));
    assert_eq!(ready.action, Some(Action::Sleep { until: 11 * MS }));
    assert!(matches!(
        action(d.step(11 * MS, 1, woke())),
        Action::Connect { .. }
    ));
    let ready = d.step(12 * MS, 1, failed());
    assert!(ready.warnings.is_empty(), "said once per outage");
    assert_eq!(ready.action, Some(Action::Sleep { until: 32 * MS }));
}

#[test]
fn a_look_follows_the_connection_and_its_reply_is_timed() {
    let mut d = driver();
    d.step(0, 1, woke());
    let Action::Send {
        command, timeout, ..
    } = action(d.step(MS, 1, Happened::Connected { generation: 1 }))
    else {
        panic!("a look first");
    };
    assert!(matches!(command, Command::Observe { .. }));
    assert_eq!(timeout, 1_000 * MS, "looks get the ordinary timeout");
    let ready = d.step(
        4 * MS,
        1,
        Happened::Replied(Reply::Observed(Record::Absent)),
    );
    assert_eq!(ready.stalls, vec![(Stall::RoundTrip, 3 * MS)]);
    assert!(ready.looked);
}

#[test]
fn ask_sends_once_to_the_node_and_moved_reconnects() {
    let mut d = driver();
    d.step(0, 1, woke());
    d.step(MS, 1, Happened::Connected { generation: 1 });
    let ask = |port: u16| Happened::Failed {
        error: "ASK".into(),
        drops_connection: false,
        redirect: Redirect::Ask {
            host: "127.0.0.1".into(),
            port,
        },
    };
    let Action::Send {
        ask: Some(node), ..
    } = action(d.step(2 * MS, 1, ask(7002)))
    else {
        panic!("the command goes to the node the ASK names");
    };
    assert_eq!(node, ("127.0.0.1".to_owned(), 7002));
    // A second ASK for the same command is a failure, not a loop.
    let next = action(d.step(3 * MS, 1, ask(7003)));
    assert!(matches!(next, Action::Sleep { .. }), "{next:?}");
    let Action::Send { .. } = action(d.step(60 * MS, 1, woke())) else {
        panic!("looks again after the retry pause");
    };
    let moved = Happened::Failed {
        error: "MOVED".into(),
        drops_connection: false,
        redirect: Redirect::Moved,
    };
    assert!(matches!(
        action(d.step(61 * MS, 2, moved)),
        Action::Connect { .. }
    ));
}

#[test]
fn a_new_master_generation_means_a_new_connection() {
    let mut d = driver();
    d.step(0, 1, woke());
    d.step(MS, 1, Happened::Connected { generation: 1 });
    d.step(
        2 * MS,
        1,
        Happened::Replied(Reply::Observed(Record::Absent)),
    );
    assert!(matches!(
        action(d.step(3 * MS, 2, woke())),
        Action::Connect { .. }
    ));
}

#[test]
fn a_late_wake_is_measured_and_warned_of_near_the_tolerance() {
    let mut d = driver();
    d.step(0, 1, woke());
    d.step(MS, 1, Happened::Connected { generation: 1 });
    let held = Record::Held {
        token: "other".into(),
        seq: 1,
        deadline_ms: 300,
        epoch: 1,
    };
    let Action::Sleep { until } =
        action(d.step(2 * MS, 1, Happened::Replied(Reply::Observed(held))))
    else {
        panic!("sleeps until the next look");
    };
    let ready = d.step(until + 150 * MS, 1, woke());
    assert!(ready.stalls.contains(&(Stall::WokeLate, 150 * MS)));
    assert!(ready
        .warnings
        .iter()
        .any(|w| matches!(w, Warning::Stalled { value_ms: 150, .. })));
}

#[test]
fn a_stopped_lease_without_a_connection_exits() {
    let mut d = driver();
    d.handle(0, MachineInput::Stop);
    assert_eq!(action(d.step(0, 1, woke())), Action::Exit);
}
