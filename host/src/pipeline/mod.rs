//! The record path: consume → route → produce → store the offset.
//!
//! A bounded set of workers (by default one per core) routes the assigned
//! partitions: each partition's queue is forwarded, before the partition
//! is assigned, to the queue of the worker it is placed on, which routes
//! its records in order; workers run concurrently. One thread polls the
//! consumer for everything else: rebalances (which place partitions on
//! workers and take them off), errors, statistics, and storing finished
//! offsets. Offsets are
//! stored only as [`offsets`] allows; librdkafka commits what was stored
//! every `auto.commit.interval.ms`, and the pipeline commits synchronously
//! when partitions are revoked and when it stops.
//!
//! - [`Pipeline`] (here): what the consumer thread, its callbacks and the
//!   workers share, and placing a partition on a worker;
//! - `consumer`: the consumer thread, librdkafka's callbacks (rebalances,
//!   statistics), draining partitions and storing their offsets;
//! - `partition`: an assigned partition, as the consumer thread and its
//!   worker see it;
//! - `pool`: the workers as the consumer thread sees them, `worker`: a
//!   worker's loop, `instances`: a worker's
//!   instance of each route, `routing`: what a worker does with a
//!   partition's records (plugin calls, retries, holds, handing outputs
//!   over);
//! - `delivery`: what a delivery report means for its record;
//!   [`offsets`]: the at-least-once rule;
//! - `refusals`: outputs the broker refused, sent again alone and settled;
//! - `failures`: records that failed for good (logged, dead-lettered);
//! - `transactions`: exactly-once mode (commit, abort, rewind);
//! - `meters`: a worker's counts and call timings.

mod consumer;
mod delivery;
mod failures;
mod instances;
mod meters;
mod offsets;
mod partition;
mod pool;
mod refusals;
mod routing;
mod transactions;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

pub(crate) use self::consumer::{Consumer, run, subscribe};
pub(crate) use self::delivery::Producer;
pub(crate) use self::failures::dead_letter;
pub use self::failures::{FailureSink, LogFailures, RecordFailure};
pub(crate) use self::transactions::TxnError;

use self::partition::{Partition, Queue};
use self::pool::{Shared, Workers};
use self::refusals::{AloneProducer, RefusedRecords};
use self::transactions::Transactions;
use crate::config::RouterConfig;
use crate::kafka;
use crate::metrics::Metrics;
use crate::route::Route;
use crate::status::Status;

/// What the consumer thread, the rebalance callbacks and the workers share.
pub(crate) struct Pipeline {
    /// Exactly-once mode's transactions; none in at-least-once mode.
    transactions: Option<Transactions>,
    /// Why the router stopped by itself, if it did.
    fatal: Mutex<Option<String>>,
    /// Route of each source topic.
    routes: HashMap<String, Arc<Route>>,
    /// The consumer (it owns this through its context, hence weak).
    consumer: OnceLock<Weak<Consumer>>,
    producer: Arc<Producer>,
    /// Sends refused outputs again alone (started when first needed).
    alone: Arc<AloneProducer>,
    /// Exactly-once: records the broker refused in aborted transactions.
    refused: Arc<RefusedRecords>,
    failures: Arc<dyn FailureSink>,
    /// The assigned partitions. Only the consumer thread touches it
    /// (rebalance callbacks run inside its `poll`).
    workers: Mutex<HashMap<(String, i32), Partition>>,
    /// The workers, started with the first assignment.
    pool: Mutex<Option<Workers>>,
    /// How many workers to start.
    worker_count: usize,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    /// How long stopping or a revocation may wait for outputs in flight
    /// (what is not acknowledged by then is not committed: nothing is lost).
    drain_timeout: Duration,
    /// Where a partition with no committed offset starts again after an
    /// abort: the consumer's `auto.offset.reset`.
    reset_offset: rdkafka::Offset,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// The record path of `config` with its `routes` (by source topic),
    /// producing with `producer`. Exactly-once mode begins its first
    /// transaction here (fencing earlier producers with its id).
    pub(crate) fn new(
        config: &RouterConfig,
        routes: HashMap<String, Arc<Route>>,
        producer: Arc<Producer>,
        failures: Arc<dyn FailureSink>,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
    ) -> Result<Self, TxnError> {
        let transactions = match config.kafka.delivery {
            crate::config::Delivery::AtLeastOnce => None,
            crate::config::Delivery::ExactlyOnce => Some(Transactions::start(
                &producer,
                Duration::from_millis(config.kafka.commit_interval_ms),
            )?),
        };
        // Refused outputs are sent again alone by a producer of their own,
        // never in a transaction (exactly-once settles them when replayed).
        let mut alone_config = kafka::producer_config(&config.kafka);
        alone_config.remove("transactional.id");
        let reset_offset = match config
            .kafka
            .consumer
            .get("auto.offset.reset")
            .map(ToString::to_string)
            .as_deref()
        {
            Some("latest" | "largest" | "end") => rdkafka::Offset::End,
            _ => rdkafka::Offset::Beginning,
        };
        Ok(Self {
            transactions,
            fatal: Mutex::default(),
            routes,
            consumer: OnceLock::new(),
            producer,
            alone: Arc::new(AloneProducer::new(alone_config)),
            refused: Arc::default(),
            failures,
            workers: Mutex::default(),
            pool: Mutex::default(),
            worker_count: config.router.workers(),
            metrics,
            status,
            drain_timeout: config.shutdown.timeout(),
            reset_offset,
        })
    }

