//! Getting records and events off the threads a renewal waits for.
//!
//! The lease thread and the notice thread ([`mark_time_critical`]) must wait for nothing
//! but Redis and their clock: a log record there would wait for whatever the host's logger
//! waits for (Python's GIL through pyo3-log, a C callback, a blocking sink). So what they
//! produce goes into an [`Outbox`], a bounded queue whose sender never blocks (a full queue
//! drops the item and counts it), and another thread does the talking.
//!
//! The library's own records and role events from those threads leave through the lease's
//! outbox (drained by its event thread, `src/lease/mod.rs`). Records that other code makes
//! on those threads (the store's Sentinel discovery, rustls) reach the front ends' loggers
//! through [`Deferring`], which queues what a time-critical thread logs and hands it to the
//! wrapped logger on a relay thread of its own.

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
}
