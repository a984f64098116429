//! Records per second through the whole router on the test broker: 100,000
//! records of 1 KiB on 6 partitions, routed without a plugin and through
//! the tenant partitioner, against a baseline measured in the same run: a
//! hand-written rdkafka consume → produce loop with no plugin, no offset
//! tracking and no checks.
//!
//! Run: `cargo bench -p switchyard-tests --bench throughput`
//! (uses the broker in `SWITCHYARD_TEST_BROKER`, or starts one).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use switchyard::config::RouterConfig;
use switchyard::pipeline::{self, LogFailures};
use switchyard::plugin::PluginEngine;
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{TestRecord, broker, consume, create_topics, produce, random_topic};

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 6;
const TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> anyhow::Result<()> {
    let source = random_topic("bench-src");
    create_topics(&[(&source, PARTITIONS)])?;
    let tenants = [
        "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell",
    ];
    let padding = "x".repeat(1024 - 40);
    let inputs: Vec<TestRecord> = (0..RECORDS)
        .map(|i| {
            TestRecord::new(
                &format!("order-{i:08}"),
                &format!(r#"{{"n":{i:08},"pad":"{padding}"}}"#),
            )
            .header("tenant-id", tenants[i % tenants.len()])
        })
        .collect();
    let start = Instant::now();
    produce(&source, &inputs)?;
    println!(
        "wrote {RECORDS} records of ~1 KiB to {PARTITIONS} partitions in {:.1}s",
        start.elapsed().as_secs_f64()
    );

    let baseline = raw_loop(&source)?;
    let passthrough = router(&source, None)?;
    let partitioner = router(&source, Some(&fixtures::tenant_partitioner()))?;
    println!("\n{:<40} {:>12} {:>8}", "", "records/s", "ratio");
    for (name, rate) in [
        ("rdkafka consume->produce loop (baseline)", baseline),
        ("switchyard, no plugin", passthrough),
        ("switchyard, tenant-partitioner", partitioner),
    ] {
        println!("{name:<40} {rate:>12.0} {:>7.2}x", rate / baseline);
    }
    println!("(time from start to the last output read back, group join included)");
    Ok(())
}

fn target() -> anyhow::Result<String> {
    let target = random_topic("bench-dst");
    create_topics(&[(&target, PARTITIONS)])?;
    Ok(target)
}

/// The baseline: consume every record and produce it unchanged, waiting
/// only for the final flush.
fn raw_loop(source: &str) -> anyhow::Result<f64> {
    let target = target()?;
    let start = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", random_topic("bench-raw"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(&[source])?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let mut seen = 0;
    while seen < RECORDS {
        anyhow::ensure!(start.elapsed() < TIMEOUT, "baseline stalled at {seen}");
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&target);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        while let Err((_, back)) = producer.send(record) {
            producer.poll(Duration::from_millis(5));
            record = back;
        }
        seen += 1;
    }
    producer.flush(TIMEOUT)?;
    let elapsed = start.elapsed();
    consume(&target, RECORDS, TIMEOUT)?;
    Ok(RECORDS as f64 / elapsed.as_secs_f64())
}

fn router(source: &str, plugin: Option<&Path>) -> anyhow::Result<f64> {
    let target = target()?;
    let plugin_line = plugin.map_or_else(String::new, |p| format!("plugin = \"{}\"", p.display()));
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "{}"
group_id = "{}"
[kafka.consumer]
"fetch.wait.max.ms" = 10

[[routes]]
name = "bench"
source_topics = ["{source}"]
{plugin_line}
default_target = "{target}"
"#,
        broker(),
        random_topic("bench-group"),
    );
    let config = RouterConfig::parse(Path::new("bench.toml"), &text)?;
    let engine = PluginEngine::new()?;
    let start = Instant::now();
    let handle = pipeline::start(&config, &engine, Arc::new(LogFailures))?;
    consume(&target, RECORDS, TIMEOUT)?;
    let elapsed = start.elapsed();
    handle.shutdown();
    handle.join();
    Ok(RECORDS as f64 / elapsed.as_secs_f64())
}
