//! quantshift-core: a trading bot's state, positions and primary/standby role in Redis, so a
//! hot-standby bot takes over when the primary dies — never two primaries, nothing
//! acknowledged lost, a clear error for every bad input.
//!
//! ```no_run
//! use quantshift_core::{Config, StateManager};
//! use serde_json::json;
//!
//! let state = StateManager::new(Config::new("equity-bot")).unwrap();
//! if state.wait_until_primary(Some(std::time::Duration::from_secs(60))) {
//!     let mut s = json!({"strategy": "moving_average"}).as_object().unwrap().clone();
//!     state.save_state(&mut s).unwrap();
//!     state.apply_fill("AAPL", 10.0, 150.0, Some("fill-1")).unwrap();
//! }
//! state.close().unwrap();
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod inspect;
pub mod keys;
/// The lease's pure state machine and protocol, public for the simulator and conformance
/// tests (`tests/lease_sim/`); not a stable interface.
#[doc(hidden)]
pub mod lease;
mod manager;
pub mod positions;
mod relay;
mod shutdown;
mod stalls;
mod store;
mod url;

pub use config::{redact_url, ClusterUrl, Config};
pub use error::{Error, ErrorKind, Result};
pub use inspect::{BotStatus, Inspector, ServerStatus};
pub use keys::{KeyLayout, Keys};
pub use lease::meter::{HistogramSnapshot, LeaseStalls, BUCKET_BOUNDS_MS};
pub use lease::LeaseEvent;
pub use manager::StateManager;
pub use positions::{Change, JsonObject, LoadedPositions, PositionDifference, SyncReport};

#[cfg(feature = "ffi")]
pub mod ffi;
#[cfg(feature = "python")]
mod python;
