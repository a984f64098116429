//! Python and TypeScript plugins on the real broker: they route end to end,
//! swap with Rust and with each other under load with nothing lost, and
//! their traps, time-outs and memory failures are dead-lettered like a
//! Rust plugin's, with the reason.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard::pipeline::LogFailures;
use switchyard::plugin::{FailureKind, Limits, PluginEngine, RouteContext};
use switchyard::record::SourceRecord;
use switchyard::router::{self, RouterHandle};
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{
    TestRecord, assert_dead_letter, consume, create_topics, produce, random_topic, wait_until,
};

const READ_TIMEOUT: Duration = Duration::from_secs(180);
const MAX_ATTEMPTS: u32 = 3;

fn start(config: &str, group: &str) -> RouterHandle {
    let config = switchyard_tests::router_config(group, config).unwrap();
    let engine = PluginEngine::new().unwrap();
    router::start(&config, &engine, Arc::new(LogFailures::default())).unwrap()
}

/// A bad record of the misbehave fixture: its value, and the failure kind
/// and words its dead-letter record must carry.
struct Bad {
    value: &'static str,
    kind: &'static str,
    error: &'static str,
}

/// Runs the `misbehave` fixture of a language through a route on the
/// broker: good records before, between and after bad ones on one
/// partition, steady records on the others.
fn failures_are_dead_lettered(lang: &str, plugin: &Path, bad: &[Bad]) {
    let (src, dst, dlq) = (
        random_topic(&format!("{lang}-bad-in")),
        random_topic(&format!("{lang}-bad-out")),
        random_topic(&format!("{lang}-bad-dlq")),
    );
    create_topics(&[(&src, 3), (&dst, 3), (&dlq, 1)]).unwrap();
    let router = start(
        &format!(
            r#"
[[routes]]
name = "{lang}"
source_topics = ["{src}"]
plugin = "{plugin}"
default_target = "{dst}"
dead_letter_topic = "{dlq}"

[routes.limits]
route_timeout_ms = 2000

[routes.retry]
max_attempts = {MAX_ATTEMPTS}
initial_backoff_ms = 10
max_backoff_ms = 40
"#,
            plugin = plugin.display()
        ),
        &random_topic("group"),
    );

    let mut records = vec![TestRecord::new("good", "good-0").on_partition(0)];
    for (i, case) in bad.iter().enumerate() {
        records.push(
            TestRecord::new(&format!("bad-{i}"), case.value)
                .header("case", case.value)
                .on_partition(0),
        );
        records.push(TestRecord::new("good", &format!("good-{}", i + 1)).on_partition(0));
    }
    records.push(TestRecord::new("good", "log").on_partition(0));
    let steady: Vec<TestRecord> = (0..300)
        .map(|i| TestRecord::new("steady", &format!("steady-{i}")).on_partition(1 + i % 2))
        .collect();
    produce(&src, &records).unwrap();
    produce(&src, &steady).unwrap();

    let good = bad.len() + 2;
    let out = consume(&dst, good + steady.len(), READ_TIMEOUT).unwrap();
    let dead = consume(&dlq, bad.len(), READ_TIMEOUT).unwrap();

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for record in &out {
        *counts.entry(record.value_str()).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "{lang}: duplicates");
    for record in &steady {
        assert!(
            counts.contains_key(record.value_str()),
            "{lang}: {} missing",
            record.value_str()
        );
    }
    let in_order: Vec<&str> = out
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"good"))
        .map(TestRecord::value_str)
        .collect();
    let mut expected: Vec<String> = (0..=bad.len()).map(|i| format!("good-{i}")).collect();
    expected.push("log".to_owned());
    assert_eq!(
        in_order, expected,
        "{lang}: partition 0's good records, in order"
    );

    assert_eq!(dead.len(), bad.len(), "{lang}");
    for (i, case) in bad.iter().enumerate() {
        let what = format!("{lang} {}", case.value);
        let record = dead
            .iter()
            .find(|r| r.key.as_deref() == Some(format!("bad-{i}").as_bytes()))
            .unwrap_or_else(|| panic!("{what}: not dead-lettered"));
        let attempts = if case.kind == "retry-exhausted" {
            MAX_ATTEMPTS
        } else {
            1
        };
        assert_dead_letter(record, case.value, case.kind, case.error, attempts, &what);
    }
    let stats = router.routes()[0].stats.snapshot();
    assert_eq!(stats.dead_lettered, bad.len() as u64, "{lang}: counted");
    router.shutdown();
    router.join();
}

