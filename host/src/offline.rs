//! Routing records through a plugin without Kafka: JSON lines in, one JSON
//! line out per input record (`switchyard route`).
//!
//! Input, one record per line, every field optional:
//! `{"topic","partition","offset","timestamp_ms","key","value","headers":[[k,v],...]}`
//! with `key_b64`/`value_b64` for binary data and `[k, {"b64": "..."}]` for a
//! binary header value. Defaults: topic `input`, partition 0, offset = line
//! number.
//!
//! Output: `{"offset":N,"outputs":[...]}` or
//! `{"offset":N,"error":{"kind":"retry|reject|trap|timeout|memory|invalid-output","message":"..."}}`;
//! a line that is not a valid record (not JSON, not UTF-8, a field of the
//! wrong type) gives `{"line":N,"error":{"kind":"input",...}}` and
//! processing goes on.
//!
//! Outputs pass the very checks `switchyard run` applies
//! ([`RouteInstance::route`]): size with headers and framing, allowed
//! targets, partition range. A topic whose partition count was not given
//! is taken to exist (its partitions are not checked).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::plugin::{FailureKind, PartitionCounts};
use crate::record::{Header, SourceRecord};
use crate::route::{RouteInstance, Routed, Topics};
use crate::schema::check::Check;

/// What a run saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Records routed (even to zero outputs).
    pub routed: u64,
    /// Records the plugin or the output checks failed.
    pub failed: u64,
    /// Lines that were not valid records.
    pub malformed: u64,
}

/// The topics the offline router knows: the partition counts it was given.
/// Other topics are taken to exist, with partitions unknown.
#[derive(Debug, Clone, Default)]
pub struct GivenTopics(pub HashMap<String, u32>);

impl PartitionCounts for GivenTopics {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.0.get(topic).copied()
    }
}

impl Topics for GivenTopics {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.0.get(topic).copied()
    }

    fn refreshed_partition_count(&self, topic: &str) -> Option<u32> {
        self.0.get(topic).copied()
    }

    fn unknown_topics_exist(&self) -> bool {
        true
    }
}

/// Routes every line of `input` through `instance`, writing one line per
/// input line to `out`. Blank lines are skipped.
pub fn route_lines(
    instance: &mut RouteInstance,
    mut input: impl BufRead,
    mut out: impl Write,
) -> std::io::Result<Summary> {
    let mut summary = Summary::default();
    let mut bytes = Vec::new();
    let mut line_no = 0_u64;
    loop {
        bytes.clear();
        if input.read_until(b'\n', &mut bytes)? == 0 {
            break;
        }
        line_no += 1;
        let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        let record = match std::str::from_utf8(line)
            .map_err(|e| format!("line {line_no} is not UTF-8: {e}"))
            .and_then(|line| parse_record(line, line_no))
        {
            Ok(record) => Arc::new(record),
            Err(message) => {
                summary.malformed += 1;
                let report =
                    json!({"line": line_no, "error": {"kind": "input", "message": message}});
                writeln!(out, "{report}")?;
                continue;
            }
        };
        // Records read by schema are checked first, as in `run` (a
        // directory of schemas has them at once: nothing is pending).
        let checked = match instance.schemas().map(|s| s.check(&record)) {
            Some(Check::Failed(reason)) => Err(reason),
            Some(Check::Pending { id, why }) => Err(format!(
                "schema {id} is not available{}",
                why.map(|w| format!(": {w}")).unwrap_or_default()
            )),
            Some(Check::Ok) | None => Ok(()),
        };
        if let Err(message) = checked {
            summary.failed += 1;
            let report = json!({"offset": record.offset, "error": {"kind": FailureKind::Schema.as_str(), "message": message}});
            writeln!(out, "{report}")?;
            continue;
        }
        let report = match instance.route(&record) {
            Ok(outputs) => {
                summary.routed += 1;
                let outputs: Vec<Value> = outputs.iter().map(output_json).collect();
                json!({"offset": record.offset, "outputs": outputs})
            }
            Err(failure) => {
                summary.failed += 1;
                json!({"offset": record.offset, "error": {"kind": failure.kind.as_str(), "message": failure.message}})
            }
        };
        writeln!(out, "{report}")?;
    }
    out.flush()?;
    Ok(summary)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputRecord {
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    timestamp_ms: Option<i64>,
    key: Option<String>,
    key_b64: Option<String>,
    value: Option<String>,
    value_b64: Option<String>,
    #[serde(default)]
    headers: Vec<(String, HeaderValue)>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HeaderValue {
    Text(String),
    Binary { b64: String },
}

fn parse_record(line: &str, line_no: u64) -> Result<SourceRecord, String> {
    let input: InputRecord =
        serde_json::from_str(line).map_err(|e| format!("line {line_no}: {e}"))?;
    let bytes = |text: Option<String>, b64: Option<String>, field: &str| match (text, b64) {
        (Some(_), Some(_)) => Err(format!(
            "line {line_no}: both '{field}' and '{field}_b64' are set"
        )),
        (Some(t), None) => Ok(Some(Bytes::from(t))),
        (None, Some(b)) => B64
            .decode(b)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| format!("line {line_no}: '{field}_b64' is not base64: {e}")),
        (None, None) => Ok(None),
    };
    let headers = input
        .headers
        .into_iter()
        .map(|(key, value)| {
            let value =
                match value {
                    HeaderValue::Text(t) => Bytes::from(t),
                    HeaderValue::Binary { b64 } => Bytes::from(B64.decode(b64).map_err(|e| {
                        format!("line {line_no}: header '{key}' is not base64: {e}")
                    })?),
                };
            Ok(Header {
                key: key.into(),
                value,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(SourceRecord {
        topic: input.topic.as_deref().unwrap_or("input").into(),
        partition: input.partition.unwrap_or(0),
        offset: input
            .offset
            .unwrap_or(i64::try_from(line_no).unwrap_or(i64::MAX)),
        timestamp_ms: input.timestamp_ms,
        key: bytes(input.key, input.key_b64, "key")?,
        value: bytes(input.value, input.value_b64, "value")?,
        headers,
        wire_headers: Default::default(),
    })
}

fn output_json(routed: &Routed) -> Value {
    let output = &routed.output;
    let mut obj = serde_json::Map::new();
    obj.insert("topic".into(), (*routed.topic).into());
    obj.insert("partition".into(), output.partition.into());
    put_bytes(&mut obj, "key", output.key());
    put_bytes(&mut obj, "value", output.value());
    let headers: Vec<Value> = output
        .headers()
        .map(|h| match std::str::from_utf8(&h.value) {
            Ok(text) => json!([&*h.key, text]),
            Err(_) => json!([&*h.key, {"b64": B64.encode(&h.value)}]),
        })
        .collect();
    obj.insert("headers".into(), headers.into());
    obj.insert("timestamp_ms".into(), output.timestamp_ms().into());
    Value::Object(obj)
}

fn put_bytes(obj: &mut serde_json::Map<String, Value>, field: &str, bytes: Option<&[u8]>) {
    match bytes.map(std::str::from_utf8) {
        None => {
            obj.insert(field.into(), Value::Null);
        }
        Some(Ok(text)) => {
            obj.insert(field.into(), text.into());
        }
        Some(Err(_)) => {
            obj.insert(
                format!("{field}_b64"),
                B64.encode(bytes.unwrap_or_default()).into(),
            );
        }
    }
}
