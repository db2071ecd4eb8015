//! Real `redis-server` processes on free loopback ports, and bot child processes, for the
//! behaviour tests. Nothing here mocks Redis.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quantshift_core::{Config, StateManager};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free loopback port")
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&["--maxmemory-policy", "noeviction"])
    }

    /// Starts `redis-server` on a free loopback port with extra arguments; retries on another
    /// port if the chosen one was taken meanwhile.
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("qs-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut server = RedisServer {
                port,
                child: None,
                dir,
                extra: extra.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free loopback port (is redis-server installed?)");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (bash scripts/setup.sh installs it)");
        self.child = Some(child);
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            if let Ok(mut conn) = self.try_connection() {
                match redis::cmd("PING").query::<String>(&mut conn) {
                    Ok(_) => return true,
                    // A password-protected server answers too.
                    Err(err) if err.code() == Some("NOAUTH") => return true,
                    Err(_) => {}
                }
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The URL with a user and password (an ACL user of this server).
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}/0", self.port)
    }

    /// The name `CONFIG` answers to on this server: the one given by
    /// `--rename-command CONFIG <name>` among the extra arguments, else `CONFIG` (`None` when
    /// it was renamed to nothing).
    pub fn config_command(&self) -> Option<String> {
        self.renamed("CONFIG")
    }

    /// The name `command` answers to on this server (see [`config_command`](Self::config_command)).
    pub fn renamed(&self, command: &str) -> Option<String> {
        let mut name = Some(command.to_owned());
        for window in self.extra.windows(3) {
            if window[0] == "--rename-command" && window[1].eq_ignore_ascii_case(command) {
                name = (!window[2].is_empty()).then(|| window[2].clone());
            }
        }
        name
    }

    /// Sets one configuration parameter through [`config_command`](Self::config_command).
    pub fn config_set(&self, conn: &mut redis::Connection, parameter: &str, value: &str) {
        let command = self
            .config_command()
            .expect("CONFIG renamed to nothing: the harness cannot configure this server");
        let _: () = redis::cmd(&command)
            .arg("SET")
            .arg(parameter)
            .arg(value)
            .query(conn)
            .unwrap_or_else(|err| panic!("{command} SET {parameter} {value}: {err}"));
    }

    /// The memory Redis has allocated (`MEMORY STATS` `total.allocated`, which works when
    /// `INFO` is renamed away).
    pub fn used_memory(&self, conn: &mut redis::Connection) -> Option<u64> {
        let stats: redis::Value = redis::cmd("MEMORY").arg("STATS").query(conn).ok()?;
        let items = match stats {
            redis::Value::Array(items) => items,
            redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => return None,
        };
        items.chunks(2).find_map(|pair| match pair {
            [redis::Value::BulkString(name), redis::Value::Int(n)]
                if name.as_slice() == b"total.allocated" =>
            {
                u64::try_from(*n).ok()
            }
            _ => None,
        })
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(conn)
    }

    /// A plain connection, for checking what the library wrote.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection()
            .expect("connect to the test redis-server")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn freeze(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with its data files removed first: a
    /// restart that lost everything (as without persistence), whatever the configuration.
    pub fn restart_empty(&mut self) {
        self.kill();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
        assert!(
            self.spawn(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// Starts the server again on the same port (data is not kept: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not come back on port {}",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            signal(child.id() as i32, libc::SIGCONT);
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid we started; no memory is shared.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A configuration with a short lease, no signal handlers (tests run many managers).
pub fn fast_config(server: &RedisServer, bot: &str, lock_ttl_ms: u64) -> Config {
    Config::new(bot)
        .redis_url(server.url())
        .lock_ttl(Duration::from_millis(lock_ttl_ms))
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .install_signal_handlers(false)
}

pub fn manager(server: &RedisServer, bot: &str, lock_ttl_ms: u64) -> StateManager {
    StateManager::new(fast_config(server, bot, lock_ttl_ms)).expect("start a state manager")
}

/// Polls `condition` every millisecond until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + timeout;
    while Instant::now() < give_up {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    condition()
}

pub fn obj(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    value.as_object().expect("a JSON object").clone()
}

/// A bot in a child process: the test binary re-run with `QS_CHILD_URL` set, executing the
/// `child_bot` test of that binary (see [`child_bot_main`]). Its stdout lines are collected.
pub struct ChildBot {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl ChildBot {
    pub fn spawn(server: &RedisServer, bot: &str, lock_ttl_ms: u64, signals: bool) -> Self {
        Self::spawn_with_env(server, bot, lock_ttl_ms, signals, &[])
    }

    /// Like [`spawn`](Self::spawn), with extra environment, e.g. `QS_CHILD_SLOW_HANDLER_MS`
    /// for a shutdown handler that sleeps that long.
    pub fn spawn_with_env(
        server: &RedisServer,
        bot: &str,
        lock_ttl_ms: u64,
        signals: bool,
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_bot", "--nocapture", "--test-threads=1"])
            .env("QS_CHILD_URL", server.url())
            .env("QS_CHILD_BOT", bot)
            .env("QS_CHILD_TTL_MS", lock_ttl_ms.to_string())
            .env("QS_CHILD_SIGNALS", if signals { "1" } else { "0" })
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("re-run the test binary as a child bot");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The test harness prints "test child_bot ... " without a newline before the
                // child's first line.
                let line = match line.split_once("test child_bot ... ") {
                    Some((_, rest)) => rest.to_owned(),
                    None => line,
                };
                sink.lock().unwrap().push(line);
            }
        });
        ChildBot { child, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn has_line(&self, prefix: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(prefix))
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (bounded) for the child to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let give_up = Instant::now() + timeout;
        while Instant::now() < give_up {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for ChildBot {
    fn drop(&mut self) {
        signal(self.pid(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a child bot: every 2 ms it prints `tick <n> <is_primary> <write outcome>`,
/// where the write is a `save_position("TICK", {"n": n})` tried whatever the role, so a
/// parent can check that writes are refused exactly when the child is not primary.
/// Prints `primary` once promoted, and `handler <i>` from its shutdown handlers.
/// A logger as a slow sink (a syslog or HTTP handler that stalls) would be: every record
/// takes `pause`.
fn install_blocking_logger(pause: Duration) {
    struct Blocking(Duration);
    impl log::Log for Blocking {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            std::thread::sleep(self.0);
            println!("log {} {}", record.level(), record.args());
        }
        fn flush(&self) {}
    }
    log::set_boxed_logger(Box::new(Blocking(pause))).expect("the first logger");
    log::set_max_level(log::LevelFilter::Debug);
}

pub fn child_bot_main() {
    let Ok(url) = std::env::var("QS_CHILD_URL") else {
        return;
    };
    let bot = std::env::var("QS_CHILD_BOT").unwrap();
    let ttl: u64 = std::env::var("QS_CHILD_TTL_MS").unwrap().parse().unwrap();
    let signals = std::env::var("QS_CHILD_SIGNALS").as_deref() == Ok("1");
    if let Some(ms) = std::env::var("QS_CHILD_LOG_SLEEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        install_blocking_logger(Duration::from_millis(ms));
    }
    let config = Config::new(bot)
        .redis_url(url)
        .lock_ttl(Duration::from_millis(ttl))
        .command_timeout(Duration::from_millis(500))
        .install_signal_handlers(signals);
    let manager = StateManager::new(config).expect("child manager");
    for i in 0..2 {
        manager.register_shutdown_handler(move || {
            println!("handler {i}");
            Ok(())
        });
    }
    let slow_ms: u64 = std::env::var("QS_CHILD_SLOW_HANDLER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if slow_ms > 0 {
        manager.register_shutdown_handler(move || {
            println!("slow handler started");
            std::thread::sleep(Duration::from_millis(slow_ms));
            Ok(())
        });
    }
    let mut state = obj(serde_json::json!({"strategy": "child"}));
    let announced = std::sync::atomic::AtomicBool::new(false);
    // Bounded: a child never outlives 60 s even if its parent forgets it.
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut n: u64 = 0;
    while Instant::now() < give_up {
        n += 1;
        let primary = manager.is_primary();
        if primary && !announced.swap(true, std::sync::atomic::Ordering::Relaxed) {
            manager
                .save_state(&mut state)
                .expect("save state once primary");
            println!("primary");
        }
        let outcome = match manager.save_position("TICK", &mut obj(serde_json::json!({"n": n}))) {
            Ok(()) => "ok".to_owned(),
            Err(err) => format!("{:?}", err.kind()),
        };
        println!("tick {n} {primary} {outcome}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
