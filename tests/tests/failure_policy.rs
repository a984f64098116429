//! What a route does with records that fail for good when it has no
//! dead-letter topic (`skip`, `stop`), and plugins that cannot start, on
//! the real broker.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code"
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard::config::RouterConfig;
use switchyard::pipeline::{self, LogFailures, RouterHandle};
use switchyard::plugin::PluginEngine;
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{
    TestRecord, committed, consume, create_topics, produce, random_topic, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn config(group: &str, src: &str, dst: &str, plugin: &Path, extra: &str) -> RouterConfig {
    switchyard_tests::router_config(
        group,
        &format!(
            "[[routes]]\nname = \"r\"\nsource_topics = [\"{src}\"]\nplugin = \"{}\"\ndefault_target = \"{dst}\"\n{extra}\n",
            plugin.display()
        ),
    )
    .unwrap()
}

fn start(config: &RouterConfig) -> RouterHandle {
    pipeline::start(
        config,
        &PluginEngine::new().unwrap(),
        Arc::new(LogFailures::default()),
    )
    .unwrap()
}

fn values(records: &[TestRecord], partition: i32) -> Vec<&str> {
    records
        .iter()
        .filter(|r| r.key.as_deref() == Some(format!("p{partition}").as_bytes()))
        .map(TestRecord::value_str)
        .collect()
}

fn on(partition: i32, value: &str) -> TestRecord {
    TestRecord::new(&format!("p{partition}"), value).on_partition(partition)
}

#[test]
fn skip_logs_and_counts_failed_records_and_moves_on() {
    let (src, dst) = (random_topic("skip-in"), random_topic("skip-out"));
    create_topics(&[(&src, 1), (&dst, 1)]).unwrap();
    let group = random_topic("group");
    let router = start(&config(
        &group,
        &src,
        &dst,
        &fixtures::hostile(),
        "on_failure = \"skip\"",
    ));
    let input = ["a", "reject", "b", "panic", "c", "retry", "d"].map(|v| on(0, v));
    produce(&src, &input).unwrap();

    let out = consume(&dst, 4, TIMEOUT).unwrap();
    assert_eq!(values(&out, 0), ["a", "b", "c", "d"]);
    wait_until(TIMEOUT, || {
        committed(&group, &src, 1).is_ok_and(|c| c == HashMap::from([(0, 7)]))
    })
    .unwrap();
    let stats = router.routes()[0].stats.snapshot();
    assert_eq!(stats.skipped, 3);
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(
        stats.failures,
        [("reject", 1), ("retry", 1), ("trap", 1)].into()
    );
    router.shutdown();
    router.join();
}

#[test]
fn stop_holds_the_partition_at_the_failed_record_until_a_new_plugin_version_is_swapped_in() {
    let (src, dst) = (random_topic("stop-in"), random_topic("stop-out"));
    create_topics(&[(&src, 2), (&dst, 2)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("rules.wasm");
    std::fs::copy(fixtures::hostile(), &plugin).unwrap();
    let group = random_topic("group");
    let router = start(&config(
        &group,
        &src,
        &dst,
        &plugin,
        "on_failure = \"stop\"",
    ));
    let route = router.routes()[0].clone();

    let held = ["a", "reject", "b", "c"].map(|v| on(0, v));
    let flowing: Vec<TestRecord> = (0..200).map(|i| on(1, &format!("f{i}"))).collect();
    produce(&src, &held).unwrap();
    produce(&src, &flowing).unwrap();

    // Partition 0 holds at the rejected record; partition 1 flows on.
    wait_until(TIMEOUT, || {
        route
            .halted()
            .get(&(src.clone(), 0))
            .is_some_and(|h| h.offset == Some(1) && h.reason == "reject: asked to reject")
    })
    .unwrap();
    let out = consume(&dst, 1 + flowing.len(), TIMEOUT).unwrap();
    assert_eq!(values(&out, 0), ["a"], "nothing past the held record");
    assert_eq!(values(&out, 1).len(), flowing.len());
    wait_until(TIMEOUT, || {
        committed(&group, &src, 2).is_ok_and(|c| c == HashMap::from([(0, 1), (1, 200)]))
    })
    .unwrap();
    assert_eq!(route.halted().len(), 1);

    // A fixed plugin (one that forwards everything) is swapped in: the
    // held record is routed again, then the rest, in order.
    let next = dir.path().join("next");
    std::fs::copy(fixtures::hello(), &next).unwrap();
    std::fs::rename(&next, &plugin).unwrap();
    let out = consume(&dst, 4 + flowing.len(), TIMEOUT).unwrap();
    assert_eq!(values(&out, 0), ["a", "reject", "b", "c"]);
    wait_until(TIMEOUT, || {
        committed(&group, &src, 2).is_ok_and(|c| c == HashMap::from([(0, 4), (1, 200)]))
    })
    .unwrap();
    assert!(route.halted().is_empty());
    let stats = route.stats.snapshot();
    assert_eq!(stats.failures, [("reject", 1)].into());
    assert_eq!((stats.skipped, stats.dead_lettered), (0, 0));
    router.shutdown();
    router.join();
}

#[test]
fn a_record_backing_off_holds_only_its_partition_and_does_not_delay_a_stop() {
    let (src, dst) = (random_topic("backoff-in"), random_topic("backoff-out"));
    create_topics(&[(&src, 2), (&dst, 2)]).unwrap();
    let group = random_topic("group");
    // After its first `retry` the record waits a minute before its second
    // and last attempt.
    let router = start(&config(
        &group,
        &src,
        &dst,
        &fixtures::hostile(),
        "on_failure = \"skip\"\n[routes.retry]\nmax_attempts = 2\ninitial_backoff_ms = 60000\nmax_backoff_ms = 60000\njitter = 0.0",
    ));
    let route = router.routes()[0].clone();
    produce(&src, &["a", "retry", "b"].map(|v| on(0, v))).unwrap();
    let flowing: Vec<TestRecord> = (0..200).map(|i| on(1, &format!("f{i}"))).collect();
    produce(&src, &flowing).unwrap();

    wait_until(TIMEOUT, || route.stats.snapshot().retries == 1).unwrap();
    let out = consume(&dst, 1 + flowing.len(), TIMEOUT).unwrap();
    assert_eq!(
        values(&out, 0),
        ["a"],
        "'b' waits behind the retried record"
    );
    assert_eq!(values(&out, 1).len(), flowing.len(), "partition 1 flows");
    wait_until(TIMEOUT, || {
        committed(&group, &src, 2).is_ok_and(|c| c == HashMap::from([(0, 1), (1, 200)]))
    })
    .unwrap();

    // Stopping cuts the wait short: the worker is woken, not left to sleep
    // out its minute (the bound is far below it).
    let stopping = std::time::Instant::now();
    router.shutdown();
    router.join();
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "stopping waited for the backoff: {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        route.stats.snapshot().skipped,
        0,
        "the record was not given up"
    );
    assert_eq!(
        committed(&group, &src, 2).unwrap()[&0],
        1,
        "the retried record is consumed again after a restart"
    );
}

#[test]
fn a_plugin_whose_init_fails_stops_the_start_with_the_file_and_the_reason() {
    let (src, dst) = (random_topic("init-in"), random_topic("init-out"));
    create_topics(&[(&src, 1), (&dst, 1)]).unwrap();
    let plugin = fixtures::hostile();
    let cases = [
        ("panic", "failed in init", "init asked to panic"),
        (
            "refuse",
            "refused its configuration",
            "init asked to refuse",
        ),
        ("loop", "failed in init", "plugin ran past its time limit"),
    ];
    for (how, what, reason) in cases {
        let config = config(
            &random_topic("group"),
            &src,
            &dst,
            &plugin,
            &format!(
                "on_failure = \"skip\"\nplugin_config = {{ init = \"{how}\" }}\n[routes.limits]\ninit_timeout_ms = 300"
            ),
        );
        let error = pipeline::start(
            &config,
            &PluginEngine::new().unwrap(),
            Arc::new(LogFailures::default()),
        )
        .err()
        .unwrap_or_else(|| panic!("init '{how}': the router started"))
        .to_string();
        let expected = format!("route 'r': plugin '{}' {what}: ", plugin.display());
        assert!(
            error.starts_with(&expected) && error.contains(reason),
            "init '{how}': {error}"
        );
    }
}

#[test]
fn a_dead_letter_topic_that_does_not_exist_stops_the_start() {
    let (src, dst) = (random_topic("dlq-in"), random_topic("dlq-out"));
    create_topics(&[(&src, 1), (&dst, 1)]).unwrap();
    let config = config(
        &random_topic("group"),
        &src,
        &dst,
        &fixtures::hello(),
        "dead_letter_topic = \"no-such-topic\"",
    );
    let error = pipeline::start(
        &config,
        &PluginEngine::new().unwrap(),
        Arc::new(LogFailures::default()),
    )
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        error,
        "route 'r': dead_letter_topic 'no-such-topic' does not exist on the cluster"
    );
}
