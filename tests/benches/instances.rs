//! What an instance of a plugin costs in memory and in time to start, per
//! language: Rust, Python (componentize-py) and TypeScript
//! (componentize-js). The router runs one instance per assigned partition,
//! so a route on a 64-partition topic holds 64 of them.
//!
//! For each plugin: compile (cold, no cache), its linear memory once
//! `init` ran, then `INSTANCES` instances
//! started one after the other, each routing a call of 128 records (so the
//! memory a call touches is counted), and the process's resident memory
//! measured before and after; the Rust tenant-partitioner in the same run
//! is the baseline. Instances share the compiled code and map the
//! component's initial memory copy-on-write, so each costs only the pages
//! it writes: the "private" column. The "RSS" column counts every page an
//! instance maps once per instance (what `ps` adds up), shared or not.
//!
//! Run: `cargo bench -p switchyard-tests --bench instances [-- NAME...]`

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use switchyard::plugin::{Limits, PluginEngine, RouteContext};
use switchyard::record::{Header, SourceRecord};
use switchyard_plugin_fixtures as fixtures;

const INSTANCES: usize = 64;
const BATCH: usize = 128;

/// This process's memory, in bytes: resident (`Rss`, which counts a page
/// shared by several mappings once per mapping) and private to it
/// (`Anonymous`: pages written, which is what each instance adds to the
/// machine's memory; the component's initial memory image is shared).
fn process_memory() -> anyhow::Result<(u64, u64)> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let kib: u64 = rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .ok_or_else(|| anyhow::anyhow!("/proc/self/smaps_rollup: no {name}"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib * 1024)
    };
    Ok((field("Rss:")?, field("Anonymous:")?))
}

fn record(i: usize) -> Arc<SourceRecord> {
    let header = |k: &str, v: &str| Header {
        key: k.into(),
        value: Bytes::copy_from_slice(v.as_bytes()),
    };
    Arc::new(SourceRecord {
        topic: "orders".into(),
        partition: 0,
        offset: i64::try_from(i).unwrap_or_default(),
        timestamp_ms: Some(1_764_331_200_000),
        key: Some(Bytes::from(format!("order-{i}"))),
        value: Some(Bytes::from(format!(
            r#"{{"type":"order.created","version":1,"payload":{{"id":{i}}}}}"#
        ))),
        headers: vec![header("tenant-id", &format!("tenant-{}", i % 64))],
        wire_headers: Default::default(),
    })
}

fn main() -> anyhow::Result<()> {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let envelope = vec![("order.created".to_owned(), "orders.created".to_owned())];
    let cases = [
        (
            "rust tenant-partitioner",
            fixtures::tenant_partitioner(),
            vec![],
        ),
        (
            "rust envelope-router",
            fixtures::envelope_router(),
            envelope.clone(),
        ),
        (
            "python tenant-partitioner",
            fixtures::python("tenant-partitioner"),
            vec![],
        ),
        (
            "python envelope-router",
            fixtures::python("envelope-router"),
            envelope.clone(),
        ),
        (
            "typescript tenant-partitioner",
            fixtures::typescript("tenant-partitioner"),
            vec![],
        ),
        (
            "typescript envelope-router",
            fixtures::typescript("envelope-router"),
            envelope,
        ),
    ];
    let engine = PluginEngine::new()?;
    let context = RouteContext::new(
        "bench".to_owned(),
        "orders.created".to_owned(),
        Arc::new(std::collections::HashMap::from([(
            "orders.created".to_owned(),
            6,
        )])),
    );
    let batch: Vec<_> = (0..BATCH).map(record).collect();
    println!(
        "{INSTANCES} instances each, one call of {BATCH} records per instance; memory of this process"
    );
    println!(
        "{:<30} {:>9} {:>10} {:>12} {:>11} {:>14} {:>18} {:>9}",
        "plugin",
        "size",
        "compile",
        "start each",
        "memory",
        "RSS/instance",
        "private/instance",
        "vs rust"
    );
    let mut baseline = None;
    for (name, path, config) in cases {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let size = std::fs::metadata(&path)?.len();
        let started = Instant::now();
        let plugin = engine.load(&path)?;
        let compile = started.elapsed();
        // One instance first, so that what every instance shares (the
        // compiled code, the memory image) is not counted per instance.
        let mut first = plugin.instantiate(&config, context.clone(), Limits::default())?;
        let memory = first.memory_bytes();
        first.route_batch(&batch)?;
        let before = process_memory()?;
        let started = Instant::now();
        let mut instances = Vec::with_capacity(INSTANCES);
        for _ in 0..INSTANCES {
            let mut instance = plugin.instantiate(&config, context.clone(), Limits::default())?;
            let answers = instance.route_batch(&batch)?;
            anyhow::ensure!(answers.iter().all(Result::is_ok), "{name}: a record failed");
            instances.push(instance);
        }
        let start_each = started.elapsed() / u32::try_from(INSTANCES)?;
        let after = process_memory()?;
        let per_instance = |now: u64, then: u64| {
            now.saturating_sub(then) as f64 / INSTANCES as f64 / f64::from(1 << 20)
        };
        let (rss, private) = (
            per_instance(after.0, before.0),
            per_instance(after.1, before.1),
        );
        let base = *baseline.get_or_insert(private);
        println!(
            "{name:<30} {:>7}KB {:>10.1?} {:>12.1?} {:>8.1}MiB {rss:>11.2}MiB {private:>15.2}MiB {:>8.1}x",
            size / 1024,
            compile,
            start_each,
            memory as f64 / f64::from(1 << 20),
            private / base
        );
        drop(instances);
        drop(first);
    }
    Ok(())
}
