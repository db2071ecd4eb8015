//! Seen death (CONTRACT §2, fast failover): a connection to Redis that vouches for this
//! instance while it holds the lease.
//!
//! Each instance keeps one dedicated connection subscribed to a private channel
//! `bot:{bot}:alive:{instance_id}:{nonce}`. The lease record names the channel of the holder
//! (written by the acquisition or renewal script only while the channel has a subscriber), so
//! `PUBSUB NUMSUB` tells a standby whether the holder's connection is still open on the server.
//! When the holder's process dies, its kernel closes the socket and Redis unsubscribes it at
//! once; a standby that sees the channel without subscribers on the same server run, and still
//! sees it so `SEEN_DEATH_GRACE` later, takes the lease with one compare-the-token script.
//!
//! Why this never makes two primaries:
//! - The holder never closes the connection while it is primary: this module only ever reads
//!   the socket's state with `poll(2)`, and drops the connection after demoting.
//! - A close Redis makes (`CLIENT KILL`, a proxy reset, a restart) reaches the holder's kernel
//!   as a FIN or RST within the network's one-way latency. From then on `is_primary()` says
//!   false: it polls the socket itself (zero timeout), so even a process frozen while the close
//!   arrived says standby on its first look. The grace (150 ms) is many one-way latencies.
//! - What Redis cannot see never shortens the lease: a frozen process keeps its sockets open, a
//!   dead host or a partition sends no FIN, so the channel keeps its subscriber and the lease
//!   runs to its TTL. Pub/sub clients are exempt from the server's `timeout`; the server's
//!   `tcp-keepalive` could drop a partitioned client after about its value in seconds, so the
//!   fast path stays off (with a warning) unless it is 0 or at least `renew_deadline`. Client
//!   eviction is switched off for the connection (`CLIENT NO-EVICT`).
//! - Liveness registered on an earlier server run or master never counts as gone: the record
//!   carries the server's `run_id`, and subscriptions do not survive a restart or failover.
//! - A standby only takes over when its own liveness channel is live, so every lease taken on
//!   seen death is itself vouched for, and its holder demotes at any restart of Redis.
//!
//! Only Linux is supported (the socket is found through `/proc/self/fd`); elsewhere the fast
//! path stays off and failover waits for the lease TTL.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::Connection;

use crate::store::Store;

/// How long a standby waits after first seeing the holder's liveness gone before taking over.
pub(crate) const SEEN_DEATH_GRACE: Duration = Duration::from_millis(150);
/// How often a standby looks at a vouched holder's liveness (one script call each).
pub(crate) const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How long the watcher blocks in `poll(2)` at most (it is woken at once to stop).
const WATCH_PERIOD: Duration = Duration::from_secs(1);
/// How often the liveness connection carries a `PING`, so that proxies and load balancers
/// that close idle connections (often after a minute or more) leave it alone.
const PING_PERIOD: Duration = Duration::from_secs(20);

/// One registered liveness connection.
struct Registered {
    serial: u64,
    channel: String,
    generation: u64,
    fd: RawFd,
    /// Kept open for as long as it vouches (dropping it closes the socket); used only for the
    /// keep-alive `PING`, never by `is_primary()`.
    conn: Mutex<Connection>,
    pinged: Mutex<Instant>,
}

impl Registered {
    /// A `PING` once per ping period; its reply is read here. A slow or lost reply is not a
    /// close: only a hang-up counts.
    fn keep_alive(&self) {
        let mut pinged = self.pinged.lock();
        if pinged.elapsed() < PING_PERIOD {
            return;
        }
        *pinged = Instant::now();
        let mut conn = self.conn.lock();
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        if conn
            .send_packed_command(&redis::cmd("PING").get_packed_command())
            .is_ok()
        {
            // Replies that came late after an earlier ping are read too.
            let mut wait_ms = 500;
            while readable(self.fd, wait_ms) {
                if conn.recv_response().is_err() {
                    break;
                }
                wait_ms = 0;
            }
        }
    }
}

pub(crate) struct Liveness {
    channel_prefix: String,
    /// Fast failover is wanted and possible here (config and platform).
    wanted: bool,
    /// The server's `tcp-keepalive` must be 0 or at least this (the renew deadline).
    min_keepalive: Duration,
    slot: RwLock<Option<Registered>>,
    next_serial: AtomicU64,
    warned: Mutex<Option<String>>,
    /// Wakes the watcher from `poll(2)` (a byte written to one end, polled on the other).
    waker: Option<(UnixStream, UnixStream)>,
    /// Registrations on former masters, kept open until the time given.
    retired: Mutex<Vec<(Instant, Registered)>>,
}

