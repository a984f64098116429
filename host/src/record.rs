//! The records that flow through the router: what was consumed, and what a
//! plugin asked to produce.

use std::sync::Arc;

use bytes::Bytes;

/// One record header. Keys may repeat; order is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The key.
    pub key: String,
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

    /// Bytes this output would put on the wire (key, value and headers),
    /// for size limits.
    #[must_use]
    pub fn size(&self) -> usize {
        self.key().map_or(0, <[u8]>::len)
            + self.value().map_or(0, <[u8]>::len)
            + self
                .headers()
                .map(|h| h.key.len() + h.value.len())
                .sum::<usize>()
    }
}

fn resolve<'a>(data: &'a Data, original: Option<&'a Bytes>) -> Option<&'a Bytes> {
    match data {
        Data::Original => original,
        Data::Null => None,
        Data::Bytes(b) => Some(b),
    }
}
