//! Producing outputs, and turning delivery reports into acknowledgements.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::pipeline::offsets::{PartitionOffsets, RecordAck};
use crate::record::Output;

/// What a delivery report acknowledges: one output of one record.
#[derive(Debug)]
pub struct Delivery {
    /// The record's acknowledgement.
    pub ack: Arc<RecordAck>,
    /// Its partition's tracking.
    pub offsets: Arc<PartitionOffsets>,
    /// Counts the output once acknowledged (none for dead-letter records).
    pub produced: Option<prometheus_client::metrics::counter::Counter>,
}

/// Routes delivery reports to the offset tracking and librdkafka's log
/// lines to `tracing`.
#[derive(Debug, Default)]
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::client_log("producer", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(client = "producer", %error, "{reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        match result {
            Ok(_) => {
                if let Some(produced) = &delivery.produced {
                    produced.inc();
                }
                delivery.offsets.acknowledge(&delivery.ack);
            }
            Err((error, _)) => delivery.offsets.fail(&delivery.ack, error.to_string()),
        }
    }
}

/// The producer every route shares.
pub struct OutputProducer {
    inner: ThreadedProducer<DeliveryContext>,
}

impl std::fmt::Debug for OutputProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputProducer").finish_non_exhaustive()
    }
}

impl OutputProducer {
    /// A producer with `config`.
    pub fn new(config: &rdkafka::ClientConfig) -> KafkaResult<Self> {
        Ok(Self {
            inner: config.create_with_context(DeliveryContext)?,
        })
    }

    /// The librdkafka producer (transactions).
    #[must_use]
    pub fn inner(&self) -> &ThreadedProducer<DeliveryContext> {
        &self.inner
    }

    /// The underlying client (metadata requests).
    #[must_use]
    pub fn client(&self) -> &rdkafka::client::Client<DeliveryContext> {
        self.inner.client()
    }

    /// Hands `output` to librdkafka for `topic`; its delivery report
    /// acknowledges `delivery`. Waits while librdkafka's queue is full.
    pub fn send(&self, topic: &str, output: &Output, delivery: Box<Delivery>) -> KafkaResult<()> {
        let mut headers = OwnedHeaders::new();
        for header in output.headers() {
            headers = headers.insert(KafkaHeader {
                key: &header.key,
                value: Some(header.value.as_ref()),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8], Box<Delivery>> =
            BaseRecord::with_opaque_to(topic, delivery).headers(headers);
        if let Some(key) = output.key() {
            record = record.key(key);
        }
        if let Some(value) = output.value() {
            record = record.payload(value);
        }
        if let Some(partition) = output.partition {
            record = record.partition(partition);
        }
        if let Some(ts) = output.timestamp_ms() {
            record = record.timestamp(ts);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Back-pressure: wait for deliveries to free queue space.
                    self.inner.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Waits until every output handed over so far is delivered (or failed).
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.inner.flush(timeout)
    }

    /// Outputs handed over and not yet reported.
    #[must_use]
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }
}
