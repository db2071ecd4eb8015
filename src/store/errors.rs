//! How Redis errors are classified and described (never with anything the URL carried).

/// Whether the error leaves the connection unusable (or in an unknown state).
pub(crate) fn drops_connection(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
}

/// A `READONLY` reply: the node is a replica now, and wrote nothing.
pub(crate) fn is_read_only(err: &redis::RedisError) -> bool {
    matches!(
        err.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
    ) || err.code() == Some("READONLY")
}

/// The error's text without anything the URL carried.
pub(crate) fn describe(err: &redis::RedisError) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else {
        err.to_string()
    }
}
