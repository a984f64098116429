use std::borrow::Cow;
use std::cell::OnceCell;
use std::marker::PhantomData;

/// One Kafka record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The key (keys may repeat within a record).
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
}

impl Header {
    /// A header from a key and a value.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A consumed record, as the router lends it to the plugin.
///
/// Inside the router each accessor fetches its field the first time it is
/// called and keeps it, so a plugin pays only for what it reads: a
/// partitioner that looks at one header never copies the value.
pub struct Message<'a> {
    source: Source<'a>,
    topic: OnceCell<String>,
    partition: OnceCell<i32>,
    offset: OnceCell<i64>,
    timestamp_ms: OnceCell<Option<i64>>,
    key: OnceCell<Option<Vec<u8>>>,
    value: OnceCell<Option<Vec<u8>>>,
    headers: OnceCell<Vec<Header>>,
    /// What a unit test says the router decoded.
    #[cfg(feature = "json")]
    schema: crate::schema::Detached,
}

enum Source<'a> {
    /// Every field is already in its cell.
    Detached(PhantomData<&'a ()>),
    /// The router's record, fetched field by field, and where the values
    /// of the headers the router handed over with the call lie (this
    /// record's spans, and the call's bytes they point into).
    #[cfg(target_arch = "wasm32")]
    Host {
        batch: &'a crate::__private::bindings::switchyard::plugin::types::Batch,
        index: u32,
        given: &'a [Option<crate::__private::bindings::switchyard::plugin::types::Span>],
        bytes: &'a [u8],
    },
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .finish_non_exhaustive()
    }
}

impl<'a> Message<'a> {
    /// Starts a record for tests: topic `input`, partition 0, offset 0, no
    /// timestamp, null key and value, no headers.
    #[must_use]
    pub fn builder() -> MessageBuilder {
        MessageBuilder::default()
    }

    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_host(
        batch: &'a crate::__private::bindings::switchyard::plugin::types::Batch,
        index: u32,
        given: &'a [Option<crate::__private::bindings::switchyard::plugin::types::Span>],
        bytes: &'a [u8],
    ) -> Self {
        Self::with_source(Source::Host {
            batch,
            index,
            given,
            bytes,
        })
    }

    fn with_source(source: Source<'a>) -> Self {
        Self {
            source,
            topic: OnceCell::new(),
            partition: OnceCell::new(),
            offset: OnceCell::new(),
            timestamp_ms: OnceCell::new(),
            key: OnceCell::new(),
            value: OnceCell::new(),
            headers: OnceCell::new(),
            #[cfg(feature = "json")]
            schema: crate::schema::Detached::default(),
        }
    }

    /// The router's batch and this record's index in it, inside the
    /// router.
    #[cfg(all(target_arch = "wasm32", feature = "json"))]
    pub(crate) fn host_record(
        &self,
    ) -> Option<(
        &crate::__private::bindings::switchyard::plugin::types::Batch,
        u32,
    )> {
        match &self.source {
            Source::Host { batch, index, .. } => Some((batch, *index)),
            Source::Detached(_) => None,
        }
    }

    /// What a unit test said the router decoded.
    #[cfg(feature = "json")]
    pub(crate) fn detached_schema(&self) -> &crate::schema::Detached {
        &self.schema
    }

    /// The topic the record was consumed from.
    pub fn topic(&self) -> &str {
        self.topic.get_or_init(|| match &self.source {
            Source::Detached(_) => String::new(),
            #[cfg(target_arch = "wasm32")]
            Source::Host { batch, index, .. } => batch.topic(*index),
        })
    }

    /// The partition the record was consumed from.
    pub fn partition(&self) -> i32 {
        *self.partition.get_or_init(|| match &self.source {
            Source::Detached(_) => 0,
            #[cfg(target_arch = "wasm32")]
            Source::Host { batch, index, .. } => batch.partition(*index),
        })
    }

    /// The record's offset in its partition.
    pub fn offset(&self) -> i64 {
        *self.offset.get_or_init(|| match &self.source {
            Source::Detached(_) => 0,
            #[cfg(target_arch = "wasm32")]
            Source::Host { batch, index, .. } => batch.offset(*index),
        })
    }

