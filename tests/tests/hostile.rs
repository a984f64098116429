//! Hostile plugins through the real pipeline on the real broker. Whatever
//! the plugin does, the router stays up, every good record arrives, each
//! bad record lands in the dead-letter topic with headers that say why, the
//! offsets are committed past all of them, and memory returns to where it
//! was.
//!
//! This file holds one test: it measures the process's memory, which other
//! tests running beside it in the same process would disturb.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code"
)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard::pipeline::LogFailures;
use switchyard::plugin::PluginEngine;
use switchyard::router;
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{
    TestRecord, assert_dead_letter, committed, consume, create_topics, produce, random_topic,
    wait_until,
};

const READ_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_ATTEMPTS: u32 = 4;

/// A bad record: what the plugin is asked to do, and the failure kind and
/// reason the dead-letter record must carry.
struct Case {
    value: String,
    kind: &'static str,
    error: &'static str,
}

fn cases(socket_port: u16) -> Vec<Case> {
    let case = |value: &str, kind, error| Case {
        value: value.to_owned(),
        kind,
        error,
    };
    vec![
        case("loop", "timeout", "plugin ran past its time limit"),
        case(
            "grow",
            "memory",
            "plugin tried to grow its memory to 257 MiB; the route's limit (limits.memory_mib) is 256 MiB",
        ),
        // Rust keeps its stack in linear memory: running out of it is an
        // access below address 0.
        case("recurse", "trap", "out of bounds memory access"),
        case("panic", "trap", "asked to panic at offset"),
        case("trap", "trap", "wasm `unreachable` instruction executed"),
        case(
            "huge-output",
            "invalid-output",
            "bytes with its headers and framing: the route's limit (limits.max_output_bytes) is 1000000",
        ),
        case(
            "million-outputs",
            "invalid-output",
            "1000000 outputs for one record: the route's limit (limits.max_outputs) is 1000",
        ),
        case(
            "bad-partition",
            "invalid-output",
            "output 0: partition 9999 is out of range for topic",
        ),
        case(
            "bad-topic",
            "invalid-output",
            "output 0: topic 'forbidden' is not an allowed target of route 'hostile'",
        ),
        case("retry", "retry-exhausted", "asked to retry, forever"),
        case("reject", "reject", "asked to reject"),
        case("read-file", "reject", "cannot read /etc/passwd"),
        case("read-env", "reject", "the environment is empty"),
        case(
            &format!("socket:{socket_port}"),
            "reject",
            "cannot connect to 127.0.0.1:",
        ),
        // WASI's exit carries only success or failure: 3 becomes 1.
        case("exit", "trap", "plugin called exit(1)"),
    ]
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn header<'a>(record: &'a TestRecord, key: &str) -> &'a str {
    record
        .header_str(key)
        .unwrap_or_else(|| panic!("no header '{key}' on {record:?}"))
}

