//! Switchyard: a Kafka message router whose routing rules are sandboxed
//! WebAssembly plugins.
//!
//! # Layout
//!
//! - [`plugin`]: the plugin engine — compiling components of the `router`
//!   world (`wit/switchyard.wit`), running them in bounded sandboxes, the
//!   host functions they call.
//! - [`record`]: consumed records and the outputs plugins ask for.
//! - [`config`]: the TOML configuration, validated.
//! - [`kafka`]: client settings, the output producer, topic metadata.
//! - [`pipeline`]: the record path — consumer thread, one worker per
//!   partition, in-order offset tracking ([`pipeline::offsets`]).
//! - [`reload`]: hot swap — plugin files watched, checked, swapped in.
//! - [`route`]: a route at run time and the checks on every output.
//! - [`offline`]: routing JSON-lines records through a plugin without Kafka
//!   (`switchyard route`).
//! - [`http`]: the HTTP endpoint (`/health`, `/ready`, `/metrics`,
//!   `/routes`).
//! - [`metrics`]: the Prometheus metrics; [`status`]: liveness and
//!   readiness.
//! - [`demo`]: `switchyard demo`, the record path on an embedded Kafka.
//! - [`cli`]: the `switchyard` command line; `src/main.rs` only calls it.

#![warn(missing_docs)]

pub mod backoff;
pub mod cli;
pub mod config;
mod demo;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod offline;
pub mod pipeline;
pub mod plugin;
pub mod record;
pub mod reload;
pub mod route;
pub mod router;
pub mod stats;
pub mod status;
