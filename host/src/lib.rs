//! Switchyard: a Kafka message router whose routing rules are sandboxed
//! WebAssembly plugins.
//!
//! # Layout
//!
//! - [`router`]: the application assembled — [`router::start`] builds the
//!   producer, topic metadata, routes, plugin watcher, HTTP endpoint and
//!   record path from a [`config::RouterConfig`]; a
//!   [`router::RouterHandle`] stops it.
//! - [`pipeline`]: the record path — the consumer thread and its
//!   callbacks, one worker per partition, what a batch of records goes
//!   through, delivery reports, in-order offsets, refusals, failures and
//!   dead letters, exactly-once transactions.
//! - [`plugin`]: the plugin engine — compiling components of the `router`
//!   world (`wit/switchyard.wit`), running them in bounded sandboxes, the
//!   host functions they call.
//! - [`route`]: a route at run time and the one check every output passes.
//! - [`record`]: consumed records and the outputs plugins ask for.
//! - [`kafka`]: what talks to librdkafka — client settings, the producer,
//!   partition queues, topic metadata.
//! - [`config`]: the TOML configuration, validated.
//! - [`reload`]: hot swap — plugin files watched, checked, swapped in.
//! - [`replay`]: a route's records from an offset or a time routed again
//!   into a named topic, beside the route.
//! - [`rollout`]: a candidate version tried beside the live one (canary
//!   or shadow), promoted or rolled back by a policy or an operator.
//! - [`stats`]: what each route did, counted once; [`metrics`]: the
//!   Prometheus exposition; [`status`]: liveness and readiness;
//!   [`http`]: the endpoint that shows them (`/health`, `/ready`,
//!   `/metrics`, `/routes`).
//! - [`offline`]: routing JSON-lines records through a plugin without Kafka
//!   (`switchyard route`).
//! - [`validate`]: what `switchyard run` checks before it consumes, without
//!   consuming (`switchyard validate`).
//! - [`project`]: plugin projects in Rust, Python or TypeScript —
//!   `switchyard new` writes one, `switchyard build` builds one with its
//!   language's tools.
//! - [`schema`]: records in a schema registry's wire format — the
//!   framing, Avro/Protobuf/JSON Schema bodies read and written by schema,
//!   schema sources (a directory, a registry) and the store that fetches
//!   each schema once, off the workers.
//! - [`backoff`]: retry delays.
//! - [`cli`]: the `switchyard` command line (`src/main.rs` only calls it),
//!   with `switchyard demo` (the record path on an embedded Kafka) in a
//!   private module of its own.

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
pub mod project;
pub mod record;
pub mod reload;
pub mod replay;
pub mod rollout;
pub mod route;
pub mod router;
pub mod schema;
pub mod stats;
pub mod status;
pub mod validate;