#[test]
fn hostile_plugins_are_contained_and_their_records_dead_lettered() {
    let (src, dst, dlq) = (
        random_topic("hostile-in"),
        random_topic("hostile-out"),
        random_topic("hostile-dlq"),
    );
    create_topics(&[(&src, 3), (&dst, 3), (&dlq, 1)]).unwrap();
    // Nothing listens behind this port's back: a connection would show up.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let cases = cases(listener.local_addr().unwrap().port());

    let group = random_topic("group");
    let config = switchyard_tests::router_config(
        &group,
        &format!(
            r#"
[[routes]]
name = "hostile"
source_topics = ["{src}"]
plugin = "{plugin}"
default_target = "{dst}"
dead_letter_topic = "{dlq}"

[routes.limits]
memory_mib = 256
route_timeout_ms = 3000

[routes.retry]
max_attempts = {MAX_ATTEMPTS}
initial_backoff_ms = 10
max_backoff_ms = 40
"#,
            plugin = fixtures::hostile().display()
        ),
    )
    .unwrap();
    let engine = PluginEngine::new().unwrap();
    let router = router::start(&config, &engine, Arc::new(LogFailures::default())).unwrap();
    let route = router.routes()[0].clone();
    let version = route.plugin().unwrap().version().to_owned();

    // Warm up every partition, then take the memory baseline.
    let warm: Vec<TestRecord> = (0..30)
        .map(|i| TestRecord::new("warm", &format!("warm-{i}")).on_partition(i % 3))
        .collect();
    produce(&src, &warm).unwrap();
    consume(&dst, warm.len(), READ_TIMEOUT).unwrap();
    let baseline = rss();
    let started_ms = now_ms();

    // Partition 0: a good record before and after every bad one, and one
    // that succeeds on its third attempt. Partitions 1 and 2: good records.
    let mut hostile = vec![TestRecord::new("good", "good-0").on_partition(0)];
    for (i, case) in cases.iter().enumerate() {
        hostile.push(
            TestRecord::new(&format!("bad-{i}"), &case.value)
                .header("case", &case.value)
                .on_partition(0),
        );
        hostile.push(TestRecord::new("good", &format!("good-{}", i + 1)).on_partition(0));
    }
    hostile.push(TestRecord::new("good", "retry-twice").on_partition(0));
    let steady: Vec<TestRecord> = (0..1000)
        .map(|i| TestRecord::new("steady", &format!("steady-{i}")).on_partition(1 + i % 2))
        .collect();
    produce(&src, &hostile).unwrap();
    produce(&src, &steady).unwrap();

    let good_on_0 = cases.len() + 2;
    let out = consume(&dst, warm.len() + good_on_0 + steady.len(), READ_TIMEOUT).unwrap();
    let dead = consume(&dlq, cases.len(), READ_TIMEOUT).unwrap();
    let done_ms = now_ms();

    // Every good record arrived once; partition 0's in order.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for record in &out {
        *counts.entry(record.value_str()).or_default() += 1;
    }
    assert!(
        counts.values().all(|&n| n == 1),
        "duplicates: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    for record in warm.iter().chain(&steady) {
        assert!(
            counts.contains_key(record.value_str()),
            "{} missing",
            record.value_str()
        );
    }
    let from_0: Vec<&str> = out
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"good"))
        .map(TestRecord::value_str)
        .collect();
    let mut expected: Vec<String> = (0..=cases.len()).map(|i| format!("good-{i}")).collect();
    expected.push("retry-twice".to_owned());
    assert_eq!(from_0, expected, "partition 0's good records, in order");
    let retried = out.iter().find(|r| r.value_str() == "retry-twice").unwrap();
    assert_eq!(
        retried.header_str("attempts"),
        Some("3"),
        "two retries, then routed"
    );
    for record in &out {
        assert!(
            !record.value_str().contains("root:") && !record.value_str().contains("PATH="),
            "a file or the environment leaked: {record:?}"
        );
    }

    // Each bad record in the dead-letter topic, as it was, with the reason.
    assert_eq!(dead.len(), cases.len());
    for (i, case) in cases.iter().enumerate() {
        let record = dead
            .iter()
            .find(|r| r.key.as_deref() == Some(format!("bad-{i}").as_bytes()))
            .unwrap_or_else(|| panic!("'{}' not dead-lettered", case.value));
        let what = &case.value;
        let attempts = if case.kind == "retry-exhausted" {
            MAX_ATTEMPTS
        } else {
            1
        };
        assert_dead_letter(record, &case.value, case.kind, case.error, attempts, what);
        assert_eq!(header(record, "dlq-original-topic"), src, "{what}");
        assert_eq!(header(record, "dlq-original-partition"), "0", "{what}");
        let offset = hostile
            .iter()
            .position(|r| r.key.as_deref() == Some(format!("bad-{i}").as_bytes()))
            .unwrap()
            + 10; // after partition 0's ten warm-up records
        assert_eq!(
            header(record, "dlq-original-offset"),
            offset.to_string(),
            "{what}"
        );
        let at: u128 = header(record, "dlq-timestamp").parse().unwrap();
        assert!(
            (started_ms..=done_ms).contains(&at),
            "{what}: dlq-timestamp {at}"
        );
        assert_eq!(header(record, "dlq-route"), "hostile", "{what}");
        assert_eq!(header(record, "dlq-plugin"), "hostile", "{what}");
        assert_eq!(header(record, "dlq-plugin-version"), version, "{what}");
    }

    // Offsets committed past every record, bad ones included.
    let ends = HashMap::from([
        (0, (10 + hostile.len()) as i64),
        (1, 10 + 500),
        (2, 10 + 500),
    ]);
    wait_until(READ_TIMEOUT, || {
        committed(&group, &src, 3).is_ok_and(|c| c == ends)
    })
    .unwrap();

    let stats = route.stats.snapshot();
    assert_eq!(stats.dead_lettered, cases.len() as u64);
    assert_eq!(stats.retries, u64::from(MAX_ATTEMPTS - 1) + 2);
    assert_eq!(
        stats.failures.values().sum::<u64>(),
        cases.len() as u64,
        "{stats:?}"
    );

    // No connection reached the listener.
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "the plugin opened a socket"
    );

    // The plugin's memory went with its discarded instances: the process is
    // back near its baseline (the largest case alone held 256 MiB).
    let after = rss();
    let peak = peak_rss();
    eprintln!(
        "memory: baseline {} MiB, peak {} MiB, after {} MiB",
        baseline >> 20,
        peak >> 20,
        after >> 20
    );
    assert!(
        peak > baseline + (100 << 20),
        "the hostile cases never took memory (peak {} MiB): the test proves nothing",
        peak >> 20
    );
    assert!(
        after < baseline + (32 << 20),
        "memory did not return: baseline {} MiB, after {} MiB",
        baseline >> 20,
        after >> 20
    );

    router.shutdown();
    router.join();
}

/// Peak resident memory of this process (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .to_owned();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}
