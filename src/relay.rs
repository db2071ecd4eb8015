//! Getting records and events off the threads a renewal waits for.
//!
//! The lease thread and the notice thread ([`mark_time_critical`]) must wait for nothing
//! but Redis and their clock: a log record there would wait for whatever the host's logger
//! waits for (Python's GIL through pyo3-log, a C callback, a blocking sink). So what they
//! produce goes into an [`Outbox`], a bounded queue whose sender never blocks (a full queue
//! drops the item and counts it), and another thread does the talking.
//!
//! The lease's records and role events from those threads leave through the lease's outbox
//! (drained by its event thread, `src/lease/mod.rs`). The library's other records (the
//! store's reconnections and discovery, made on whatever thread connects) go through
//! [`log_own!`]: on a time-critical thread they are queued for a relay thread and reach
//! the process's logger from there, whatever logger a Rust host installed. Records of other
//! crates made on those threads (rustls) reach the Python and C front ends' loggers through
//! [`Deferring`], which those front ends install around their logger.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use parking_lot::Mutex;

thread_local! {
    static TIME_CRITICAL: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one a renewal waits for: nothing may block it but Redis.
pub fn mark_time_critical() {
    TIME_CRITICAL.with(|flag| flag.set(true));
}

pub fn is_time_critical() -> bool {
    TIME_CRITICAL.with(Cell::get)
}

/// A bounded queue whose sender never blocks: a full (or closed) queue drops the item and
/// counts it.
pub struct Outbox<T> {
    sender: Mutex<Option<SyncSender<T>>>,
    dropped: AtomicU64,
}

impl<T> Outbox<T> {
    /// The outbox and the receiving end its drainer reads.
    pub fn new(capacity: usize) -> (Self, Receiver<T>) {
        let (sender, receiver) = mpsc::sync_channel(capacity);
        let outbox = Outbox {
            sender: Mutex::new(Some(sender)),
            dropped: AtomicU64::new(0),
        };
        (outbox, receiver)
    }

    /// Queues `item` unless the queue is full or closed; returns whether it was queued.
    pub fn push(&self, item: T) -> bool {
        // The lock guards only the sender's replacement and close, never a wait.
        let sent = match self.sender.lock().as_ref() {
            Some(sender) => match sender.try_send(item) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// How many items were dropped since the outbox was made.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Closes the queue: the drainer ends once it has read what was queued.
    pub fn close(&self) {
        self.sender.lock().take();
    }
}

/// How many records a [`Deferring`] logger holds for its relay thread.
const DEFERRED_RECORDS: usize = 4096;

/// A record made on a time-critical thread, owned so it can cross to the relay thread.
struct Deferred {
    level: log::Level,
    target: String,
    message: String,
    module_path: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

/// Wraps a front end's logger: records made on a time-critical thread are queued and
/// logged by a relay thread; every other thread logs through the wrapped logger directly.
pub struct Deferring<L: 'static> {
    inner: &'static L,
    /// The relay's queue and the process it was started in (a forked child starts its own).
    relay: Mutex<Option<(u32, SyncSender<Deferred>)>>,
}

/// Records that time-critical threads made and a [`Deferring`] logger dropped.
static DEFERRED_DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many records made on time-critical threads the front end's logger never got (its
/// relay queue was full), in this process.
pub fn deferred_dropped() -> u64 {
    DEFERRED_DROPPED.load(Ordering::Relaxed)
}

impl<L: log::Log + 'static> Deferring<L> {
    pub fn new(inner: L) -> Self {
        Deferring {
            inner: Box::leak(Box::new(inner)),
            relay: Mutex::new(None),
        }
    }

    fn defer(&self, record: &log::Record<'_>) {
        let deferred = Deferred {
            level: record.level(),
            target: record.target().to_owned(),
            message: record.args().to_string(),
            module_path: record.module_path().map(str::to_owned),
            file: record.file().map(str::to_owned),
            line: record.line(),
        };
        let pid = std::process::id();
        let mut relay = self.relay.lock();
        if relay
            .as_ref()
            .is_none_or(|(started_in, _)| *started_in != pid)
        {
            *relay = self.start_relay().map(|sender| (pid, sender));
        }
        let sent = relay
            .as_ref()
            .is_some_and(|(_, sender)| sender.try_send(deferred).is_ok());
        drop(relay);
        if !sent {
            DEFERRED_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn start_relay(&self) -> Option<SyncSender<Deferred>> {
        let (sender, receiver) = mpsc::sync_channel::<Deferred>(DEFERRED_RECORDS);
        let inner = self.inner;
        let spawned = std::thread::Builder::new()
            .name("quantshift-log".into())
            .spawn(move || relay(inner, &receiver));
        spawned.ok().map(|_| sender)
    }
}

fn relay<L: log::Log>(inner: &L, receiver: &Receiver<Deferred>) {
    let mut reported = deferred_dropped();
    for deferred in receiver {
        let args = format_args!("{}", deferred.message);
        inner.log(
            &log::Record::builder()
                .level(deferred.level)
                .target(&deferred.target)
                .module_path(deferred.module_path.as_deref())
                .file(deferred.file.as_deref())
                .line(deferred.line)
                .args(args)
                .build(),
        );
        let now = deferred_dropped();
        if now != reported {
            inner.log(
                &log::Record::builder()
                    .level(log::Level::Warn)
                    .target("quantshift_core::relay")
                    .args(format_args!(
                        "{} log records made on the lease threads were dropped (the log \
                         queue was full: the logger is slower than the records come)",
                        now - reported
                    ))
                    .build(),
            );
            reported = now;
        }
    }
}

impl<L: log::Log + 'static> log::Log for Deferring<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        if is_time_critical() {
            // The wrapped logger's own check may block (pyo3-log takes the GIL): the relay
            // thread asks it.
            metadata.level() <= log::max_level()
        } else {
            self.inner.enabled(metadata)
        }
    }

    fn log(&self, record: &log::Record<'_>) {
        if is_time_critical() {
            if record.level() <= log::max_level() {
                self.defer(record);
            }
        } else {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        if !is_time_critical() {
            self.inner.flush();
        }
    }
}

/// The process's logger (whichever the host installed), as a logger to wrap.
struct ProcessLogger;

impl log::Log for ProcessLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        log::logger().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        log::logger().log(record);
    }

    fn flush(&self) {
        log::logger().flush();
    }
}

