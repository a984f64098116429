//! `switchyard demo`: the whole record path with nothing to set up. An
//! embedded Kafka (librdkafka's in-process mock cluster), a sample
//! workload, two routes through the example plugins, and a summary of where
//! every record went.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header as KafkaHeader, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

use crate::config::RouterConfig;
use crate::pipeline::{FailureSink, RecordFailure};
use crate::plugin::PluginEngine;

const TENANTS: [&str; 5] = ["acme", "globex", "initech", "umbrella", "hooli"];
const ORDERS: usize = 3000;
const EVENT_TYPES: [&str; 4] = [
    "order.created",
    "order.paid",
    "order.shipped",
    "order.refunded",
];
const EVENTS: usize = 600;
const MALFORMED: [&str; 4] = [
    "not json at all",
    r#"{"type":"order.paid","version":1"#,
    r#"{"version":1,"payload":{}}"#,
    "",
];
const TOPICS: [(&str, i32); 7] = [
    ("orders", 3),
    ("orders-by-tenant", 6),
    ("events", 3),
    ("orders.created", 2),
    ("orders.paid", 2),
    ("orders.shipped", 2),
    ("events.dlq", 1),
];
const TIMEOUT: Duration = Duration::from_secs(60);

/// The dead-letter topic is the demo's record of failures: nothing to log.
struct Quiet;

impl FailureSink for Quiet {
    fn failed(&self, _: &RecordFailure<'_>) {}
}

/// Runs the demo with the example plugins found in `plugins_dir`.
pub fn run(plugins_dir: &Path, engine: &PluginEngine) -> anyhow::Result<()> {
    let plugin = |name: &str| -> anyhow::Result<PathBuf> {
        let path = plugins_dir.join(format!("{name}.wasm"));
        if !path.is_file() {
            bail!(
                "example plugin '{}' not found: build the plugins first \
                 (cd plugins && cargo build --release --target wasm32-wasip2) or run scripts/demo",
                path.display()
            );
        }
        Ok(path)
    };
    let partitioner_wasm = std::fs::read(plugin("tenant_partitioner")?)?;
    let envelope_router = plugin("envelope_router")?;
    // The orders route's plugin lives in a folder of the demo's own, so
    // that the demo can replace the file while routing.
    let swap_dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&swap_dir)?;
    let result = run_in(&swap_dir, &partitioner_wasm, &envelope_router, engine);
    let _ = std::fs::remove_dir_all(&swap_dir);
    result
}

fn run_in(
    swap_dir: &Path,
    partitioner_wasm: &[u8],
    envelope_router: &Path,
    engine: &PluginEngine,
) -> anyhow::Result<()> {
    let partitioner = swap_dir.join("tenant_partitioner.wasm");
    std::fs::write(&partitioner, partitioner_wasm)?;

    let cluster = MockCluster::new(1).context("cannot start the embedded Kafka")?;
    for (topic, partitions) in TOPICS {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("cannot create topic '{topic}'"))?;
    }
    let bootstrap = cluster.bootstrap_servers();
    println!("Switchyard demo: embedded Kafka at {bootstrap} (librdkafka mock cluster)\n");

    let half = ORDERS / 2;
    produce_workload(&bootstrap, 0..half, true)?;
    println!(
        "Produced {half} orders of {} tenants to 'orders' (tenant in the 'tenant-id' header)",
        TENANTS.len()
    );
    println!(
        "Produced {} events to 'events': JSON envelopes of types {}, and {} malformed records\n",
        EVENTS + MALFORMED.len(),
        EVENT_TYPES.join(", "),
        MALFORMED.len()
    );

    let toml = format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "switchyard-demo"
[kafka.consumer]
"auto.commit.interval.ms" = 200

[http]
enabled = false

[[routes]]
name = "orders"
source_topics = ["orders"]
plugin = "{partitioner}"
default_target = "orders-by-tenant"
on_failure = "stop"

