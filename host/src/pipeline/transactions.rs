//! Exactly-once mode (`kafka.delivery = "exactly-once"`): the outputs of
//! the records routed since the last commit and the source offsets after
//! them are committed in one Kafka transaction, the way Kafka Streams'
//! `exactly_once_v2` and librdkafka's transactional examples do it:
//!
//! - one transactional producer per instance; `init_transactions` at start
//!   fences any earlier producer with the same transactional id (a zombie
//!   of this instance);
//! - every `commit_interval_ms`, and before partitions are revoked or the
//!   router stops: workers are held at a record boundary (the gate), the
//!   producer is flushed, the offsets every worker finished are sent to the
//!   transaction with the consumer's group metadata (so a fenced group
//!   generation cannot commit), the transaction is committed and a new one
//!   begun;
//! - an abortable error aborts the transaction and rewinds every assigned
//!   partition to its committed offset: the records are routed again into
//!   the next transaction; a fatal error (fenced) stops the router.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer as _;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;

use super::Pipeline;
use super::consumer::{Consumer, stop_all};
use super::delivery::Producer;
use super::partition::Partition;

/// How long one transactional call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a transaction did not commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnError {
    /// Abort it, rewind, route again.
    Abort(String),
    /// The producer cannot go on (fenced by a newer instance with the same
    /// transactional id, or the broker refuses transactions).
    Fatal(String),
}

impl std::fmt::Display for TxnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Abort(e) | Self::Fatal(e) => f.write_str(e),
        }
    }
}

fn classify(what: &str, error: &KafkaError) -> TxnError {
    let message = format!("{what}: {error}");
    match error {
        KafkaError::Transaction(e) if e.txn_requires_abort() => TxnError::Abort(message),
        KafkaError::Transaction(e) if !e.is_fatal() && e.is_retriable() => TxnError::Abort(message),
        _ => TxnError::Fatal(message),
    }
}

/// The transaction state of one router.
pub(super) struct Transactions {
    /// Workers hand a record's outputs to the producer under a read guard;
    /// committing takes the write guard, so a transaction never holds part
    /// of a record.
    pub(super) gate: Arc<RwLock<()>>,
    interval: Duration,
    next_commit: Mutex<Instant>,
    /// The source offsets committed so far, by partition: what the last
    /// committed transaction said (for operators and tests; the broker's
    /// group offsets say the same on a real cluster).
    committed: Mutex<HashMap<(String, i32), i64>>,
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactions")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Transactions {
    /// Initializes the producer's transactions (fencing earlier producers
    /// with its transactional id) and begins the first one.
    pub(super) fn start(producer: &Producer, interval: Duration) -> Result<Self, TxnError> {
        producer
            .inner()
            .init_transactions(CALL_TIMEOUT)
            .map_err(|e| classify("cannot initialize transactions", &e))?;
        producer
            .inner()
            .begin_transaction()
            .map_err(|e| classify("cannot begin a transaction", &e))?;
        Ok(Self {
            gate: Arc::new(RwLock::new(())),
            interval,
            next_commit: Mutex::new(Instant::now() + interval),
            committed: Mutex::default(),
        })
    }

    /// Whether the commit interval has passed.
    pub(super) fn due(&self) -> bool {
        self.until_due().is_zero()
    }

    /// How long until the commit interval has passed (zero if it has).
    pub(super) fn until_due(&self) -> Duration {
        self.next_commit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_duration_since(Instant::now())
    }

    /// Commits the open transaction with `offsets` (the next offset to
    /// consume of each partition) and begins the next one. The caller holds
    /// the gate's write guard.
    pub(super) fn commit(
        &self,
        producer: &Producer,
        offsets: &TopicPartitionList,
        group: Option<&ConsumerGroupMetadata>,
        on_committed: impl FnOnce(),
    ) -> Result<(), TxnError> {
        *self
            .next_commit
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now() + self.interval;
        let p = producer.inner();
        if offsets.count() > 0 {
            let group = group.ok_or_else(|| {
                TxnError::Abort("no consumer group metadata (not in a group yet)".to_owned())
            })?;
            p.send_offsets_to_transaction(offsets, group, CALL_TIMEOUT)
                .map_err(|e| classify("cannot add the offsets to the transaction", &e))?;
        }
        p.commit_transaction(CALL_TIMEOUT)
            .map_err(|e| classify("cannot commit the transaction", &e))?;
        // Counted before the offsets are published, so whoever sees the
        // offsets also sees the commit counted.
        on_committed();
        let mut committed = self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for element in offsets.elements() {
            if let rdkafka::Offset::Offset(next) = element.offset() {
                committed.insert((element.topic().to_owned(), element.partition()), next);
            }
        }
        drop(committed);
        p.begin_transaction()
            .map_err(|e| classify("cannot begin a transaction", &e))
    }

    /// Nothing to commit this time: look again after the interval.
    pub(super) fn postpone(&self) {
        *self
            .next_commit
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now() + self.interval;
    }

    /// Whether `offsets` are all already committed (nothing to commit).
    pub(super) fn unchanged(&self, offsets: &TopicPartitionList) -> bool {
        let committed = self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        offsets.elements().iter().all(|e| match e.offset() {
            rdkafka::Offset::Offset(next) => {
                committed.get(&(e.topic().to_owned(), e.partition())) == Some(&next)
            }
            _ => true,
        })
    }

