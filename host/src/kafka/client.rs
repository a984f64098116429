//! librdkafka settings: Switchyard's defaults, then the user's properties.

use rdkafka::ClientConfig;

use crate::config::{Delivery, KafkaConfig};

/// How often librdkafka reports statistics by default, in milliseconds.
pub const STATISTICS_INTERVAL_MS: u64 = 1000;

/// Fetched records queued per worker, at most, in KiB (librdkafka also
/// caps a fetch response at this, so a response carries two partitions'
/// worth at its default 1 MiB per partition). Measured against 8 MiB and
/// 1 MiB (docs/performance.md, "How much to fetch ahead"): less memory than
/// 8 MiB, as fast; 1 MiB let a partition fall megabytes behind its worker's
/// others.
const QUEUED_KBYTES: u64 = 2048;

/// Fetched records queued in all the router's workers' queues, at least, in
/// KiB: a router with one worker gets this much in its one queue. Its six
/// partitions sharing 2 MiB, one of them fell megabytes behind the others
/// whenever the router could not keep up; with 4 MiB none did (as with two
/// workers of 2 MiB each).
const QUEUED_KBYTES_IN_ALL: u64 = 4096;

/// How long librdkafka waits before it fetches again for a partition whose
/// worker's queue was full, in milliseconds. A worker's partitions share
/// its queue, so they find it full together: librdkafka's 1 s would stall
/// them all at once.
const QUEUE_BACKOFF_MS: u64 = 20;

/// Outputs waiting in the producer for their delivery report, at most, in
/// KiB and in records: enough to keep produce requests in flight to every
/// broker, where librdkafka's 1 GiB and 100,000 let a router behind on its
/// source hold a second's worth or more. Waiting outputs stop the workers
/// (back-pressure) instead of growing memory, and a small working set is
/// cheaper: measured against the defaults (docs/performance.md, "What the
/// producer holds"), under half the memory catching up, and less CPU per
/// record at small records.
const PRODUCER_QUEUE_KBYTES: u64 = 8192;
const PRODUCER_QUEUE_RECORDS: u64 = 10_000;

/// Consumer settings. Offsets are stored by the pipeline only once a record
/// is fully acknowledged (`enable.auto.offset.store=false`) and committed
/// in the background from what was stored.
#[must_use]
pub fn consumer_config(kafka: &KafkaConfig) -> ClientConfig {
    consumer_config_queueing(kafka, QUEUED_KBYTES)
}

/// [`consumer_config`] for a router whose `workers` read the records of
/// their partitions, each from a queue of its own: what is fetched ahead
/// is bounded per worker, and not below [`QUEUED_KBYTES_IN_ALL`] in all.
#[must_use]
pub fn router_consumer_config(kafka: &KafkaConfig, workers: usize) -> ClientConfig {
    let workers = u64::try_from(workers.max(1)).unwrap_or(u64::MAX);
    consumer_config_queueing(kafka, QUEUED_KBYTES.max(QUEUED_KBYTES_IN_ALL / workers))
}

fn consumer_config_queueing(kafka: &KafkaConfig, queued_kbytes: u64) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        // A router that starts on a topic should not skip what is there.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Each worker reads its partitions' records from one queue: this
        // bounds what is fetched ahead into it.
        .set("queued.max.messages.kbytes", queued_kbytes.to_string())
        .set("fetch.queue.backoff.ms", QUEUE_BACKOFF_MS.to_string())
        // Broker state and lag for readiness and metrics.
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string());
    if kafka.delivery == Delivery::ExactlyOnce {
        // Offsets go into the transactions; only committed records are
        // read (what an upstream exactly-once producer aborted is skipped).
        config
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
    }
    for (key, value) in &kafka.consumer {
        config.set(key, value.to_string());
    }
    config
}

/// Producer settings: idempotent, every replica acknowledges, batched and
/// compressed, keys partitioned like the Java client does.
#[must_use]
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set(
            "queue.buffering.max.kbytes",
            PRODUCER_QUEUE_KBYTES.to_string(),
        )
        .set(
            "queue.buffering.max.messages",
            PRODUCER_QUEUE_RECORDS.to_string(),
        )
        // Same key, same partition as records produced by Java clients.
        .set("partitioner", "murmur2_random");
    if let Some(id) = kafka.transactional_id() {
        config.set("transactional.id", id);
    }
    for (key, value) in &kafka.producer {
        config.set(key, value.to_string());
    }
    config
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    fn kafka(extra: &str) -> KafkaConfig {
        toml::from_str(&format!("bootstrap_servers = \"127.0.0.1:9092\"\n{extra}")).unwrap()
    }

    #[test]
    fn a_router_fetches_ahead_2_mib_a_worker_and_4_mib_in_all_unless_told_otherwise() {
        let queued =
            |config: ClientConfig| config.get("queued.max.messages.kbytes").unwrap().to_owned();
        assert_eq!(queued(router_consumer_config(&kafka(""), 1)), "4096");
        assert_eq!(queued(router_consumer_config(&kafka(""), 2)), "2048");
        assert_eq!(queued(router_consumer_config(&kafka(""), 16)), "2048");
        assert_eq!(queued(consumer_config(&kafka(""))), "2048");
        let told = kafka("[consumer]\n\"queued.max.messages.kbytes\" = 1024");
        assert_eq!(queued(router_consumer_config(&told, 1)), "1024");
    }
}
