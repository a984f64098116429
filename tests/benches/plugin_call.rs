//! What one plugin `route` call costs, per record, against the same logic
//! compiled natively into the host and measured in the same run.
//!
//! - identity (`hello`): forwards the record; the cost of the call itself.
//! - tenant-partitioner: reads one header, asks the partition count, returns
//!   one output with an explicit partition.
//! - envelope-router (the JSON router): parses the value as a JSON envelope
//!   and picks the topic from its `type`.
//! - copy-through: reads the whole record and returns copies of it (what
//!   every record would cost if the contract passed records by value).
//! - field-router (Avro): the envelope as an Avro record (the same content,
//!   in a schema registry's wire format) on a route that reads values by
//!   schema; the topic from its `type` field, read by the router
//!   (`batch.field`, or `batch.fields` for the whole call in Python and
//!   TypeScript). `schema-shapes` reads the same field the other ways the
//!   contract allows: the whole value as JSON (`decoded`), and in Python one
//!   router call per record (`field`). What the router spends checking each
//!   framed record against its schema before the call is printed after the
//!   table.
//!
//! The native column runs the plugin crate's own `route` on a message built
//! once (its fields already in memory), so it is the logic alone; the wasm
//! column is everything the router pays per record: entering the sandbox,
//! the host calls the plugin makes, lifting its outputs.
//!
//! Records are routed one per call, and 128 per call as the router hands a
//! partition's records over under load (contract 0.3.0).
//!
//! Back-to-back calls keep everything they touch in the CPU's caches. In
//! the router, a call comes between librdkafka's work on other records,
//! which evicts much of it; the "cold" columns time calls each made after
//! writing 1 MiB of other memory (about the L2 cache of a core).
//!
//! Run: `cargo bench -p switchyard-tests --bench plugin_call [-- NAME...]`

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use switchyard::plugin::{Limits, PluginEngine, RouteContext};
use switchyard::record::{self, Header, SourceRecord};
use switchyard::schema::Compiled;
use switchyard::schema::check::{Check, RecordSchemas};
use switchyard::schema::dir::SchemaDir;
use switchyard::schema::store::{Lookup, SchemaStore};
use switchyard_plugin_fixtures as fixtures;
use switchyard_sdk::{Config, Message, Plugin};

const WARMUP: u32 = 20_000;
/// Interference from other work on the machine only ever adds time, so
/// the fastest round is the estimate least disturbed by it.
const ROUNDS: usize = 15;
/// Calls per round; a round lasts a few tens of milliseconds at most.
const CALLS_PER_ROUND: u32 = 20_000;
const SIZES: [usize; 3] = [100, 1024, 10 * 1024];
/// Memory written between two cold calls.
const EVICT_BYTES: usize = 1 << 20;
/// Records per cold round (at least `COLD_MIN_CALLS` calls), and rounds
/// of them (the first ones).
const COLD_CALLS: u32 = 2_000;
const COLD_MIN_CALLS: u32 = 100;
const COLD_ROUNDS: usize = 3;
const TARGET: &str = "output";
/// Records per call, as the router hands them over at most.
const BATCH: usize = 128;
const BATCH_U32: u32 = 128;

type Native = Box<dyn Fn(&Message<'_>, &Arc<SourceRecord>) -> anyhow::Result<Vec<record::Output>>>;

struct Case {
    name: &'static str,
    plugin: std::path::PathBuf,
    config: Vec<(String, String)>,
    native: Option<Native>,
    /// The record's value as Avro, on a route that reads values by schema.
    avro: bool,
}

/// The envelope's Avro schema: the JSON envelope's fields, in its order.
const ENVELOPE_AVSC: &str = r#"{"type": "record", "name": "Envelope", "fields": [
    {"name": "type", "type": "string"},
    {"name": "version", "type": "int"},
    {"name": "timestamp", "type": "string"},
    {"name": "payload", "type": {"type": "record", "name": "Payload", "fields": [{"name": "pad", "type": "string"}]}}
]}"#;
/// Its ID in the schema directory of the Avro cases.
const ENVELOPE_ID: u32 = 1;