    /// The source offsets committed in transactions so far.
    pub(super) fn committed(&self) -> HashMap<(String, i32), i64> {
        self.committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Aborts the open transaction (its outputs are discarded) and begins
    /// the next one.
    pub(super) fn abort(&self, producer: &Producer) -> Result<(), TxnError> {
        let p = producer.inner();
        p.abort_transaction(CALL_TIMEOUT)
            .map_err(|e| classify("cannot abort the transaction", &e))?;
        p.begin_transaction()
            .map_err(|e| classify("cannot begin a transaction", &e))
    }
}

impl Pipeline {
    /// Exactly-once: holds the workers at a record boundary, waits for every
    /// output, and commits them with the offsets the workers (and
    /// `extra`, workers just stopped) finished.
    pub(super) fn commit_transaction(
        &self,
        consumer: &Consumer,
        extra: &[&Partition],
    ) -> Result<(), TxnError> {
        let Some(txn) = &self.transactions else {
            return Ok(());
        };
        let _held = txn.gate.write().unwrap_or_else(PoisonError::into_inner);
        // Wait for every output — but not for ones that will never be
        // acknowledged: once one failed, the transaction must abort.
        let failed = |workers: &HashMap<(String, i32), Partition>| {
            workers
                .values()
                .chain(extra.iter().copied())
                .find_map(|w| {
                    w.offsets.failure().map(|failure| {
                        format!("{}[{}] {failure}", w.offsets.topic(), w.offsets.partition())
                    })
                })
                .map(TxnError::Abort)
        };
        let deadline = Instant::now() + self.drain_timeout;
        while self.producer.flush(Duration::from_millis(10)).is_err() {
            if let Some(error) = failed(&self.workers()) {
                return Err(error);
            }
            if Instant::now() > deadline {
                return Err(TxnError::Abort(format!(
                    "outputs not acknowledged within {:?}",
                    self.drain_timeout
                )));
            }
        }
        let mut tpl = TopicPartitionList::new();
        let workers = self.workers();
        if let Some(error) = failed(&workers) {
            return Err(error);
        }
        for worker in workers.values().chain(extra.iter().copied()) {
            if let Some(next) = worker.offsets.stored() {
                tpl.add_partition_offset(
                    worker.offsets.topic(),
                    worker.offsets.partition(),
                    rdkafka::Offset::Offset(next),
                )
                .map_err(|e| TxnError::Abort(e.to_string()))?;
            }
        }
        drop(workers);
        if txn.unchanged(&tpl) {
            // Nothing routed since the last commit.
            txn.postpone();
            return Ok(());
        }
        txn.commit(
            &self.producer,
            &tpl,
            consumer.group_metadata().as_ref(),
            || {
                self.metrics.transaction("committed");
                self.refused.committed();
            },
        )
    }

    /// Exactly-once: what to do after a transaction failed — abort and
    /// route again from the committed offsets, or stop for good.
    pub(super) fn transaction_failed(&self, consumer: &Consumer, error: &TxnError) {
        let Some(txn) = &self.transactions else {
            return;
        };
        match error {
            TxnError::Fatal(reason) => self.stop_for_good(reason),
            TxnError::Abort(reason) => {
                tracing::warn!(reason = %reason, "transaction aborted: routing again from the committed offsets");
                self.metrics.transaction("aborted");
                // Stop every worker first (one may be waiting at the gate
                // to hand its record over: it finishes into the doomed
                // transaction), then abort what they produced.
                let mut workers = self.workers();
                let keys: Vec<(String, i32)> = workers.keys().cloned().collect();
                let mut stopped: Vec<Partition> = workers.drain().map(|(_, w)| w).collect();
                drop(workers);
                stop_all(stopped.iter_mut().collect());
                if let Err(e) = txn.abort(&self.producer) {
                    self.stop_for_good(&e.to_string());
                    return;
                }
                // Records the broker refused are suspects when replayed:
                // produced alone, the one at fault is found (see
                // `RefusedRecords`).
                for worker in &stopped {
                    for refusal in worker.offsets.take_refused() {
                        if let Some((_, routed)) = refusal.output() {
                            self.refused.suspect(&routed.output.source);
                        }
                    }
                }

                if let Err(e) = self.rewind(consumer, &keys) {
                    self.stop_for_good(&format!("cannot rewind after an abort: {e}"));
                }
            }
        }
    }

    /// Seeks `partitions` back to their committed offsets and starts fresh
    /// workers for them.
    fn rewind(&self, consumer: &Consumer, partitions: &[(String, i32)]) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        let committed = consumer.committed_offsets(tpl.clone(), self.drain_timeout)?;
        // Paused partitions (their old workers died) do not serve a seek:
        // resume them first.
        consumer.resume(&tpl)?;
        for element in committed.elements() {
            // Nothing committed yet: where a new group begins
            // (auto.offset.reset).
            let offset = match element.offset() {
                rdkafka::Offset::Offset(n) => rdkafka::Offset::Offset(n),
                _ => self.reset_offset,
            };
            consumer.seek(
                element.topic(),
                element.partition(),
                offset,
                self.drain_timeout,
            )?;
        }
        let mut workers = self.workers();
        for (topic, partition) in partitions {
            if let Some(worker) = self.spawn_worker(topic, *partition) {
                workers.insert((topic.clone(), *partition), worker);
            }
        }
        self.set_assigned(workers.len());
        Ok(())
    }
}