static OWN_RECORDS: std::sync::OnceLock<Deferring<ProcessLogger>> = std::sync::OnceLock::new();

/// Logs one of the library's own records: at once on an ordinary thread, from a relay
/// thread when the caller is time-critical (the host's logger may block). Use [`log_own!`].
pub fn log_own_record(level: log::Level, target: &str, args: std::fmt::Arguments<'_>) {
    if level > log::max_level() {
        return;
    }
    let record = log::Record::builder()
        .level(level)
        .target(target)
        .args(args)
        .build();
    log::Log::log(
        OWN_RECORDS.get_or_init(|| Deferring::new(ProcessLogger)),
        &record,
    );
}

/// `log_own!(Warn, "...", args)`: [`log_own_record`] at a level, with the calling module as target.
macro_rules! log_own {
    ($level:ident, $($arg:tt)+) => {
        $crate::relay::log_own_record(log::Level::$level, module_path!(), format_args!($($arg)+))
    };
}
pub(crate) use log_own;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_outbox_drops_and_counts_without_blocking() {
        let (outbox, receiver) = Outbox::new(2);
        assert!(outbox.push(1));
        assert!(outbox.push(2));
        assert!(!outbox.push(3));
        assert_eq!(outbox.dropped(), 1);
        assert_eq!(receiver.try_iter().collect::<Vec<_>>(), vec![1, 2]);
        outbox.close();
        assert!(!outbox.push(4));
        assert_eq!(outbox.dropped(), 2);
    }

    #[test]
    fn only_marked_threads_are_time_critical() {
        assert!(!is_time_critical());
        std::thread::spawn(|| {
            mark_time_critical();
            assert!(is_time_critical());
        })
        .join()
        .unwrap();
        assert!(!is_time_critical());
    }

    /// A logger that blocks each record until the test lets it go.
    struct Blocking {
        gate: std::sync::Mutex<()>,
        seen: std::sync::Mutex<Vec<String>>,
    }

    impl log::Log for Blocking {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            let _wait = self.gate.lock().unwrap();
            self.seen.lock().unwrap().push(record.args().to_string());
        }
        fn flush(&self) {}
    }

    #[test]
    fn own_records_never_wait_for_the_hosts_logger_on_a_time_critical_thread() {
        static LOGGER: Blocking = Blocking {
            gate: std::sync::Mutex::new(()),
            seen: std::sync::Mutex::new(Vec::new()),
        };
        // The only test of this binary that installs a logger.
        log::set_logger(&LOGGER).unwrap();
        log::set_max_level(log::LevelFilter::Info);
        let held = LOGGER.gate.lock().unwrap();
        let (done, returned) = mpsc::channel();
        std::thread::spawn(move || {
            mark_time_critical();
            log_own!(Warn, "from the lease thread {}", 1);
            let _ = done.send(());
        });
        let returned = returned.recv_timeout(std::time::Duration::from_secs(1));
        if returned.is_err() {
            drop(held);
            panic!("a time-critical thread waited for a blocked logger");
        }
        assert!(LOGGER.seen.lock().unwrap().is_empty());
        drop(held);
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while LOGGER.seen.lock().unwrap().is_empty() && std::time::Instant::now() < give_up {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            *LOGGER.seen.lock().unwrap(),
            vec!["from the lease thread 1".to_owned()]
        );
    }
}