/// A case of the field router (or a shape fixture) reading the Avro
/// envelope's `type`.
fn avro_case(name: &'static str, plugin: std::path::PathBuf, config: &[(&str, &str)]) -> Case {
    Case {
        name,
        plugin,
        config: config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        native: None,
        avro: true,
    }
}

fn main() -> anyhow::Result<()> {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let envelope_config = vec![("order.created".to_owned(), "orders.created".to_owned())];
    switchyard_sdk::testing::set_default_target(TARGET);
    switchyard_sdk::testing::set_partition_count(TARGET, 6);
    let cases = [
        Case {
            name: "identity",
            plugin: fixtures::hello(),
            config: vec![],
            // `hello`'s route, verbatim: the crate exports no Rust API.
            native: Some(native(|_: &Message<'_>| {
                Ok(vec![switchyard_sdk::Output::forward()])
            })),
            avro: false,
        },
        Case {
            name: "tenant-partitioner",
            plugin: fixtures::tenant_partitioner(),
            config: vec![],
            native: Some(plugin::<tenant_partitioner::TenantPartitioner>(&[])?),
            avro: false,
        },
        Case {
            name: "envelope-router (JSON)",
            plugin: fixtures::envelope_router(),
            native: Some(plugin::<envelope_router::EnvelopeRouter>(&envelope_config)?),
            config: envelope_config.clone(),
            avro: false,
        },
        Case {
            name: "copy-through",
            plugin: fixtures::copy_through(),
            config: vec![],
            native: None,
            avro: false,
        },
        // The same plugins written in Python and TypeScript (an interpreter
        // in the component): no native column, the Rust rows above are
        // their baseline.
        Case {
            name: "identity (python)",
            plugin: fixtures::python("hello"),
            config: vec![],
            native: None,
            avro: false,
        },
        Case {
            name: "tenant-partitioner (python)",
            plugin: fixtures::python("tenant-partitioner"),
            config: vec![],
            native: None,
            avro: false,
        },
        Case {
            name: "envelope-router (JSON, python)",
            plugin: fixtures::python("envelope-router"),
            config: envelope_config.clone(),
            native: None,
            avro: false,
        },
        Case {
            name: "identity (typescript)",
            plugin: fixtures::typescript("hello"),
            config: vec![],
            native: None,
            avro: false,
        },
        Case {
            name: "tenant-partitioner (typescript)",
            plugin: fixtures::typescript("tenant-partitioner"),
            config: vec![],
            native: None,
            avro: false,
        },
        Case {
            name: "envelope-router (JSON, typescript)",
            plugin: fixtures::typescript("envelope-router"),
            config: envelope_config.clone(),
            native: None,
            avro: false,
        },
        avro_case(
            "field-router (Avro)",
            fixtures::field_router(),
            &[("field", "type")],
        ),
        avro_case(
            "decoded (Avro, whole value)",
            fixtures::path("schema-shapes"),
            &[("path", "type"), ("shape", "decoded")],
        ),
        avro_case(
            "field-router (Avro, python)",
            fixtures::python("field-router"),
            &[("field", "type")],
        ),
        avro_case(
            "field per record (Avro, python)",
            fixtures::python("schema-shapes"),
            &[("path", "type"), ("shape", "field")],
        ),
        avro_case(
            "decoded (Avro, python)",
            fixtures::python("schema-shapes"),
            &[("path", "type"), ("shape", "decoded")],
        ),
        avro_case(
            "field-router (Avro, typescript)",
            fixtures::typescript("field-router"),
            &[("field", "type")],
        ),
    ];
    let engine = PluginEngine::new()?;
    // The Avro cases' schema, in a directory of its own.
    let schema_dir = tempfile::tempdir()?;
    std::fs::write(
        schema_dir.path().join(format!("{ENVELOPE_ID}.avsc")),
        ENVELOPE_AVSC,
    )?;
    let store = Arc::new(SchemaStore::new(
        Some(SchemaDir::open(schema_dir.path())?),
        None,
        None,
    ));
    let Lookup::Ready(envelope) = store.lookup(ENVELOPE_ID) else {
        anyhow::bail!("the envelope's schema does not compile");
    };
    let schemas = RecordSchemas::new(store, false, true);
    let context = RouteContext::new(
        "bench".to_owned(),
        TARGET.to_owned(),
        Arc::new(std::collections::HashMap::from([(TARGET.to_owned(), 6)])),
    );

    // Every cell: a wasm instance and a record, and the native logic with
    // the same record as a message.
    struct Cell<'c> {
        case: &'c Case,
        size: usize,
        instance: switchyard::plugin::PluginInstance,
        source: Arc<SourceRecord>,
        msg: Message<'static>,
        /// `BATCH` copies of the record, each in its own allocation, and
        /// their messages.
        batch: Vec<Arc<SourceRecord>>,
        msgs: Vec<Message<'static>>,
        wasm: f64,
        wasm_batch: f64,
        native: f64,
        wasm_cold: f64,
        native_cold: f64,
        wasm_batch_cold: f64,
        native_batch_cold: f64,
    }
    let mut cells = Vec::new();
    for case in &cases {
        if !only.is_empty() && !only.iter().any(|o| case.name.contains(o.as_str())) {
            continue;
        }
        let plugin = engine.load(&case.plugin)?;
        for size in SIZES {
            let (context, record) = if case.avro {
                (
                    context.clone().with_schemas(schemas.clone()),
                    avro_record(size, &envelope)?,
                )
            } else {
                (context.clone(), source_record(size))
            };
            let mut instance = plugin.instantiate(&case.config, context, Limits::default())?;
            let source = Arc::new(record.clone());
            let msg = message(&source);
            let batch: Vec<_> = (0..BATCH).map(|_| Arc::new(record.clone())).collect();
            let msgs = batch.iter().map(|r| message(r)).collect();
            if let Some(route) = &case.native {
                // Same outputs, or the comparison is meaningless.
                anyhow::ensure!(
                    format!("{:?}", route(&msg, &source)?)
                        == format!("{:?}", instance.route(&source)?),
                    "{}: native and wasm outputs differ",
                    case.name
                );
            }
            cells.push(Cell {
                case,
                size,
                instance,
                source,
                msg,
                batch,
                msgs,
                wasm: f64::INFINITY,
                wasm_batch: f64::INFINITY,
                native: f64::INFINITY,
                wasm_cold: f64::INFINITY,
                native_cold: f64::INFINITY,
                wasm_batch_cold: f64::INFINITY,
                native_batch_cold: f64::INFINITY,
            });
        }
    }
    // Rounds interleaved across cells, so that a burst of other work on
    // the machine spoils a few rounds of every cell rather than all the
    // rounds of one; each cell keeps its fastest round.
    let mut evict = vec![0_u8; EVICT_BYTES];
    for round in 0..ROUNDS {
        for cell in &mut cells {
            let warmup = if round == 0 { WARMUP } else { 0 };
            let (instance, source, batch) = (&mut cell.instance, &cell.source, &cell.batch);
            cell.wasm = cell.wasm.min(ns_per_record(warmup, 1, || {
                std::hint::black_box(instance.route(source)).map(drop)?;
                Ok(())
            })?);
            let mut routed = || {
                let answers = instance.route_batch(std::hint::black_box(batch))?;
                anyhow::ensure!(answers.iter().all(Result::is_ok), "a record failed");
                Ok(())
            };
            cell.wasm_batch =
                cell.wasm_batch
                    .min(ns_per_record(warmup / BATCH_U32, BATCH_U32, &mut routed)?);
            if round < COLD_ROUNDS {
                cell.wasm_batch_cold = cell
                    .wasm_batch_cold
                    .min(cold_ns_per_record(&mut evict, BATCH_U32, routed)?);
                cell.wasm_cold = cell.wasm_cold.min(cold_ns_per_record(&mut evict, 1, || {
                    std::hint::black_box(instance.route(source)).map(drop)?;
                    Ok(())
                })?);
            }
            if let Some(route) = &cell.case.native {
                let msg = &cell.msg;
                let mut call = || {
                    std::hint::black_box(route(std::hint::black_box(msg), source)?);
                    Ok(())
                };
                cell.native = cell.native.min(ns_per_record(warmup, 1, &mut call)?);
                if round < COLD_ROUNDS {
                    cell.native_cold = cell
                        .native_cold
                        .min(cold_ns_per_record(&mut evict, 1, call)?);
                    let msgs = &cell.msgs;
                    cell.native_batch_cold = cell.native_batch_cold.min(cold_ns_per_record(
                        &mut evict,
                        BATCH_U32,
                        || {
                            for (msg, record) in msgs.iter().zip(batch) {
                                std::hint::black_box(route(std::hint::black_box(msg), record)?);
                            }
                            Ok(())
                        },
                    )?);
                }
            }
        }
    }

    println!(
        "ns per record: fastest of {ROUNDS} interleaved rounds of {CALLS_PER_ROUND} records, one reused instance, \
         records routed one per call (\"1\") or {BATCH} per call (\"{BATCH}\", as the router does); \
         cold: fastest of {COLD_ROUNDS} rounds of {COLD_CALLS} calls, each after writing {} KiB of other memory",
        EVICT_BYTES / 1024
    );
    println!(
        "{:<24} {:>6} {:>7} {:>7} {:>7} {:>6}   {:>7} {:>7} {:>7} {:>7} {:>6}",
        "plugin",
        "value",
        "wasm 1",
        format!("{BATCH}"),
        "native",
        "ratio",
        "cold 1",
        "native",
        format!("{BATCH}"),
        "native",
        "ratio"
    );
    let ratio = |wasm: f64, native: f64| {
        if native.is_finite() {
            (format!("{native:.0}"), format!("{:.1}x", wasm / native))
        } else {
            ("-".to_owned(), "-".to_owned())
        }
    };
    for cell in &cells {
        let (native, warm_ratio) = ratio(cell.wasm_batch, cell.native);
        let (native_cold, _) = ratio(cell.wasm_cold, cell.native_cold);
        let (native_batch_cold, cold_ratio) = ratio(cell.wasm_batch_cold, cell.native_batch_cold);
        println!(
            "{:<24} {:>6} {:>7.0} {:>7.0} {:>7} {:>6}   {:>7.0} {:>7} {:>7.0} {:>7} {:>6}",
            cell.case.name,
            size_name(cell.size),
            cell.wasm,
            cell.wasm_batch,
            native,
            warm_ratio,
            cell.wasm_cold,
            native_cold,
            cell.wasm_batch_cold,
            native_batch_cold,
            cold_ratio
        );
    }
    println!(
        "(ratio: wasm time per record in calls of {BATCH} / native time for the same logic and record)"
    );
    if cells.iter().any(|c| c.case.avro) {
        // What the worker does before the call, for each framed record.
        let mut line = String::from("the router's schema check of a record before its call, ns:");
        for size in SIZES {
            let record = avro_record(size, &envelope)?;
            let mut fastest = f64::INFINITY;
            for _ in 0..ROUNDS {
                fastest = fastest.min(ns_per_record(WARMUP / 10, 1, || {
                    anyhow::ensure!(
                        schemas.check(std::hint::black_box(&record)) == Check::Ok,
                        "the record does not match its schema"
                    );
                    Ok(())
                })?);
            }
            line.push_str(&format!(" {fastest:.0} ({})", size_name(size)));
        }
        println!("{line}");
    }
    Ok(())
}

