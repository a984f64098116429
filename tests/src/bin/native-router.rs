//! The router a team writes by hand, for the benchmarks to compare with:
//! an rdkafka consume → produce loop with the tenant partitioner's logic
//! compiled in (partition = FNV-1a-32 of the `tenant-id` header, or of the
//! key when it is missing or empty, or of nothing, modulo the target's
//! partition count). No sandbox, no checks.
//!
//! By default no offset tracking beyond librdkafka's auto-commit (which
//! commits what was consumed, delivered or not). With
//! `--store-after-delivery`, the at-least-once rule Switchyard keeps: a
//! source offset is stored for the auto-commit only once its output and
//! every earlier record's of the same partition were acknowledged.
//!
//! Usage: `native-router [--store-after-delivery] BOOTSTRAP GROUP SOURCE
//! TARGET [KEY=VALUE...]`, the pairs being librdkafka consumer properties.
//! Runs until killed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// Acknowledged source records, (partition, offset), for the main loop.
#[derive(Default, Clone)]
struct Acks(Arc<Mutex<Vec<(i32, i64)>>>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<(i32, i64)>;

    fn delivery(&self, result: &DeliveryResult<'_>, source: Self::DeliveryOpaque) {
        match result {
            Ok(_) => self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(*source),
            Err((e, _)) => {
                eprintln!("delivery failed: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Per source partition: offsets consumed and not yet acknowledged, and
/// the next offset to consume.
#[derive(Default)]
struct InFlight {
    pending: BTreeSet<i64>,
    next: i64,
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let store_after_delivery = args.first().is_some_and(|a| a == "--store-after-delivery");
    if store_after_delivery {
        args.remove(0);
    }
    let [bootstrap, group, source, target, properties @ ..] = args.as_slice() else {
        anyhow::bail!(
            "usage: native-router [--store-after-delivery] BOOTSTRAP GROUP SOURCE TARGET [KEY=VALUE...]"
        );
    };
    let mut consumer = ClientConfig::new();
    consumer
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest");
    if store_after_delivery {
        consumer.set("enable.auto.offset.store", "false");
    }
    for pair in properties {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("'{pair}' is not KEY=VALUE"))?;
        consumer.set(key, value);
    }
    let consumer: BaseConsumer = consumer.create()?;
    let acks = Acks::default();
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create_with_context(acks.clone())?;
    let mut in_flight: HashMap<i32, InFlight> = HashMap::new();
    let mut acked = Vec::new();
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
        if store_after_delivery {
            store_acknowledged(&consumer, source, &acks, &mut acked, &mut in_flight)?;
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        let origin = Box::new((message.partition(), message.offset()));
        if store_after_delivery {
            let partition = in_flight.entry(message.partition()).or_default();
            partition.pending.insert(message.offset());
            partition.next = message.offset() + 1;
        }
        let tenant = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "tenant-id"))
            .and_then(|h| h.value)
            .filter(|tenant| !tenant.is_empty())
            .or_else(|| message.key())
            .unwrap_or_default();
        let partition = i32::try_from(fnv1a_32(tenant) % partitions)?;
        let mut record: BaseRecord<'_, [u8], [u8], Box<(i32, i64)>> =
            BaseRecord::with_opaque_to(target, origin).partition(partition);
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

/// Stores, for the auto-commit, each source partition's offset up to which
/// every record's output was acknowledged.
fn store_acknowledged(
    consumer: &BaseConsumer,
    source: &str,
    acks: &Acks,
    acked: &mut Vec<(i32, i64)>,
    in_flight: &mut HashMap<i32, InFlight>,
) -> anyhow::Result<()> {
    std::mem::swap(
        acked,
        &mut acks
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    if acked.is_empty() {
        return Ok(());
    }
    let mut touched = BTreeSet::new();
    for (partition, offset) in acked.drain(..) {
        if let Some(state) = in_flight.get_mut(&partition) {
            state.pending.remove(&offset);
            touched.insert(partition);
        }
    }
    let mut tpl = TopicPartitionList::new();
    for partition in touched {
        let state = &in_flight[&partition];
        let done = state.pending.first().copied().unwrap_or(state.next);
        tpl.add_partition_offset(source, partition, Offset::Offset(done))?;
    }
    consumer.store_offsets(&tpl)?;
    Ok(())
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}
