//! The library's API against real redis-server processes, in one test binary: state and
//! positions, a clear error for every bad input, the keys every script declares, TLS. These
//! need no process of their own; the tests that do (signals and shutdown, the environment,
//! child bot processes, chaos, the cluster and Sentinel fleets) keep their own binaries.

mod common;

#[path = "api/bad_input.rs"]
mod bad_input;
#[path = "api/declared_keys.rs"]
mod declared_keys;
#[path = "api/state.rs"]
mod state;
#[path = "api/tls.rs"]
mod tls;