#[test]
fn python_plugin_failures_are_dead_lettered_with_the_reason() {
    failures_are_dead_lettered(
        "python",
        &fixtures::python("misbehave"),
        &[
            Bad {
                value: "raise",
                kind: "trap",
                error: "ValueError: asked to raise at offset 1",
            },
            Bad {
                value: "loop",
                kind: "timeout",
                error: "plugin ran past its time limit",
            },
            Bad {
                value: "hog",
                kind: "memory",
                error: "the route's limit (limits.memory_mib)",
            },
            Bad {
                value: "reject",
                kind: "reject",
                error: "asked to reject",
            },
            Bad {
                value: "retry",
                kind: "retry-exhausted",
                error: "asked to retry",
            },
        ],
    );
}

#[test]
fn typescript_plugin_failures_are_dead_lettered_with_the_reason() {
    failures_are_dead_lettered(
        "typescript",
        &fixtures::typescript("misbehave"),
        &[
            Bad {
                value: "throw",
                kind: "trap",
                error: "asked to throw at offset 1",
            },
            Bad {
                value: "loop",
                kind: "timeout",
                error: "plugin ran past its time limit",
            },
            Bad {
                value: "hog",
                kind: "memory",
                error: "the route's limit (limits.memory_mib)",
            },
            Bad {
                value: "reject",
                kind: "reject",
                error: "asked to reject",
            },
            Bad {
                value: "retry",
                kind: "retry-exhausted",
                error: "asked to retry",
            },
        ],
    );
}