    /// The source topics.
    pub(crate) fn sources(&self) -> Vec<&str> {
        self.routes.keys().map(String::as_str).collect()
    }

    fn workers(&self) -> MutexGuard<'_, HashMap<(String, i32), Partition>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Places `topic`/`partition` on a worker, which routes it from its
    /// own queue, forwarded to the worker's. Called before the partition
    /// is assigned: once a partition's queue is forwarded, librdkafka never
    /// forwards it to the consumer's queue again, so none of its records
    /// can go past the workers.
    fn spawn_worker(&self, topic: &str, partition: i32) -> Option<Partition> {
        let route = self.routes.get(topic)?.clone();
        let consumer = self.consumer.get().and_then(Weak::upgrade);
        let Some((consumer, queue)) = consumer.and_then(|consumer| {
            let queue = Queue::of_partition(&consumer, topic, partition)?;
            Some((consumer, queue))
        }) else {
            tracing::error!(
                topic,
                partition,
                "cannot give the partition a queue of its own: it is not consumed"
            );
            return None;
        };
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.is_none() {
            let shared = Arc::new(Shared {
                producer: self.producer.clone(),
                failures: self.failures.clone(),
                metrics: self.metrics.clone(),
                gate: self.transactions.as_ref().map(|t| t.gate.clone()),
                alone: self.alone.clone(),
                refused: self.refused.clone(),
                consumer: Arc::downgrade(&consumer),
            });
            match Workers::start(self.worker_count, &consumer, &shared) {
                Ok(workers) => {
                    tracing::info!(workers = self.worker_count, "workers started");
                    *pool = Some(workers);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the workers");
                    return None;
                }
            }
        }
        let worker = pool.as_ref()?.place()?;
        Some(Partition::start(
            topic,
            partition,
            route,
            queue,
            worker,
            self.transactions.is_some(),
        ))
    }

    /// Stops the workers (after every partition was taken off them).
    pub(crate) fn stop_workers(&self) {
        let workers = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(workers);
    }

    fn set_assigned(&self, count: usize) {
        self.status.set_assigned(count);
    }

    /// The router cannot go on: say why, and stop.
    pub(crate) fn stop_for_good(&self, reason: &str) {
        tracing::error!(reason, "the router stops: it cannot go on");
        self.status.set_stopping();
        *self.fatal.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
    }

    /// Why the router stopped by itself, if it did.
    pub(crate) fn fatal(&self) -> Option<String> {
        self.fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Exactly-once mode: the source offsets committed in transactions so
    /// far, by (topic, partition); empty in at-least-once mode.
    pub(crate) fn transaction_offsets(&self) -> HashMap<(String, i32), i64> {
        self.transactions
            .as_ref()
            .map(Transactions::committed)
            .unwrap_or_default()
    }
}
