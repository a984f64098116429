//! What a plugin's `Store` holds, and the host functions it may call.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::format_err;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{host_api, schemas_api, types};
use super::stdio::{LogBudget, LogLevel};
use crate::record::SourceRecord;
use crate::schema::check::RecordSchemas;
use crate::schema::store::{Lookup, SubjectLookup};
use crate::schema::{Compiled, Format, wire};

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
    /// The route's schemas (`[schemas]`), and which parts of its records
    /// it reads by schema.
    pub schemas: Option<RecordSchemas>,
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
            schemas: None,
        }
    }

    /// The context with `schemas`.
    #[must_use]
    pub fn with_schemas(mut self, schemas: RecordSchemas) -> Self {
        self.schemas = Some(schemas);
        self
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
            .find(|h| *h.key == *key)
            .map(|h| h.value.to_vec()))
    }

    fn headers(&mut self, _: Resource<Batch>, record: u32) -> wasmtime::Result<Vec<types::Header>> {
        Ok(self
            .record(record)?
            .headers
            .iter()
            .map(|h| types::Header {
                key: h.key.to_string(),
                value: h.value.to_vec(),
            })
            .collect())
    }

    fn schema_id(
        &mut self,
        _: Resource<Batch>,
        record: u32,
        part: types::Part,
    ) -> wasmtime::Result<Option<u32>> {
        Ok(match self.framed(record, part)? {
            Ok((_, framed)) => wire::split(framed).ok().map(|(id, _)| id),
            Err(_) => None,
        })
    }

    fn decoded(
        &mut self,
        _: Resource<Batch>,
        record: u32,
        part: types::Part,
    ) -> wasmtime::Result<Result<String, String>> {
        let (schemas, framed) = match self.framed(record, part)? {
            Ok(found) => found,
            Err(why) => return Ok(Err(why)),
        };
        Ok(Self::schema_of(schemas, framed).and_then(|schema| {
            schema
                .decode(framed)
                .map(|value| value.to_string())
                .map_err(|e| e.to_string())
        }))
    }

    fn field(
        &mut self,
        _: Resource<Batch>,
        record: u32,
        part: types::Part,
        path: String,
    ) -> wasmtime::Result<Result<Option<types::Field>, String>> {
        self.field_of(record, part, &path)
    }

    fn fields(
        &mut self,
        _: Resource<Batch>,
        part: types::Part,
        path: String,
    ) -> wasmtime::Result<Vec<Result<Option<types::Field>, String>>> {
        (0..self.batch.len())
            .map(|i| self.field_of(u32::try_from(i)?, part, &path))
            .collect()
    }

    fn drop(&mut self, _: Resource<Batch>) -> wasmtime::Result<()> {
        // Only borrows are ever handed out; there is nothing to free.
        Ok(())
    }
}

impl HostState {
    /// Record `index`'s `part`, framed, on a route that reads it by
    /// schema.
    fn framed(
        &self,
        index: u32,
        part: types::Part,
    ) -> wasmtime::Result<Result<(&RecordSchemas, &[u8]), String>> {
        let record = self.record(index)?;
        let (name, read, bytes) = match part {
            types::Part::Key => ("key", "key_format", &record.key),
            types::Part::Value => ("value", "value_format", &record.value),
        };
        let Some(schemas) = self.context.schemas.as_ref().filter(|s| match part {
            types::Part::Key => s.keys(),
            types::Part::Value => s.values(),
        }) else {
            return Ok(Err(format!(
                "route '{}' does not read record {name}s by schema ({read} = \"schema-registry\")",
                self.context.route
            )));
        };
        match bytes {
            Some(bytes) => Ok(Ok((schemas, bytes))),
            None => Ok(Err(format!("the record's {name} is null"))),
        }
    }

    /// The compiled schema of `framed`, which the router checked before the
    /// call.
    fn schema_of(schemas: &RecordSchemas, framed: &[u8]) -> Result<Arc<Compiled>, String> {
        let (id, _) = wire::split(framed).map_err(|e| e.to_string())?;
        match schemas.store().lookup(id) {
            Lookup::Ready(schema) => Ok(schema),
            Lookup::Failed(reason) => Err(reason.to_string()),
            Lookup::Pending(_) => Err(format!("schema {id} is not here yet")),
        }
    }

