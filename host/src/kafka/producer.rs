//! Producing outputs, and handing each delivery report back to what the
//! output was sent with ([`Outgoing`]); what a report means for the record
//! is the pipeline's to decide (`pipeline/delivery.rs`).
//!
//! Outputs are handed to librdkafka through its C API rather than
//! `BaseProducer::send`, for two things that API does not offer:
//!
//! - **no copy of the value**: librdkafka keeps a pointer to the bytes,
//!   which the `Arc` it was handed with the output holds until the
//!   output's delivery report (a 1 KiB value is otherwise copied into a
//!   fresh allocation that another thread frees);
//! - **topic handles**: each worker's [`Sender`] keeps librdkafka's handle
//!   of every topic it writes to, where producing by name looks the topic
//!   up under the client's write lock, contended by every producing thread.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::bindings as rd;
use rdkafka::bindings::rd_kafka_vtype_t::{
    RD_KAFKA_VTYPE_HEADERS, RD_KAFKA_VTYPE_KEY, RD_KAFKA_VTYPE_MSGFLAGS, RD_KAFKA_VTYPE_OPAQUE,
    RD_KAFKA_VTYPE_PARTITION, RD_KAFKA_VTYPE_RKT, RD_KAFKA_VTYPE_TIMESTAMP, RD_KAFKA_VTYPE_VALUE,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::record::{Output, OutputHeaders};
use crate::route::Routed;

/// Outputs handed to the producer together (one record's), told what
/// became of each: librdkafka hands every delivery report back to the
/// value it was given with the output ([`Sender::send`]).
///
/// The values of outputs are handed to librdkafka without a copy: they
/// must stay where they are as long as the `Arc` lives, which holds for
/// anything that owns its outputs (`Routed` values are reference-counted
/// bytes).
pub trait Outgoing: Send + Sync + Sized + 'static {
    /// The outputs, each sent by its index.
    fn outputs(&self) -> &[Routed];

    /// librdkafka's report of one of the outputs.
    fn reported(self: Arc<Self>, report: Report<'_>);
}

/// What became of one output.
#[derive(Debug)]
pub enum Report<'a> {
    /// The broker acknowledged it.
    Acknowledged,
    /// The broker refused the record itself ([`refuses_the_record`]).
    Refused {
        /// Which output, found by its contents (see [`index_of`]); `None`
        /// if none matches.
        index: Option<usize>,
        /// What the broker said.
        error: &'a KafkaError,
        /// Which producer sent it.
        role: Role,
    },
    /// Not delivered for another reason (timed out, or the producer
    /// cannot go on).
    Failed(&'a KafkaError),
}

/// Which output of `outputs` a delivery report is about: one equal to the
/// reported message in topic, partition (when the output names one), key,
/// value and headers. Outputs that are equal in all of these are
/// interchangeable: sending either again produces the same record.
fn index_of(outputs: &[Routed], message: &rdkafka::message::BorrowedMessage<'_>) -> Option<usize> {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;
    let same_headers = |output: &Output| {
        let theirs = message.headers();
        let count = theirs.map_or(0, |h| h.count());
        output.headers().count() == count
            && output.headers().enumerate().all(|(i, mine)| {
                theirs.and_then(|h| h.try_get(i)).is_some_and(|h| {
                    h.key == &*mine.key && h.value.unwrap_or_default() == &mine.value[..]
                })
            })
    };
    outputs.iter().position(|routed| {
        let output = &routed.output;
        *routed.topic == *message.topic()
            && output.partition.is_none_or(|p| p == message.partition())
            && output.key().unwrap_or_default() == message.key().unwrap_or_default()
            && output.value().unwrap_or_default() == message.payload().unwrap_or_default()
            && same_headers(output)
    })
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
pub enum Role {
    /// The routes' producer.
    Main,
    /// The producer of outputs sent again alone after a refusal (one
    /// record per request).
    Alone,
    /// The routes' producer in a transaction: a refusal aborts it.
    Transactional,
}

/// Hands delivery reports to their [`Outgoing`] and librdkafka's log lines
/// to `tracing`.
pub struct DeliveryContext<O> {
    role: Role,
    outgoing: PhantomData<fn(Arc<O>)>,
}

impl<O> DeliveryContext<O> {
    fn new(role: Role) -> Self {
        Self {
            role,
            outgoing: PhantomData,
        }
    }
}

impl<O> std::fmt::Debug for DeliveryContext<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryContext")
            .field("role", &self.role)
            .finish()
    }
}

impl<O: Outgoing> ClientContext for DeliveryContext<O> {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::client_log("producer", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(client = "producer", %error, "{reason}");
    }
}