/// The envelope of [`source_record`] as an Avro record of the envelope's
/// schema, in the wire format: the same content.
fn avro_record(size: usize, schema: &Compiled) -> anyhow::Result<SourceRecord> {
    let mut record = source_record(size);
    let json: serde_json::Value =
        serde_json::from_slice(record.value.as_deref().unwrap_or_default())?;
    let framed = schema.encode(&json, None).map_err(anyhow::Error::msg)?;
    record.value = Some(Bytes::from(framed));
    Ok(record)
}

/// Ns per record of `call`, which routes `records` records, made with cold
/// caches: each call after writing `evict` through, timed on its own (the
/// clock's own cost taken off).
fn cold_ns_per_record(
    evict: &mut [u8],
    records: u32,
    mut call: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut evict_all = |round: u32| {
        for line in evict.chunks_mut(64) {
            line[0] = line[0].wrapping_add(round as u8);
        }
        std::hint::black_box(&*evict);
    };
    let (mut calls, mut clock) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let rounds = (COLD_CALLS / records).max(COLD_MIN_CALLS);
    for i in 0..rounds {
        evict_all(i);
        let start = Instant::now();
        call()?;
        calls += start.elapsed();
        evict_all(i);
        let start = Instant::now();
        clock += start.elapsed();
    }
    Ok(calls.saturating_sub(clock).as_nanos() as f64 / f64::from(rounds * records))
}

