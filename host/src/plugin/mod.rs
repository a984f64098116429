//! The plugin engine: loads components of the `router` world, keeps them
//! compiled, and runs them in bounded, sandboxed instances.
//!
//! - [`PluginEngine`]: one per process; a wasmtime engine with epoch
//!   interruption (a ticker thread advances it) and a linker that offers the
//!   host interface and a locked-down WASI.
//! - [`Plugin`]: a compiled, type-checked component, ready to instantiate.
//! - [`ArtifactCache`]: compiled plugins on disk, keyed by content hash.
//! - [`PluginInstance`]: one `Store` + instance, reused record after record,
//!   replaced after a trap.

mod bindings;
mod cache;
mod engine;
mod error;
mod instance;
mod interrupt;
mod limits;
mod state;
mod stdio;

pub use cache::ArtifactCache;
pub use engine::{Plugin, PluginEngine};
pub use error::PluginError;
pub use instance::{Answers, FailureKind, Outputs, PluginInstance, RouteFailure};
pub use interrupt::Interrupt;
pub use limits::Limits;
pub use state::{PartitionCounts, RouteContext};
pub use stdio::{LogBudget, MAX_LINE as MAX_LOG_LINE};
