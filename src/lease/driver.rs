//! The lease's IO: the lease thread runs the machine's commands on its own connection and
//! feeds the replies back, sleeping until the machine's next wake-up; the notice thread
//! listens on the lease channel. Nothing here decides anything.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Connection;

use super::machine::Notice;
use super::protocol::{
    parse_reply, Call, CallContext, Command, LeaseKeys, LeaseScript, Reply, HANDOVER_REQUEST,
    RELEASED_NOTICE,
};
use super::steps::{self, Action, Happened};
use super::Lease;
use crate::clock::{millis, now_nanos, utc_now_iso};
use crate::store::{describe, drops_connection, Redirect, SCRIPTS};

/// The longest pause between two attempts of the notice thread to subscribe.
const RECONNECT_CAP: Duration = Duration::from_nanos(steps::RECONNECT_CAP);

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
    let reply = parse_reply(command, value)?;
    if matches!(reply, Reply::Renewed { .. } | Reply::Taken { .. })
        && !lease.store.lease_replicated(conn, conn_timeout)?
    {
        return Ok(Reply::Failed);
    }
    Ok(reply)
}

/// The lease thread: executes the actions of the pure steps (`crates/lease/src/driver.rs`)
/// and reports what came of them. Nothing here decides anything.
pub(super) fn run(lease: &Lease) {
    crate::relay::mark_time_critical();
    let mut conn: Option<Connection> = None;
    let mut happened = Happened::Woke { timed_out: false };
    loop {
        happened = match lease.thread_step(happened) {
            Action::Connect { timeout } => {
                conn = None;
                match lease.store.connect_tagged(Duration::from_nanos(timeout)) {
                    Ok((generation, opened)) => {
                        conn = Some(opened);
                        Happened::Connected { generation }
                    }
                    Err(err) => Happened::ConnectFailed {
                        error: err.to_string(),
                    },
                }
            }
            Action::Send {
                command,
                timeout,
                ask,
            } => {
                let timeout = Duration::from_nanos(timeout);
                let outcome = match (&ask, conn.as_mut()) {
                    (Some(node), _) => lease.store.ask(node, &mut |conn: &mut Connection| {
                        conn.set_read_timeout(Some(timeout))?;
                        execute(lease, conn, timeout, &command)
                    }),
                    (None, Some(conn)) => conn
                        .set_read_timeout(Some(timeout))
                        .and_then(|()| execute(lease, conn, timeout, &command)),
                    (None, None) => Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no lease connection",
                    ))),
                };
                match outcome {
                    Ok(reply) => Happened::Replied(reply),
                    Err(err) => Happened::Failed {
                        error: describe(&err),
                        drops_connection: drops_connection(&err),
                        redirect: match lease.store.redirect_of(&err) {
                            Redirect::Ask((host, port)) => steps::Redirect::Ask { host, port },
                            Redirect::Moved => steps::Redirect::Moved,
                            Redirect::Later | Redirect::No => steps::Redirect::None,
                        },
                    },
                }
            }
            Action::Sleep { until } => Happened::Woke {
                timed_out: sleep_until(lease, until),
            },
            Action::Exit => return,
        };
    }
}

/// Sleeps until `until` (the lease clock), a kick, or a stop; returns whether the time was
/// what woke it.
fn sleep_until(lease: &Lease, until: u64) -> bool {
    let mut core = lease.core.lock();
    if lease.kicked.swap(false, Ordering::AcqRel) || lease.is_stopping() {
        return false;
    }
    let pause = Duration::from_nanos(until.saturating_sub(now_nanos()));
    let timed_out = !pause.is_zero() && lease.changed.wait_for(&mut core, pause).timed_out();
    lease.kicked.store(false, Ordering::Release);
    timed_out
}

fn sleep(lease: &Lease, pause: Duration) {
    let mut core = lease.core.lock();
    if !lease.is_stopping() && !lease.kicked.swap(false, Ordering::AcqRel) {
        lease.changed.wait_for(&mut core, pause);
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