/// Ns per record of `call`, which routes `records` records, over one round
/// of `CALLS_PER_ROUND` records, after `warmup` calls.
fn ns_per_record(
    warmup: u32,
    records: u32,
    mut call: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..warmup {
        call()?;
    }
    let calls = CALLS_PER_ROUND / records;
    let start = Instant::now();
    for _ in 0..calls {
        call()?;
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(calls * records))
}

/// A native router: the plugin crate's `route`, its outputs converted to
/// the router's as the host converts a plugin's.
fn native(route: impl Fn(&Message<'_>) -> switchyard_sdk::RouteResult + 'static) -> Native {
    Box::new(move |msg, source| match route(msg) {
        Ok(outputs) => Ok(outputs.into_iter().map(|o| convert(o, source)).collect()),
        Err(e) => Err(anyhow::anyhow!("native route failed: {e:?}")),
    })
}

fn plugin<P: Plugin + 'static>(config: &[(String, String)]) -> anyhow::Result<Native> {
    let plugin = P::init(&Config::from_pairs(
        config.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
    .map_err(anyhow::Error::msg)?;
    Ok(native(move |msg| plugin.route(msg)))
}

fn convert(out: switchyard_sdk::Output, source: &Arc<SourceRecord>) -> record::Output {
    let data = |d| match d {
        switchyard_sdk::Data::Original => record::Data::Original,
        switchyard_sdk::Data::Null => record::Data::Null,
        switchyard_sdk::Data::Bytes(b) => record::Data::Bytes(Bytes::from(b)),
    };
    let headers = |list: Vec<switchyard_sdk::Header>| {
        list.into_iter()
            .map(|h| Header {
                key: h.key.into(),
                value: Bytes::from(h.value),
            })
            .collect()
    };
    record::Output {
        source: source.clone(),
        topic: out.topic,
        partition: out.partition,
        key: data(out.key),
        value: data(out.value),
        headers: match out.headers {
            switchyard_sdk::OutputHeaders::Original => record::OutputHeaders::Original,
            switchyard_sdk::OutputHeaders::Append(h) => record::OutputHeaders::Append(headers(h)),
            switchyard_sdk::OutputHeaders::Replace(h) => record::OutputHeaders::Replace(headers(h)),
        },
        timestamp_ms: out.timestamp_ms,
    }
}

/// The record as the SDK's native `Message` (every field filled in).
fn message(source: &SourceRecord) -> Message<'static> {
    let mut builder = Message::builder()
        .topic(source.topic.to_string())
        .partition(source.partition)
        .offset(source.offset);
    if let Some(ts) = source.timestamp_ms {
        builder = builder.timestamp_ms(ts);
    }
    if let Some(key) = &source.key {
        builder = builder.key(key.to_vec());
    }
    if let Some(value) = &source.value {
        builder = builder.value(value.to_vec());
    }
    for h in &source.headers {
        builder = builder.header(h.key.to_string(), h.value.to_vec());
    }
    builder.build()
}

fn size_name(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// A JSON envelope of `size` bytes with a key and three headers, one of them
/// the tenant.
fn source_record(size: usize) -> SourceRecord {
    let head = r#"{"type":"order.created","version":1,"timestamp":"2026-11-28T12:00:00Z","payload":{"pad":""#;
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let value = format!("{head}{}{tail}", "x".repeat(pad));
    let header = |k: &str, v: &str| Header {
        key: k.into(),
        value: Bytes::copy_from_slice(v.as_bytes()),
    };
    SourceRecord {
        topic: "orders".into(),
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
        wire_headers: Default::default(),
    }
}
