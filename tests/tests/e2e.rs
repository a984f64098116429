//! End-to-end: the router against a real Kafka-API broker on loopback.
//! Every test uses its own random topics and consumer group.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code"
)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard::config::RouterConfig;
use switchyard::pipeline::{FailureSink, RecordFailure};
use switchyard::plugin::PluginEngine;
use switchyard::router::{self, RouterHandle};
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{
    TestRecord, broker, committed, consume, create_topics, produce, random_topic,
};

const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Failed records, as (offset, kind, message).
#[derive(Default)]
struct Failures(Mutex<Vec<(i64, String, String)>>);

impl FailureSink for Failures {
    fn failed(&self, f: &RecordFailure<'_>) {
        self.0.lock().unwrap().push((
            f.record.offset,
            f.failure.kind.to_string(),
            f.failure.message.clone(),
        ));
    }
}

impl Failures {
    fn list(&self) -> Vec<(i64, String, String)> {
        let mut list = self.0.lock().unwrap().clone();
        list.sort();
        list
    }
}

/// A config with the test broker, a random group and `routes` (TOML).
fn config(group: &str, routes: &str) -> RouterConfig {
    switchyard_tests::router_config(group, routes).unwrap()
}

/// One route from `source` to `target` through `plugin`, in `group`.
fn route_in_group(group: &str, source: &str, plugin: &Path, target: &str) -> RouterConfig {
    config(
        group,
        &format!(
            "[[routes]]\nname = \"r\"\nsource_topics = [\"{source}\"]\nplugin = \"{}\"\ndefault_target = \"{target}\"\non_failure = \"skip\"\n",
            plugin.display()
        ),
    )
}

/// One route from `source` to `target` through `plugin`, in a new group.
fn one_route(source: &str, plugin: &Path, target: &str) -> RouterConfig {
    route_in_group(&random_topic("group"), source, plugin, target)
}

fn start(config: &RouterConfig) -> (RouterHandle, Arc<Failures>) {
    let failures = Arc::new(Failures::default());
    let engine = PluginEngine::new().unwrap();
    let handle = router::start(config, &engine, failures.clone()).unwrap();
    (handle, failures)
}

