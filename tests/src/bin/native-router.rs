//! The router a team writes by hand, for the benchmarks to compare with:
//! an rdkafka consume → produce loop with the tenant partitioner's logic
//! compiled in (partition = FNV-1a-32 of the `tenant-id` header, or of the
//! key when it is missing or empty, or of nothing, modulo the target's
//! partition count). No sandbox, no offset
//! tracking beyond librdkafka's auto-commit, no checks.
//!
//! Usage: `native-router BOOTSTRAP GROUP SOURCE TARGET [KEY=VALUE...]`,
//! the pairs being librdkafka consumer properties. Runs until killed.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, group, source, target, properties @ ..] = args.as_slice() else {
        anyhow::bail!("usage: native-router BOOTSTRAP GROUP SOURCE TARGET [KEY=VALUE...]");
    };
    let mut consumer = ClientConfig::new();
    consumer
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest");
    for pair in properties {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("'{pair}' is not KEY=VALUE"))?;
        consumer.set(key, value);
    }
    let consumer: BaseConsumer = consumer.create()?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let partitions = producer
        .client()
        .fetch_metadata(Some(target), Duration::from_secs(10))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let partitions = u32::try_from(partitions)?;
    anyhow::ensure!(partitions > 0, "topic '{target}' has no partitions");
    consumer.subscribe(&[source])?;

    loop {
        producer.poll(Duration::ZERO);
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        let tenant = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "tenant-id"))
            .and_then(|h| h.value)
            .filter(|tenant| !tenant.is_empty())
            .or_else(|| message.key())
            .unwrap_or_default();
        let partition = i32::try_from(fnv1a_32(tenant) % partitions)?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(target).partition(partition);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        if let Some(ms) = message.timestamp().to_millis() {
            record = record.timestamp(ms);
        }
        if let Some(headers) = message.headers() {
            record = record.headers(headers.detach());
        }
        while let Err((e, back)) = producer.send(record) {
            match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
                other => return Err(other.into()),
            }
        }
    }
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}
