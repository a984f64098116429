//! Partition counts of the cluster's topics, read without a lock on the
//! hot path and refreshed in the background or when a topic is missing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rdkafka::client::{Client, ClientContext};

/// Shortest time between two refreshes triggered by a missing topic.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The cluster's topics and their partition counts.
#[derive(Debug)]
pub struct TopicCache {
    topics: ArcSwap<HashMap<String, u32>>,
    started: Instant,
    /// Milliseconds after `started` of the last refresh.
    last_refresh_ms: AtomicU64,
    timeout: Duration,
}

/// The partition count of every topic `metadata` describes (those the
/// cluster answered for without an error).
#[must_use]
pub fn partition_counts(metadata: &rdkafka::metadata::Metadata) -> HashMap<String, u32> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| {
            (
                t.name().to_owned(),
                u32::try_from(t.partitions().len()).unwrap_or(0),
            )
        })
        .collect()
}

impl TopicCache {
    /// An empty cache; call [`refresh`](Self::refresh) to fill it.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self {
            topics: ArcSwap::from_pointee(HashMap::new()),
            started: Instant::now(),
            last_refresh_ms: AtomicU64::new(0),
            timeout,
        }
    }

    /// Partition count of `topic`, if the last refresh saw it.
    #[must_use]
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics.load().get(topic).copied()
    }

    /// Reads the cluster's metadata (blocking, up to the timeout).
    pub fn refresh<C: ClientContext>(&self, client: &Client<C>) -> rdkafka::error::KafkaResult<()> {
        let metadata = client.fetch_metadata(None, self.timeout)?;
        self.topics.store(Arc::new(partition_counts(&metadata)));
        self.last_refresh_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Looks `topic` up, refreshing first if it is missing (a new topic
    /// shows up quickly).
    pub fn partition_count_or_refresh<C: ClientContext>(
        &self,
        topic: &str,
        client: &Client<C>,
    ) -> Option<u32> {
        match self.partition_count(topic) {
            Some(count) => Some(count),
            None => self.refreshed_partition_count(topic, client),
        }
    }

    /// Refreshes (unless the last refresh is under a second old, so that a
    /// missing topic does not flood the cluster with metadata requests),
    /// then looks `topic` up: for a partition count that may have grown.
    pub fn refreshed_partition_count<C: ClientContext>(
        &self,
        topic: &str,
        client: &Client<C>,
    ) -> Option<u32> {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_refresh_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= MIN_REFRESH_INTERVAL.as_millis() as u64
            && let Err(e) = self.refresh(client)
        {
            tracing::warn!(error = %e, "cannot refresh topic metadata");
        }
        self.partition_count(topic)
    }
}