impl Liveness {
    pub fn new(channel_prefix: String, fast_failover: bool, min_keepalive: Duration) -> Self {
        Liveness {
            channel_prefix,
            wanted: fast_failover && cfg!(target_os = "linux"),
            min_keepalive,
            slot: RwLock::new(None),
            next_serial: AtomicU64::new(1),
            warned: Mutex::new(None),
            waker: UnixStream::pair()
                .and_then(|(a, b)| {
                    a.set_nonblocking(true)?;
                    b.set_nonblocking(true)?;
                    Ok((a, b))
                })
                .ok(),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Ends the watcher's current wait (to stop).
    pub fn wake(&self) {
        if let Some((writer, _)) = &self.waker {
            let _ = (&*writer).write(&[1]);
        }
    }

    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// The serial and channel of the live registration, if any.
    pub fn current(&self) -> Option<(u64, String)> {
        self.slot
            .read()
            .as_ref()
            .map(|r| (r.serial, r.channel.clone()))
    }

    /// Whether the connection registered as `serial` is gone or closed by its peer: a
    /// zero-timeout `poll(2)`, no network. Readers hold the slot so the descriptor cannot be
    /// closed (and reused) while polled.
    pub fn lost(&self, serial: u64) -> bool {
        let slot = self.slot.read();
        match slot.as_ref() {
            Some(registered) if registered.serial == serial => hung_up(registered.fd, 0),
            _ => true,
        }
    }

    /// A warning when the fast path is off for a reason the operator should know.
    pub fn warning(&self) -> Option<String> {
        self.warned.lock().clone()
    }

    /// Opens, checks and subscribes a new liveness connection on the current master. `Ok(false)`
    /// when the server's settings keep the fast path off.
    pub fn register(&self, store: &Store, timeout: Duration) -> crate::Result<bool> {
        if !self.wanted {
            return Ok(false);
        }
        let before = socket_inodes();
        let (generation, mut conn) = store.connect_tagged(timeout)?;
        let after = socket_inodes();
        let fail = |err: redis::RedisError| {
            crate::Error::unavailable(format!(
                "liveness connection failed: {}",
                crate::store::describe(&err)
            ))
        };
        let keepalive: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("tcp-keepalive")
            .query(&mut conn)
            .unwrap_or_default();
        let keepalive = keepalive.get(1).and_then(|v| v.parse::<u64>().ok());
        match keepalive {
            Some(0) => {}
            Some(secs) if Duration::from_secs(secs) >= self.min_keepalive => {}
            other => {
                let why = match other {
                    Some(secs) => format!(
                        "the server's tcp-keepalive ({secs} s) could drop a partitioned \
                         primary before its renew deadline ({:?}); set it to 0 or at least \
                         that",
                        self.min_keepalive
                    ),
                    None => "the server's tcp-keepalive cannot be read (CONFIG GET refused), \
                             so a partitioned primary could be dropped before its renew deadline"
                        .to_owned(),
                };
                let message = format!(
                    "fast failover is off: {why}; a dead primary is replaced when its lease expires"
                );
                let mut warned = self.warned.lock();
                if warned.as_deref() != Some(message.as_str()) {
                    log::warn!("{message}");
                    *warned = Some(message);
                }
                return Ok(false);
            }
        }
        *self.warned.lock() = None;
        let Some(fd) = find_socket(&before, &after, &mut conn) else {
            log::debug!("liveness connection: its socket could not be identified; retrying later");
            return Ok(false);
        };
        let serial = self.next_serial.fetch_add(1, Ordering::AcqRel);
        let channel = format!("{}{serial}:{}", self.channel_prefix, nonce());
        // Named so operators (and `CLIENT KILL`) can tell it apart; never evicted.
        let _ = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("quantshift-liveness")
            .query::<()>(&mut conn);
        let _ = redis::cmd("CLIENT")
            .arg("NO-EVICT")
            .arg("on")
            .query::<()>(&mut conn);
        // The confirmation is the one reply read on this connection; nothing is published here.
        let _: redis::Value = redis::cmd("SUBSCRIBE")
            .arg(&channel)
            .query(&mut conn)
            .map_err(fail)?;
        let mut slot = self.slot.write();
        *slot = Some(Registered {
            serial,
            channel,
            generation,
            fd,
            conn: Mutex::new(conn),
            pinged: Mutex::new(Instant::now()),
        });
        Ok(true)
    }

    /// Blocks up to the watch period; the serial of the registration, if its connection broke.
    pub fn watch(&self) -> Option<u64> {
        let fd = match self.slot.read().as_ref() {
            Some(registered) => {
                registered.keep_alive();
                registered.fd
            }
            None => return None,
        };
        // The watcher is the only thread that drops the registration, so `fd` stays ours.
        let waker = self.waker.as_ref().map(|(_, reader)| reader);
        if !hung_up_or_woken(fd, waker, millis_i32(WATCH_PERIOD)) {
            return None;
        }
        let registered = self.slot.write().take()?;
        Some(registered.serial)
    }

    /// Retires a registration made on a former master (after a change of master): it no
    /// longer vouches, but stays open for `keep_open`, so that nobody still talking to the
    /// former master sees us die there sooner than our lease on it would have expired.
    pub fn retire_if_generation_before(&self, generation: u64, keep_open: Duration) {
        let mut retired = self.retired.lock();
        retired.retain(|(until, _)| Instant::now() < *until);
        let mut slot = self.slot.write();
        if slot.as_ref().is_some_and(|r| r.generation < generation) {
            if let Some(registered) = slot.take() {
                retired.push((Instant::now() + keep_open, registered));
            }
        }
    }

    pub fn drop_registration(&self) {
        self.slot.write().take();
        self.retired.lock().clear();
    }

    pub fn registered(&self) -> bool {
        self.slot.read().is_some()
    }
}

fn nonce() -> String {
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        bytes.copy_from_slice(&crate::clock::now_nanos().to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis_i32(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

/// Like [`hung_up`], waiting up to `timeout_ms`, and returning early (false) when `waker`
/// becomes readable.
fn hung_up_or_woken(fd: RawFd, waker: Option<&UnixStream>, timeout_ms: i32) -> bool {
    let Some(waker) = waker else {
        return hung_up(fd, timeout_ms);
    };
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        },
        libc::pollfd {
            fd: waker.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds; both descriptors stay open for the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    if ready < 0 {
        return false;
    }
    if fds[1].revents != 0 {
        let mut drain = [0u8; 64];
        while matches!((&*waker).read(&mut drain), Ok(n) if n > 0) {}
    }
    fds[0].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Whether the socket has data to read and is not closed, waiting up to `timeout_ms`.
fn readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd; the descriptor is kept open by the registration.
    let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    ready > 0 && pollfd.revents & libc::POLLRDHUP == 0
}

/// Whether the peer closed or reset the socket (or it is no longer open), waiting up to
/// `timeout_ms`. Readable data alone (a message on our private channel) is not a hang-up.
fn hung_up(fd: RawFd, timeout_ms: i32) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd; the descriptor is kept open by the registration.
    let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    if ready < 0 {
        return std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted;
    }
    pollfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// The socket inodes of this process, by descriptor.
fn socket_inodes() -> Vec<(RawFd, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((fd, inode))
        })
        .collect()
}

/// The descriptor of `conn`'s socket: the one socket that appeared while it was opened (other
/// threads may open sockets too; then the server's view of the client address decides).
fn find_socket(
    before: &[(RawFd, u64)],
    after: &[(RawFd, u64)],
    conn: &mut Connection,
) -> Option<RawFd> {
    let known: HashSet<u64> = before.iter().map(|(_, inode)| *inode).collect();
    let fresh: Vec<RawFd> = after
        .iter()
        .filter(|(_, inode)| !known.contains(inode))
        .map(|(fd, _)| *fd)
        .filter(|fd| is_connected_stream(*fd))
        .collect();
    match fresh.as_slice() {
        [fd] => Some(*fd),
        [] => None,
        several => {
            let info: String = redis::cmd("CLIENT").arg("INFO").query(conn).ok()?;
            let addr = info
                .split_whitespace()
                .find_map(|field| field.strip_prefix("addr="))?
                .to_owned();
            let matching: Vec<RawFd> = several
                .iter()
                .copied()
                .filter(|fd| local_address(*fd).as_deref() == Some(addr.as_str()))
                .collect();
            match matching.as_slice() {
                [fd] => Some(*fd),
                _ => None,
            }
        }
    }
}

fn is_connected_stream(fd: RawFd) -> bool {
    // SAFETY: getpeername on a descriptor we own only writes into the buffer given.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        libc::getpeername(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) == 0
    }
}

/// `ip:port` of a TCP socket's local end, as Redis prints client addresses.
fn local_address(fd: RawFd) -> Option<String> {
    // SAFETY: getsockname only writes into the buffer given, within `len`.
    let storage = unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return None;
        }
        storage
    };
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let addr: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&storage) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Some(format!("{ip}:{}", u16::from_be(addr.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let addr: libc::sockaddr_in6 = unsafe { std::mem::transmute_copy(&storage) };
            let ip = std::net::Ipv6Addr::from(addr.sin6_addr.s6_addr);
            Some(format!("{ip}:{}", u16::from_be(addr.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_peer_is_a_hang_up_and_an_open_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(!hung_up(client.as_raw_fd(), 0));
        drop(server);
        assert!(hung_up(client.as_raw_fd(), 100));
    }
}
