//! Write [Switchyard](https://github.com/switchyard-router/switchyard)
//! routing plugins in Rust.
//!
//! A plugin is a WebAssembly component that decides what becomes of each
//! consumed Kafka record (the router hands records over in batches; your
//! `route` runs once per record, in the order consumed): the
//! records to produce ([`Output`]s: zero drops it, several fan it out), or a
//! [`RouteError`] that says whether redelivery could help.
//!
//! Hello world, a plugin that forwards every record unchanged:
//!
//! ```
//! use switchyard_sdk::{Message, Output, RouteResult};
//!
//! #[switchyard_sdk::route]
//! fn route(_msg: &Message) -> RouteResult {
//!     Ok(vec![Output::forward()])
//! }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` in a crate
//! of type `cdylib`. A plugin that takes configuration implements [`Plugin`]
//! and marks the impl with [`#[plugin]`](macro@plugin).
//!
//! Everything here also runs natively, so plugin logic is tested with plain
//! `cargo test`: build a [`Message`] with [`Message::builder`] and look at the
//! [`Output`]s that come back.

#![deny(missing_docs)]

// The generated bindings name this crate by its path, also from inside it.
extern crate self as switchyard_sdk;

mod config;
mod hash;
mod host;
#[cfg(feature = "json")]
mod json_support;
#[cfg(feature = "json")]
pub use json_support::{json_field, json_field_mut};
#[cfg(feature = "json")]
mod schema;
#[cfg(feature = "json")]
pub use schema::{Field, SchemaFormat, SchemaRef, encode, encode_message};
mod message;
mod output;

pub use config::Config;
pub use hash::fnv1a_32;
pub use host::{Level, default_target, log, partition_count, testing};
pub use message::{Header, Message, MessageBuilder};
pub use output::{Data, Output, OutputHeaders, RouteError, RouteResult};
/// Marks an `impl Plugin for T` block as the plugin of this crate.
///
/// `T::init` runs once with the route's `plugin_config`; `T::route` then
/// runs for every record.
pub use switchyard_sdk_macro::plugin;
/// Marks a `fn(&Message) -> RouteResult` as the plugin of this crate.
///
/// Such a plugin takes no configuration: the router refuses to start it
/// with a non-empty `plugin_config`. Implement [`Plugin`] to accept one.
pub use switchyard_sdk_macro::route;

#[cfg(feature = "json")]
/// Re-export of `serde_json`, for plugins that build JSON values.
pub use serde_json as json;

/// A routing plugin that keeps state, typically parsed configuration.
///
/// ```
/// use switchyard_sdk::{Config, Message, Output, Plugin, RouteResult};
///
/// struct ToTopic(String);
///
/// #[switchyard_sdk::plugin]
/// impl Plugin for ToTopic {
///     fn init(config: &Config) -> Result<Self, String> {
///         Ok(Self(config.require("topic")?.to_owned()))
///     }
///
///     fn route(&self, _msg: &Message) -> RouteResult {
///         Ok(vec![Output::forward().to_topic(&self.0)])
///     }
/// }
/// ```
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from the route's `plugin_config`. An error refuses
    /// the configuration; the router reports it and does not route with
    /// this plugin.
    fn init(config: &Config) -> Result<Self, String>;

    /// Decides what becomes of one record.
    fn route(&self, msg: &Message<'_>) -> RouteResult;
}

#[doc(hidden)]
pub mod __private;
