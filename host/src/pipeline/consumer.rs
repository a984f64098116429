//! The consumer thread: it polls for everything but records (rebalances,
//! errors, statistics), starts and stops partition workers as partitions
//! come and go, stores the offsets they finished, and drains them when
//! partitions are revoked or the router stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, TopicPartitionList};

use super::Pipeline;
use super::partition::Partition;
use crate::config::KafkaConfig;
use crate::kafka;

/// How long the consumer thread waits for an event before it stores the
/// offsets the workers finished.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// The router's consumer.
pub(crate) type Consumer = BaseConsumer<RouterContext>;

/// Makes the consumer of `pipeline` and subscribes it to the routes'
/// source topics. Nothing is consumed until [`run`] polls it.
pub(crate) fn subscribe(
    pipeline: &Arc<Pipeline>,
    config: &KafkaConfig,
) -> KafkaResult<Arc<Consumer>> {
    let config = kafka::router_consumer_config(config, pipeline.worker_count);
    let consumer: Arc<Consumer> = Arc::new(config.create_with_context(RouterContext {
        pipeline: pipeline.clone(),
    })?);
    // Workers split their partition's queue from it; rebalances, which
    // start them, only happen inside its poll.
    let _ = pipeline.consumer.set(Arc::downgrade(&consumer));
    consumer.subscribe(&pipeline.sources())?;
    Ok(consumer)
}

/// librdkafka's callbacks of the consumer: they run inside its poll, on
/// the consumer thread.
pub(crate) struct RouterContext {
    pipeline: Arc<Pipeline>,
}

impl ClientContext for RouterContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        kafka::client_log("consumer", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(client = "consumer", %error, "{reason}");
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let pipeline = &self.pipeline;
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        pipeline.status.set_broker_up(up);
        let workers = pipeline.workers();
        for ((topic, partition), worker) in workers.iter() {
            let Some(p) = statistics
                .topics
                .get(topic)
                .and_then(|t| t.partitions.get(partition))
            else {
                continue;
            };
            // Records not finished: from what this router finished (its
            // stored offset), else the group's commit, else the start of
            // the log (where a new group begins); to the high watermark,
            // known once the partition was fetched.
            let done = worker
                .offsets
                .stored()
                .or((p.committed_offset >= 0).then_some(p.committed_offset))
                .or((p.lo_offset >= 0).then_some(p.lo_offset));
            if let Some(done) = done
                && p.hi_offset >= 0
            {
                pipeline
                    .metrics
                    .set_lag(topic, *partition, (p.hi_offset - done).max(0));
            }
        }
    }
}

