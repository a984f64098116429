//! The records that flow through the router: what was consumed, and what a
//! plugin asked to produce.

use std::sync::Arc;

use bytes::Bytes;

pub use crate::kafka::WireHeaders;

/// One record header. Keys may repeat; order is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The key: shared, since records of a topic repeat the same few
    /// (a worker reads each name once, see `kafka::queue::HeaderNames`).
    pub key: Arc<str>,
    /// The value.
    pub value: Bytes,
}

/// A consumed record, shared between the plugin call and the outputs that
/// refer to its key, value or headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Source topic (shared by the records of a partition).
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// Offset in the source partition.
    pub offset: i64,
    /// Timestamp, ms since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// Key; `None` is a null key.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// The same headers as the consumer read them, for the outputs that
    /// keep them unchanged (see [`WireHeaders`]; empty when not read from
    /// Kafka).
    pub wire_headers: WireHeaders,
}

/// Where an output's key or value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// The source record's bytes.
    Original,
    /// Null.
    Null,
    /// New bytes from the plugin.
    Bytes(Bytes),
}

/// Which headers an output carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputHeaders {
    /// The source record's headers.
    Original,
    /// The source record's headers, then these.
    Append(Vec<Header>),
    /// Only these.
    Replace(Vec<Header>),
}

/// A record a plugin asked for, still referring to its source record for
/// whatever it kept unchanged (nothing is copied for those).
#[derive(Debug, Clone)]
pub struct Output {
    /// The record it came from.
    pub source: Arc<SourceRecord>,
    /// Target topic; `None` is the route's default target.
    pub topic: Option<String>,
    /// Explicit partition, if any.
    pub partition: Option<i32>,
    /// Key.
    pub key: Data,
    /// Value.
    pub value: Data,
    /// Headers.
    pub headers: OutputHeaders,
    /// Explicit timestamp, if any (else the source's).
    pub timestamp_ms: Option<i64>,
}

impl Output {
    /// `source` unchanged, for the route's default target and the key's
    /// partition.
    #[must_use]
    pub fn forward(source: Arc<SourceRecord>) -> Self {
        Self {
            source,
            topic: None,
            partition: None,
            key: Data::Original,
            value: Data::Original,
            headers: OutputHeaders::Original,
            timestamp_ms: None,
        }
    }

    /// The key to produce.
    #[must_use]
    pub fn key(&self) -> Option<&[u8]> {
        resolve(&self.key, self.source.key.as_ref()).map(Bytes::as_ref)
    }

    /// The value to produce.
    #[must_use]
    pub fn value(&self) -> Option<&[u8]> {
        resolve(&self.value, self.source.value.as_ref()).map(Bytes::as_ref)
    }

    /// The headers to produce, in order.
    pub fn headers(&self) -> impl Iterator<Item = &Header> {
        let (original, own): (&[Header], &[Header]) = match &self.headers {
            OutputHeaders::Original => (&self.source.headers, &[]),
            OutputHeaders::Append(own) => (&self.source.headers, own),
            OutputHeaders::Replace(own) => (&[], own),
        };
        original.iter().chain(own)
    }

    /// The timestamp to produce: the plugin's, else the source record's.
    #[must_use]
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms.or(self.source.timestamp_ms)
    }

    /// The size the producer counts for this record against its
    /// `message.max.bytes`: key, value, every header with its two length
    /// prefixes, and the record's own framing at its largest
    /// ([`RECORD_OVERHEAD`]). librdkafka refuses a record above the limit
    /// by exactly this measure, so an output within it is never refused
    /// for its size by the producer.
    #[must_use]
    pub fn wire_size(&self) -> usize {
        RECORD_OVERHEAD
            + self.key().map_or(0, <[u8]>::len)
            + self.value().map_or(0, <[u8]>::len)
            + self.headers().map(Header::wire_size).sum::<usize>()
    }
}

/// The most a record's framing takes in a Kafka record batch (v2): its
/// length, attributes, timestamp and offset deltas, key and value lengths
/// and header count, each at its widest varint (what librdkafka adds to a
/// record's size when it checks it against `message.max.bytes`).
pub const RECORD_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;

impl Header {
    /// Bytes this header takes in a record: its key and value, each after
    /// its length as a zigzag varint.
    #[must_use]
    pub fn wire_size(&self) -> usize {
        let key = self.key.len();
        let value = self.value.len();
        zigzag_varint_len(key) + key + zigzag_varint_len(value) + value
    }
}

/// Length of `n` as a zigzag-encoded varint (how Kafka writes lengths in a
/// record).
fn zigzag_varint_len(n: usize) -> usize {
    let mut zigzag = (n as u64) << 1;
    let mut len = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        len += 1;
    }
    len
}

fn resolve<'a>(data: &'a Data, original: Option<&'a Bytes>) -> Option<&'a Bytes> {
    match data {
        Data::Original => original,
        Data::Null => None,
        Data::Bytes(b) => Some(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(key: &str, value_len: usize) -> Header {
        Header {
            key: key.into(),
            value: Bytes::from(vec![b'v'; value_len]),
        }
    }

    #[test]
    fn lengths_are_counted_as_kafka_writes_them() {
        // zigzag(n) = 2n: one byte up to 63, two up to 8191.
        assert_eq!(zigzag_varint_len(0), 1);
        assert_eq!(zigzag_varint_len(63), 1);
        assert_eq!(zigzag_varint_len(64), 2);
        assert_eq!(zigzag_varint_len(8191), 2);
        assert_eq!(zigzag_varint_len(8192), 3);
        assert_eq!(header("", 0).wire_size(), 2);
        assert_eq!(header("tenant-id", 4).wire_size(), 1 + 9 + 1 + 4);
    }

    #[test]
    fn an_output_counts_its_framing_and_every_header() {
        let source = Arc::new(SourceRecord {
            topic: "in".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: Some(Bytes::from_static(b"key")),
            value: Some(Bytes::from(vec![0; 1000])),
            headers: vec![header("a", 10)],
            wire_headers: Default::default(),
        });
        let mut output = Output::forward(source);
        assert_eq!(
            output.wire_size(),
            RECORD_OVERHEAD + 3 + 1000 + (1 + 1 + 1 + 10)
        );
        // 300,000 empty headers are 600,000 bytes on the wire.
        output.headers = OutputHeaders::Replace(vec![header("", 0); 300_000]);
        output.value = Data::Null;
        assert_eq!(output.wire_size(), RECORD_OVERHEAD + 3 + 600_000);
    }
}
