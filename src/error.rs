//! The one error type of the core. Each front end (Python, C) converts it once.

use std::fmt;

/// What kind of failure an [`Error`] is; front ends map each kind to one
/// exception class or status code (docs/contract.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A write was attempted by an instance that does not hold the lease.
    NotPrimary,
    /// Redis could not be reached, timed out, or dropped the connection.
    RedisUnavailable,
    /// The caller passed something the library refuses (names, values, options).
    InvalidInput,
    /// A value stored in Redis is not the JSON object expected.
    CorruptData,
    /// A write applied on the master was not confirmed by the requested replicas in time.
    NotReplicated,
    /// Any other failure reported by the Redis server.
    Redis,
}

/// The error returned by every fallible operation of the library.
///
/// Messages never contain a password: URLs are redacted before they are
/// formatted, and Redis' own replies do not echo credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// From a `WRONGTYPE` reply: the call site names the key (see `positions::name_wrong_type`).
    wrong_type: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            wrong_type: false,
        }
    }

    pub fn not_primary(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotPrimary, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RedisUnavailable, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CorruptData, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether Redis answered `WRONGTYPE`: one of our keys holds a value of another type
    /// (stored by hand); the reply does not say which key.
    pub(crate) fn is_wrong_type(&self) -> bool {
        self.wrong_type
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The error code our Lua scripts raise when the caller's token does not hold the lease.
pub(crate) const NOT_PRIMARY_CODE: &str = "NOTPRIMARY";

/// Redis' reply code for a command on a key holding another type (also raised from scripts).
const WRONG_TYPE_CODE: &str = "WRONGTYPE";

impl From<redis::RedisError> for Error {
    fn from(err: redis::RedisError) -> Self {
        if err.code() == Some(NOT_PRIMARY_CODE) {
            return Error::not_primary(
                "this instance does not hold the primary lease; the write was refused and nothing changed",
            );
        }
        // A pipeline reports its commands' errors together, without a code of its own.
        let in_pipeline = err
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == WRONG_TYPE_CODE));
        if err.code() == Some(WRONG_TYPE_CODE) || in_pipeline {
            // Our keys only ever hold what we store there: another type is corrupt data.
            return Error {
                wrong_type: true,
                ..Error::corrupt(format!(
                    "a key of this bot holds a value of another Redis type than the one this \
                     library stores there: {err}"
                ))
            };
        }
        // Missing or wrong credentials leave Redis as unusable as an unreachable server.
        let refused_credentials = matches!(err.code(), Some("NOAUTH" | "WRONGPASS"));
        let unavailable = refused_credentials
            || err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || matches!(
                err.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::BusyLoading
                        | redis::ServerErrorKind::ReadOnly
                        | redis::ServerErrorKind::MasterDown
                ) | redis::ErrorKind::AuthenticationFailed
            );
        if unavailable {
            Error::unavailable(format!("Redis unavailable: {err}"))
        } else {
            Error::new(ErrorKind::Redis, format!("Redis error: {err}"))
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::invalid(format!("not valid JSON: {err}"))
    }
}