impl<O: Outgoing> ProducerContext for DeliveryContext<O> {
    type DeliveryOpaque = Arc<O>;

    fn delivery(&self, result: &DeliveryResult<'_>, outgoing: Arc<O>) {
        let report = match result {
            Ok(_) => Report::Acknowledged,
            Err((error, message)) if refuses_the_record(error) => Report::Refused {
                index: index_of(outgoing.outputs(), message),
                error,
                role: self.role,
            },
            Err((error, _)) => Report::Failed(error),
        };
        outgoing.reported(report);
    }
}

/// The producer every route shares, whose reports go to the `O` each
/// output was sent with.
pub struct OutputProducer<O: Outgoing> {
    inner: ThreadedProducer<DeliveryContext<O>>,
}

impl<O: Outgoing> std::fmt::Debug for OutputProducer<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputProducer").finish_non_exhaustive()
    }
}

impl<O: Outgoing> OutputProducer<O> {
    /// A producer with `config`.
    pub fn new(config: &rdkafka::ClientConfig) -> KafkaResult<Self> {
        let role = if config.get("transactional.id").is_some() {
            Role::Transactional
        } else {
            Role::Main
        };
        Ok(Self {
            inner: config.create_with_context(DeliveryContext::new(role))?,
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
            inner: config.create_with_context(DeliveryContext::new(Role::Alone))?,
        })
    }

    /// The librdkafka producer (transactions).
    #[must_use]
    pub fn inner(&self) -> &ThreadedProducer<DeliveryContext<O>> {
        &self.inner
    }

    /// The underlying client (metadata requests).
    #[must_use]
    pub fn client(&self) -> &rdkafka::client::Client<DeliveryContext<O>> {
        self.inner.client()
    }

    /// Waits until every output handed over so far is delivered (or failed).
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.inner.flush(timeout)
    }
}

/// A producer's outputs handed over and not yet reported (what `/metrics`
/// shows of it, whatever its reports go to).
pub trait InFlight: Send + Sync {
    /// How many there are now.
    fn in_flight(&self) -> i32;
}

impl<O: Outgoing> InFlight for OutputProducer<O> {
    fn in_flight(&self) -> i32 {
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
pub struct Sender<O: Outgoing> {
    producer: Arc<OutputProducer<O>>,
    handles: HashMap<String, NonNull<rd::rd_kafka_topic_t>>,
}

impl<O: Outgoing> std::fmt::Debug for Sender<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("topics", &self.handles.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<O: Outgoing> Sender<O> {
    /// A sender to `producer`, with no topic handles yet.
    #[must_use]
    pub fn new(producer: Arc<OutputProducer<O>>) -> Self {
        Self {
            producer,
            handles: HashMap::new(),
        }
    }

    /// Hands output `index` of `delivery` to librdkafka; its delivery
    /// report goes to `delivery` ([`Outgoing::reported`]). Waits while
    /// librdkafka's queue is full, unless `give_up` says to stop waiting:
    /// then the output is not produced and the error is `QueueFull`.
    pub fn send(
        &mut self,
        delivery: &Arc<O>,
        index: usize,
        give_up: &dyn Fn() -> bool,
    ) -> KafkaResult<()> {
        let Some(Routed { topic, output }) = delivery.outputs().get(index) else {
            return Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidArgument,
            ));
        };
        let rkt = self.handle(topic)?;
        let later = delivery.outputs().get(index + 1..).unwrap_or_default();
        let headers = NativeHeaders::of(output, later)?;
        // The value's bytes live as long as `delivery` (they are borrowed
        // from it, which cannot change them while it is shared), whose
        // reference librdkafka holds from here on if the call succeeds (and
        // which is taken back below if it fails for good).
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

impl<O: Outgoing> Drop for Sender<O> {
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
    /// `output`'s headers, in order; a null list for none. An output that
    /// keeps its record's headers produces the list the consumer read,
    /// while the record still has it: the last such output of the record
    /// takes it, earlier ones (with one among the outputs sent `later`) a
    /// copy. Outputs are sent in order; one sent again after the list went
    /// builds its own.
    fn of(output: &Output, later: &[Routed]) -> KafkaResult<Self> {
        if output.headers == OutputHeaders::Original {
            let source = &output.source;
            let keeps_them = |later: &Routed| {
                later.output.headers == OutputHeaders::Original
                    && Arc::ptr_eq(&later.output.source, source)
            };
            let list = if later.iter().any(keeps_them) {
                source.wire_headers.copy()
            } else {
                source.wire_headers.take()
            };
            if let Some(list) = list {
                return Ok(Self(list.as_ptr()));
            }
        }
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
