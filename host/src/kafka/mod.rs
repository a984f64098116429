//! Talking to Kafka, and nothing else: client settings, the output
//! producer, partition queues, topic metadata. What the pipeline does with
//! records, offsets and reports lives in `pipeline/`.

mod client;
mod metadata;
mod producer;
mod queue;

pub use client::{
    STATISTICS_INTERVAL_MS, consumer_config, producer_config, router_consumer_config,
};
pub use metadata::{TopicCache, partition_counts};
pub use producer::{
    DeliveryContext, InFlight, Outgoing, OutputProducer, Report, Role, Sender, refuses_the_record,
};
pub use queue::{FetchQueue, FetchedMessage, HeaderNames, WireHeaders};

/// librdkafka's own log lines, at the matching `tracing` level.
pub(crate) fn client_log(
    client: &str,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", client, fac, "{message}");
        }
        L::Warning => tracing::warn!(target: "librdkafka", client, fac, "{message}"),
        L::Notice | L::Info => tracing::info!(target: "librdkafka", client, fac, "{message}"),
        L::Debug => tracing::debug!(target: "librdkafka", client, fac, "{message}"),
    }
}
