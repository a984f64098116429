//! What one plugin `route` call costs, per record, for the example plugins,
//! against a baseline measured in the same run: `copy-through`, a plugin
//! that reads the whole record and returns copies of it (what every record
//! would cost if the contract passed records by value).
//!
//! Run: `cargo bench -p switchyard-tests --bench plugin_call`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use switchyard::plugin::{Limits, PluginEngine, RouteContext};
use switchyard::record::{Header, SourceRecord};
use switchyard_plugin_fixtures as fixtures;

const WARMUP: u32 = 20_000;
const ROUNDS: usize = 7;
const CALLS_PER_ROUND: u32 = 50_000;

struct Case {
    name: &'static str,
    plugin: PathBuf,
    config: Vec<(String, String)>,
}

fn main() -> anyhow::Result<()> {
    let config = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let cases = [
        Case {
            name: "copy-through (baseline)",
            plugin: fixtures::copy_through(),
            config: vec![],
        },
        Case {
            name: "identity",
            plugin: fixtures::hello(),
            config: vec![],
        },
        Case {
            name: "tenant-partitioner",
            plugin: fixtures::tenant_partitioner(),
            config: vec![],
        },
        Case {
            name: "envelope-router",
            plugin: fixtures::envelope_router(),
            config: config(&[("order.created", "orders.created")]),
        },
    ];
    // `cargo bench ... -- NAME` measures only the plugins whose name
    // contains NAME (the baseline always runs).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let engine = PluginEngine::new()?;
    let context = RouteContext {
        route: "bench".to_owned(),
        default_target: "output".to_owned(),
        partitions: Arc::new(std::collections::HashMap::from([("output".to_owned(), 6)])),
    };

    println!(
        "ns per record (median of {ROUNDS} rounds of {CALLS_PER_ROUND} calls, one reused instance)"
    );
    println!(
        "{:<26} {:>10} {:>10} {:>10}",
        "plugin", "100 B", "1 KiB", "16 KiB"
    );
    let sizes = [100, 1024, 16 * 1024];
    let mut baseline = [0.0_f64; 3];
    for (n, case) in cases.iter().enumerate() {
        if n > 0 && !only.is_empty() && !only.iter().any(|o| case.name.contains(o.as_str())) {
            continue;
        }
        let plugin = engine.load(&case.plugin)?;
        let mut instance = plugin.instantiate(&case.config, context.clone(), Limits::default())?;
        let mut cells = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let record = Arc::new(record(size));
            for _ in 0..WARMUP {
                instance.route(&record)?;
            }
            let mut rounds = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let start = Instant::now();
                for _ in 0..CALLS_PER_ROUND {
                    std::hint::black_box(instance.route(&record)?);
                }
                rounds.push(start.elapsed().as_nanos() as f64 / f64::from(CALLS_PER_ROUND));
            }
            rounds.sort_by(f64::total_cmp);
            let ns = rounds[ROUNDS / 2];
            if baseline[i] == 0.0 {
                baseline[i] = ns;
                cells.push(format!("{ns:>10.0}"));
            } else {
                cells.push(format!("{ns:>4.0} {:>4.2}x", ns / baseline[i]));
            }
        }
        println!(
            "{:<26} {:>10} {:>10} {:>10}",
            case.name, cells[0], cells[1], cells[2]
        );
    }
    println!(
        "(ratio: time relative to the copy-through baseline of the same size; lower is better)"
    );
    Ok(())
}

/// A JSON envelope of `size` bytes with a key and three headers, one of them
/// the tenant.
fn record(size: usize) -> SourceRecord {
    let head = r#"{"type":"order.created","version":1,"timestamp":"2026-11-28T12:00:00Z","payload":{"pad":""#;
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let value = format!("{head}{}{tail}", "x".repeat(pad));
    let header = |k: &str, v: &str| Header {
        key: k.to_owned(),
        value: Bytes::copy_from_slice(v.as_bytes()),
    };
    SourceRecord {
        topic: "orders".to_owned(),
        partition: 0,
        offset: 42,
        timestamp_ms: Some(1_764_331_200_000),
        key: Some(Bytes::from_static(b"order-0000000042")),
        value: Some(Bytes::from(value)),
        headers: vec![
            header("tenant-id", "acme"),
            header("trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            header("content-type", "application/json"),
        ],
    }
}
