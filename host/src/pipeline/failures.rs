//! Records that fail for good: telling the operator (a [`FailureSink`],
//! by default [`LogFailures`]) and the dead-letter record that carries such
//! a record, with headers that say why ([`dead_letter`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::FailurePolicy;
use crate::plugin::RouteFailure;
use crate::record::{Data, Header, Output, OutputHeaders, SourceRecord};
use crate::route::{RouteInstance, Routed, fits};

/// A record the route could not route.
#[derive(Debug)]
pub struct RecordFailure<'a> {
    /// The route's name.
    pub route: &'a str,
    /// The record.
    pub record: &'a SourceRecord,
    /// What went wrong (at the last attempt).
    pub failure: &'a RouteFailure,
    /// Calls of the plugin for the record.
    pub attempts: u32,
    /// What happens to the record now.
    pub policy: &'a FailurePolicy,
}

/// Told about every record that failed for good (after its retries),
/// before the route's failure policy is applied to it.
pub trait FailureSink: Send + Sync {
    /// `failure` happened.
    fn failed(&self, failure: &RecordFailure<'_>);
}

/// Failure lines logged per route per second; past this they are counted
/// and their number logged when the second is over (the metrics count
/// every failed record).
const FAILURE_LOG_BURST: u32 = 20;

/// Logs each failed record (WARN) with its coordinates, reason and fate,
/// at most [`FAILURE_LOG_BURST`] lines per route per second: a plugin
/// failing every record must not flood the log.
#[derive(Debug, Default)]
pub struct LogFailures {
    windows: Mutex<HashMap<String, LogWindow>>,
}

/// One route's current second of failure lines.
#[derive(Debug)]
struct LogWindow {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogWindow {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`, and how many lines the
    /// second that just ended suppressed (to report once).
    fn admit(&mut self, now: Instant) -> (bool, u64) {
        let mut ended = 0;
        if now.duration_since(self.start) >= Duration::from_secs(1) {
            ended = self.suppressed;
            *self = Self::new(now);
        }
        if self.logged < FAILURE_LOG_BURST {
            self.logged += 1;
            (true, ended)
        } else {
            self.suppressed += 1;
            (false, ended)
        }
    }
}

impl FailureSink for LogFailures {
    fn failed(&self, f: &RecordFailure<'_>) {
        let now = Instant::now();
        let (log, suppressed) = {
            let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
            match windows.get_mut(f.route) {
                Some(window) => window.admit(now),
                None => windows
                    .entry(f.route.to_owned())
                    .or_insert_with(|| LogWindow::new(now))
                    .admit(now),
            }
        };
        if suppressed > 0 {
            tracing::warn!(
                route = f.route,
                suppressed,
                "{suppressed} more failed records of this route were not logged in the last second (switchyard_record_failures_total counts them all)"
            );
        }
        if !log {
            return;
        }
        let fate = match f.policy {
            FailurePolicy::DeadLetter(topic) => format!("to dead-letter topic '{topic}'"),
            FailurePolicy::Skip => "skipped".to_owned(),
            FailurePolicy::Stop => "the partition is held at it".to_owned(),
        };
        tracing::warn!(
            route = f.route,
            topic = %f.record.topic,
            partition = f.record.partition,
            offset = f.record.offset,
            kind = %f.failure.kind,
            attempts = f.attempts,
            reason = %f.failure.message,
            "record not routed: {fate}"
        );
    }
}

/// What a dead-letter record that is too large drops, in this order.
#[derive(Debug, Clone, Copy)]
enum Drop {
    Value,
    Headers,
    Key,
}

/// `dlq-error` is cut to this many bytes (a trap message carries what the
/// plugin printed).
const MAX_ERROR_HEADER: usize = 4096;

/// The dead-letter record of `record`: its key, value, timestamp and
/// headers (earlier `dlq-*` headers replaced), plus headers that say why.
///
/// It is never larger than the route's `limits.max_output_bytes` (the
/// producer would refuse it, and the partition could not move on): what
/// does not fit goes, the value first, then the record's own headers, then
/// its key, each named in a `dlq-dropped` header with its size. The
/// headers that say why and where the record came from always stay.
pub(crate) fn dead_letter(
    topic: &str,
    record: &Arc<SourceRecord>,
    failure: &RouteFailure,
    attempts: u32,
    instance: &RouteInstance,
    max_bytes: u64,
) -> Routed {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let (plugin, version) = instance
        .plugin()
        .map_or(("none", "none"), |p| (p.name(), p.version()));
    let mut error = failure.message.clone();
    if error.len() > MAX_ERROR_HEADER {
        let mut end = MAX_ERROR_HEADER;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
        error.push_str("...");
    }
    let why: Vec<Header> = [
        ("dlq-error", error),
        ("dlq-error-kind", failure.kind.dead_letter_kind().to_owned()),
        ("dlq-attempts", attempts.to_string()),
        ("dlq-original-topic", record.topic.to_string()),
        ("dlq-original-partition", record.partition.to_string()),
        ("dlq-original-offset", record.offset.to_string()),
        ("dlq-timestamp", now_ms.to_string()),
        ("dlq-route", instance.route_name().to_owned()),
        ("dlq-plugin", plugin.to_owned()),
        ("dlq-plugin-version", version.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| Header {
        key: key.into(),
        value: Bytes::from(value),
    })
    .collect();
    let own: Vec<Header> = record
        .headers
        .iter()
        .filter(|h| !h.key.starts_with("dlq-"))
        .cloned()
        .collect();
    let mut output = Output::forward(record.clone());
    output.headers = OutputHeaders::Replace(own.iter().chain(&why).cloned().collect());
    // The record as it would go: with a `dlq-dropped` header once something
    // had to go.
    let finished = |output: &Output, dropped: &[String]| {
        let mut finished = output.clone();
        if !dropped.is_empty() {
            let mut headers: Vec<Header> = output.headers().cloned().collect();
            headers.push(Header {
                key: "dlq-dropped".into(),
                value: Bytes::from(dropped.join(",")),
            });
            finished.headers = OutputHeaders::Replace(headers);
        }
        finished
    };
    let mut dropped: Vec<String> = Vec::new();
    let mut candidate = finished(&output, &dropped);
    for step in [Drop::Value, Drop::Headers, Drop::Key] {
        if fits(&candidate, max_bytes).is_ok() {
            break;
        }
        match step {
            Drop::Value => {
                dropped.push(format!(
                    "value:{}",
                    record.value.as_ref().map_or(0, Bytes::len)
                ));
                output.value = Data::Null;
            }
            Drop::Headers => {
                let size: usize = own.iter().map(Header::wire_size).sum();
                dropped.push(format!("headers:{size}"));
                output.headers = OutputHeaders::Replace(why.clone());
            }
            Drop::Key => {
                dropped.push(format!("key:{}", record.key.as_ref().map_or(0, Bytes::len)));
                output.key = Data::Null;
            }
        }
        candidate = finished(&output, &dropped);
    }
    Routed {
        topic: topic.into(),
        output: candidate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_lines_are_limited_per_second_and_the_rest_reported_once() {
        let start = Instant::now();
        let mut window = LogWindow::new(start);
        let admitted = (0..100).filter(|_| window.admit(start).0).count();
        assert_eq!(admitted, FAILURE_LOG_BURST as usize);
        let next = start + Duration::from_secs(1);
        assert_eq!(
            window.admit(next),
            (true, 100 - u64::from(FAILURE_LOG_BURST))
        );
        assert_eq!(window.admit(next), (true, 0), "reported once");
    }
}
