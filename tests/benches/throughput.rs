//! Records per second through the whole router on the test broker: 100,000
//! records of 1 KiB on 6 partitions, routed without a plugin and through
//! the tenant partitioner, against a baseline measured in the same run: a
//! hand-written rdkafka consume → produce loop with no plugin, no offset
//! tracking and no checks. Each runs on fresh topics, joins its group
//! first, then is timed from the first input written to the last output
//! read back.
//!
//! Run: `cargo bench -p switchyard-tests --bench throughput`
//! (uses the broker in `SWITCHYARD_TEST_BROKER`, or starts one).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use switchyard::pipeline::{self, LogFailures, RouterHandle};
use switchyard::plugin::PluginEngine;
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{TestRecord, broker, consume, create_topics, produce, random_topic};

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 6;
const TIMEOUT: Duration = Duration::from_secs(300);

/// What is measured: something that routes `source` to `target` until told
/// to stop.
trait Runner {
    fn stop(self: Box<Self>);
}

fn main() -> anyhow::Result<()> {
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

    let baseline = measure(&inputs, |source, target| {
        Ok(Box::new(RawLoop::start(source, target)?))
    })?;
    let passthrough = measure(&inputs, |source, target| router(source, target, None))?;
    let partitioner = measure(&inputs, |source, target| {
        router(source, target, Some(&fixtures::tenant_partitioner()))
    })?;
    println!("{RECORDS} records of ~1 KiB, {PARTITIONS} partitions in and out");
    println!("{:<40} {:>12} {:>8}", "", "records/s", "ratio");
    for (name, rate) in [
        ("rdkafka consume->produce loop (baseline)", baseline),
        ("switchyard, no plugin", passthrough),
        ("switchyard, tenant-partitioner", partitioner),
    ] {
        println!("{name:<40} {rate:>12.0} {:>7.2}x", rate / baseline);
    }
    println!(
        "(from the first input written to the last output read back; the group is joined before)"
    );
    Ok(())
}

/// Starts the runner on fresh topics, waits until it routes (group joined),
/// then times writing `inputs` and reading every output back.
fn measure(
    inputs: &[TestRecord],
    start: impl FnOnce(&str, &str) -> anyhow::Result<Box<dyn Runner>>,
) -> anyhow::Result<f64> {
    let (source, target) = (random_topic("bench-src"), random_topic("bench-dst"));
    create_topics(&[(&source, PARTITIONS), (&target, PARTITIONS)])?;
    let runner = start(&source, &target)?;
    produce(
        &source,
        &[TestRecord::new("warm-up", "{}").header("tenant-id", "acme")],
    )?;
    consume(&target, 1, TIMEOUT)?;
    let started = Instant::now();
    produce(&source, inputs)?;
    consume(&target, inputs.len() + 1, TIMEOUT)?;
    // `consume` waits 300 ms for stragglers after the last record.
    let elapsed = started.elapsed().saturating_sub(Duration::from_millis(300));
    runner.stop();
    Ok(inputs.len() as f64 / elapsed.as_secs_f64())
}

/// The baseline: consume every record and produce it unchanged; no plugin,
/// no checks, no offset tracking.
struct RawLoop {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl RawLoop {
    fn start(source: &str, target: &str) -> anyhow::Result<Self> {
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
        let stop = Arc::new(AtomicBool::new(false));
        let target = target.to_owned();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
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
                }
                producer.flush(TIMEOUT)?;
                Ok(())
            }
        });
        Ok(Self { stop, thread })
    }
}

impl Runner for RawLoop {
    fn stop(self: Box<Self>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

impl Runner for RouterHandle {
    fn stop(self: Box<Self>) {
        self.shutdown();
        self.join();
    }
}

fn router(source: &str, target: &str, plugin: Option<&Path>) -> anyhow::Result<Box<dyn Runner>> {
    let plugin_line = plugin.map_or_else(String::new, |p| format!("plugin = \"{}\"", p.display()));
    let config = switchyard_tests::router_config(
        &random_topic("bench-group"),
        &format!(
            "[[routes]]\nname = \"bench\"\nsource_topics = [\"{source}\"]\n{plugin_line}\ndefault_target = \"{target}\"\non_failure = \"skip\"\n"
        ),
    )?;
    let engine = PluginEngine::new()?;
    Ok(Box::new(pipeline::start(
        &config,
        &engine,
        Arc::new(LogFailures::default()),
    )?))
}
