//! Producing outputs, and turning delivery reports into acknowledgements.
//!
//! Outputs are handed to librdkafka through its C API rather than
//! `BaseProducer::send`, for two things that API does not offer:
//!
//! - **no copy of the value**: librdkafka keeps a pointer to the bytes,
//!   which the delivery token holds until the delivery report (a 1 KiB
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

use bytes::Bytes;
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

/// What a delivery report acknowledges: one output of one record.
#[derive(Debug)]
pub struct Delivery {
    /// The record's acknowledgement.
    pub ack: Arc<RecordAck>,
    /// Its partition's tracking.
    pub offsets: Arc<PartitionOffsets>,
    /// Counts the output once acknowledged (none for dead-letter records).
    pub produced: Option<prometheus_client::metrics::counter::Counter>,
    /// The value librdkafka was handed without a copy: kept alive until
    /// the delivery report ([`Sender::send`] sets it).
    pub value: Option<Bytes>,
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

    /// Hands `output` to librdkafka for `topic`; its delivery report
    /// acknowledges `delivery`. Waits while librdkafka's queue is full.
    pub fn send(
        &mut self,
        topic: &str,
        output: &Output,
        mut delivery: Box<Delivery>,
    ) -> KafkaResult<()> {
        let rkt = self.handle(topic)?;
        let headers = NativeHeaders::of(output)?;
        delivery.value = output.value_bytes().cloned();
        let (value_ptr, value_len) = as_mem(delivery.value.as_deref());
        let (key_ptr, key_len) = as_mem(output.key());
        // From here on the token is librdkafka's if the call succeeds, and
        // taken back below if it fails for good.
        let opaque = Box::into_raw(delivery);
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
                    ptr: opaque.cast::<c_void>(),
                },
            ),
        ];
        loop {
            #[allow(unsafe_code, reason = "librdkafka's produce call, see below")]
            // SAFETY: `rkt` is a live handle of this client. The value's bytes are owned by the delivery token,
            // which librdkafka hands back to the delivery callback (rdkafka
            // turns it back into the `Box` there) or we take back below on
            // failure, so they outlive every use librdkafka makes of them.
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
            if code == RDKafkaErrorCode::QueueFull {
                // Back-pressure: wait for deliveries to free queue space.
                self.producer.inner.poll(Duration::from_millis(10));
                continue;
            }
            #[allow(
                unsafe_code,
                reason = "taking back the delivery token librdkafka refused"
            )]
            // SAFETY: the call failed, so librdkafka kept no pointer to the
            // token; it came from `Box::into_raw` above.
            drop(unsafe { Box::from_raw(opaque) });
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
