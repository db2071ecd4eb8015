//! `WAIT` for replicas: a fenced write's replication check, sent in the same round trip as
//! its script call, and the lease's own check after a renewal.

use std::time::Duration;

use redis::{Connection, ConnectionLike, RedisResult, Value};

use super::scripts::is_evalsha;
use super::Store;
use crate::clock::millis;
use crate::error::{Error, ErrorKind};

impl Store {
    /// `WAIT wait_replicas timeout` on `conn`: the number of replicas that confirmed the
    /// connection's writes. The read timeout is raised for the wait and set back to
    /// `restore` after it.
    pub fn wait(
        &self,
        conn: &mut Connection,
        timeout: Duration,
        restore: Duration,
    ) -> RedisResult<i64> {
        // WAIT with 0 ms blocks for ever: never send it.
        let timeout_ms = millis(timeout);
        conn.set_read_timeout(Some(restore + timeout))?;
        let acked = redis::cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(timeout_ms)
            .query(conn);
        conn.set_read_timeout(Some(restore))?;
        acked
    }

    /// Whether the lease write just made on `conn` reached `wait_replicas` replicas (always
    /// true when none are required). Bounded by `timeout` as well as `wait_timeout`.
    pub fn lease_replicated(&self, conn: &mut Connection, timeout: Duration) -> RedisResult<bool> {
        if self.wait_replicas == 0 {
            return Ok(true);
        }
        let acked = self.wait(conn, self.wait_timeout.min(timeout), timeout)?;
        Ok(acked >= i64::from(self.wait_replicas))
    }

    pub fn not_replicated(&self, acked: i64, timeout: Duration) -> Error {
        Error::new(
            ErrorKind::NotReplicated,
            format!(
                "the Redis master applied the write, but only {acked} of the {} replicas \
                 required (wait_replicas) confirmed it within {timeout:?}; it may be lost if \
                 the master fails before they catch up",
                self.wait_replicas
            ),
        )
    }
}

/// A connection that sends a packed `WAIT` in the same write as each script call (`EVALSHA`)
/// and keeps the last `WAIT` reply: a fenced write and its replication check in one round
/// trip. Other commands (`SCRIPT LOAD` after `NOSCRIPT`) pass through.
pub(super) struct WaitBehind<'a> {
    pub(super) conn: &'a mut Connection,
    pub(super) wait: &'a [u8],
    pub(super) acked: Option<RedisResult<i64>>,
}

impl ConnectionLike for WaitBehind<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        if !is_evalsha(cmd) {
            return self.conn.req_packed_command(cmd);
        }
        let both = [cmd, self.wait].concat();
        let mut replies = self.conn.req_packed_commands(&both, 0, 2)?.into_iter();
        let (Some(reply), Some(waited)) = (replies.next(), replies.next()) else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "expected the replies of a script call and of WAIT",
            )));
        };
        self.acked = Some(redis::from_redis_value::<i64>(waited).map_err(Into::into));
        Ok(reply)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.conn.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.conn.is_open()
    }
}
