//! A loopback TCP proxy between one bot and Redis, controlled by the chaos harness: a network
//! fault between that bot and Redis, while the other bot still reaches Redis directly
//! through its own proxy.
//!
//! Modes:
//! - `Pass`: bytes are forwarded as they arrive.
//! - `Cut`: every open connection is closed at once and new ones are accepted and closed
//!   (the client sees EOF / reset): a partition the client notices.
//! - `Delay(d)`: every chunk is forwarded `d` after it arrived, in each direction.
//! - `Drop`: connections are accepted and read, but nothing is forwarded: a partition the
//!   client does not notice (it times out). Back in `Pass`, what was held is delivered late,
//!   as TCP does when a partition heals: a write the client gave up on may still land.
//! - `Blackhole(dir)`: one direction only is held (never delivered while the mode lasts),
//!   the other flows. `ToRedis`: Redis never hears the bot (its commands vanish, nothing is
//!   executed); `ToBot`: Redis executes every command but the replies vanish (writes land
//!   unacknowledged). The harness ends it either with `Pass` (what was held arrives late) or
//!   with `Cut` first (the held bytes are dropped for good and the connections reset, as when
//!   TCP gives up on a one-way partition).
//! - `HalfClose`: every open connection has its Redis side closed (Redis sees the client
//!   go away) while its bot side stays open and silent: bytes from the bot are swallowed,
//!   nothing comes back, no EOF, no reset. New connections are accepted and treated the same
//!   (no Redis side at all). Those connections stay half-closed after the mode ends: only
//!   the bot giving up on them (its own timeouts) gets it out; new connections pass again.
//!
//! Also used by `tests/failover.rs`, which needs only some of it.
#![allow(dead_code)]

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One direction of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Bot → Redis (commands).
    ToRedis,
    /// Redis → bot (replies, pushes).
    ToBot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Cut,
    Delay(Duration),
    Drop,
    Blackhole(Dir),
    HalfClose,
}

struct Shared {
    mode: Mutex<Mode>,
    /// Bumped by every cut: connections of an older generation close themselves.
    generation: AtomicU64,
    /// Bumped by every half-close: connections opened before it lose their Redis side.
    half_closes: AtomicU64,
    stop: AtomicBool,
    upstream: SocketAddr,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }
    fn alive(&self, generation: u64) -> bool {
        !self.stop.load(Ordering::Acquire) && self.generation.load(Ordering::Acquire) == generation
    }
    fn half_closed(&self, opened_at: u64) -> bool {
        self.half_closes.load(Ordering::Acquire) != opened_at
    }
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

const TICK: Duration = Duration::from_millis(10);

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            generation: AtomicU64::new(0),
            half_closes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
        });
        let for_accept = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || accept_loop(listener, for_accept))
            .unwrap();
        Proxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        let mut current = self.shared.mode.lock().unwrap();
        match mode {
            Mode::Cut => {
                self.shared.generation.fetch_add(1, Ordering::AcqRel);
            }
            Mode::HalfClose => {
                self.shared.half_closes.fetch_add(1, Ordering::AcqRel);
            }
            _ => {}
        }
        *current = mode;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let generation = shared.generation.load(Ordering::Acquire);
                match shared.mode() {
                    Mode::Cut => {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    Mode::HalfClose => {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || swallow(client, &shared, generation));
                        continue;
                    }
                    _ => {}
                }
                let half_closes = shared.half_closes.load(Ordering::Acquire);
                let Ok(server) =
                    TcpStream::connect_timeout(&shared.upstream, Duration::from_millis(500))
                else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                for (from, to, dir) in [
                    (&client, &server, Dir::ToRedis),
                    (&server, &client, Dir::ToBot),
                ] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        pump(from, to, dir, shared, generation, half_closes)
                    });
                }
            }
            Err(err) if err.kind() == IoErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// The bot side of a half-closed connection: read and drop everything, answer nothing, until
/// the bot closes it (or a cut, or the proxy stops).
fn swallow(mut client: TcpStream, shared: &Shared, generation: u64) {
    let _ = client.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 * 1024];
    while shared.alive(generation) {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if matches!(err.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

enum Chunk {
    Data(Instant, Vec<u8>),
    Eof,
}

/// One direction of one connection: a reader thread timestamps chunks as they arrive, this
/// thread delivers them when the mode allows.
fn pump(
    from: TcpStream,
    to: TcpStream,
    dir: Dir,
    shared: Arc<Shared>,
    generation: u64,
    half_closes: u64,
) {
    let (sender, receiver) = mpsc::channel::<Chunk>();
    let reader_shared = Arc::clone(&shared);
    let mut reader = from.try_clone().unwrap();
    let _ = reader.set_read_timeout(Some(TICK));
    let read_thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while reader_shared.alive(generation) {
            match reader.read(&mut buf) {
                Ok(0) => {
                    let _ = sender.send(Chunk::Eof);
                    return;
                }
                Ok(n) => {
                    if sender
                        .send(Chunk::Data(Instant::now(), buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(err)
                    if matches!(err.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) => {}
                Err(_) => {
                    let _ = sender.send(Chunk::Eof);
                    return;
                }
            }
        }
    });
    let mut to = to;
    let _ = to.set_write_timeout(Some(Duration::from_secs(2)));
    let close = |to: &TcpStream| {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    };
    // Half-closed: the Redis side goes, the bot side stays open and silent. Returns whether
    // this direction keeps going (swallowing what the bot sends).
    let half_close = |to: &TcpStream| -> bool {
        match dir {
            Dir::ToRedis => {
                let _ = to.shutdown(Shutdown::Both);
                true
            }
            Dir::ToBot => {
                let _ = from.shutdown(Shutdown::Both);
                false
            }
        }
    };
    let mut swallowing = false;
    'outer: loop {
        if !swallowing && shared.half_closed(half_closes) {
            if !half_close(&to) {
                break;
            }
            swallowing = true;
        }
        let chunk = match receiver.recv_timeout(TICK) {
            Ok(chunk) => chunk,
            Err(RecvTimeoutError::Timeout) => {
                if shared.alive(generation) {
                    continue;
                }
                close(&to);
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let (arrived, data) = match chunk {
            Chunk::Data(arrived, data) => (arrived, data),
            Chunk::Eof => {
                if swallowing || shared.half_closed(half_closes) {
                    // The bot closed a half-closed connection (ToRedis), or the Redis side
                    // we closed reports it (ToBot): the bot hears nothing of it.
                    if dir == Dir::ToRedis {
                        close(&to);
                    }
                    break;
                }
                // Half-close: what was sent still arrives, then EOF.
                let _ = to.shutdown(Shutdown::Write);
                break;
            }
        };
        if swallowing {
            continue;
        }
        loop {
            if !shared.alive(generation) {
                close(&to);
                break 'outer;
            }
            if shared.half_closed(half_closes) {
                // What was in flight is dropped with the Redis side.
                continue 'outer;
            }
            match shared.mode() {
                Mode::Pass | Mode::HalfClose => break,
                Mode::Delay(d) => {
                    let due = arrived + d;
                    let now = Instant::now();
                    if now >= due {
                        break;
                    }
                    std::thread::sleep((due - now).min(TICK));
                }
                Mode::Blackhole(held) if held != dir => break,
                Mode::Drop | Mode::Cut | Mode::Blackhole(_) => std::thread::sleep(TICK),
            }
        }
        if to.write_all(&data).is_err() {
            close(&to);
            break;
        }
    }
    drop(receiver);
    let _ = read_thread.join();
}