fn fnv1a_32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Installs `wasm` at `path` the way deployment tools do: written beside
/// it, then renamed over it.
fn install(path: &Path, wasm: &Path) {
    let tmp = path.with_extension("tmp");
    std::fs::copy(wasm, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn version(router: &RouterHandle) -> String {
    router.routes()[0].plugin().unwrap().sha256().to_owned()
}

#[test]
fn tenant_partitioners_in_three_languages_swap_under_load_losing_nothing() {
    const PARTITIONS: i32 = 4;
    const TENANTS: usize = 16;
    let (src, dst) = (random_topic("lang-swap-in"), random_topic("lang-swap-out"));
    create_topics(&[(&src, PARTITIONS), (&dst, PARTITIONS)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenant-partitioner.wasm");
    std::fs::copy(fixtures::tenant_partitioner(), &path).unwrap();
    let router = start(
        &format!(
            r#"
[[routes]]
name = "tenants"
source_topics = ["{src}"]
plugin = "{plugin}"
default_target = "{dst}"
on_failure = "stop"
"#,
            plugin = path.display()
        ),
        &random_topic("group"),
    );

    // Records flow from another thread the whole time: keyed by tenant,
    // numbered per tenant.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (stop, sent, src) = (stop.clone(), sent.clone(), src.clone());
        std::thread::spawn(move || {
            let mut seq = 0_usize;
            while !stop.load(Ordering::Relaxed) || seq < 2_000 {
                let batch: Vec<TestRecord> = (seq..seq + 200)
                    .map(|n| {
                        let tenant = format!("tenant-{}", n % TENANTS);
                        TestRecord::new(&tenant, &format!("{tenant}:{n}"))
                            .header("tenant-id", &tenant)
                    })
                    .collect();
                produce(&src, &batch).unwrap();
                seq += batch.len();
                sent.store(seq, Ordering::Relaxed);
            }
        })
    };

    let mut swaps = Vec::new();
    let candidates: [(&str, PathBuf); 3] = [
        ("python", fixtures::python("tenant-partitioner")),
        ("typescript", fixtures::typescript("tenant-partitioner")),
        ("rust", fixtures::tenant_partitioner()),
    ];
    for (lang, wasm) in candidates {
        // Some records routed by the version in place first.
        let before = sent.load(Ordering::Relaxed);
        wait_until(Duration::from_secs(60), || {
            sent.load(Ordering::Relaxed) >= before + 1_000
        })
        .unwrap();
        let old = version(&router);
        let installed = Instant::now();
        install(&path, &wasm);
        wait_until(Duration::from_secs(120), || version(&router) != old)
            .unwrap_or_else(|_| panic!("the {lang} version never took over"));
        swaps.push((lang, installed.elapsed()));
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let total = sent.load(Ordering::Relaxed);
    eprintln!("swaps under load (file renamed -> routing with it): {swaps:?}; {total} records");

    let out = consume(&dst, total, READ_TIMEOUT).unwrap();
    let mut last: HashMap<String, usize> = HashMap::new();
    for record in &out {
        let (tenant, n) = record.value_str().split_once(':').unwrap();
        let n: usize = n.parse().unwrap();
        let expected = i32::try_from(fnv1a_32(tenant.as_bytes()) % PARTITIONS as u32).unwrap();
        assert_eq!(
            record.partition,
            Some(expected),
            "{tenant} on its partition"
        );
        if let Some(prev) = last.insert(tenant.to_owned(), n) {
            assert!(
                n > prev,
                "{tenant}: {n} after {prev}, out of order or twice"
            );
        }
    }
    assert_eq!(out.len(), total, "every record once");
    router.shutdown();
    router.join();
}

#[test]
fn an_instance_whose_memory_keeps_growing_is_replaced_before_it_fails_a_record() {
    // componentize-js's bindings leak about 1.4 KiB per call: with 16 MiB
    // (9 MiB once started), an instance would fail a record for memory
    // after ~5,000 calls.
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let mut instance = instance_of(&fixtures::typescript("hello"), limits);
    let record = record("v");
    for i in 0..20_000 {
        if let Err(failure) = instance.route(&record) {
            panic!("call {i} failed: {failure}");
        }
    }
    assert!(
        instance.recycled() >= 2,
        "the instance was replaced {} times",
        instance.recycled()
    );
    assert!(instance.memory_bytes() <= limits.memory_bytes);
}

/// An instance of the plugin at `path`, on its own engine, with `limits`.
fn instance_of(path: &Path, limits: Limits) -> switchyard::plugin::PluginInstance {
    let engine = PluginEngine::new().unwrap();
    let plugin = engine.load(path).unwrap();
    let context = RouteContext::new(
        "instance".to_owned(),
        "out".to_owned(),
        Arc::new(HashMap::from([("out".to_owned(), 1)])),
    );
    plugin.instantiate(&[], context, limits).unwrap()
}

fn record(value: &'static str) -> Arc<SourceRecord> {
    Arc::new(SourceRecord {
        topic: "in".into(),
        partition: 0,
        offset: 0,
        timestamp_ms: None,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(value.as_bytes())),
        headers: Vec::new(),
        wire_headers: Default::default(),
    })
}

#[test]
fn a_refused_memory_growth_is_the_plugin_s_to_handle_and_costs_it_its_instance() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let mut instance = instance_of(&fixtures::hostile(), limits);
    // memory.grow by 1 GiB fails; the plugin goes on and routes the record.
    let outputs = instance.route(&record("grow-refused")).unwrap();
    assert_eq!(outputs.len(), 1);
    let grow = outputs[0]
        .headers()
        .find(|h| &*h.key == "grow")
        .map(|h| h.value.clone());
    assert_eq!(grow.as_deref(), Some(b"refused".as_slice()));
    assert!(instance.memory_bytes() <= limits.memory_bytes);
    // Refused memory once: the next call runs on a fresh instance.
    assert_eq!(instance.recycled(), 1);
    assert_eq!(instance.route(&record("fine")).unwrap().len(), 1);
    assert_eq!(
        instance.recycled(),
        1,
        "a fresh instance is not replaced again"
    );
    // A plugin that cannot go on without the memory fails its record, as
    // `memory`, and the one after it routes.
    let failure = instance.route(&record("grow")).unwrap_err();
    assert_eq!(failure.kind, FailureKind::Memory, "{failure}");
    assert!(failure.message.contains("limits.memory_mib"), "{failure}");
    assert_eq!(instance.route(&record("fine")).unwrap().len(), 1);
}
