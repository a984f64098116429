//! A plugin call routes a batch of records: one answer per record, in
//! order; a call that fails as a whole names no record and leaves the next
//! call a fresh instance.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard::plugin::{FailureKind, Limits, PluginEngine, PluginInstance, RouteContext};
use switchyard::record::SourceRecord;
use switchyard_plugin_fixtures as fixtures;

fn misbehave(limits: Limits) -> PluginInstance {
    let engine = PluginEngine::new().unwrap();
    let plugin = engine.load(&fixtures::misbehave()).unwrap();
    let context = RouteContext::new(
        "r".to_owned(),
        "output".to_owned(),
        Arc::new(HashMap::from([("output".to_owned(), 1)])),
    );
    plugin.instantiate(&[], context, limits).unwrap()
}

/// Records at offsets 0, 1, ... with these values.
fn records(values: &[&str]) -> Vec<Arc<SourceRecord>> {
    (0..)
        .zip(values)
        .map(|(offset, value)| {
            Arc::new(SourceRecord {
                topic: "input".into(),
                partition: 0,
                offset,
                timestamp_ms: None,
                key: None,
                value: Some(Bytes::copy_from_slice(value.as_bytes())),
                headers: Vec::new(),
                wire_headers: Default::default(),
            })
        })
        .collect()
}

/// Each answer as the source offset of its one output, or its failure.
fn summary(answers: switchyard::plugin::Answers) -> Vec<Result<i64, FailureKind>> {
    answers
        .into_iter()
        .map(|answer| match answer {
            Ok(outputs) => {
                assert_eq!(outputs.len(), 1);
                Ok(outputs[0].source.offset)
            }
            Err(failure) => Err(failure.kind),
        })
        .collect()
}

#[test]
fn a_call_answers_each_record_in_order() {
    let mut instance = misbehave(Limits::default());
    let batch = records(&["a", "reject", "b", "retry", "c"]);
    let answers = summary(instance.route_batch(&batch).unwrap());
    assert_eq!(
        answers,
        [
            Ok(0),
            Err(FailureKind::Reject),
            Ok(2),
            Err(FailureKind::Retry),
            Ok(4)
        ]
    );
}

#[test]
fn a_trap_fails_the_whole_call_and_the_next_call_starts_on_a_fresh_instance() {
    let mut instance = misbehave(Limits::default());
    let failure = instance
        .route_batch(&records(&["a", "b", "trap", "c"]))
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Trap);
    assert!(
        failure.message.contains("unreachable"),
        "{}",
        failure.message
    );
    let answers = summary(instance.route_batch(&records(&["a", "b", "c"])).unwrap());
    assert_eq!(answers, [Ok(0), Ok(1), Ok(2)]);
}

#[test]
fn the_time_limit_applies_to_the_call_as_a_whole() {
    let limits = Limits {
        route_timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let mut instance = misbehave(limits);
    let failure = instance
        .route_batch(&records(&["a", "loop", "b"]))
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Timeout);
    // One record at a time, the record at fault is the one that fails.
    assert_eq!(instance.route(&records(&["a"])[0]).map(|o| o.len()), Ok(1));
    assert_eq!(
        instance.route(&records(&["loop"])[0]).unwrap_err().kind,
        FailureKind::Timeout
    );
}

#[test]
fn a_call_of_no_records_answers_nothing() {
    let mut instance = misbehave(Limits::default());
    assert!(instance.route_batch(&[]).unwrap().is_empty());
}
