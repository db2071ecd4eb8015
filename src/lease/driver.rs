//! The lease's IO: the lease thread runs the machine's commands on its own connection and
//! feeds the replies back, sleeping until the machine's next wake-up; the notice thread
//! listens on the lease channel. Nothing here decides anything.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Connection;

use super::machine::{Input, Notice};
use super::meter::{Stall, StallWatch};
use super::protocol::{
    Call, CallContext, Command, LeaseKeys, LeaseScript, Reply, HANDOVER_REQUEST, RELEASED_NOTICE,
};
use super::Lease;
use crate::clock::{millis, now_nanos, utc_now_iso};
use crate::store::{describe, drops_connection, Redirect, SCRIPTS};

/// The longest pause between two connection attempts.
const RECONNECT_CAP: Duration = Duration::from_millis(250);

/// Runs one command on `conn`, whose read timeout is `conn_timeout`. A take or renewal
/// counts only once `wait_replicas` replicas confirmed it; otherwise it is reported as
/// failed (its outcome unknown).
pub(super) fn execute(
    lease: &Lease,
    conn: &mut Connection,
    conn_timeout: Duration,
    command: &Command,
) -> redis::RedisResult<Reply> {
    let keys = &lease.keys;
    let lease_keys = LeaseKeys {
        lock: &keys.lock,
        epoch: &keys.epoch,
        record: &keys.lease_record,
        heartbeat: &keys.heartbeat,
        instances: &keys.instances,
        channel: &keys.lease_channel,
    };
    let heartbeat = utc_now_iso();
    let context = CallContext {
        instance_id: &lease.instance_id,
        lock_ttl_ms: millis(lease.timing.lock_ttl),
        heartbeat_ttl_ms: millis(lease.timing.heartbeat_ttl),
        presence_ttl_ms: millis(lease.timing.presence_ttl()),
        heartbeat: &heartbeat,
    };
    let value: redis::Value = match command.call(&lease_keys, &context) {
        Call::Script { script, keys, args } => {
            let script = match script {
                LeaseScript::Take => &SCRIPTS.lease_take,
                LeaseScript::Renew => &SCRIPTS.lease_renew,
                LeaseScript::Release => &SCRIPTS.lease_release,
                LeaseScript::Observe => &SCRIPTS.lease_observe,
            };
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            for arg in args {
                invocation.arg(arg);
            }
            invocation.invoke(conn)?
        }
        Call::Plain(args) => {
            let mut cmd = redis::cmd(&args[0]);
            cmd.arg(&args[1..]);
            cmd.query(conn)?
        }
    };
    let reply = command.parse_reply(value)?;
    if matches!(reply, Reply::Renewed { .. } | Reply::Taken { .. })
        && !lease.store.lease_replicated(conn, conn_timeout)?
    {
        return Ok(Reply::Failed);
    }
    Ok(reply)
}

/// The lease thread.
pub(super) fn run(lease: &Lease) {
    crate::relay::mark_time_critical();
    let mut conn: Option<(u64, Connection)> = None;
    let mut input = Input::Tick;
    let mut retry = Duration::from_millis(10);
    let mut failing = false;
    let mut watch = StallWatch::default();
    loop {
        if conn
            .as_ref()
            .is_some_and(|(generation, _)| *generation != lease.store.generation())
        {
            // A new master: observations on the former one no longer count.
            conn = None;
            lease.step(Input::Disconnected);
        }
        if conn.is_none() && !lease.is_stopping() {
            match lease
                .store
                .connect_tagged(lease.timing.lease_command_timeout)
            {
                Ok(opened) => {
                    conn = Some(opened);
                    retry = Duration::from_millis(10);
                    input = Input::Connected;
                }
                Err(err) => {
                    if !failing {
                        lease.report(
                            log::Level::Warn,
                            format!("the lease thread cannot reach Redis: {err}"),
                        );
                    }
                    failing = true;
                    // Deadlines still pass while Redis is away.
                    lease.step(Input::Tick);
                    sleep(lease, retry);
                    retry = (retry * 2).min(RECONNECT_CAP.min(lease.timing.poll_interval));
                    continue;
                }
            }
        }
        let command = lease.driver_step(std::mem::replace(&mut input, Input::Tick));
        let Some(command) = command else {
            if lease.is_stopping() {
                return;
            }
            if let Some(late) = wait(lease) {
                lease.stalls.wake_late.record(late);
                if let Some(text) =
                    watch.check(now_nanos(), Stall::WokeLate, late, lease.tolerance())
                {
                    lease.report(log::Level::Warn, text);
                }
            }
            continue;
        };
        let Some((generation, connection)) = conn.as_mut() else {
            input = Input::Reply {
                id: command.id(),
                sent_at: now_nanos(),
                reply: Reply::Failed,
            };
            if lease.is_stopping() {
                lease.step(std::mem::replace(&mut input, Input::Tick));
                return;
            }
            continue;
        };
        // A renewal slower than the slack before the deadline could not keep the lease; a
        // standby's look or take may take as long as any command (a timeout drops the
        // connection, and with it the watch, so a loaded machine must not cut looks short).
        let timeout = match command {
            Command::Renew { .. } => lease.timing.lease_command_timeout,
            _ => lease.store.command_timeout(),
        };
        let sent_at = now_nanos();
        let mut outcome = connection
            .set_read_timeout(Some(timeout))
            .and_then(|()| execute(lease, connection, timeout, &command));
        let mut moved = false;
        if let Err(err) = &outcome {
            match lease.store.redirect_of(err) {
                // The slot is being migrated and the lease keys are already at `addr`: the
                // command ran nowhere, and runs there once.
                Redirect::Ask(addr) => {
                    outcome = lease.store.ask(&addr, &mut |conn: &mut Connection| {
                        conn.set_read_timeout(Some(timeout))?;
                        execute(lease, conn, timeout, &command)
                    });
                }
                // A new master or slot owner is recorded: a new generation, a new connection.
                Redirect::Moved => moved = true,
                Redirect::Later | Redirect::No => {}
            }
        }
        let round_trip = Duration::from_nanos(now_nanos().saturating_sub(sent_at));
        lease.stalls.round_trip.record(round_trip);
        if matches!(command, Command::Renew { .. }) {
            if let Some(text) =
                watch.check(now_nanos(), Stall::RoundTrip, round_trip, lease.tolerance())
            {
                lease.report(log::Level::Warn, text);
            }
        }
        let generation = *generation;
        let reply = match outcome {
            Ok(reply) => {
                failing = false;
                if matches!(reply, Reply::Renewed { .. } | Reply::Taken { .. }) {
                    lease
                        .confirmed_generation
                        .fetch_max(generation, Ordering::AcqRel);
                }
                reply
            }
            Err(err) => {
                if !failing {
                    lease.report(
                        log::Level::Warn,
                        format!("lease round trip failed: {}", describe(&err)),
                    );
                }
                failing = true;
                if moved || drops_connection(&err) {
                    conn = None;
                }
                Reply::Failed
            }
        };
        lease.step(Input::Reply {
            id: command.id(),
            sent_at,
            reply,
        });
        if conn.is_none() {
            lease.step(Input::Disconnected);
        }
    }
}

