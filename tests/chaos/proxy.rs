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

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Cut,
    Delay(Duration),
    Drop,
}

struct Shared {
    mode: Mutex<Mode>,
    /// Bumped by every cut: connections of an older generation close themselves.
    generation: AtomicU64,
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
        if mode == Mode::Cut {
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
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
                if shared.mode() == Mode::Cut {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let generation = shared.generation.load(Ordering::Acquire);
                let Ok(server) =
                    TcpStream::connect_timeout(&shared.upstream, Duration::from_millis(500))
                else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || pump(from, to, shared, generation));
                }
            }
            Err(err) if err.kind() == IoErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

enum Chunk {
    Data(Instant, Vec<u8>),
    Eof,
}

/// One direction of one connection: a reader thread timestamps chunks as they arrive, this
/// thread delivers them when the mode allows.
fn pump(from: TcpStream, to: TcpStream, shared: Arc<Shared>, generation: u64) {
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
    'outer: loop {
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
                // Half-close: what was sent still arrives, then EOF.
                let _ = to.shutdown(Shutdown::Write);
                break;
            }
        };
        loop {
            if !shared.alive(generation) {
                close(&to);
                break 'outer;
            }
            match shared.mode() {
                Mode::Pass => break,
                Mode::Delay(d) => {
                    let due = arrived + d;
                    let now = Instant::now();
                    if now >= due {
                        break;
                    }
                    std::thread::sleep((due - now).min(TICK));
                }
                Mode::Drop | Mode::Cut => std::thread::sleep(TICK),
            }
        }
        if to.write_all(&data).is_err() {
            close(&to);
            break;
        }
    }
    let _ = read_thread.join();
}
