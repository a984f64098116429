//! What a failing record costs the router in CPU, by kind of failure,
//! against a record the same plugin routes normally (measured in the same
//! run). A plugin that fails every record must cost bounded CPU: a reject
//! costs a call; a trap also costs a fresh instance (its `init` included);
//! a timeout costs at most the route's time limit.
//!
//! CPU time is the calling thread's own (`/proc/thread-self/schedstat`):
//! plugin calls run on it.
//!
//! Run: `cargo bench -p switchyard-tests --bench failures`

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard::plugin::{Limits, PluginEngine, RouteContext};
use switchyard::record::SourceRecord;
use switchyard_plugin_fixtures as fixtures;

/// CPU time of this thread so far.
fn thread_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns: u64 = stat
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty schedstat"))?
        .parse()?;
    Ok(Duration::from_nanos(ns))
}

fn record(value: &str) -> Arc<SourceRecord> {
    Arc::new(SourceRecord {
        topic: "orders".into(),
        partition: 0,
        offset: 42,
        timestamp_ms: Some(1_764_331_200_000),
        key: Some(Bytes::from_static(b"order-42")),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: Vec::new(),
        wire_headers: Default::default(),
    })
}

fn main() -> anyhow::Result<()> {
    let engine = PluginEngine::new()?;
    let plugin = engine.load(&fixtures::hostile())?;
    let context = RouteContext::new(
        "bench".to_owned(),
        "output".to_owned(),
        Arc::new(std::collections::HashMap::from([("output".to_owned(), 6)])),
    );
    let timeout = Duration::from_millis(20);
    let limits = Limits {
        route_timeout: timeout,
        ..Limits::default()
    };
    // (label, record value, records)
    let cases = [
        ("routed normally (baseline)", "good", 20_000),
        ("reject", "reject", 20_000),
        ("retry (one call)", "retry", 20_000),
        ("panic: instance replaced", "panic", 2_000),
        ("trap: instance replaced", "trap", 2_000),
        ("exit: instance replaced", "exit", 2_000),
        ("timeout (20 ms limit)", "loop", 20),
    ];
    println!("CPU per record of a plugin that fails every record (hostile fixture, one instance)");
    println!(
        "{:<28} {:>8} {:>14} {:>10}",
        "record", "records", "CPU µs/record", "vs routed"
    );
    let mut baseline = 0.0;
    for (label, value, count) in cases {
        let mut instance = plugin.instantiate(&[], context.clone(), limits)?;
        let record = record(value);
        // Warm up (and check the case fails as its label says).
        let first = instance.route(&record);
        assert_eq!(
            first.is_ok(),
            value == "good",
            "{label}: unexpected outcome {first:?}"
        );
        let cpu = thread_cpu()?;
        for _ in 0..count {
            let _ = std::hint::black_box(instance.route(&record));
        }
        let cpu = thread_cpu()? - cpu;
        let us = cpu.as_secs_f64() * 1e6 / f64::from(count);
        if baseline == 0.0 {
            baseline = us;
            println!("{label:<28} {count:>8} {us:>14.2} {:>10}", "1.00x");
        } else {
            println!("{label:<28} {count:>8} {us:>14.2} {:>9.1}x", us / baseline);
        }
    }
    println!(
        "(a retried record costs this per call, times retry.max_attempts; waiting between calls costs no CPU)"
    );
    Ok(())
}