/// Sleeps until the machine's next wake-up, a kick, or a stop; returns how late it woke
/// when the time was what woke it.
fn wait(lease: &Lease) -> Option<Duration> {
    let mut machine = lease.machine.lock();
    if lease.kicked.swap(false, Ordering::AcqRel) || lease.is_stopping() {
        return None;
    }
    let wake_at = machine.wake_at_now(now_nanos());
    let pause = Duration::from_nanos(wake_at.saturating_sub(now_nanos()));
    let mut late = None;
    if !pause.is_zero() && lease.changed.wait_for(&mut machine, pause).timed_out() {
        late = Some(Duration::from_nanos(now_nanos().saturating_sub(wake_at)));
    }
    lease.kicked.store(false, Ordering::Release);
    late
}

fn sleep(lease: &Lease, pause: Duration) {
    let mut machine = lease.machine.lock();
    if !lease.is_stopping() && !lease.kicked.swap(false, Ordering::AcqRel) {
        lease.changed.wait_for(&mut machine, pause);
    }
}

/// The notice thread: release notices wake standbys at once, handover requests reach the
/// primary. Losing notices costs speed only: the standby's looks do the rest. The channel is
/// an ordinary (not sharded) one, subscribed on the node that serves the bot and again on the
/// new one after a change of master or slot owner: ordinary pub/sub works on every server
/// (sharded pub/sub needs 7.0), on a cluster a `PUBLISH` reaches every node, and the server
/// never ends an ordinary subscription by itself (sharded ones end when their slot moves)
/// other than by closing the connection, which this thread counts as a loss and subscribes
/// again.
pub(super) fn listen(lease: &Lease) {
    crate::relay::mark_time_critical();
    let mut retry = Duration::from_millis(10);
    while !lease.is_stopping() {
        let connected = lease
            .store
            .connect_with_timeout(lease.timing.poll_interval)
            .ok();
        let generation = lease.store.generation();
        // The subscription lives as long as this `PubSub` (dropping it unsubscribes).
        let mut conn = connected;
        let mut pubsub = conn.as_mut().map(|conn| conn.as_pubsub());
        let subscribed = pubsub
            .as_mut()
            .is_some_and(|pubsub| pubsub.subscribe(&lease.keys.lease_channel).is_ok());
        {
            let (listening, changed) = &lease.listening;
            *listening.lock() = true;
            changed.notify_all();
        }
        let (true, Some(pubsub)) = (subscribed, pubsub.as_mut()) else {
            sleep(lease, retry);
            retry = (retry * 2).min(RECONNECT_CAP);
            continue;
        };
        retry = Duration::from_millis(10);
        let _ = pubsub.set_read_timeout(Some(
            lease.timing.poll_interval.max(Duration::from_millis(50)),
        ));
        while !lease.is_stopping() {
            match pubsub.get_message() {
                Ok(message) => {
                    let payload: String = message.get_payload().unwrap_or_default();
                    if payload.starts_with(HANDOVER_REQUEST) {
                        lease.notice(Notice::HandoverRequested);
                    } else if payload.starts_with(RELEASED_NOTICE) {
                        lease.notice(Notice::Released);
                    }
                }
                Err(err) if err.is_timeout() => {
                    if lease.store.generation() != generation {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
}