    fn field_of(
        &self,
        index: u32,
        part: types::Part,
        path: &str,
    ) -> wasmtime::Result<Result<Option<types::Field>, String>> {
        let (schemas, framed) = match self.framed(index, part)? {
            Ok(found) => found,
            Err(why) => return Ok(Err(why)),
        };
        let segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('.').collect()
        };
        Ok(Self::schema_of(schemas, framed).and_then(|schema| {
            schema
                .field(framed, &segments)
                .map(|found| found.map(field))
                .map_err(|e| e.to_string())
        }))
    }
}

/// A decoded JSON value as a WIT field.
fn field(value: serde_json::Value) -> types::Field {
    use serde_json::Value;
    match value {
        Value::Null => types::Field::Null,
        Value::Bool(b) => types::Field::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => types::Field::Integer(i),
            None => types::Field::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => types::Field::Text(s),
        other @ (Value::Array(_) | Value::Object(_)) => types::Field::Json(other.to_string()),
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

impl schemas_api::Host for HostState {
    fn encode(
        &mut self,
        schema: schemas_api::SchemaRef,
        message: Option<String>,
        json: String,
    ) -> wasmtime::Result<Result<Vec<u8>, schemas_api::EncodeError>> {
        use schemas_api::EncodeError;
        let being_fetched = |what: String, why: Option<Arc<str>>| {
            EncodeError::NotReady(match why {
                Some(why) => format!("{what} is being fetched: {why}"),
                None => format!("{what} is being fetched"),
            })
        };
        let Some(schemas) = &self.context.schemas else {
            return Ok(Err(EncodeError::Invalid(
                "the router has no schema source: configure [schemas]".to_owned(),
            )));
        };
        let store = schemas.store();
        let id = match schema {
            schemas_api::SchemaRef::Id(id) => id,
            schemas_api::SchemaRef::Register(new) => {
                if !schemas.registers() {
                    return Ok(Err(EncodeError::Invalid(format!(
                        "route '{}' does not register schemas: register subject '{}' beforehand, or set register_schemas = true on the route",
                        self.context.route, new.subject
                    ))));
                }
                let format = match new.format {
                    schemas_api::SchemaFormat::Avro => Format::Avro,
                    schemas_api::SchemaFormat::Protobuf => Format::Protobuf,
                    schemas_api::SchemaFormat::Json => Format::Json,
                };
                match store.register(&new.subject, format, &new.text) {
                    SubjectLookup::Ready(id) => id,
                    SubjectLookup::Failed(reason) => {
                        return Ok(Err(EncodeError::Invalid(reason.to_string())));
                    }
                    SubjectLookup::Pending(why) => {
                        let what =
                            format!("the schema to register under subject '{}'", new.subject);
                        return Ok(Err(EncodeError::NotReady(match why {
                            Some(why) => format!("{what} is being registered: {why}"),
                            None => format!("{what} is being registered"),
                        })));
                    }
                }
            }
            schemas_api::SchemaRef::Subject(subject) => match store.latest(&subject) {
                SubjectLookup::Ready(id) => id,
                SubjectLookup::Failed(reason) => {
                    return Ok(Err(EncodeError::Invalid(reason.to_string())));
                }
                SubjectLookup::Pending(why) => {
                    let what = format!("the latest schema of subject '{subject}'");
                    return Ok(Err(being_fetched(what, why)));
                }
            },
        };
        let compiled = match store.lookup(id) {
            Lookup::Ready(compiled) => compiled,
            Lookup::Failed(reason) => return Ok(Err(EncodeError::Invalid(reason.to_string()))),
            Lookup::Pending(why) => return Ok(Err(being_fetched(format!("schema {id}"), why))),
        };
        let value: serde_json::Value = match serde_json::from_str(&json) {
            Ok(value) => value,
            Err(e) => {
                return Ok(Err(EncodeError::Invalid(format!(
                    "the value to write is not JSON: {e}"
                ))));
            }
        };
        Ok(compiled.encode(&value, message.as_deref()).map_err(|e| {
            EncodeError::Invalid(format!("schema {id} ({}): {e}", compiled.format().name()))
        }))
    }
}
