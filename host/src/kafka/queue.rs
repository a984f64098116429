//! Queues of fetched records, read in batches through librdkafka's C API.
//!
//! A partition's fetched records go to its queue, which the router
//! forwards to the queue of the worker routing the partition: a worker
//! reads the records of all its partitions from one queue, each
//! partition's in order.
//!
//! rdkafka's `PartitionQueue::poll` hands out one message per call, each
//! wrapped in a reference-counted event, with the clock read per message;
//! a worker wants what the queue holds at once. librdkafka's batch call
//! (`rd_kafka_consume_batch_queue`, what confluent-kafka's
//! `consume(num_messages)` uses on a high-level consumer's queue) gives
//! exactly that, with the same care for outdated and control messages as
//! its single-message poll: what was fetched before a partition was
//! paused, sought or assigned again is dropped, and librdkafka fetches
//! again from the position after the last record it handed out.
//!
//! librdkafka bounds what it fetches ahead (`queued.max.messages.kbytes`)
//! by the size of the queue a partition's records end in: a worker's
//! queue is one budget for all its partitions.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use smallvec::SmallVec;

use crate::record::{Header, SourceRecord};

/// A queue of the consumer's fetched records: a worker's, or a
/// partition's own (then forwarded to a worker's).
pub struct FetchQueue<C: ConsumerContext> {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// The client the queue belongs to, kept alive as long as the queue.
    _consumer: Arc<BaseConsumer<C>>,
}

#[allow(unsafe_code, reason = "a librdkafka queue handle")]
// SAFETY: librdkafka's queues are thread-safe: any thread may consume from,
// forward, wake or destroy a queue handle.
unsafe impl<C: ConsumerContext> Send for FetchQueue<C> {}
#[allow(unsafe_code, reason = "a librdkafka queue handle")]
// SAFETY: as for `Send`; every method only calls thread-safe librdkafka
// functions.
unsafe impl<C: ConsumerContext> Sync for FetchQueue<C> {}

impl<C: ConsumerContext> std::fmt::Debug for FetchQueue<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchQueue").finish_non_exhaustive()
    }
}

impl<C: ConsumerContext> FetchQueue<C> {
    /// A new empty queue of `consumer`'s, for partitions to be forwarded
    /// to; `None` if librdkafka cannot make one.
    pub fn new(consumer: &Arc<BaseConsumer<C>>) -> Option<Self> {
        let rk = consumer.client().native_ptr();
        #[allow(unsafe_code, reason = "making a librdkafka queue")]
        // SAFETY: `rk` is the live client `consumer` owns; the queue is
        // ours to destroy (in `drop`).
        let queue = unsafe { rd::rd_kafka_queue_new(rk) };
        Some(Self {
            queue: NonNull::new(queue)?,
            _consumer: consumer.clone(),
        })
    }

