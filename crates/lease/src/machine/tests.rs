//! The machine's unit tests: each drives it by hand through one rule of the safety argument.
use super::*;

const MS: Nanos = MILLI;

fn params() -> Params {
    Params::from_periods(Periods::FAST_DEFAULT)
}

struct Stepped {
    view: View,
    events: Vec<Event>,
    command: Option<Command>,
}

fn step(m: &mut Machine, now: Nanos, input: Input) -> Stepped {
    let ready = m.handle(now, input);
    Stepped {
        view: ready.view,
        events: ready.events,
        command: m.next_command(now),
    }
}

fn reply(m: &mut Machine, now: Nanos, command: &Command, reply: Reply) -> Stepped {
    step(
        m,
        now,
        Input::Reply {
            id: command.id(),
            sent_at: now,
            reply,
        },
    )
}

/// Ticks every 10 ms, answering every look with `record`, until the machine takes.
fn take_after_looks(m: &mut Machine, record: &Record) -> (Nanos, Command) {
    let mut now = 0;
    for _ in 0..1_000 {
        now += 10 * MS;
        match step(m, now, Input::Tick).command {
            Some(take @ Command::Take { .. }) => return (now, take),
            Some(observe @ Command::Observe { .. }) => {
                if let Some(take @ Command::Take { .. }) =
                    reply(m, now, &observe, Reply::Observed(record.clone())).command
                {
                    return (now, take);
                }
            }
            _ => {}
        }
    }
    panic!("no take within 10 s");
}

#[test]
fn takeover_wait_covers_the_deadline_on_both_clocks() {
    let wait = takeover_wait(300 * MS);
    assert!(wait >= 300 * MS * 101 * 101 / 10_000);
    assert!(wait < 330 * MS);
}

#[test]
fn a_claim_of_an_absent_record_is_primary_only_after_the_wait() {
    let mut m = Machine::new(params(), "a".into(), 1);
    let ready = step(&mut m, 0, Input::Connected);
    let observe = ready.command.expect("observes at once");
    let ready = reply(&mut m, MS, &observe, Reply::Observed(Record::Absent));
    let take = ready.command.expect("claims at once");
    assert!(matches!(
        take,
        Command::Take {
            expect: Expect::Absent,
            ..
        }
    ));
    let ready = reply(&mut m, 2 * MS, &take, Reply::Taken { epoch: 5 });
    assert!(!ready.view.is_primary_at(2 * MS));
    let mut now = 2 * MS;
    let mut promoted = false;
    while now < 2 * MS + takeover_wait(300 * MS) + 200 * MS {
        let ready = step(&mut m, now, Input::Tick);
        if let Some(command) = ready.command {
            let ready = reply(&mut m, now, &command, Reply::Renewed { seq: 1 });
            promoted |= ready.events.contains(&Event::Promoted { epoch: 5 });
        }
        promoted |= ready.events.contains(&Event::Promoted { epoch: 5 });
        let primary = m.view().is_primary_at(now);
        assert_eq!(primary, now >= 2 * MS + takeover_wait(300 * MS), "at {now}");
        now += 10 * MS;
    }
    assert!(promoted);
}

#[test]
fn a_stale_holder_is_replaced_only_after_the_wait_on_one_connection() {
    let mut m = Machine::new(params(), "b".into(), 2);
    let held = Record::Held {
        token: "a:1".into(),
        seq: 4,
        deadline_ms: 300,
        epoch: 7,
    };
    let observe = step(&mut m, 0, Input::Connected).command.unwrap();
    let ready = reply(&mut m, 0, &observe, Reply::Observed(held.clone()));
    assert!(ready.command.is_none());
    // A reconnection restarts the watch.
    step(&mut m, 200 * MS, Input::Disconnected);
    let observe = step(&mut m, 250 * MS, Input::Connected).command.unwrap();
    reply(&mut m, 250 * MS, &observe, Reply::Observed(held.clone()));
    let mut now = 250 * MS;
    let take = loop {
        now += 10 * MS;
        assert!(now < 10_000 * MS, "no take within 10 s");
        let ready = step(&mut m, now, Input::Tick);
        match ready.command {
            Some(Command::Observe { .. }) => {
                reply(
                    &mut m,
                    now,
                    ready.command.as_ref().unwrap(),
                    Reply::Observed(held.clone()),
                );
            }
            Some(take @ Command::Take { .. }) => break take,
            _ => {}
        }
    };
    assert!(now >= 250 * MS + takeover_wait(300 * MS));
    let ready = reply(&mut m, now, &take, Reply::Taken { epoch: 8 });
    assert!(ready.view.is_primary_at(now));
    assert_eq!(ready.events, vec![Event::Promoted { epoch: 8 }]);
}

