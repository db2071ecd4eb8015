//! The primary lease of quantshift-core as pure steps, with time and replies as inputs.
//!
//! [`machine`] decides (when to look, take, renew, release, who is primary); [`driver`] holds
//! the lease thread's own rules (connecting and reconnecting with backoff, the per-command
//! timeouts, a new master generation, what a dropped connection or a MOVED/ASK reply means)
//! and the stall meter's warnings. One step in, one [`driver::Ready`] out: the actions for
//! the thread, role events and warnings as data, the view `is_primary()` reads.
//!
//! The crate has no dependencies: it cannot reach Redis, read a clock, sleep, take a lock or
//! log, so the purity is a guarantee and not a habit. The thread that runs it in
//! quantshift-core only executes (connect, send, wait), and the simulator in
//! `tests/lease_sim/` runs these same steps. The safety argument is at the top of
//! `src/lease/mod.rs` in quantshift-core.

#![forbid(unsafe_code)]

pub mod driver;
pub mod machine;
pub mod meter;
pub mod protocol;
pub mod shared;

/// The demotion reason of a graceful shutdown (logged at info, not as a warning).
pub const SHUTTING_DOWN: &str = "shutting down";
