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
use switchyard::pipeline::LogFailures;
use switchyard::plugin::PluginEngine;
use switchyard::router::{self, RouterHandle};
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{
    TestRecord, committed, consume, create_topics, create_topics_configured, produce, random_topic,
    wait_until,
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

/// `config` with one worker for all partitions.
fn one_worker(mut config: RouterConfig) -> RouterConfig {
    config.router.workers = Some(1);
    config
}

fn start(config: &RouterConfig) -> RouterHandle {
    router::start(
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
    // One worker routes both partitions: the held one must not hold it.
    let router = start(&one_worker(config(
        &group,
        &src,
        &dst,
        &plugin,
        "on_failure = \"stop\"",
    )));
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
    // and last attempt. One worker routes both partitions: the wait must
    // not hold it.
    let router = start(&one_worker(config(
        &group,
        &src,
        &dst,
        &fixtures::hostile(),
        "on_failure = \"skip\"\n[routes.retry]\nmax_attempts = 2\ninitial_backoff_ms = 60000\nmax_backoff_ms = 60000\njitter = 0.0",
    )));
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
        let error = router::start(
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
    let error = router::start(
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

/// A record of `len` bytes of value.
fn sized(partition: i32, name: &str, len: usize) -> TestRecord {
    let mut value = format!("{name}:").into_bytes();
    value.resize(len, b'.');
    TestRecord {
        value: Some(value),
        ..on(partition, "")
    }
}

/// [`sized`], with bytes that do not compress (the broker's limit is on
/// batches as written, compressed).
fn incompressible(partition: i32, name: &str, len: usize) -> TestRecord {
    let mut value = format!("{name}:").into_bytes();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while value.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        value.push((state >> 56) as u8);
    }
    TestRecord {
        value: Some(value),
        ..on(partition, "")
    }
}

fn name_of(record: &TestRecord) -> &str {
    let value = record.value.as_deref().unwrap_or_default();
    let name = value.split(|&b| b == b':').next().unwrap_or_default();
    std::str::from_utf8(name).unwrap()
}

#[test]
fn outputs_the_broker_refuses_are_dead_lettered_alone_and_their_partition_flows_on() {
    let (src, dst, dlq) = (
        random_topic("refused-in"),
        random_topic("refused-out"),
        random_topic("refused-dlq"),
    );
    create_topics(&[(&src, 2), (&dlq, 1)]).unwrap();
    // The target takes record batches of at most 200 kB.
    create_topics_configured(&[(&dst, 2)], &[("max.message.bytes", "200000")]).unwrap();
    let group = random_topic("group");
    let router = start(&config(
        &group,
        &src,
        &dst,
        &fixtures::hostile(),
        &format!("dead_letter_topic = \"{dlq}\""),
    ));
    let route = router.routes()[0].clone();

    // Partition 0: small records around one too large for the target and
    // one whose output the broker refuses for its timestamp (two hours
    // ahead), all written at once so that they share batches; partition 1
    // flows meanwhile.
    let mut records: Vec<TestRecord> = (0..40).map(|i| sized(0, &format!("a{i}"), 300)).collect();
    records.insert(10, incompressible(0, "large", 300_000));
    records.insert(25, on(0, "future-timestamp"));
    records.extend((0..200).map(|i| sized(1, &format!("b{i}"), 300)));
    produce(&src, &records).unwrap();

    let out = consume(&dst, 240, TIMEOUT).unwrap();
    let zero: Vec<&str> = out
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"p0"))
        .map(name_of)
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
    assert_eq!(zero, expected, "partition 0's records, in order, each once");
    let dead = consume(&dlq, 2, TIMEOUT).unwrap();
    let mut kinds: Vec<(&str, &str, &str)> = dead
        .iter()
        .map(|r| {
            (
                name_of(r),
                r.header_str("dlq-error-kind").unwrap(),
                r.header_str("dlq-error").unwrap(),
            )
        })
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[0].0, "future-timestamp");
    assert_eq!(kinds[1].0, "large");
    for (name, kind, error) in &kinds {
        assert_eq!(*kind, "broker-refused", "{name}");
        assert!(
            error.starts_with(&format!("output 0 to '{dst}' refused by the broker: ")),
            "{name}: {error}"
        );
    }
    assert!(kinds[0].2.contains("timestamp"), "{kinds:?}");
    assert!(kinds[1].2.contains("too large"), "{kinds:?}");

    // Offsets move past all of it.
    wait_until(TIMEOUT, || {
        committed(&group, &src, 2).is_ok_and(|c| c == HashMap::from([(0, 42), (1, 200)]))
    })
    .unwrap();
    let stats = route.stats.snapshot();
    assert_eq!(stats.dead_lettered, 2, "{stats:?}");
    assert_eq!(stats.failures.get("broker-refused"), Some(&2), "{stats:?}");
    router.shutdown();
    router.join();
}

#[test]
fn a_dead_letter_record_too_large_to_produce_drops_its_value_and_says_so() {
    let (src, dst, dlq) = (
        random_topic("near-in"),
        random_topic("near-out"),
        random_topic("near-dlq"),
    );
    create_topics(&[(&src, 1), (&dst, 1), (&dlq, 1)]).unwrap();
    let group = random_topic("group");
    let router = start(&config(
        &group,
        &src,
        &dst,
        &fixtures::hello(),
        &format!("dead_letter_topic = \"{dlq}\""),
    ));
    // 1,040,000 bytes: the broker takes it, the route's outputs may have
    // at most 1,000,000 (limits.max_output_bytes), and so may its
    // dead-letter records.
    let records = [
        sized(0, "before", 100),
        sized(0, "near", 1_040_000).header("trace", "t-1"),
        sized(0, "after", 100),
    ];
    produce(&src, &records).unwrap();
    let out = consume(&dst, 2, TIMEOUT).unwrap();
    assert_eq!(
        out.iter().map(name_of).collect::<Vec<_>>(),
        ["before", "after"]
    );
    let dead = consume(&dlq, 1, TIMEOUT).unwrap();
    let record = &dead[0];
    assert_eq!(record.value, None, "the value was dropped");
    assert_eq!(record.key.as_deref(), Some(&b"p0"[..]), "the key stays");
    assert_eq!(record.header_str("trace"), Some("t-1"), "its headers stay");
    assert_eq!(record.header_str("dlq-dropped"), Some("value:1040000"));
    assert_eq!(record.header_str("dlq-error-kind"), Some("invalid-output"));
    assert_eq!(record.header_str("dlq-original-offset"), Some("1"));
    wait_until(TIMEOUT, || {
        committed(&group, &src, 1).is_ok_and(|c| c == HashMap::from([(0, 3)]))
    })
    .unwrap();
    router.shutdown();
    router.join();
}

/// `switchyard route` and `switchyard run` apply one check to outputs: the
/// same plugin answers are refused by both, with the same kind and message,
/// and the rest are routed by both to the same topics.
#[test]
fn switchyard_route_refuses_exactly_the_outputs_run_refuses() {
    use switchyard::offline::{GivenTopics, route_lines};
    use switchyard::route::Route;

    let [src, dst, other, dlq] =
        ["in", "out", "other", "dlq"].map(|t| random_topic(&format!("check-{t}")));
    create_topics(&[(&src, 1), (&dst, 3), (&other, 2), (&dlq, 1)]).unwrap();
    // Named as `switchyard route` names its route: the messages name it.
    let group = random_topic("group");
    let config = switchyard_tests::router_config(
        &group,
        &format!(
            "[[routes]]\nname = \"offline\"\nsource_topics = [\"{src}\"]\nplugin = \"{}\"\ndefault_target = \"{dst}\"\nallowed_targets = [\"{dst}\", \"{other}\"]\ndead_letter_topic = \"{dlq}\"\n",
            fixtures::hostile().display()
        ),
    )
    .unwrap();
    let values = [
        "ok",
        "bad-topic",
        "bad-partition",
        "huge-output",
        "exact-limit",
        "empty-headers:100001",
        "empty-headers:100000",
    ];

    // Through the router, on the broker.
    let router = start(&config);
    produce(&src, &values.map(|v| on(0, v))).unwrap();
    let routed = consume(&dst, 2, TIMEOUT).unwrap();
    let dead = consume(&dlq, 5, TIMEOUT).unwrap();
    router.shutdown();
    router.join();
    let mut by_run: HashMap<i64, String> = HashMap::new();
    for record in &dead {
        let offset = record.header_str("dlq-original-offset").unwrap();
        let why = format!(
            "{}: {}",
            record.header_str("dlq-error-kind").unwrap(),
            record.header_str("dlq-error").unwrap()
        );
        by_run.insert(offset.parse().unwrap(), why);
    }
    for record in &routed {
        let offset = values
            .iter()
            .position(|v| *v == record.value_str())
            .unwrap();
        by_run.insert(offset as i64, format!("routed to {dst}"));
    }

    // Through `switchyard route`'s path, the cluster's topics given, the
    // same records (keyed as `on` keys them).
    let engine = PluginEngine::new().unwrap();
    let route = Arc::new(Route::new(
        config.routes[0].clone(),
        Some(engine.load(&fixtures::hostile()).unwrap()),
        Arc::new(GivenTopics(
            [(dst.clone(), 3), (other.clone(), 2), (dlq.clone(), 1)].into(),
        )),
    ));
    let input: String = values
        .iter()
        .enumerate()
        .map(|(offset, value)| {
            format!("{{\"offset\":{offset},\"key\":\"p0\",\"value\":\"{value}\"}}\n")
        })
        .collect();
    let mut out = Vec::new();
    route_lines(&mut route.instance().unwrap(), input.as_bytes(), &mut out).unwrap();
    let mut by_route: HashMap<i64, String> = HashMap::new();
    for line in String::from_utf8(out).unwrap().lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        let offset = line["offset"].as_i64().unwrap();
        let what = match line.get("outputs") {
            Some(outputs) => format!("routed to {}", outputs[0]["topic"].as_str().unwrap()),
            None => format!(
                "{}: {}",
                line["error"]["kind"].as_str().unwrap(),
                line["error"]["message"].as_str().unwrap()
            ),
        };
        by_route.insert(offset, what);
    }

    assert_eq!(by_run.len(), values.len(), "{by_run:#?}");
    assert_eq!(by_run, by_route);
    // Every check had its say.
    for refused in [
        "not an allowed target",
        "out of range",
        "headers",
        "bytes with its headers",
    ] {
        assert!(
            by_run.values().any(|why| why.contains(refused)),
            "{refused}: {by_run:#?}"
        );
    }
}
