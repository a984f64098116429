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
//! a line that is not a valid record gives `{"line":N,"error":{"kind":"input",...}}`
//! and processing goes on.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::plugin::{FailureKind, PluginInstance, RouteFailure};
use crate::record::{Header, Output, SourceRecord};

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

/// Topic facts the offline router checks outputs against.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Where outputs without a topic go.
    pub default_target: String,
    /// Known partition counts.
    pub partitions: HashMap<String, u32>,
}

/// Routes every line of `input` through `instance`, writing one line per
/// input line to `out`. Blank lines are skipped.
pub fn route_lines(
    instance: &mut PluginInstance,
    targets: &Targets,
    input: impl BufRead,
    mut out: impl Write,
) -> std::io::Result<Summary> {
    let mut summary = Summary::default();
    for (index, line) in input.lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = match parse_record(&line, line_no) {
            Ok(record) => Arc::new(record),
            Err(message) => {
                summary.malformed += 1;
                let report =
                    json!({"line": line_no, "error": {"kind": "input", "message": message}});
                writeln!(out, "{report}")?;
                continue;
            }
        };
        let result = instance
            .route(&record)
            .and_then(|outputs| check_outputs(&outputs, targets).map(|()| outputs));
        let report = match result {
            Ok(outputs) => {
                summary.routed += 1;
                let outputs: Vec<Value> = outputs.iter().map(|o| output_json(o, targets)).collect();
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

/// Checks outputs against what is known of their topics.
pub fn check_outputs(outputs: &[Output], targets: &Targets) -> Result<(), RouteFailure> {
    for (i, output) in outputs.iter().enumerate() {
        let topic = output.topic.as_deref().unwrap_or(&targets.default_target);
        if topic.is_empty() {
            return Err(invalid(format!("output {i}: empty topic name")));
        }
        if let Some(p) = output.partition {
            if p < 0 {
                return Err(invalid(format!("output {i}: negative partition {p}")));
            }
            if let Some(&count) = targets.partitions.get(topic)
                && p.unsigned_abs() >= count
            {
                return Err(invalid(format!(
                    "output {i}: partition {p} is out of range for topic '{topic}' ({count} partitions)"
                )));
            }
        }
    }
    Ok(())
}

fn invalid(message: String) -> RouteFailure {
    RouteFailure::new(FailureKind::Invalid, message)
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
            Ok(Header { key, value })
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
    })
}

fn output_json(output: &Output, targets: &Targets) -> Value {
    let mut obj = serde_json::Map::new();
    let topic = output.topic.as_deref().unwrap_or(&targets.default_target);
    obj.insert("topic".into(), topic.into());
    obj.insert("partition".into(), output.partition.into());
    put_bytes(&mut obj, "key", output.key());
    put_bytes(&mut obj, "value", output.value());
    let headers: Vec<Value> = output
        .headers()
        .map(|h| match std::str::from_utf8(&h.value) {
            Ok(text) => json!([h.key, text]),
            Err(_) => json!([h.key, {"b64": B64.encode(&h.value)}]),
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
