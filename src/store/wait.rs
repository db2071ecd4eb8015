//! `WAIT` for replicas: the lease's check after a take or renewal (a fenced write's is
//! pipelined behind its script, `Store::write_script`).

use std::time::Duration;

use redis::{Connection, RedisResult};

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

    /// With `wait_replicas` > 0, whether the server runs `WAIT` at all (some services and
    /// forks refuse it): a clear error at start rather than on every write.
    pub fn check_wait_supported(&self) -> crate::error::Result<()> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        // No replica asked for: returns at once wherever WAIT exists.
        let outcome = self.run(|conn| redis::cmd("WAIT").arg(0).arg(1).query::<i64>(conn));
        match outcome {
            Err(err) if err.kind() != ErrorKind::RedisUnavailable => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "wait_replicas is {} but this Redis refuses WAIT ({}): set wait_replicas to 0 \
                     or use a server that replicates with WAIT",
                    self.wait_replicas,
                    err.message()
                ),
            )),
            other => other.map(|_| ()),
        }
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
