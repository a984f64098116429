//! Switchyard: a Kafka message router whose routing rules are sandboxed
//! WebAssembly plugins.
//!
//! # Layout
//!
//! - [`plugin`]: the plugin engine — compiling components of the `router`
//!   world (`wit/switchyard.wit`), running them in bounded sandboxes, the
//!   host functions they call.
//! - [`record`]: consumed records and the outputs plugins ask for.
//! - [`offline`]: routing JSON-lines records through a plugin without Kafka
//!   (`switchyard route`).
//! - [`cli`]: the `switchyard` command line; `src/main.rs` only calls it.

pub mod cli;
pub mod offline;
pub mod plugin;
pub mod record;