#[test]
fn a_refused_write_or_renewal_retires_the_token_at_once() {
    let mut m = Machine::new(params(), "c".into(), 3);
    let observe = step(&mut m, 0, Input::Connected).command.unwrap();
    let released = Record::Released { seq: 3, epoch: 2 };
    reply(&mut m, 0, &observe, Reply::Observed(released.clone()));
    let (now, take) = take_after_looks(&mut m, &released);
    let ready = reply(&mut m, now, &take, Reply::Taken { epoch: 3 });
    assert!(ready.view.is_primary_at(now));
    let token = m.token().unwrap().to_owned();
    let ready = step(&mut m, now, Input::WriteRefused { token });
    assert!(!ready.view.is_primary_at(now));
    assert!(ready
        .events
        .iter()
        .any(|e| matches!(e, Event::Demoted { .. })));
    assert_eq!(m.token(), None);
}

#[test]
fn the_deadline_demotes_without_any_reply() {
    let mut m = Machine::new(params(), "d".into(), 4);
    let observe = step(&mut m, 0, Input::Connected).command.unwrap();
    let released = Record::Released { seq: 1, epoch: 1 };
    reply(&mut m, 0, &observe, Reply::Observed(released.clone()));
    let (now, take) = take_after_looks(&mut m, &released);
    reply(&mut m, now, &take, Reply::Taken { epoch: 2 });
    let deadline = m.view().deadline;
    // Renewals never answer: primary no more at the deadline, one renewal at once.
    let ready = step(&mut m, deadline, Input::Tick);
    assert!(!ready.view.is_primary_at(deadline));
    assert!(ready
        .events
        .iter()
        .any(|e| matches!(e, Event::Demoted { .. })));
    let renew = ready.command.expect("a late holder renews at once");
    assert!(matches!(renew, Command::Renew { .. }));
    // It fails too: the token is retired.
    reply(&mut m, deadline + MS, &renew, Reply::Failed);
    assert!(m.token().is_none());
}

/// Primary until the deadline, then the late holder's renewal on the same connection.
fn late_holder(name: &str) -> (Machine, Nanos, Command) {
    let mut m = Machine::new(params(), name.into(), 5);
    let observe = step(&mut m, 0, Input::Connected).command.unwrap();
    let released = Record::Released { seq: 1, epoch: 1 };
    reply(&mut m, 0, &observe, Reply::Observed(released.clone()));
    let (now, take) = take_after_looks(&mut m, &released);
    reply(&mut m, now, &take, Reply::Taken { epoch: 2 });
    // The host stalls the process for two seconds.
    let late = m.view().deadline + 2_000 * MS;
    let ready = step(&mut m, late, Input::Tick);
    assert!(!ready.view.is_primary_at(late));
    let renew = ready.command.expect("a late holder renews at once");
    (m, late, renew)
}

#[test]
fn a_late_holder_whose_renewal_succeeds_on_its_connection_is_primary_again() {
    let (mut m, late, renew) = late_holder("e");
    let ready = reply(&mut m, late + MS, &renew, Reply::Renewed { seq: 2 });
    assert!(ready.view.is_primary_at(late + MS));
    assert_eq!(ready.events, vec![Event::Promoted { epoch: 2 }]);
    assert_eq!(ready.view.epoch, 2, "the same lease, not a new take");
}

#[test]
fn a_late_holder_refused_or_reconnected_is_retired() {
    let (mut m, late, renew) = late_holder("f");
    reply(&mut m, late + MS, &renew, Reply::RenewRefused);
    assert!(m.token().is_none());
    let (mut m, late, _) = late_holder("g");
    step(&mut m, late, Input::Disconnected);
    assert!(
        m.token().is_none(),
        "a new connection cannot vouch for the record"
    );
    assert!(!m.view().is_primary_at(late));
}

#[test]
fn a_holder_reconnected_since_its_last_renewal_is_retired_at_the_deadline() {
    let mut m = Machine::new(params(), "h".into(), 6);
    let observe = step(&mut m, 0, Input::Connected).command.unwrap();
    let released = Record::Released { seq: 1, epoch: 1 };
    reply(&mut m, 0, &observe, Reply::Observed(released.clone()));
    let (now, take) = take_after_looks(&mut m, &released);
    reply(&mut m, now, &take, Reply::Taken { epoch: 2 });
    step(&mut m, now + MS, Input::Disconnected);
    step(&mut m, now + 2 * MS, Input::Connected);
    let deadline = m.view().deadline;
    step(&mut m, deadline, Input::Tick);
    assert!(m.token().is_none());
}