[[routes]]
name = "events"
source_topics = ["events"]
plugin = "{envelope_router}"
default_target = "orders.created"
dead_letter_topic = "events.dlq"
allowed_targets = ["orders.*"]
plugin_config = {{ "order.created" = "orders.created", "order.paid" = "orders.paid", "order.shipped" = "orders.shipped" }}
"#,
        partitioner = partitioner.display(),
        envelope_router = envelope_router.display(),
    );
    println!("Routes:\n  orders --[tenant_partitioner]--> orders-by-tenant (6 partitions)");
    println!(
        "  events --[envelope_router]--> orders.created | orders.paid | orders.shipped; failures -> events.dlq\n"
    );
    let config = RouterConfig::parse(Path::new("demo.toml"), &toml)?;
    let started = Instant::now();
    let router = crate::router::start(&config, engine, Arc::new(Quiet))?;

    let routed_events = EVENTS / EVENT_TYPES.len() * 3;
    let dead_letters = EVENTS / EVENT_TYPES.len() + MALFORMED.len();
    let mut reader = TargetReader::new(&bootstrap)?;
    reader.read_until(half + routed_events, dead_letters)?;

    // Hot swap: a new build of the partitioner replaces the file (written
    // aside, then renamed into place) while the router runs.
    let orders_route = router
        .routes()
        .iter()
        .find(|r| r.name() == "orders")
        .context("no orders route")?
        .clone();
    let version = |route: &crate::route::Route| {
        route
            .plugin()
            .map(|p| p.version().to_owned())
            .unwrap_or_default()
    };
    let first = version(&orders_route);
    let second_wasm = rebuilt(partitioner_wasm, 2);
    let second_sha: String = Sha256::digest(&second_wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let swapped_at = Instant::now();
    std::fs::write(swap_dir.join("next.wasm"), &second_wasm)?;
    std::fs::rename(swap_dir.join("next.wasm"), &partitioner)?;
    while orders_route
        .plugin()
        .is_none_or(|p| p.sha256() != second_sha)
    {
        if swapped_at.elapsed() > TIMEOUT {
            bail!("the new plugin file was not picked up within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let swap_time = swapped_at.elapsed();
    let second = version(&orders_route);
    produce_workload(&bootstrap, half..ORDERS, false)?;
    println!(
        "Replaced the partitioner's file while routing; then produced {} more orders\n",
        ORDERS - half
    );
    reader.read_until(ORDERS + routed_events, dead_letters)?;
    let read = reader.read;
    let elapsed = started.elapsed();
    router.shutdown();
    router.join();

    println!("Hot swap of route 'orders' (no restart, nothing lost):");
    println!("  version {first} routed orders 0..{half}");
    println!(
        "  version {second} (a new build of the same plugin) routed orders {half}..{ORDERS}, \
         live {:.0} ms after its file was written",
        swap_time.as_secs_f64() * 1000.0
    );
    println!();
    println!("Records per target partition:");
    for ((topic, partition), count) in &read.per_partition {
        println!("  {topic:<18} partition {partition}: {count:>5}");
    }
    println!("\nTenants and the partition of 'orders-by-tenant' their orders went to:");
    for (tenant, partitions) in &read.tenant_partitions {
        let list: Vec<String> = partitions.iter().map(ToString::to_string).collect();
        let verdict = if partitions.len() == 1 {
            "all orders on one partition"
        } else {
            "SPLIT ACROSS PARTITIONS"
        };
        println!("  {tenant:<9} -> {:<4} ({verdict})", list.join(","));
    }
    println!("\nDead-lettered to 'events.dlq' (each record as it was, plus headers that say why):");
    for ((kind, error), count) in &read.dead_letters {
        println!("  {count:>4} x {kind}: {error}");
    }
    if let Some(example) = &read.dead_letter_example {
        println!("  the headers of one of them:");
        for (key, value) in example {
            println!("    {key}: {value}");
        }
    }
    println!(
        "\nRouted {} records in {:.1}s (joining the consumer group included); offsets were committed only after every output was acknowledged.",
        read.total,
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn produce_workload(
    bootstrap: &str,
    orders: std::ops::Range<usize>,
    events: bool,
) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()?;
    let send =
        |topic: &str, key: Option<&str>, value: &str, tenant: Option<&str>| -> anyhow::Result<()> {
            let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(tenant) = tenant {
                record = record.headers(OwnedHeaders::new().insert(KafkaHeader {
                    key: "tenant-id",
                    value: Some(tenant),
                }));
            }
            producer.send(record).map_err(|(e, _)| e)?;
            Ok(())
        };
    for i in orders {
        let tenant = TENANTS[(i * 7 + i / 3) % TENANTS.len()];
        let value = format!(
            r#"{{"order_id":{i},"tenant":"{tenant}","total":{}}}"#,
            (i * 37) % 500
        );
        send("orders", Some(&format!("order-{i}")), &value, Some(tenant))?;
    }
    for i in (0..EVENTS).filter(|_| events) {
        let kind = EVENT_TYPES[i % EVENT_TYPES.len()];
        let value = format!(
            r#"{{"type":"{kind}","version":1,"timestamp":"2026-11-28T12:00:00Z","payload":{{"order_id":{i}}}}}"#
        );
        send("events", None, &value, None)?;
    }
    for value in MALFORMED.iter().filter(|_| events) {
        send("events", None, value, None)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

#[derive(Default)]
struct TargetRead {
    total: usize,
    /// Dead-letter records by (`dlq-error-kind`, `dlq-error`).
    dead_letters: BTreeMap<(String, String), usize>,
    /// The headers of the first dead-letter record.
    dead_letter_example: Option<Vec<(String, String)>>,
    per_partition: BTreeMap<(String, i32), usize>,
    tenant_partitions: BTreeMap<String, BTreeSet<i32>>,
}

/// Reads every target partition from the start, keeping counts.
struct TargetReader {
    consumer: BaseConsumer,
    read: TargetRead,
}

impl TargetReader {
    fn new(bootstrap: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "switchyard-demo-reader")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for (topic, partitions) in &TOPICS[3..] {
            for p in 0..*partitions {
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
        }
        for p in 0..6 {
            tpl.add_partition_offset("orders-by-tenant", p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        Ok(Self {
            consumer,
            read: TargetRead::default(),
        })
    }

    /// Reads until `expected` routed records and `dead` dead-letter records
    /// in all arrived.
    fn read_until(&mut self, expected: usize, dead: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        let read = &mut self.read;
        while read.total < expected || read.dead_letters.values().sum::<usize>() < dead {
            if Instant::now() > deadline {
                bail!(
                    "the demo did not finish within {TIMEOUT:?}: {} of {expected} records routed",
                    read.total
                );
            }
            let Some(message) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message?;
            if message.topic() == "events.dlq" {
                let headers: Vec<(String, String)> = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                                (h.key.to_owned(), value.into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let get = |key: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                *read
                    .dead_letters
                    .entry((get("dlq-error-kind"), get("dlq-error")))
                    .or_default() += 1;
                read.dead_letter_example.get_or_insert(headers);
                continue;
            }
            read.total += 1;
            *read
                .per_partition
                .entry((message.topic().to_owned(), message.partition()))
                .or_default() += 1;
            if message.topic() == "orders-by-tenant"
                && let Some(tenant) = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "tenant-id"))
            {
                let tenant = String::from_utf8_lossy(tenant.value.unwrap_or_default()).into_owned();
                read.tenant_partitions
                    .entry(tenant)
                    .or_default()
                    .insert(message.partition());
            }
        }
        Ok(())
    }
}

/// `wasm` with a custom section stamping `build`: the same code, a new
/// file, so a new version.
fn rebuilt(wasm: &[u8], build: u8) -> Vec<u8> {
    let name = b"switchyard-demo-build";
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push((1 + name.len() + 1) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.push(build);
    out
}