    /// `topic`/`partition`'s own queue; `None` when librdkafka has no queue
    /// for it (an invalid topic name).
    pub fn of_partition(
        consumer: &Arc<BaseConsumer<C>>,
        topic: &str,
        partition: i32,
    ) -> Option<Self> {
        let topic = std::ffi::CString::new(topic).ok()?;
        let rk = consumer.client().native_ptr();
        #[allow(unsafe_code, reason = "getting a partition's queue")]
        // SAFETY: `rk` is the live client `consumer` owns; the handle
        // returned is ours to destroy (in `drop`), the queue itself stays
        // the partition's.
        let queue = unsafe { rd::rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition) };
        Some(Self {
            queue: NonNull::new(queue)?,
            _consumer: consumer.clone(),
        })
    }

    /// A new consumer of group `group` and a queue reading partition
    /// `partition` of `topic` from its first record (tests: as the router
    /// reads a partition).
    #[cfg(test)]
    #[allow(clippy::unwrap_used, reason = "test code")]
    pub(crate) fn reading(
        bootstrap: &str,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> (Arc<BaseConsumer<C>>, Self)
    where
        C: Default,
    {
        use rdkafka::consumer::Consumer as _;
        let consumer: Arc<BaseConsumer<C>> = Arc::new(
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .set("group.id", group)
                .create_with_context(C::default())
                .unwrap(),
        );
        // Forwarded before the partition is assigned, as the router does.
        let queue = Self::new(&consumer).unwrap();
        Self::of_partition(&consumer, topic, partition)
            .unwrap()
            .forward(Some(&queue));
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&assignment).unwrap();
        (consumer, queue)
    }

    /// Sends what comes to this queue (records already in it included) to
    /// `to`, or, with `None`, keeps it here: then nobody reads it (and
    /// librdkafka never forwards it to the consumer's queue again, even
    /// when the partition is assigned afterwards: it marks the queue as the
    /// application's).
    pub fn forward(&self, to: Option<&Self>) {
        let to = to.map_or(ptr::null_mut(), |q| q.queue.as_ptr());
        #[allow(unsafe_code, reason = "forwarding a librdkafka queue")]
        // SAFETY: both handles are live queues of the same client.
        unsafe {
            rd::rd_kafka_queue_forward(self.queue.as_ptr(), to);
        }
    }

    /// Ends a [`take`](Self::take) waiting on this queue now, from another
    /// thread.
    pub fn wake(&self) {
        #[allow(unsafe_code, reason = "waking a librdkafka queue's reader")]
        // SAFETY: the handle is a live queue.
        unsafe {
            rd::rd_kafka_queue_yield(self.queue.as_ptr());
        }
    }

    /// Waits up to `wait` for a message, then takes what else is at hand
    /// without waiting, up to `max` in all, in the partition's order, into
    /// `into`.
    pub fn take<'q>(&'q self, wait: Duration, max: usize, into: &mut Vec<FetchedMessage<'q>>) {
        let start = into.len();
        self.batch(0, max, into);
        if into.len() == start && !wait.is_zero() && max > 0 {
            let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
            // Waits only for the first: a batch call waits to fill itself.
            self.batch(wait_ms, 1, into);
            if into.len() > start {
                self.batch(0, max - 1, into);
            }
        }
    }

    /// Takes up to `max` messages into `into`, waiting up to `wait_ms` for
    /// them all.
    fn batch<'q>(&'q self, wait_ms: i32, max: usize, into: &mut Vec<FetchedMessage<'q>>) {
        if max == 0 {
            return;
        }
        into.reserve(max);
        let start = into.len();
        let spare = into.spare_capacity_mut();
        #[allow(unsafe_code, reason = "consuming a batch of messages from librdkafka")]
        // SAFETY: the queue is live; librdkafka writes at most `max`
        // message pointers into the vector's spare capacity (reserved
        // above), each one ours to destroy. `FetchedMessage` is a
        // transparent non-null pointer (its other field is zero-sized), so
        // the written pointers are valid values of it.
        let taken = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                wait_ms,
                spare.as_mut_ptr().cast::<*mut rd::rd_kafka_message_t>(),
                max,
            )
        };
        // -1 is an error of the call itself, and leaves nothing written.
        let taken = usize::try_from(taken).unwrap_or(0).min(max);
        #[allow(unsafe_code, reason = "taking the messages librdkafka wrote")]
        // SAFETY: librdkafka initialised the first `taken` spare slots.
        unsafe {
            into.set_len(start + taken);
        }
    }
}

impl<C: ConsumerContext> Drop for FetchQueue<C> {
    fn drop(&mut self) {
        #[allow(unsafe_code, reason = "releasing a queue handle")]
        // SAFETY: the handle is released once, while the client
        // (`self._consumer`) is alive.
        unsafe {
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
    }
}

/// A message taken from a partition's queue: a record, or a consumer error.
/// It borrows the queue, and so its client, which must outlive it
/// (librdkafka does not allow destroying a message after its client).
#[repr(transparent)]
pub struct FetchedMessage<'q>(NonNull<rd::rd_kafka_message_t>, PhantomData<&'q ()>);

#[allow(unsafe_code, reason = "a librdkafka message")]
// SAFETY: a consumed message is only read (its headers parsed on first
// use) by the one thread holding it, and may be destroyed from any thread.
unsafe impl Send for FetchedMessage<'_> {}

impl std::fmt::Debug for FetchedMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedMessage")
            .field("offset", &self.native().offset)
            .finish_non_exhaustive()
    }
}

