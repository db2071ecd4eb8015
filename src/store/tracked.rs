//! A connection whose reads Redis tracks (server-assisted client-side caching, `CLIENT
//! TRACKING ... OPTIN` over RESP3): once a key was read on it by a command announced with
//! `CLIENT CACHING YES` (for a MULTI, the whole transaction), Redis pushes an `invalidate`
//! message on the same connection when anyone changes, deletes or expires that key, or
//! flushes the database. Pushes travel in order with replies, so after any command's reply every
//! invalidation of a change Redis applied before that command has been received: a cache
//! of what was read is current exactly when that command's reply came with no invalidation.

use std::sync::mpsc::{channel, Receiver};

use redis::{Connection, PushInfo, PushKind, RedisResult, Value};

use super::Store;
use crate::error::{Error, ErrorKind, Result};

pub(crate) struct TrackedConnection {
    conn: Connection,
    /// The master generation the connection was opened in.
    generation: u64,
    pushes: Receiver<PushInfo>,
}

/// What [`TrackedConnection::take_invalidations`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalidated {
    Nothing,
    /// Keys other than the one asked about.
    Others,
    /// The key asked about, maybe among others (or everything: a flush, a lost connection).
    Key,
}

/// Why no tracked connection could be had.
pub(crate) enum TrackingRefused {
    /// Redis is unreachable now; try again later.
    Unavailable(Error),
    /// This server (or this user) has no RESP3 or no `CLIENT TRACKING`: stop asking.
    Unsupported(Error),
}

impl Store {
    /// A new dedicated connection with RESP3 and key tracking on.
    pub fn connect_tracked(&self) -> std::result::Result<TrackedConnection, TrackingRefused> {
        let (generation, mut conn) = self
            .connect_tagged(self.command_timeout)
            .map_err(TrackingRefused::Unavailable)?;
        let enabled = redis::cmd("HELLO")
            .arg(3)
            .query::<redis::Value>(&mut conn)
            .and_then(|_| {
                // OPTIN: only reads announced with CLIENT CACHING YES are tracked, so the
                // checks that only count keys cost Redis no tracking-table work.
                redis::cmd("CLIENT")
                    .arg("TRACKING")
                    .arg("ON")
                    .arg("OPTIN")
                    .query::<()>(&mut conn)
            });
        if let Err(err) = enabled {
            let err = self.classify(err);
            return Err(if err.kind() == ErrorKind::RedisUnavailable {
                TrackingRefused::Unavailable(err)
            } else {
                TrackingRefused::Unsupported(err)
            });
        }
        let (sender, pushes) = channel();
        conn.set_push_sender(sender);
        Ok(TrackedConnection {
            conn,
            generation,
            pushes,
        })
    }
}

impl TrackedConnection {
    /// Whether the connection still leads to the current master.
    pub fn is_current(&self, store: &Store) -> bool {
        self.generation == store.generation()
    }

    /// Runs `op`; Redis errors come back as they are (the caller decides what they mean).
    pub fn run<T>(&mut self, op: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Result<T> {
        op(&mut self.conn).map_err(Error::from)
    }

    /// What may have changed of what was read on this connection since the pushes were last
    /// taken. Takes them all.
    pub fn take_invalidations(&mut self, key: &str) -> Invalidated {
        let mut invalidated = Invalidated::Nothing;
        while let Ok(push) = self.pushes.try_recv() {
            let names_key = match push.kind {
                PushKind::Invalidate => match push.data.first() {
                    Some(Value::Array(keys)) => keys
                        .iter()
                        .any(|k| matches!(k, Value::BulkString(k) if k == key.as_bytes())),
                    // A flush: every key.
                    _ => true,
                },
                PushKind::Disconnection => true,
                _ => continue,
            };
            invalidated = match (invalidated, names_key) {
                (Invalidated::Key, _) | (_, true) => Invalidated::Key,
                _ => Invalidated::Others,
            };
        }
        invalidated
    }
}
