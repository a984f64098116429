//! Producing outputs, and turning delivery reports into acknowledgements.
//!
//! Outputs are handed to librdkafka through its C API rather than
//! `BaseProducer::send`, for two things that API does not offer:
//!
//! - **no copy of the value**: librdkafka keeps a pointer to the bytes,
//!   which the record's [`Delivery`] holds until the last of its outputs'
//!   delivery reports (a 1 KiB
//!   value is otherwise copied into a fresh allocation that another thread
//!   frees);
//! - **topic handles**: each worker's [`Sender`] keeps librdkafka's handle
//!   of every topic it writes to, where producing by name looks the topic
//!   up under the client's write lock, contended by every producing thread.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use rdkafka::ClientContext;
use rdkafka::bindings as rd;
use rdkafka::bindings::rd_kafka_vtype_t::{
    RD_KAFKA_VTYPE_HEADERS, RD_KAFKA_VTYPE_KEY, RD_KAFKA_VTYPE_MSGFLAGS, RD_KAFKA_VTYPE_OPAQUE,
    RD_KAFKA_VTYPE_PARTITION, RD_KAFKA_VTYPE_RKT, RD_KAFKA_VTYPE_TIMESTAMP, RD_KAFKA_VTYPE_VALUE,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::pipeline::offsets::{PartitionOffsets, RecordAck};
use crate::record::Output;
use crate::route::{Routed, RoutedOutputs};

/// One record's outputs on their way to Kafka, shared by their delivery
/// reports: each acknowledges one output, and the last one lets go of the
/// outputs, and with them of the values librdkafka was handed without a
/// copy (a forwarded value is held by its source record).
#[derive(Debug)]
pub struct Delivery {
    ack: Ack,
    offsets: Arc<PartitionOffsets>,
    /// Counts each output once acknowledged (none for dead-letter records).
    produced: Option<Counter>,
    outputs: RoutedOutputs,
}

/// What an acknowledgement of a [`Delivery`] settles.
#[derive(Debug)]
enum Ack {
    /// An output of its own record.
    Record(RecordAck),
    /// The output of another delivery that the broker refused, which this
    /// one (its record's dead-letter record) stands for.
    StandsFor(Arc<Delivery>),
}

/// An output the broker (or librdkafka) refused, for the record's worker to
/// settle: `delivery` holds the reference that stood for it.
#[derive(Debug)]
pub struct Refusal {
    /// The refused output's delivery.
    pub delivery: Arc<Delivery>,
    /// Which of its outputs; `None` if the report could not tell.
    pub index: Option<usize>,
    /// What the broker said.
    pub error: KafkaError,
    /// Refused even when sent alone: for good (else it may have shared a
    /// batch with the output at fault, and is sent again alone first).
    pub alone: bool,
}

impl Refusal {
    /// The refused output's index and output, if the report named one.
    #[must_use]
    pub fn output(&self) -> Option<(usize, &Routed)> {
        let index = self.index.unwrap_or(0);
        self.delivery
            .outputs()
            .get(index)
            .map(|routed| (index, routed))
    }

    /// Why, as a failure's message says it.
    #[must_use]
    pub fn reason(&self) -> String {
        refusal_reason(&self.delivery, self.index.unwrap_or(0), &self.error)
    }
}

/// Why output `index` of `delivery` failed for good, as a failure's message
/// (and a dead-letter record's `dlq-error`) says it.
#[must_use]
pub fn refusal_reason(delivery: &Delivery, index: usize, error: &KafkaError) -> String {
    let topic = delivery
        .outputs()
        .get(index)
        .map_or("?", |routed| &routed.topic);
    format!("output {index} to '{topic}' refused by the broker: {error}")
}

impl Delivery {
    /// Registers the record at `offset` with `offsets` for its `outputs`,
    /// about to be sent ([`Sender::send`]).
    #[must_use]
    pub fn new(
        offsets: &Arc<PartitionOffsets>,
        offset: i64,
        outputs: RoutedOutputs,
        produced: Option<Counter>,
    ) -> Arc<Self> {
        Arc::new(Self {
            ack: Ack::Record(offsets.begin(offset, outputs.len())),
            offsets: offsets.clone(),
            produced,
            outputs,
        })
    }

    /// The dead-letter record `dead` of a record whose output the broker
    /// refused (`refused`): its acknowledgement settles that output.
    #[must_use]
    pub fn standing_for(refused: Arc<Delivery>, dead: Routed) -> Arc<Self> {
        Arc::new(Self {
            offsets: refused.offsets.clone(),
            ack: Ack::StandsFor(refused),
            produced: None,
            outputs: smallvec::smallvec![dead],
        })
    }

    /// The outputs, in order they are sent.
    #[must_use]
    pub fn outputs(&self) -> &[Routed] {
        &self.outputs
    }

    /// The record these outputs belong to (the refused record's, for a
    /// dead-letter record standing for one).
    fn record_ack(&self) -> &RecordAck {
        match &self.ack {
            Ack::Record(ack) => ack,
            Ack::StandsFor(refused) => refused.record_ack(),
        }
    }

    /// The source offset of the record these outputs belong to.
    #[must_use]
    pub fn offset(&self) -> i64 {
        self.record_ack().offset()
    }

    /// Whether this is a dead-letter record standing for a refused output.
    #[must_use]
    pub fn is_stand_in(&self) -> bool {
        matches!(self.ack, Ack::StandsFor(_))
    }

    /// Output `index` could not be handed to librdkafka, or was refused
    /// and cannot be settled otherwise: the record's partition stops there
    /// (nothing past it is committed).
    pub fn fail(&self, index: usize, error: &KafkaError) {
        let topic = self.outputs.get(index).map_or("?", |out| &out.topic);
        self.offsets.fail(
            self.record_ack(),
            format!("cannot produce to '{topic}': {error}"),
        );
    }

    /// One output was acknowledged by the broker.
    fn acknowledged(self: Arc<Self>) {
        if let Some(produced) = &self.produced {
            produced.inc();
        }
        self.settle();
    }

    /// One output is settled (acknowledged, or its refusal settled by the
    /// route's policy): the last one finishes the record.
    pub fn settle(self: Arc<Self>) {
        match Arc::try_unwrap(self) {
            // The last reference: the worker frees the outputs.
            Ok(Delivery {
                ack: Ack::Record(ack),
                offsets,
                outputs,
                ..
            }) => offsets.acknowledge_last(&ack, outputs),
            Ok(Delivery {
                ack: Ack::StandsFor(refused),
                offsets,
                outputs,
                ..
            }) => {
                offsets.retire(outputs);
                refused.settle();
            }
            Err(shared) => match &shared.ack {
                Ack::Record(ack) => shared.offsets.acknowledge(ack),
                // Its one output is settled, though someone still holds it
                // (the worker that just sent it): so is the refused one.
                Ack::StandsFor(refused) => refused.clone().settle(),
            },
        }
    }

    /// Which output a delivery report is about: one equal to the reported
    /// message in topic, partition (when the output names one), key,
    /// value and headers. Outputs that are equal in all of these are
    /// interchangeable: sending either again produces the same record.
    fn index_of(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> Option<usize> {
        use rdkafka::Message as _;
        use rdkafka::message::Headers as _;
        let same_headers = |output: &Output| {
            let theirs = message.headers();
            let count = theirs.map_or(0, |h| h.count());
            output.headers().count() == count
                && output.headers().enumerate().all(|(i, mine)| {
                    theirs.and_then(|h| h.try_get(i)).is_some_and(|h| {
                        h.key == mine.key && h.value.unwrap_or_default() == &mine.value[..]
                    })
                })
        };
        self.outputs.iter().position(|routed| {
            let output = &routed.output;
            *routed.topic == *message.topic()
                && output.partition.is_none_or(|p| p == message.partition())
                && output.key().unwrap_or_default() == message.key().unwrap_or_default()
                && output.value().unwrap_or_default() == message.payload().unwrap_or_default()
                && same_headers(output)
        })
    }
}

/// Whether the broker refused the record itself (its size, contents,
/// timestamp, or the right to write it), so that sending it again as it is
/// cannot help: a failure of that record, not of the partition.
pub fn refuses_the_record(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as E;
    matches!(
        error.rdkafka_error_code(),
        Some(
            E::MessageSizeTooLarge
                | E::InvalidMessage
                | E::InvalidMessageSize
                | E::InvalidRecord
                | E::InvalidTimestamp
                | E::MessageBatchTooLarge
                | E::PolicyViolation
                | E::TopicAuthorizationFailed
                | E::InvalidArgument
                | E::UnknownPartition
                // Refused for another record's sake in its batch (KIP-467):
                // sent again alone, it goes through.
                | E::InvalidDifferentRecord
        )
    )
}

/// Which producer a report comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The routes' producer.
    Main,
    /// The producer of outputs sent again alone after a refusal (one
    /// record per request).
    Alone,
    /// The routes' producer in a transaction: a refusal aborts it.
    Transactional,
}

/// Routes delivery reports to the offset tracking and librdkafka's log
/// lines to `tracing`.
#[derive(Debug)]
pub struct DeliveryContext {
    role: Role,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::client_log("producer", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(client = "producer", %error, "{reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Arc<Delivery>) {
        match result {
            Ok(_) => delivery.acknowledged(),
            Err((error, message)) if refuses_the_record(error) => {
                let index = delivery.index_of(message);
                let offsets = delivery.offsets.clone();
                if self.role == Role::Transactional {
                    // The transaction must abort; the record is remembered
                    // (the worker's refusals) and settled when replayed.
                    delivery.fail(index.unwrap_or(0), error);
                }
                offsets.refuse(Refusal {
                    delivery,
                    index,
                    error: error.clone(),
                    alone: self.role == Role::Alone,
                });
            }
            Err((error, _)) => delivery
                .offsets
                .fail(delivery.record_ack(), error.to_string()),
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
        let role = if config.get("transactional.id").is_some() {
            Role::Transactional
        } else {
            Role::Main
        };
        Ok(Self {
            inner: config.create_with_context(DeliveryContext { role })?,
        })
    }

    /// The producer that sends refused outputs again alone (one record per
    /// request), to tell the output at fault from those that shared its
    /// batch: `config` with batching off.
    pub fn alone(config: &rdkafka::ClientConfig) -> KafkaResult<Self> {
        let mut config = config.clone();
        config
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .set("max.in.flight.requests.per.connection", "1");
        Ok(Self {
            inner: config.create_with_context(DeliveryContext { role: Role::Alone })?,
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

/// librdkafka's "no partition": its partitioner picks one from the key.
const PARTITION_UNASSIGNED: i32 = -1;

/// One entry of a produce call's argument list.
fn vu(vtype: rd::rd_kafka_vtype_t, u: rd::rd_kafka_vu_s__bindgen_ty_1) -> rd::rd_kafka_vu_t {
    rd::rd_kafka_vu_t { vtype, u }
}

/// Pointer and length of `bytes` for librdkafka (null for none).
fn as_mem(bytes: Option<&[u8]>) -> (*mut c_void, usize) {
    bytes.map_or((ptr::null_mut(), 0), |b| {
        (b.as_ptr().cast_mut().cast::<c_void>(), b.len())
    })
}

/// How a worker hands outputs to the shared producer: through librdkafka's
/// C API, with librdkafka's handles of the topics it writes to (see the
/// module's documentation). Lives on the worker's thread; the handles are
/// released when it ends.
pub struct Sender {
    producer: Arc<OutputProducer>,
    handles: HashMap<String, NonNull<rd::rd_kafka_topic_t>>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("topics", &self.handles.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender to `producer`, with no topic handles yet.
    #[must_use]
    pub fn new(producer: Arc<OutputProducer>) -> Self {
        Self {
            producer,
            handles: HashMap::new(),
        }
    }

    /// Hands output `index` of `delivery` to librdkafka; its delivery
    /// report acknowledges it. Waits while librdkafka's queue is full,
    /// unless `give_up` says to stop waiting: then the output is not
    /// produced and the error is `QueueFull`.
    pub fn send(
        &mut self,
        delivery: &Arc<Delivery>,
        index: usize,
        give_up: &dyn Fn() -> bool,
    ) -> KafkaResult<()> {
        let Routed { topic, output } = &delivery.outputs[index];
        let rkt = self.handle(topic)?;
        let headers = NativeHeaders::of(output)?;
        // The value's bytes live as long as `delivery`, whose reference
        // librdkafka holds from here on if the call succeeds (and which
        // is taken back below if it fails for good).
        let (value_ptr, value_len) = as_mem(output.value());
        let (key_ptr, key_len) = as_mem(output.key());
        let opaque = Arc::into_raw(delivery.clone());
        let mem = |(ptr, size)| rd::rd_kafka_vu_s__bindgen_ty_1 {
            mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 { ptr, size },
        };
        let vus = [
            vu(
                RD_KAFKA_VTYPE_RKT,
                rd::rd_kafka_vu_s__bindgen_ty_1 { rkt: rkt.as_ptr() },
            ),
            vu(
                RD_KAFKA_VTYPE_PARTITION,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    i32_: output.partition.unwrap_or(PARTITION_UNASSIGNED),
                },
            ),
            // No copy and no free: the value stays in the token until its
            // delivery report.
            vu(
                RD_KAFKA_VTYPE_MSGFLAGS,
                rd::rd_kafka_vu_s__bindgen_ty_1 { i: 0 },
            ),
            vu(RD_KAFKA_VTYPE_VALUE, mem((value_ptr, value_len))),
            // librdkafka always copies the key.
            vu(RD_KAFKA_VTYPE_KEY, mem((key_ptr, key_len))),
            vu(
                RD_KAFKA_VTYPE_TIMESTAMP,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    i64_: output.timestamp_ms().unwrap_or(0),
                },
            ),
            vu(
                RD_KAFKA_VTYPE_HEADERS,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    headers: headers.as_ptr(),
                },
            ),
            vu(
                RD_KAFKA_VTYPE_OPAQUE,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    ptr: opaque.cast_mut().cast::<c_void>(),
                },
            ),
        ];
        loop {
            #[allow(unsafe_code, reason = "librdkafka's produce call, see below")]
            // SAFETY: `rkt` is a live handle of this client. The value's
            // bytes are owned by `delivery`, a reference to which librdkafka
            // hands back to the delivery callback (rdkafka turns it back
            // into the `Arc` there) or we take back below on failure, so
            // they outlive every use librdkafka makes of them.
            // The key and the headers' contents are copied during the call.
            // The headers list becomes librdkafka's only on success.
            let error = unsafe {
                rd::rd_kafka_produceva(self.producer.client().native_ptr(), vus.as_ptr(), vus.len())
            };
            let Some(error) = NonNull::new(error) else {
                headers.given_away();
                return Ok(());
            };
            #[allow(unsafe_code, reason = "reading and freeing librdkafka's error")]
            // SAFETY: `error` is the error object just returned to us.
            let code = unsafe {
                let code = rd::rd_kafka_error_code(error.as_ptr());
                rd::rd_kafka_error_destroy(error.as_ptr());
                code
            };
            let code = RDKafkaErrorCode::from(code);
            if code == RDKafkaErrorCode::QueueFull && !give_up() {
                // Back-pressure: wait for deliveries to free queue space
                // (outputs to a broker that is gone free it only when they
                // time out, after `message.timeout.ms`).
                self.producer.inner.poll(Duration::from_millis(10));
                continue;
            }
            #[allow(unsafe_code, reason = "taking back the reference librdkafka refused")]
            // SAFETY: the call failed, so librdkafka kept no pointer to the
            // reference; it came from `Arc::into_raw` above.
            drop(unsafe { Arc::from_raw(opaque) });
            return Err(KafkaError::MessageProduction(code));
        }
    }

    fn handle(&mut self, topic: &str) -> KafkaResult<NonNull<rd::rd_kafka_topic_t>> {
        if let Some(handle) = self.handles.get(topic) {
            return Ok(*handle);
        }
        let name = CString::new(topic)
            .map_err(|_| KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTopic))?;
        let rk = self.producer.client().native_ptr();
        #[allow(unsafe_code, reason = "creating a topic handle")]
        // SAFETY: `rk` is a live client; a null configuration means the
        // client's default topic configuration, as producing by name uses.
        let handle = unsafe { rd::rd_kafka_topic_new(rk, name.as_ptr(), ptr::null_mut()) };
        let handle = NonNull::new(handle).ok_or(KafkaError::MessageProduction(
            RDKafkaErrorCode::InvalidTopic,
        ))?;
        self.handles.insert(topic.to_owned(), handle);
        Ok(handle)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        for handle in self.handles.values() {
            #[allow(unsafe_code, reason = "releasing a topic handle")]
            // SAFETY: each handle came from `rd_kafka_topic_new` on this
            // client, which `self.producer` keeps alive, and is released
            // once.
            unsafe {
                rd::rd_kafka_topic_destroy(handle.as_ptr())
            };
        }
    }
}

/// A librdkafka headers list being built for one produce call; destroyed
/// unless librdkafka took it.
struct NativeHeaders(*mut rd::rd_kafka_headers_t);

impl NativeHeaders {
    /// `output`'s headers, in order; a null list for none.
    fn of(output: &Output) -> KafkaResult<Self> {
        let mut headers = output.headers().peekable();
        if headers.peek().is_none() {
            return Ok(Self(ptr::null_mut()));
        }
        #[allow(unsafe_code, reason = "building a librdkafka headers list")]
        // SAFETY: a new list, owned by the returned value.
        let list = Self(unsafe { rd::rd_kafka_headers_new(8) });
        for header in headers {
            let too_long = || KafkaError::MessageProduction(RDKafkaErrorCode::InvalidArgument);
            let key_len = isize::try_from(header.key.len()).map_err(|_| too_long())?;
            let value_len = isize::try_from(header.value.len()).map_err(|_| too_long())?;
            #[allow(unsafe_code, reason = "adding to a librdkafka headers list")]
            // SAFETY: the list is live; librdkafka copies the name and the
            // value, whose lengths are given.
            let err = unsafe {
                rd::rd_kafka_header_add(
                    list.0,
                    header.key.as_ptr().cast(),
                    key_len,
                    header.value.as_ptr().cast(),
                    value_len,
                )
            };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(KafkaError::MessageProduction(err.into()));
            }
        }
        Ok(list)
    }

    fn as_ptr(&self) -> *mut rd::rd_kafka_headers_t {
        self.0
    }

    /// librdkafka took the list with the message.
    fn given_away(mut self) {
        self.0 = ptr::null_mut();
    }
}

impl Drop for NativeHeaders {
    fn drop(&mut self) {
        if !self.0.is_null() {
            #[allow(unsafe_code, reason = "freeing a headers list librdkafka did not take")]
            // SAFETY: the list is ours: librdkafka did not take it.
            unsafe {
                rd::rd_kafka_headers_destroy(self.0)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use std::time::Instant;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    use super::*;
    use crate::config::KafkaConfig;
    use bytes::Bytes;

    use crate::record::{Data, Header, SourceRecord};

    const PARTITIONS: i32 = 6;

    fn config(bootstrap: &str) -> ClientConfig {
        let kafka: KafkaConfig =
            toml::from_str(&format!("bootstrap_servers = \"{bootstrap}\"")).unwrap();
        crate::kafka::producer_config(&kafka)
    }

    fn source(offset: i64) -> Arc<SourceRecord> {
        Arc::new(SourceRecord {
            topic: "in".into(),
            partition: 0,
            offset,
            timestamp_ms: Some(1_700_000_000_000 + offset),
            key: Some(Bytes::from(format!("key-{offset}"))),
            value: Some(Bytes::from(vec![u8::try_from(offset).unwrap(); 1024])),
            headers: vec![
                Header {
                    key: "tenant-id".to_owned(),
                    value: Bytes::from(format!("tenant-{offset}")),
                },
                Header {
                    key: "empty".to_owned(),
                    value: Bytes::new(),
                },
            ],
        })
    }

    /// `output`, the one output of its record, to topic "out".
    fn out(output: Output) -> RoutedOutputs {
        smallvec::smallvec![Routed {
            topic: "out".into(),
            output,
        }]
    }

    /// Waits (bounded) until `done` holds.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every record of `topic`, as (partition, key, value, headers, timestamp).
    type Read = (i32, Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>, Option<i64>);

    fn read_all(bootstrap: &str, topic: &str, count: usize) -> Vec<Read> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "read")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut read = Vec::new();
        while read.len() < count {
            assert!(Instant::now() < deadline, "read {} of {count}", read.len());
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.unwrap();
            let headers = message.headers().map_or_else(Vec::new, |h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            });
            read.push((
                message.partition(),
                message.key().unwrap_or_default().to_vec(),
                message.payload().unwrap_or_default().to_vec(),
                headers,
                message.timestamp().to_millis(),
            ));
        }
        read
    }

    #[test]
    fn outputs_arrive_as_given_and_their_values_are_held_until_their_reports_then_handed_back() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("out", PARTITIONS, 1).unwrap();
        cluster.create_topic("by-name", PARTITIONS, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let producer = Arc::new(OutputProducer::new(&config(&bootstrap)).unwrap());
        let mut sender = Sender::new(producer.clone());
        let offsets = Arc::new(PartitionOffsets::new("in", 0));
        let sources: Vec<_> = (0..20).map(source).collect();
        // Odd records get a value of the plugin's own.
        let own: Vec<Option<Bytes>> = sources
            .iter()
            .map(|s| (s.offset % 2 == 1).then(|| Bytes::from(format!("own value {}", s.offset))))
            .collect();
        for (source, own) in sources.iter().zip(&own) {
            let mut output = Output::forward(source.clone());
            // One explicit partition; the rest partitioned by key.
            output.partition = (source.offset == 7).then_some(5);
            if let Some(own) = own {
                output.value = Data::Bytes(own.clone());
            }
            // Ours is dropped as soon as it is sent, long before its report
            // (librdkafka lingers 5 ms before sending).
            sender
                .send(
                    &Delivery::new(&offsets, source.offset, out(output), None),
                    0,
                    &|| false,
                )
                .unwrap();
        }
        // Every report acknowledged, and each record's last one handed its
        // outputs back for the worker to free: they still hold the values.
        wait_for("the delivery reports", || offsets.stored() == Some(20));
        assert!(offsets.failure().is_none());
        let mut retired = Vec::new();
        offsets.take_retired(&mut retired);
        assert_eq!(retired.len(), sources.len());
        assert!(sources.iter().all(|source| Arc::strong_count(source) == 2));
        // Freed, every value is let go.
        retired.clear();
        for (source, own) in sources.iter().zip(&own) {
            assert_eq!(Arc::strong_count(source), 1, "record {}", source.offset);
            assert!(source.value.as_ref().unwrap().is_unique());
            if let Some(own) = own {
                assert!(own.is_unique(), "record {}", source.offset);
            }
        }

        // The same keys produced by name, as rdkafka does it: the topic
        // handles must partition by key the same way (the client's
        // partitioner, not librdkafka's default).
        let by_name: BaseProducer = config(&bootstrap).create().unwrap();
        for source in &sources {
            let key = source.key.as_deref().unwrap();
            by_name
                .send(
                    BaseRecord::<[u8], [u8]>::to("by-name")
                        .key(key)
                        .payload(b""),
                )
                .unwrap();
        }
        by_name.flush(Duration::from_secs(20)).unwrap();
        let expected: HashMap<Vec<u8>, i32> = read_all(&bootstrap, "by-name", sources.len())
            .into_iter()
            .map(|(partition, key, ..)| (key, partition))
            .collect();

        let mut read = read_all(&bootstrap, "out", sources.len());
        read.sort_by_key(|(_, _, _, _, ts)| *ts);
        for ((source, own), (partition, key, value, headers, ts)) in
            sources.iter().zip(&own).zip(read)
        {
            assert_eq!(key, source.key.as_deref().unwrap());
            let want_value = own.as_deref().or(source.value.as_deref()).unwrap();
            assert_eq!(value, want_value, "record {}", source.offset);
            let want: Vec<(String, Vec<u8>)> = source
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.to_vec()))
                .collect();
            assert_eq!(headers, want);
            assert_eq!(ts, source.timestamp_ms);
            let want_partition = if source.offset == 7 {
                5
            } else {
                expected[&key]
            };
            assert_eq!(partition, want_partition, "record {}", source.offset);
        }
    }

    #[test]
    fn a_dead_letter_record_settles_the_refused_output_it_stands_for() {
        let offsets = Arc::new(PartitionOffsets::new("in", 0));
        let delivery = Delivery::new(&offsets, 7, out(Output::forward(source(7))), None);
        let dead = Routed {
            topic: "dlq".into(),
            output: Output::forward(source(7)),
        };
        let stand_in = Delivery::standing_for(delivery.clone(), dead);
        assert_eq!(stand_in.offset(), 7);
        assert!(stand_in.is_stand_in());
        // The worker that sent it may still hold it when its report comes.
        let held = stand_in.clone();
        assert_eq!(offsets.stored(), None);
        stand_in.settle();
        assert_eq!(offsets.stored(), Some(8), "the refused record finished");
        drop(held);
        drop(delivery);
        assert_eq!(offsets.in_flight(), 0);
    }

    #[test]
    fn an_output_librdkafka_refuses_gives_its_token_back() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("out", PARTITIONS, 1).unwrap();
        let producer =
            Arc::new(OutputProducer::new(&config(&cluster.bootstrap_servers())).unwrap());
        let mut sender = Sender::new(producer.clone());
        let offsets = Arc::new(PartitionOffsets::new("in", 0));
        // A first output teaches the client the topic's partitions.
        let first = Delivery::new(&offsets, 0, out(Output::forward(source(0))), None);
        sender.send(&first, 0, &|| false).unwrap();
        wait_for("the first report", || offsets.stored() == Some(1));

        let refused = source(1);
        let mut output = Output::forward(refused.clone());
        output.partition = Some(PARTITIONS + 10);
        let delivery = Delivery::new(&offsets, 1, out(output), None);
        let err = sender.send(&delivery, 0, &|| false).unwrap_err();
        assert_eq!(
            err,
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition)
        );
        // librdkafka's reference came back and was dropped: only ours
        // holds the output.
        assert_eq!(Arc::strong_count(&delivery), 1);
        drop(delivery);
        assert_eq!(Arc::strong_count(&refused), 1);
        assert!(refused.value.as_ref().unwrap().is_unique());
    }

    #[test]
    fn a_full_queue_waits_until_told_to_give_up_and_gives_the_token_back() {
        // Nothing listens there: outputs stay queued (loopback, a port
        // nothing binds).
        let mut config = config("127.0.0.1:1");
        config.set("queue.buffering.max.messages", "1");
        let producer = Arc::new(OutputProducer::new(&config).unwrap());
        let offsets = Arc::new(PartitionOffsets::new("in", 0));
        let (first, waiting) = (source(0), source(1));
        // On a thread of its own, so that a send that never gives up fails
        // the test instead of hanging it.
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn({
            let (offsets, first, waiting) = (offsets.clone(), first.clone(), waiting.clone());
            move || {
                let mut sender = Sender::new(producer);
                let delivery = |source: Arc<SourceRecord>| {
                    let offset = source.offset;
                    let mut output = Output::forward(source);
                    output.partition = Some(0);
                    Delivery::new(&offsets, offset, out(output), None)
                };
                sender.send(&delivery(first), 0, &|| false).unwrap();
                // The queue holds one output: the next waits, asking
                // whether to give up between its tries, until told to.
                let asked = std::cell::Cell::new(0);
                let sent = sender.send(&delivery(waiting), 0, &|| {
                    asked.set(asked.get() + 1);
                    asked.get() == 3
                });
                done.send((sent, asked.get())).unwrap();
            }
        });
        let (sent, asked) = result
            .recv_timeout(Duration::from_secs(60))
            .expect("the send gave up");
        assert_eq!(
            sent,
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
        );
        assert_eq!(asked, 3, "asked once per try");
        // The thread's output is gone with it; the token came back.
        wait_for("the sender's thread to end", || {
            Arc::strong_count(&waiting) == 1
        });
        assert_eq!(offsets.stored(), None);
    }
}