impl ConsumerContext for RouterContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(
                    partitions = tpl.count(),
                    "partitions revoked: draining them"
                );
                self.pipeline.drain(consumer, Some(tpl));
            }
            Rebalance::Assign(tpl) => {
                // Before librdkafka starts fetching them: each partition's
                // records go to its worker's queue from the first on.
                let mut workers = self.pipeline.workers();
                for elem in tpl.elements() {
                    let key = (elem.topic().to_owned(), elem.partition());
                    if workers.contains_key(&key) {
                        continue;
                    }
                    if let Some(worker) = self.pipeline.spawn_worker(&key.0, key.1) {
                        workers.insert(key, worker);
                    }
                }
                self.pipeline.set_assigned(workers.len());
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // A partition paused before it was revoked (see `stray`) comes
            // back with a worker: make sure it is not still paused.
            if let Err(e) = consumer.resume(tpl) {
                tracing::warn!(error = %e, "cannot resume the assigned partitions");
            }
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

/// Asks every one of `workers` to stop, then waits for them (each may be
/// waiting for its next record: they wait at the same time).
pub(super) fn stop_all(mut workers: Vec<&mut Partition>) {
    for worker in &workers {
        worker.signal_stop();
    }
    for worker in &mut workers {
        worker.stop();
    }
}

/// The consumer thread: polls until `stop` (or a fatal error), then drains
/// every partition, commits, and leaves the group.
pub(crate) fn run(consumer: &Consumer, pipeline: &Pipeline, stop: &AtomicBool) {
    // Partitions whose records came to the consumer's queue instead of a
    // worker's (see `stray`), once logged.
    let mut logged: Vec<(String, i32)> = Vec::new();
    pipeline.status.set_consumer_running(true);
    while !stop.load(Ordering::Acquire) && pipeline.fatal().is_none() {
        pipeline.status.polled();
        let mut wait = POLL_WAIT;
        if let Some(txn) = &pipeline.transactions {
            if txn.due()
                && let Err(e) = pipeline.commit_transaction(consumer, &[])
            {
                pipeline.transaction_failed(consumer, &e);
            }
            wait = wait.min(txn.until_due());
        }
        // Records go to the workers' own queues: this serves rebalances,
        // errors and statistics.
        match consumer.poll(wait) {
            None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            Some(Ok(message)) => stray(consumer, &message, &mut logged),
        }
        pipeline.store_finished(consumer, pipeline.workers().values());
    }
    pipeline.drain(consumer, None);
    pipeline.stop_workers();
    consumer.unsubscribe();
    pipeline.status.set_consumer_running(false);
    tracing::info!("router stopped");
}

/// A record that came to the consumer's queue: its partition has no queue
/// of its own (`spawn_worker` said why), so no worker routes it. It is not
/// routed and nothing of its partition is committed; the partition is
/// paused until it is assigned again.
fn stray(consumer: &Consumer, message: &BorrowedMessage<'_>, logged: &mut Vec<(String, i32)>) {
    // Logged once per partition; paused for each such record, as a
    // partition assigned anew was resumed.
    let key = (message.topic().to_owned(), message.partition());
    let first = !logged.contains(&key);
    if first {
        tracing::error!(
            topic = key.0,
            partition = key.1,
            offset = message.offset(),
            "a record of a partition without a worker: the partition is paused, nothing of it is committed"
        );
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&key.0, key.1);
    if let Err(e) = consumer.pause(&tpl) {
        tracing::warn!(topic = key.0, partition = key.1, error = %e, "cannot pause the partition");
    }
    if first {
        logged.push(key);
    }
}

impl Pipeline {
    /// Stops the workers of `partitions` (all if `None`), waits for their
    /// outputs and commits what they finished.
    pub(super) fn drain(&self, consumer: &Consumer, partitions: Option<&TopicPartitionList>) {
        let mut stopped = Vec::new();
        {
            let mut workers = self.workers();
            let keys: Vec<(String, i32)> = match partitions {
                None => workers.keys().cloned().collect(),
                Some(tpl) => tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect(),
            };
            for key in keys {
                if let Some(worker) = workers.remove(&key) {
                    self.metrics.remove_lag(&key.0, key.1);
                    stopped.push((key, worker));
                }
            }
            self.set_assigned(workers.len());
        }
        stop_all(stopped.iter_mut().map(|(_, w)| w).collect());
        if stopped.is_empty() {
            return;
        }
        for (_, worker) in &stopped {
            worker.forget_hold();
        }
        if self.transactions.is_some() {
            if self.fatal().is_some() {
                // The producer cannot commit any more: what was routed is
                // routed again by whoever owns the partitions next.
                return;
            }
            // The revoked partitions' offsets go into this transaction,
            // with the outputs of every worker.
            let extra: Vec<&Partition> = stopped.iter().map(|(_, w)| w).collect();
            if let Err(e) = self.commit_transaction(consumer, &extra) {
                self.transaction_failed(consumer, &e);
            }
        } else {
            let deadline = std::time::Instant::now() + self.drain_timeout;
            for producer in std::iter::once(&self.producer).chain(self.alone.started()) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if let Err(e) = producer.flush(left) {
                    tracing::error!(error = %e, timeout = ?self.drain_timeout, "outputs still unacknowledged (shutdown.timeout_ms): their records will be consumed again");
                }
            }
            self.store_finished(consumer, stopped.iter().map(|(_, w)| w));
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(())
                | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "commit failed: the last records may be consumed again")
                }
            }
        }
        for ((topic, partition), worker) in &stopped {
            tracing::info!(topic, partition, next_offset = ?worker.offsets.stored(), "partition released");
        }
    }

    /// At-least-once mode: hands what `workers` finished since the last
    /// call to the consumer's offset store, in one call (librdkafka commits
    /// it every `auto.commit.interval.ms`, and when partitions go).
    pub(super) fn store_finished<'w>(
        &self,
        consumer: &Consumer,
        workers: impl Iterator<Item = &'w Partition>,
    ) {
        // Exactly-once mode puts them into its transactions instead.
        if self.transactions.is_some() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for worker in workers {
            let offsets = &worker.offsets;
            if let Some(next) = offsets.take_unstored()
                && let Err(e) = tpl.add_partition_offset(
                    offsets.topic(),
                    offsets.partition(),
                    rdkafka::Offset::Offset(next),
                )
            {
                tracing::warn!(topic = offsets.topic(), partition = offsets.partition(), error = %e, "offset not stored");
            }
        }
        if tpl.count() == 0 {
            return;
        }
        // The list form stores each offset as given: the next one to
        // consume (`store_offset` would add one to it).
        if let Err(e) = consumer.store_offsets(&tpl) {
            // A partition was revoked meanwhile; its new owner resumes from
            // the last commit.
            tracing::debug!(error = %e, "offsets not stored");
        }
    }
}