fn stop(handle: RouterHandle) {
    handle.shutdown();
    handle.join();
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[test]
fn tenant_partitioner_puts_10000_records_where_fnv1a_says_in_source_order() {
    let (src, dst) = (random_topic("orders"), random_topic("by-tenant"));
    create_topics(&[(&src, 3), (&dst, 6)]).unwrap();
    let tenants = [
        "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne",
    ];
    let inputs: Vec<TestRecord> = (0..10_000)
        .map(|i| {
            let partition = i % 3;
            TestRecord::new(&format!("order-{i}"), &format!(r#"{{"n":{i}}}"#))
                .header("tenant-id", tenants[(i as usize * 31 / 7) % tenants.len()])
                .header("seq", &format!("{partition}:{:06}", i / 3))
                .on_partition(partition)
        })
        .collect();
    produce(&src, &inputs).unwrap();

    let group = random_topic("group");
    let config = route_in_group(&group, &src, &fixtures::tenant_partitioner(), &dst);
    let (router, failures) = start(&config);
    let outputs = consume(&dst, inputs.len(), READ_TIMEOUT).unwrap();
    stop(router);

    assert_eq!(failures.list(), vec![]);
    assert_eq!(outputs.len(), inputs.len(), "every record exactly once");
    let mut seen = std::collections::HashSet::new();
    // Per output partition, the records of each source partition must keep
    // their source order.
    let mut last: HashMap<(i32, String), String> = HashMap::new();
    for out in &outputs {
        let tenant = out.header_str("tenant-id").unwrap();
        let expected = (fnv1a_32(tenant.as_bytes()) % 6) as i32;
        assert_eq!(out.partition, Some(expected), "tenant {tenant}");
        let seq = out.header_str("seq").unwrap().to_owned();
        assert!(seen.insert(seq.clone()), "duplicate {seq}");
        let (src_partition, _) = seq.split_once(':').unwrap();
        let key = (expected, src_partition.to_owned());
        if let Some(prev) = last.get(&key) {
            assert!(
                *prev < seq,
                "{seq} after {prev} on output partition {expected}"
            );
        }
        last.insert(key, seq);
    }
    let original: HashMap<Vec<u8>, &TestRecord> =
        inputs.iter().map(|r| (r.key.clone().unwrap(), r)).collect();
    for out in &outputs {
        let input = original[out.key.as_ref().unwrap()];
        assert_eq!((&out.value, &out.headers), (&input.value, &input.headers));
    }
    let offsets = committed(&group, &src, 3).unwrap();
    let per_partition = inputs.len() as i64 / 3;
    assert_eq!(
        offsets,
        HashMap::from([
            (0, per_partition + 1),
            (1, per_partition),
            (2, per_partition)
        ])
    );
}

#[test]
fn envelope_router_sends_each_type_to_its_topic_and_skips_malformed_records_visibly() {
    let (src, created, paid) = (
        random_topic("events"),
        random_topic("created"),
        random_topic("paid"),
    );
    create_topics(&[(&src, 1), (&created, 1), (&paid, 2)]).unwrap();
    let envelope = |kind: &str, i: usize| {
        format!(
            r#"{{"type":"{kind}","version":1,"timestamp":"2026-11-28T00:00:00Z","payload":{{"i":{i}}}}}"#
        )
    };
    let mut inputs = Vec::new();
    for i in 0..300 {
        let kind = ["order.created", "order.paid", "order.lost"][i % 3];
        inputs.push(TestRecord::new(&format!("e{i}"), &envelope(kind, i)));
    }
    inputs.push(TestRecord::new("bad1", "{not json"));
    inputs.push(TestRecord::new("bad2", r#"{"payload":{}}"#));
    inputs.push(TestRecord::new("after", &envelope("order.paid", 999)));
    produce(&src, &inputs).unwrap();

    let config = config(
        &random_topic("group"),
        &format!(
            r#"
[[routes]]
name = "events"
source_topics = ["{src}"]
plugin = "{}"
default_target = "{created}"
on_failure = "skip"
allowed_targets = ["{created}", "{paid}"]
plugin_config = {{ "order.created" = "{created}", "order.paid" = "{paid}" }}
"#,
            fixtures::envelope_router().display()
        ),
    );
    let (router, failures) = start(&config);
    let created_out = consume(&created, 100, READ_TIMEOUT).unwrap();
    let paid_out = consume(&paid, 101, READ_TIMEOUT).unwrap();
    stop(router);

    assert_eq!(created_out.len(), 100);
    assert!(
        created_out
            .iter()
            .all(|r| r.value_str().contains(r#""type":"order.created""#))
    );
    assert_eq!(paid_out.len(), 101);
    assert!(
        paid_out
            .iter()
            .all(|r| r.value_str().contains(r#""type":"order.paid""#))
    );
    assert!(
        paid_out
            .iter()
            .any(|r| r.key.as_deref() == Some(b"after".as_slice())),
        "routing went on after malformed records"
    );
    let failures = failures.list();
    assert_eq!(failures.len(), 102);
    assert_eq!(
        failures[0],
        (
            2,
            "reject".into(),
            "unknown envelope type 'order.lost'".into()
        )
    );
    let (offset, kind, message) = &failures[100];
    assert_eq!((*offset, kind.as_str()), (300, "reject"));
    assert!(
        message.starts_with("value is not valid JSON: key must be a string"),
        "{message}"
    );
    assert_eq!(failures[101].2, "envelope has no string field 'type'");
}

#[test]
fn fan_out_filter_and_redact_run_as_three_routes_in_one_process() {
    let t = |p: &str| random_topic(p);
    let (fan_src, a, b, c) = (t("fan"), t("a"), t("b"), t("c"));
    let (filter_src, paid) = (t("filter"), t("paid"));
    let (redact_src, clean) = (t("redact"), t("clean"));
    create_topics(&[
        (&fan_src, 2),
        (&a, 1),
        (&b, 2),
        (&c, 3),
        (&filter_src, 1),
        (&paid, 1),
        (&redact_src, 1),
        (&clean, 1),
    ])
    .unwrap();

    let fan_in: Vec<TestRecord> = (0..50)
        .map(|i| TestRecord::new(&format!("k{i}"), &format!("v{i}")).header("h", "1"))
        .collect();
    let filter_in: Vec<TestRecord> = (0..60)
        .map(|i| {
            TestRecord::new(
                &format!("o{i}"),
                &format!(
                    r#"{{"id":{i},"status":"{}"}}"#,
                    ["paid", "open", "void"][i % 3]
                ),
            )
        })
        .collect();
    let redact_in: Vec<TestRecord> = (0..20)
        .map(|i| {
            TestRecord::new(
                &format!("u{i}"),
                &format!(r#"{{"user":"u{i}","password":"p{i}","card":{{"number":"41{i}"}}}}"#),
            )
        })
        .collect();
    produce(&fan_src, &fan_in).unwrap();
    produce(&filter_src, &filter_in).unwrap();
    produce(&redact_src, &redact_in).unwrap();

    let config = config(
        &t("group"),
        &format!(
            r#"
[[routes]]
name = "fan"
source_topics = ["{fan_src}"]
plugin = "{fan}"
default_target = "{a}"
on_failure = "skip"
allowed_targets = ["{a}", "{b}", "{c}"]
plugin_config = {{ topics = "{a},{b},{c}" }}

[[routes]]
name = "filter"
source_topics = ["{filter_src}"]
plugin = "{filter}"
default_target = "{paid}"
on_failure = "skip"
plugin_config = {{ field = "status", equals = "paid" }}

[[routes]]
name = "redact"
source_topics = ["{redact_src}"]
plugin = "{redact}"
default_target = "{clean}"
on_failure = "skip"
plugin_config = {{ fields = "password,card.number" }}
"#,
            fan = fixtures::fan_out().display(),
            filter = fixtures::filter().display(),
            redact = fixtures::redact().display(),
        ),
    );
    let (router, failures) = start(&config);
    let outs: Vec<Vec<TestRecord>> = [&a, &b, &c]
        .iter()
        .map(|t| consume(t, 50, READ_TIMEOUT).unwrap())
        .collect();
    let paid_out = consume(&paid, 20, READ_TIMEOUT).unwrap();
    let clean_out = consume(&clean, 20, READ_TIMEOUT).unwrap();
    stop(router);
    assert_eq!(failures.list(), vec![]);

    for out in &outs {
        let mut got: Vec<_> = out
            .iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.headers.clone()))
            .collect();
        let mut want: Vec<_> = fan_in
            .iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.headers.clone()))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }
    let mut paid_ids: Vec<String> = paid_out
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    paid_ids.sort();
    let mut want: Vec<String> = (0..60)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("o{i}"))
        .collect();
    want.sort();
    assert_eq!(paid_ids, want);
    for (out, input) in clean_out.iter().zip(&redact_in) {
        assert_eq!(out.key, input.key, "order kept on a one-partition topic");
        let i = &String::from_utf8(input.key.clone().unwrap()).unwrap()[1..];
        assert_eq!(
            out.value_str(),
            format!(r#"{{"user":"u{i}","password":"***","card":{{"number":"***"}}}}"#)
        );
        assert_eq!(out.header_str("redacted-count"), Some("2"));
    }
}

#[test]
fn one_route_consumes_several_source_topics() {
    let (s1, s2, dst) = (random_topic("s1"), random_topic("s2"), random_topic("dst"));
    create_topics(&[(&s1, 2), (&s2, 1), (&dst, 1)]).unwrap();
    produce(
        &s1,
        &(0..40)
            .map(|i| TestRecord::new(&format!("a{i}"), "x"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    produce(
        &s2,
        &(0..30)
            .map(|i| TestRecord::new(&format!("b{i}"), "y"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let config = config(
        &random_topic("group"),
        &format!(
            r#"
[[routes]]
name = "merge"
source_topics = ["{s1}", "{s2}"]
default_target = "{dst}"
on_failure = "skip"
"#
        ),
    );
    let (router, _) = start(&config);
    let out = consume(&dst, 70, READ_TIMEOUT).unwrap();
    stop(router);
    let mut keys: Vec<String> = out
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    keys.sort();
    let mut want: Vec<String> = (0..40)
        .map(|i| format!("a{i}"))
        .chain((0..30).map(|i| format!("b{i}")))
        .collect();
    want.sort();
    assert_eq!(keys, want);
}

#[test]
fn after_a_clean_stop_a_restarted_router_resumes_after_the_last_record() {
    let (src, dst) = (random_topic("src"), random_topic("dst"));
    create_topics(&[(&src, 2), (&dst, 2)]).unwrap();
    let batch = |from: usize, to: usize| -> Vec<TestRecord> {
        (from..to)
            .map(|i| TestRecord::new(&format!("k{i}"), &i.to_string()))
            .collect()
    };
    let group = random_topic("group");
    let config = route_in_group(&group, &src, &fixtures::hello(), &dst);
    produce(&src, &batch(0, 500)).unwrap();
    let (router, _) = start(&config);
    consume(&dst, 500, READ_TIMEOUT).unwrap();
    stop(router);

    produce(&src, &batch(500, 800)).unwrap();
    let (router, _) = start(&config);
    let out = consume(&dst, 800, READ_TIMEOUT).unwrap();
    stop(router);

    let mut values: Vec<usize> = out.iter().map(|r| r.value_str().parse().unwrap()).collect();
    values.sort_unstable();
    assert_eq!(
        values,
        (0..800).collect::<Vec<_>>(),
        "nothing reprocessed, nothing skipped"
    );
    let offsets = committed(&group, &src, 2).unwrap();
    assert_eq!(offsets.values().sum::<i64>(), 800);
}

#[test]
fn outputs_outside_the_allowed_targets_or_partitions_are_reported_and_the_route_goes_on() {
    let (src, dst) = (random_topic("src"), random_topic("dst"));
    create_topics(&[(&src, 1), (&dst, 3)]).unwrap();
    let values = ["one", "bad-topic", "two", "bad-partition", "three"];
    produce(
        &src,
        &values
            .iter()
            .map(|v| TestRecord::new("k", v))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let config = one_route(&src, &fixtures::misbehave(), &dst);
    let (router, failures) = start(&config);
    let out = consume(&dst, 3, READ_TIMEOUT).unwrap();
    switchyard_tests::wait_until(Duration::from_secs(30), || failures.list().len() == 2).unwrap();
    stop(router);
    let got: Vec<&str> = out.iter().map(TestRecord::value_str).collect();
    assert_eq!(got, ["one", "two", "three"]);
    assert_eq!(
        failures.list(),
        vec![
            (
                1,
                "invalid-output".into(),
                "output 0: topic 'forbidden' is not an allowed target of route 'r'".into()
            ),
            (
                3,
                "invalid-output".into(),
                format!(
                    "output 0: partition 9999 is out of range for topic '{dst}' (3 partitions)"
                )
            ),
        ]
    );
}

#[test]
fn partition_counts_reach_the_plugin_only_for_allowed_targets() {
    // The tenant partitioner asks for the default target's partition count;
    // with a target of 4 partitions every output lands below 4.
    let (src, dst) = (random_topic("src"), random_topic("dst"));
    create_topics(&[(&src, 1), (&dst, 4)]).unwrap();
    let tenants: BTreeMap<&str, u32> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|t| (*t, fnv1a_32(t.as_bytes()) % 4))
        .collect();
    produce(
        &src,
        &tenants
            .keys()
            .map(|t| TestRecord::new("k", "v").header("tenant-id", t))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let config = one_route(&src, &fixtures::tenant_partitioner(), &dst);
    let (router, failures) = start(&config);
    let out = consume(&dst, 5, READ_TIMEOUT).unwrap();
    stop(router);
    assert_eq!(failures.list(), vec![]);
    for r in out {
        let t = r.header_str("tenant-id").unwrap();
        assert_eq!(r.partition, Some(tenants[t] as i32));
    }
}

fn python_client(command: &str, topic: &str, count: usize) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/kafka_python_client.py");
    let out = std::process::Command::new(switchyard_tests::test_python())
        .arg(script)
        .args([command, broker(), topic, &count.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-python {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn records_from_and_to_kafka_python_keep_their_keys_and_headers() {
    let (src, dst) = (random_topic("py-src"), random_topic("py-dst"));
    create_topics(&[(&src, 2), (&dst, 3)]).unwrap();
    python_client("produce", &src, 60);
    let config = one_route(&src, &fixtures::tenant_partitioner(), &dst);
    let (router, failures) = start(&config);
    let lines = python_client("consume", &dst, 60);
    stop(router);
    assert_eq!(failures.list(), vec![]);
    let mut seen = Vec::new();
    for line in lines.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = record["key"].as_str().unwrap();
        let i: usize = key.strip_prefix("key-").unwrap().parse().unwrap();
        assert_eq!(record["value"], format!("value-{i}"));
        let tenant = format!("tenant-{}", i % 3);
        let headers = serde_json::json!([
            [
                "tenant-id",
                tenant
                    .as_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ],
            ["bin", format!("00ff{:02x}", i % 256)]
        ]);
        assert_eq!(record["headers"], headers, "{key}");
        assert_eq!(
            record["partition"],
            (fnv1a_32(tenant.as_bytes()) % 3),
            "{key}"
        );
        seen.push(i);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..60).collect::<Vec<_>>());
}

#[test]
fn a_second_router_joining_the_group_takes_partitions_without_losing_or_repeating_records() {
    let (src, dst) = (random_topic("rb-src"), random_topic("rb-dst"));
    create_topics(&[(&src, 4), (&dst, 4)]).unwrap();
    let first: Vec<TestRecord> = (0..3000)
        .map(|i| TestRecord::new(&format!("k{i}"), &i.to_string()))
        .collect();
    produce(&src, &first).unwrap();
    let config = one_route(&src, &fixtures::hello(), &dst);
    let (a, _) = start(&config);
    // Wait until the first router is routing, then add a second one: the
    // group rebalances while records are in flight.
    consume(&dst, 500, READ_TIMEOUT).unwrap();
    let (b, _) = start(&config);
    let second: Vec<TestRecord> = (3000..6000)
        .map(|i| TestRecord::new(&format!("k{i}"), &i.to_string()))
        .collect();
    produce(&src, &second).unwrap();
    let out = consume(&dst, 6000, READ_TIMEOUT).unwrap();
    stop(a);
    stop(b);
    let mut values: Vec<usize> = out.iter().map(|r| r.value_str().parse().unwrap()).collect();
    values.sort_unstable();
    assert_eq!(
        values,
        (0..6000).collect::<Vec<_>>(),
        "every record once: revoked partitions were drained and committed"
    );
}

#[test]
fn two_workers_route_256_partitions_each_in_order_and_commit_every_one() {
    const PARTITIONS: i32 = 256;
    const PER_PARTITION: i32 = 20;
    let (src, dst) = (random_topic("wide"), random_topic("wide-out"));
    // One output partition: the outputs of each source partition must come
    // out in that partition's order.
    create_topics(&[(&src, PARTITIONS), (&dst, 1)]).unwrap();
    let inputs: Vec<TestRecord> = (0..PER_PARTITION)
        .flat_map(|i| {
            (0..PARTITIONS).map(move |p| {
                TestRecord::new(&format!("k{p}"), &format!("{p}:{i:04}"))
                    .header("tenant-id", "acme")
                    .on_partition(p)
            })
        })
        .collect();
    produce(&src, &inputs).unwrap();

    let group = random_topic("group");
    let mut config = route_in_group(&group, &src, &fixtures::tenant_partitioner(), &dst);
    config.router.workers = Some(2);
    let (router, failures) = start(&config);
    let outputs = consume(&dst, inputs.len(), READ_TIMEOUT).unwrap();
    assert_eq!(router.status().assigned(), PARTITIONS as usize);
    switchyard_tests::wait_until(READ_TIMEOUT, || {
        committed(&group, &src, PARTITIONS).is_ok_and(|c| {
            c.len() == PARTITIONS as usize && c.values().all(|&o| o == i64::from(PER_PARTITION))
        })
    })
    .unwrap();
    stop(router);

    assert_eq!(failures.list(), vec![]);
    assert_eq!(outputs.len(), inputs.len(), "every record exactly once");
    let mut next: HashMap<i32, i32> = HashMap::new();
    for out in &outputs {
        let value = std::str::from_utf8(out.value.as_deref().unwrap()).unwrap();
        let (p, i) = value.split_once(':').unwrap();
        let (p, i): (i32, i32) = (p.parse().unwrap(), i.parse().unwrap());
        let expected = next.entry(p).or_insert(0);
        assert_eq!(i, *expected, "partition {p} out of order");
        *expected += 1;
    }
    assert_eq!(next.len(), PARTITIONS as usize);
}
