use crate::message::Header;

/// What becomes of a record: the outputs to produce, or why it could not be
/// routed.
pub type RouteResult = Result<Vec<Output>, RouteError>;

/// Where an output's key or value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// The consumed record's own bytes, unchanged. Nothing is copied out of
    /// the plugin.
    Original,
    /// A null key, or a null value (a tombstone).
    Null,
    /// New bytes.
    Bytes(Vec<u8>),
}

/// Which headers an output carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputHeaders {
    /// Exactly the consumed record's headers.
    Original,
    /// The consumed record's headers followed by these.
    Append(Vec<Header>),
    /// Only these headers.
    Replace(Vec<Header>),
}

/// A record for the router to produce. Start from [`Output::forward`] (the
/// consumed record as it is) or [`Output::new`] (an empty record) and change
/// what differs.
///
/// ```
/// use switchyard_sdk::Output;
///
/// let out = Output::forward()
///     .to_topic("orders.eu")
///     .partition(3)
///     .header("routed-by", "example");
/// assert_eq!(out.topic.as_deref(), Some("orders.eu"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Output {
    /// Target topic; `None` is the route's default target.
    pub topic: Option<String>,
    /// Target partition; `None` lets the router partition by key.
    pub partition: Option<i32>,
    /// The key.
    pub key: Data,
    /// The value.
    pub value: Data,
    /// The headers.
    pub headers: OutputHeaders,
    /// Timestamp in ms since the Unix epoch; `None` keeps the consumed
    /// record's.
    pub timestamp_ms: Option<i64>,
}

impl Output {
    /// The consumed record unchanged (key, value, headers, timestamp), for
    /// the route's default target and the key's partition.
    #[must_use]
    pub fn forward() -> Self {
        Self {
            topic: None,
            partition: None,
            key: Data::Original,
            value: Data::Original,
            headers: OutputHeaders::Original,
            timestamp_ms: None,
        }
    }

    /// A new record with a null key, a null value and no headers, for the
    /// route's default target.
    #[must_use]
    pub fn new() -> Self {
        Self {
            key: Data::Null,
            value: Data::Null,
            headers: OutputHeaders::Replace(Vec::new()),
            ..Self::forward()
        }
    }

    /// Sends the output to `topic` instead of the default target.
    #[must_use]
    pub fn to_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Puts the output on an explicit partition.
    #[must_use]
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets a new key.
    #[must_use]
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Data::Bytes(key.into());
        self
    }

    /// Sets a null key.
    #[must_use]
    pub fn null_key(mut self) -> Self {
        self.key = Data::Null;
        self
    }

    /// Sets a new value.
    #[must_use]
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Data::Bytes(value.into());
        self
    }

    /// Sets a null value (a tombstone).
    #[must_use]
    pub fn null_value(mut self) -> Self {
        self.value = Data::Null;
        self
    }

    /// Adds a header after the ones the output already carries.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let header = Header::new(key, value);
        self.headers = match self.headers {
            OutputHeaders::Original => OutputHeaders::Append(vec![header]),
            OutputHeaders::Append(mut list) => {
                list.push(header);
                OutputHeaders::Append(list)
            }
            OutputHeaders::Replace(mut list) => {
                list.push(header);
                OutputHeaders::Replace(list)
            }
        };
        self
    }

    /// Replaces all headers with `headers`.
    #[must_use]
    pub fn headers(mut self, headers: Vec<Header>) -> Self {
        self.headers = OutputHeaders::Replace(headers);
        self
    }

    /// Sets the timestamp (ms since the Unix epoch).
    #[must_use]
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

impl Default for Output {
    fn default() -> Self {
        Self::forward()
    }
}

/// Why a record could not be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Transient: routing the same record again later may succeed. The
    /// router retries with backoff.
    Retry(String),
    /// Permanent: redelivery cannot help. The record goes to the route's
    /// dead-letter destination.
    Reject(String),
}

impl RouteError {
    /// A transient failure with a reason.
    pub fn retry(reason: impl Into<String>) -> Self {
        Self::Retry(reason.into())
    }

    /// A permanent failure with a reason.
    pub fn reject(reason: impl Into<String>) -> Self {
        Self::Reject(reason.into())
    }

    /// The reason.
    #[must_use]
    pub fn reason(&self) -> &str {
        match self {
            Self::Retry(r) | Self::Reject(r) => r,
        }
    }
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retry(r) => write!(f, "retry: {r}"),
            Self::Reject(r) => write!(f, "reject: {r}"),
        }
    }
}

impl std::error::Error for RouteError {}