impl FetchedMessage<'_> {
    fn native(&self) -> &rd::rd_kafka_message_t {
        #[allow(unsafe_code, reason = "reading a librdkafka message")]
        // SAFETY: the pointer is live until `drop`.
        unsafe {
            self.0.as_ref()
        }
    }

    /// The consumer error this message carries instead of a record, if it
    /// does, with librdkafka's words for it.
    #[must_use]
    pub fn error(&self) -> Option<String> {
        let native = self.native();
        if native.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        let code = RDKafkaErrorCode::from(native.err);
        #[allow(unsafe_code, reason = "reading a librdkafka message's error text")]
        // SAFETY: the message is live; the text, if any, is a
        // NUL-terminated string it owns.
        let text = unsafe {
            let text = rd::rd_kafka_message_errstr(self.0.as_ptr());
            (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
        };
        Some(match text {
            Some(text) if !text.is_empty() => format!("{code}: {text}"),
            _ => code.to_string(),
        })
    }

    /// The partition the record comes from.
    #[must_use]
    pub fn partition(&self) -> i32 {
        self.native().partition
    }

    /// Tells the message's topic from the client's other topics, without
    /// reading its name: the same for every message of a topic.
    #[must_use]
    pub fn topic_id(&self) -> usize {
        self.native().rkt as usize
    }

    /// The name of the message's topic; `None` for an error of no topic,
    /// or a name that is not UTF-8 (which no topic the router subscribed
    /// to has).
    #[must_use]
    pub fn topic_name(&self) -> Option<&str> {
        let rkt = self.native().rkt;
        if rkt.is_null() {
            return None;
        }
        #[allow(unsafe_code, reason = "reading a librdkafka topic's name")]
        // SAFETY: the message holds its topic, whose name is a
        // NUL-terminated string alive as long as the topic.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(rkt)) };
        name.to_str().ok()
    }

    /// The record, its bytes copied, for `topic` (the partition's), its
    /// header names from `names`.
    ///
    /// The key, the value and the header values are copied into one
    /// buffer that they share, and the names are shared by all the records
    /// that carry them: a record costs at most three allocations (the
    /// buffer, its shared handle, the list of headers) however many
    /// headers it has.
    #[must_use]
    pub fn record(&self, topic: Arc<str>, names: &mut HeaderNames) -> SourceRecord {
        let native = self.native();
        let key = bytes_of(native.key.cast_const(), native.key_len);
        let value = bytes_of(native.payload.cast_const(), native.len);
        let headers = self.native_headers();
        let parts = || {
            [key, value]
                .into_iter()
                .chain(headers.iter().map(|(_, value)| Some(*value)))
                .flatten()
        };
        let mut buffer = Vec::with_capacity(parts().map(<[u8]>::len).sum());
        for part in parts() {
            buffer.extend_from_slice(part);
        }
        // Slicing shares the buffer (the first slice allocates the shared
        // handle): the one part of a record with one takes it whole.
        let one_part = parts().filter(|part| !part.is_empty()).count() <= 1;
        let (mut whole, shared) = if one_part {
            (Some(Bytes::from(buffer)), Bytes::new())
        } else {
            (None, Bytes::from(buffer))
        };
        let mut slice = |range: std::ops::Range<usize>| {
            if range.is_empty() {
                Bytes::new()
            } else {
                whole.take().unwrap_or_else(|| shared.slice(range))
            }
        };
        // The parts lie in the buffer in order.
        let mut at = 0;
        let mut next = |part: &[u8]| {
            at += part.len();
            slice(at - part.len()..at)
        };
        let key = key.map(&mut next);
        let value = value.map(&mut next);
        // A name that is not UTF-8 is read lossily: the outputs then carry
        // it as plugins read it, not as the message has it.
        let mut as_read = true;
        let headers: Vec<Header> = headers
            .iter()
            .map(|(name, value)| {
                let key = names.name(name);
                as_read &= key.as_bytes() == *name;
                Header {
                    key,
                    value: next(value),
                }
            })
            .collect();
        let wire_headers = if headers.is_empty() || !as_read {
            WireHeaders::default()
        } else {
            self.detach_headers()
        };
        SourceRecord {
            topic,
            partition: native.partition,
            offset: native.offset,
            timestamp_ms: self.timestamp_ms(),
            key,
            value,
            headers,
            wire_headers,
        }
    }

    /// The message's headers list, which librdkafka parsed when they were
    /// read, taken from it whole.
    fn detach_headers(&self) -> WireHeaders {
        let mut list = ptr::null_mut();
        #[allow(unsafe_code, reason = "taking a librdkafka message's headers")]
        // SAFETY: the message is live and ours; the list it hands over is
        // ours to destroy or to produce with from here on.
        let err = unsafe { rd::rd_kafka_message_detach_headers(self.0.as_ptr(), &raw mut list) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return WireHeaders::default();
        }
        WireHeaders(AtomicPtr::new(list))
    }

    fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        #[allow(unsafe_code, reason = "reading a librdkafka message")]
        // SAFETY: the message is live; `kind` is written.
        let timestamp = unsafe { rd::rd_kafka_message_timestamp(self.0.as_ptr(), &raw mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && timestamp != -1)
            .then_some(timestamp)
    }

    /// The headers' names and values, in order, as the message holds them.
    fn native_headers(&self) -> SmallVec<[(&[u8], &[u8]); 4]> {
        let mut native = ptr::null_mut();
        #[allow(unsafe_code, reason = "reading a librdkafka message's headers")]
        // SAFETY: the message is live; the headers list it returns belongs
        // to the message.
        let err = unsafe { rd::rd_kafka_message_headers(self.0.as_ptr(), &raw mut native) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || native.is_null() {
            return SmallVec::new();
        }
        #[allow(unsafe_code, reason = "reading a librdkafka headers list")]
        // SAFETY: the list is the live message's.
        let count = unsafe { rd::rd_kafka_header_cnt(native) };
        let mut headers = SmallVec::with_capacity(count);
        for index in 0..count {
            let mut name = ptr::null();
            let mut value = ptr::null();
            let mut size = 0;
            #[allow(unsafe_code, reason = "reading a librdkafka header")]
            // SAFETY: the list is the live message's; the name is a
            // NUL-terminated string and the value `size` bytes (or null),
            // both alive as long as the message, which the returned slices
            // borrow.
            let header = unsafe {
                let err = rd::rd_kafka_header_get_all(
                    native,
                    index,
                    &raw mut name,
                    &raw mut value,
                    &raw mut size,
                );
                (err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !name.is_null())
                    .then(|| {
                        let value = bytes_of(value.cast(), size).unwrap_or_default();
                        (CStr::from_ptr(name).to_bytes(), value)
                    })
            };
            headers.extend(header);
        }
        headers
    }
}

/// The `len` bytes at `data`, borrowed from the message they belong to;
/// `None` for a null pointer.
fn bytes_of<'m>(data: *const std::ffi::c_void, len: usize) -> Option<&'m [u8]> {
    if data.is_null() {
        return None;
    }
    #[allow(unsafe_code, reason = "reading bytes librdkafka owns")]
    // SAFETY: callers pass a live message's key, value or header value:
    // `len` readable bytes at a non-null `data`, alive as long as the
    // message, which callers bind `'m` to.
    Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// The header names a worker has read, each kept once: a topic's records
/// repeat the same few names, which then cost no allocation per record.
#[derive(Debug, Default)]
pub struct HeaderNames(Vec<Arc<str>>);

impl HeaderNames {
    /// Names kept, at most: records whose producers make names up per
    /// record cannot grow the list without bound (past it, a name is
    /// allocated for each record).
    const MOST: usize = 64;

    /// The name `name`, shared if known. A name that is not UTF-8 is read
    /// lossily (header names are strings to plugins) and not kept.
    fn name(&mut self, name: &[u8]) -> Arc<str> {
        if let Some(known) = self.0.iter().find(|known| known.as_bytes() == name) {
            return known.clone();
        }
        let Ok(text) = std::str::from_utf8(name) else {
            return String::from_utf8_lossy(name).into();
        };
        let name: Arc<str> = text.into();
        if self.0.len() < Self::MOST {
            self.0.push(name.clone());
        }
        name
    }
}

/// A consumed record's headers as librdkafka read them, for the outputs
/// that forward them unchanged to hand to the producer as they are (the
/// last of a record's outputs [`take`](Self::take)s the list, earlier ones
/// a [`copy`](Self::copy)): building the list again costs an allocation
/// per header, on the worker, for the delivery thread to free, and loses a
/// null value (a router's header has bytes). Empty for a record read
/// otherwise; a clone is empty too.
#[derive(Default)]
pub struct WireHeaders(AtomicPtr<rd::rd_kafka_headers_t>);

impl WireHeaders {
    /// The list, if no output took it yet: the caller owns it.
    pub(crate) fn take(&self) -> Option<NonNull<rd::rd_kafka_headers_t>> {
        NonNull::new(self.0.swap(ptr::null_mut(), Ordering::AcqRel))
    }

    /// A copy of the list, if no output took it yet, which stays here for
    /// a later output: the caller owns the copy.
    pub(crate) fn copy(&self) -> Option<NonNull<rd::rd_kafka_headers_t>> {
        // Taken while it is copied, so that nothing can free it meanwhile
        // (whoever looks then finds none, and builds its own).
        let list = self.take()?;
        #[allow(unsafe_code, reason = "copying a detached headers list")]
        // SAFETY: the list is ours while taken; librdkafka copies it whole.
        let copy = unsafe { rd::rd_kafka_headers_copy(list.as_ptr()) };
        self.0.store(list.as_ptr(), Ordering::Release);
        NonNull::new(copy)
    }
}

impl Drop for WireHeaders {
    fn drop(&mut self) {
        if let Some(list) = self.take() {
            #[allow(unsafe_code, reason = "freeing a headers list no output took")]
            // SAFETY: the list was detached from its message and is ours.
            unsafe {
                rd::rd_kafka_headers_destroy(list.as_ptr());
            }
        }
    }
}

impl Clone for WireHeaders {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for WireHeaders {
    /// The same headers are in the record's `headers`: they tell records
    /// apart, not this.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for WireHeaders {}

impl std::fmt::Debug for WireHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireHeaders")
    }
}

impl Drop for FetchedMessage<'_> {
    fn drop(&mut self) {
        #[allow(unsafe_code, reason = "releasing a consumed message")]
        // SAFETY: the message came from a consume call and is released
        // once.
        unsafe {
            rd::rd_kafka_message_destroy(self.0.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use std::ffi::CString;
    use std::time::Instant;

    use rdkafka::ClientConfig;
    use rdkafka::consumer::DefaultConsumerContext;
    use rdkafka::message::Message;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, Producer};

    use super::*;

    /// A header to produce: name (raw bytes) and value (`None`: null).
    type RawHeader<'a> = (&'a [u8], Option<&'a [u8]>);

    /// A record to produce: key, value (`None`: null), headers, timestamp.
    type Raw<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a [RawHeader<'a>], i64);

    /// Produces records whose header names are raw bytes (rdkafka's API
    /// only takes `&str` names).
    fn produce(bootstrap: &str, records: &[Raw<'_>]) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        let topic = CString::new("in").unwrap();
        for (key, value, headers, timestamp) in records {
            #[allow(unsafe_code, reason = "producing raw headers through librdkafka")]
            // SAFETY: a new headers list, filled with copies of the names and
            // values, handed to librdkafka with the message (which copies
            // key and value: RD_KAFKA_MSG_F_COPY) and freed by it.
            unsafe {
                let list = rd::rd_kafka_headers_new(headers.len());
                for (name, value) in *headers {
                    rd::rd_kafka_header_add(
                        list,
                        name.as_ptr().cast(),
                        isize::try_from(name.len()).unwrap(),
                        value.map_or(ptr::null(), |v| v.as_ptr().cast()),
                        isize::try_from(value.map_or(0, <[u8]>::len)).unwrap(),
                    );
                }
                let mem = |data: Option<&[u8]>| rd::rd_kafka_vu_s__bindgen_ty_1 {
                    mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                        ptr: data.map_or(ptr::null_mut(), |d| d.as_ptr().cast_mut().cast()),
                        size: data.map_or(0, <[u8]>::len),
                    },
                };
                use rd::rd_kafka_vtype_t as t;
                let vus = [
                    rd::rd_kafka_vu_t {
                        vtype: t::RD_KAFKA_VTYPE_TOPIC,
                        u: rd::rd_kafka_vu_s__bindgen_ty_1 {
                            cstr: topic.as_ptr(),
                        },
                    },
                    rd::rd_kafka_vu_t {
                        vtype: t::RD_KAFKA_VTYPE_PARTITION,
                        u: rd::rd_kafka_vu_s__bindgen_ty_1 { i32_: 0 },
                    },
                    rd::rd_kafka_vu_t {
                        vtype: t::RD_KAFKA_VTYPE_MSGFLAGS,
                        u: rd::rd_kafka_vu_s__bindgen_ty_1 {
                            i: rd::RD_KAFKA_MSG_F_COPY,
                        },
                    },
                    rd::rd_kafka_vu_t {
                        vtype: t::RD_KAFKA_VTYPE_KEY,
                        u: mem(*key),
                    },
                    rd::rd_kafka_vu_t {
                        vtype: t::RD_KAFKA_VTYPE_VALUE,
                        u: mem(*value),
                    },
                    rd::rd_kafka_vu_t {
                        vtype: t::RD_KAFKA_VTYPE_TIMESTAMP,
                        u: rd::rd_kafka_vu_s__bindgen_ty_1 { i64_: *timestamp },
                    },
                    rd::rd_kafka_vu_t {
                        vtype: t::RD_KAFKA_VTYPE_HEADERS,
                        u: rd::rd_kafka_vu_s__bindgen_ty_1 { headers: list },
                    },
                ];
                let error =
                    rd::rd_kafka_produceva(producer.client().native_ptr(), vus.as_ptr(), vus.len());
                assert!(error.is_null(), "produce failed");
            }
        }
        producer.flush(Duration::from_secs(20)).unwrap();
    }

    #[test]
    fn a_forwarded_queue_hands_out_whole_records_in_batches_nulls_and_a_header_name_that_is_not_utf8_too()
     {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("in", 1, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let count = 300;
        let values: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("value {i}").into_bytes())
            .collect();
        let records: Vec<Raw<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let headers: &[RawHeader<'_>] = match i {
                    7 => &[
                        (b"tenant-id", Some(b"acme")),
                        (b"bad-\xff-name", Some(b"kept")),
                    ],
                    8 => &[(b"tenant-id", Some(b"acme")), (b"null", None)],
                    _ => &[(b"tenant-id", Some(b"acme"))],
                };
                // Record 9 has a null key and a null value.
                let (key, value) = if i == 9 {
                    (None, None)
                } else {
                    (Some(&b"k"[..]), Some(value.as_slice()))
                };
                (key, value, headers, 1_700_000_000_000 + i as i64)
            })
            .collect();
        produce(&bootstrap, &records);

        let (consumer, queue) =
            FetchQueue::<DefaultConsumerContext>::reading(&bootstrap, "queue-test", "in", 0);

        let deadline = Instant::now() + Duration::from_secs(20);
        let mut fetched = Vec::new();
        let mut read = Vec::new();
        let mut largest = 0;
        let mut names = HeaderNames::default();
        while read.len() < count {
            assert!(Instant::now() < deadline, "read {} of {count}", read.len());
            // The consumer's own queue is served, as the router's consumer
            // thread does; none of the partition's records may come here.
            if let Some(Ok(message)) = consumer.poll(Duration::ZERO) {
                panic!("record {} reached the consumer's queue", message.offset());
            }
            queue.take(Duration::from_millis(100), 128, &mut fetched);
            assert!(fetched.len() <= 128);
            largest = largest.max(fetched.len());
            for message in fetched.drain(..) {
                assert!(message.error().is_none(), "{:?}", message.error());
                read.push(message.record("in".into(), &mut names));
            }
        }
        assert_eq!(read.len(), count);
        assert!(largest > 1, "taken in batches, not one by one");
        for (i, record) in read.iter().enumerate() {
            assert_eq!(record.offset, i as i64);
            assert_eq!(record.partition, 0);
            assert_eq!(&*record.topic, "in");
            if i == 9 {
                assert_eq!((&record.key, &record.value), (&None, &None));
            } else {
                assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
                assert_eq!(record.value.as_deref(), Some(values[i].as_slice()));
            }
            assert_eq!(record.timestamp_ms, Some(1_700_000_000_000 + i as i64));
            let mut want = vec![Header {
                key: "tenant-id".into(),
                value: Bytes::from_static(b"acme"),
            }];
            if i == 7 {
                want.push(Header {
                    key: "bad-\u{fffd}-name".into(),
                    value: Bytes::from_static(b"kept"),
                });
            }
            // A null header value reads as empty (plugins see bytes).
            if i == 8 {
                want.push(Header {
                    key: "null".into(),
                    value: Bytes::new(),
                });
            }
            assert_eq!(record.headers, want, "record {i}");
            // One allocation of a name for all the records that carry it.
            assert!(Arc::ptr_eq(&record.headers[0].key, &read[0].headers[0].key));
            // librdkafka's list goes on to the producer, unless a name had
            // to be read lossily (then the output forwards it as read).
            let list = record.wire_headers.take();
            assert_eq!(list.is_some(), i != 7, "record {i}");
            if let Some(list) = list {
                #[allow(unsafe_code, reason = "reading and freeing a detached headers list")]
                // SAFETY: the list was detached and is ours.
                let count = unsafe {
                    let count = rd::rd_kafka_header_cnt(list.as_ptr());
                    rd::rd_kafka_headers_destroy(list.as_ptr());
                    count
                };
                assert_eq!(count, want.len(), "record {i}");
            }
        }
    }
}
