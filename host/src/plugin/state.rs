//! What a plugin's `Store` holds, and the host functions it may call.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::format_err;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{host_api, types};
use super::stdio::{LogBudget, LogLevel};
use crate::record::SourceRecord;

/// Answers the plugins' `partition-count` question.
pub trait PartitionCounts: Send + Sync {
    /// Partition count of `topic`, if known and writable by the route.
    fn partition_count(&self, topic: &str) -> Option<u32>;
}

impl PartitionCounts for HashMap<String, u32> {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.get(topic).copied()
    }
}

/// What a route tells its plugin about the world outside.
#[derive(Clone)]
pub struct RouteContext {
    /// The route's name (in the plugin's log lines).
    pub route: String,
    /// Where outputs without a topic go.
    pub default_target: String,
    /// Partition counts of the topics the route may write to.
    pub partitions: Arc<dyn PartitionCounts>,
    /// The route's budget of plugin log lines, shared by its instances.
    pub log_budget: Arc<LogBudget>,
}

impl RouteContext {
    /// The context of route `route`, with the default budget of log lines
    /// ([`Limits::DEFAULT_LOG_LINES_PER_SECOND`](super::Limits)).
    pub fn new(
        route: impl Into<String>,
        default_target: impl Into<String>,
        partitions: Arc<dyn PartitionCounts>,
    ) -> Self {
        Self {
            route: route.into(),
            default_target: default_target.into(),
            partitions,
            log_budget: Arc::new(LogBudget::new(super::Limits::DEFAULT_LOG_LINES_PER_SECOND)),
        }
    }
}

impl std::fmt::Debug for RouteContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteContext")
            .field("default_target", &self.default_target)
            .finish_non_exhaustive()
    }
}

/// Marker type of the `batch` resource. The handle a plugin gets is a
/// borrow that always means "the records of the current call"; the records
/// themselves sit in [`HostState`], so lending them costs no table
/// insertion.
#[derive(Debug)]
pub struct Batch;

/// The data of one plugin `Store`.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: super::limits::MemoryLimiter,
    /// What the plugin recently wrote to stderr (a panic message, typically).
    pub(super) stderr: Arc<super::stdio::RecentLines>,
    /// Fields of the plugin's log lines.
    pub(super) tag: Arc<super::stdio::LogTag>,
    pub(super) context: RouteContext,
    /// The records lent to the plugin during a `route` call (empty between
    /// calls).
    pub(super) batch: Vec<Arc<SourceRecord>>,
    /// Header names the plugin asked to be handed with every call
    /// (`want-header`), in the order asked.
    pub(super) wanted_headers: Vec<String>,
    /// The plugin asked for the default target's partition count: hand it
    /// over with every call from now on.
    pub(super) give_partitions: bool,
    /// Its stdout and stderr, whose unfinished lines end with each call.
    pub(super) streams: [super::stdio::LogStream; 2],
}

/// Header names one instance may ask to be handed with every call; past
/// this, `want-header` traps (the SDK stops asking well before).
const MAX_WANTED_HEADERS: usize = 16;

impl HostState {
    /// Logs what the plugin left unfinished on stdout and stderr: a call's
    /// output is its own, not the next call's.
    pub(super) fn finish_lines(&self) {
        for stream in &self.streams {
            stream.finish_line();
        }
    }

    fn record(&self, index: u32) -> wasmtime::Result<&SourceRecord> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.batch.get(i))
            .map(|record| &**record)
            .ok_or_else(|| {
                format_err!(
                    "plugin asked for record {index} of a call with {} records",
                    self.batch.len()
                )
            })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl types::HostBatch for HostState {
    fn topic(&mut self, _: Resource<Batch>, record: u32) -> wasmtime::Result<String> {
        Ok(self.record(record)?.topic.to_string())
    }

    fn partition(&mut self, _: Resource<Batch>, record: u32) -> wasmtime::Result<i32> {
        Ok(self.record(record)?.partition)
    }

    fn offset(&mut self, _: Resource<Batch>, record: u32) -> wasmtime::Result<i64> {
        Ok(self.record(record)?.offset)
    }

    fn timestamp_ms(&mut self, _: Resource<Batch>, record: u32) -> wasmtime::Result<Option<i64>> {
        Ok(self.record(record)?.timestamp_ms)
    }

    fn key(&mut self, _: Resource<Batch>, record: u32) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.record(record)?.key.as_deref().map(<[u8]>::to_vec))
    }

    fn value(&mut self, _: Resource<Batch>, record: u32) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.record(record)?.value.as_deref().map(<[u8]>::to_vec))
    }

    fn key_len(&mut self, _: Resource<Batch>, record: u32) -> wasmtime::Result<Option<u32>> {
        Ok(len(self.record(record)?.key.as_deref()))
    }

    fn value_len(&mut self, _: Resource<Batch>, record: u32) -> wasmtime::Result<Option<u32>> {
        Ok(len(self.record(record)?.value.as_deref()))
    }

    fn header(
        &mut self,
        _: Resource<Batch>,
        record: u32,
        key: String,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self
            .record(record)?
            .headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.to_vec()))
    }

    fn headers(&mut self, _: Resource<Batch>, record: u32) -> wasmtime::Result<Vec<types::Header>> {
        Ok(self
            .record(record)?
            .headers
            .iter()
            .map(|h| types::Header {
                key: h.key.clone(),
                value: h.value.to_vec(),
            })
            .collect())
    }

    fn drop(&mut self, _: Resource<Batch>) -> wasmtime::Result<()> {
        // Only borrows are ever handed out; there is nothing to free.
        Ok(())
    }
}

fn len(bytes: Option<&[u8]>) -> Option<u32> {
    // Kafka caps a record far below 4 GiB; saturate rather than wrap.
    bytes.map(|b| u32::try_from(b.len()).unwrap_or(u32::MAX))
}

impl host_api::Host for HostState {
    fn log(&mut self, level: host_api::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            host_api::Level::Trace => LogLevel::Trace,
            host_api::Level::Debug => LogLevel::Debug,
            host_api::Level::Info => LogLevel::Info,
            host_api::Level::Warn => LogLevel::Warn,
            host_api::Level::Error => LogLevel::Error,
        };
        self.tag.emit(level, None, message.as_bytes());
        Ok(())
    }

    fn default_target(&mut self) -> wasmtime::Result<String> {
        Ok(self.context.default_target.clone())
    }

    fn partition_count(&mut self, topic: String) -> wasmtime::Result<Option<u32>> {
        if topic == self.context.default_target {
            self.give_partitions = true;
        }
        Ok(self.context.partitions.partition_count(&topic))
    }

    fn want_header(&mut self, key: String) -> wasmtime::Result<u32> {
        let index = match self.wanted_headers.iter().position(|k| *k == key) {
            Some(index) => index,
            None if self.wanted_headers.len() < MAX_WANTED_HEADERS => {
                self.wanted_headers.push(key);
                self.wanted_headers.len() - 1
            }
            None => {
                return Err(format_err!(
                    "plugin asked for more than {MAX_WANTED_HEADERS} headers with want-header"
                ));
            }
        };
        Ok(u32::try_from(index)?)
    }
}