    /// The record's timestamp (ms since the Unix epoch), if it has one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        *self.timestamp_ms.get_or_init(|| match &self.source {
            Source::Detached(_) => None,
            #[cfg(target_arch = "wasm32")]
            Source::Host { batch, index, .. } => batch.timestamp_ms(*index),
        })
    }

    /// The key; `None` for a null key.
    pub fn key(&self) -> Option<&[u8]> {
        self.key
            .get_or_init(|| match &self.source {
                Source::Detached(_) => None,
                #[cfg(target_arch = "wasm32")]
                Source::Host { batch, index, .. } => batch.key(*index),
            })
            .as_deref()
    }

    /// The value; `None` for a null value (a tombstone).
    pub fn value(&self) -> Option<&[u8]> {
        self.value
            .get_or_init(|| match &self.source {
                Source::Detached(_) => None,
                #[cfg(target_arch = "wasm32")]
                Source::Host { batch, index, .. } => batch.value(*index),
            })
            .as_deref()
    }

    /// The value as UTF-8 text, if it is not null and is valid UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        self.value().and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header, in order, duplicates included.
    pub fn headers(&self) -> &[Header] {
        self.headers.get_or_init(|| match &self.source {
            Source::Detached(_) => Vec::new(),
            #[cfg(target_arch = "wasm32")]
            Source::Host { batch, index, .. } => batch
                .headers(*index)
                .into_iter()
                .map(|h| Header::new(h.key, h.value))
                .collect(),
        })
    }

    /// The value of the first header named `key` (case-sensitive).
    ///
    /// Inside the router this fetches just that one header unless
    /// [`headers`](Self::headers) was already called; and from the second
    /// record on, the router hands the headers a plugin reads over with the
    /// call, so reading one costs no extra call into the router.
    pub fn header(&self, key: &str) -> Option<Cow<'_, [u8]>> {
        #[cfg(target_arch = "wasm32")]
        if let (
            Source::Host {
                batch,
                index,
                given,
                bytes,
            },
            None,
        ) = (&self.source, self.headers.get())
        {
            return match crate::host::given_index(key).and_then(|i| given.get(i)) {
                Some(span) => span.map(|span| {
                    // The router's spans lie within its bytes; a bad one
                    // reads as an empty value rather than a panic.
                    let start = span.start as usize;
                    let end = start.saturating_add(span.len as usize);
                    Cow::Borrowed(bytes.get(start..end).unwrap_or_default())
                }),
                None => batch.header(*index, key).map(Cow::Owned),
            };
        }
        self.headers()
            .iter()
            .find(|h| h.key == key)
            .map(|h| Cow::Borrowed(h.value.as_slice()))
    }

    /// The first header named `key` as UTF-8 text, if present and valid.
    pub fn header_str(&self, key: &str) -> Option<Cow<'_, str>> {
        match self.header(key)? {
            Cow::Borrowed(b) => std::str::from_utf8(b).ok().map(Cow::Borrowed),
            Cow::Owned(b) => String::from_utf8(b).ok().map(Cow::Owned),
        }
    }
}

/// Builds a [`Message`] for plugin unit tests.
///
/// ```
/// use switchyard_sdk::Message;
///
/// let msg = Message::builder()
///     .topic("orders")
///     .offset(42)
///     .key("order-1")
///     .value(r#"{"total":10}"#)
///     .header("tenant-id", "acme")
///     .build();
/// assert_eq!(msg.header_str("tenant-id").as_deref(), Some("acme"));
/// ```
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<Header>,
    #[cfg(feature = "json")]
    schema: crate::schema::Detached,
}

impl Default for MessageBuilder {
    fn default() -> Self {
        Self {
            topic: "input".to_owned(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: None,
            headers: Vec::new(),
            #[cfg(feature = "json")]
            schema: crate::schema::Detached::default(),
        }
    }
}

impl MessageBuilder {
    /// Sets the source topic.
    #[must_use]
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Sets the source partition.
    #[must_use]
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    /// Sets the offset.
    #[must_use]
    pub fn offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }

    /// Sets the timestamp (ms since the Unix epoch).
    #[must_use]
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Sets the key.
    #[must_use]
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    #[must_use]
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Adds a header (keys may repeat).
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Says the router decoded the value (on a route that reads values by
    /// schema) to `value`, written with schema 1 unless
    /// [`schema_id`](Self::schema_id) says otherwise: what
    /// [`Message::field`] and [`Message::decoded`] read in tests.
    #[cfg(feature = "json")]
    #[must_use]
    pub fn decoded(mut self, value: serde_json::Value) -> Self {
        let id = self.schema.value.as_ref().map_or(1, |(id, _)| *id);
        self.schema.value = Some((id, value));
        self
    }

    /// Says the router decoded the key to `key` (see
    /// [`decoded`](Self::decoded)).
    #[cfg(feature = "json")]
    #[must_use]
    pub fn decoded_key(mut self, key: serde_json::Value) -> Self {
        let id = self.schema.key.as_ref().map_or(1, |(id, _)| *id);
        self.schema.key = Some((id, key));
        self
    }

    /// The ID of the schema the decoded value was written with.
    #[cfg(feature = "json")]
    #[must_use]
    pub fn schema_id(mut self, id: u32) -> Self {
        let value = self
            .schema
            .value
            .take()
            .map_or(serde_json::Value::Null, |(_, v)| v);
        self.schema.value = Some((id, value));
        self
    }

    /// The ID of the schema the decoded key was written with.
    #[cfg(feature = "json")]
    #[must_use]
    pub fn key_schema_id(mut self, id: u32) -> Self {
        let key = self
            .schema
            .key
            .take()
            .map_or(serde_json::Value::Null, |(_, v)| v);
        self.schema.key = Some((id, key));
        self
    }

    /// The message.
    #[must_use]
    pub fn build(self) -> Message<'static> {
        #[cfg_attr(not(feature = "json"), allow(unused_mut))]
        let mut msg = Message::with_source(Source::Detached(PhantomData));
        #[cfg(feature = "json")]
        {
            msg.schema = self.schema;
        }
        // The cells are new, so every `set` succeeds.
        let _ = msg.topic.set(self.topic);
        let _ = msg.partition.set(self.partition);
        let _ = msg.offset.set(self.offset);
        let _ = msg.timestamp_ms.set(self.timestamp_ms);
        let _ = msg.key.set(self.key);
        let _ = msg.value.set(self.value);
        let _ = msg.headers.set(self.headers);
        msg
    }
}
