//! Outputs the broker refused (their size, timestamp, contents, or the
//! right to write them), which are the failure of their record, never a
//! stuck partition:
//!
//! - at-least-once: each is sent again alone first, by a producer of its
//!   own ([`AloneProducer`]), since a refused batch takes its neighbours
//!   with it; refused alone, its record fails with kind `broker-refused`
//!   and the route's policy settles it (`Routing::settle_refusals`);
//! - exactly-once: the transaction aborts, and [`RefusedRecords`] finds the
//!   record at fault as the records are routed again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::delivery::{Delivery, Producer, Refusal, Sender};
use super::failures::{RecordFailure, dead_letter};
use super::routing::Routing;
use crate::config::FailurePolicy;
use crate::kafka::refuses_the_record;
use crate::plugin::{FailureKind, RouteFailure};
use crate::record::SourceRecord;

/// The producer of outputs sent again alone after the broker refused them
/// (one record per request, so that only the output at fault fails),
/// started the first time one is needed.
pub(super) struct AloneProducer {
    config: rdkafka::ClientConfig,
    producer: std::sync::OnceLock<Option<Arc<Producer>>>,
}

impl AloneProducer {
    pub(super) fn new(config: rdkafka::ClientConfig) -> Self {
        Self {
            config,
            producer: std::sync::OnceLock::new(),
        }
    }

    /// The producer, started now if it was not; `None` if it cannot be.
    fn get(&self) -> Option<Arc<Producer>> {
        self.producer
            .get_or_init(|| match Producer::alone(&self.config) {
                Ok(producer) => Some(Arc::new(producer)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the producer that sends refused outputs alone");
                    None
                }
            })
            .clone()
    }

    /// The producer, if it was started.
    pub(super) fn started(&self) -> Option<&Arc<Producer>> {
        self.producer.get().and_then(Option::as_ref)
    }
}

/// Exactly-once: source records an output of which the broker refused in
/// an aborted transaction. A broker refuses a whole batch (and a produce
/// request may be refused as a whole), so a record refused in one is only
/// a suspect. Routed again, a suspect is produced as usual the first time
/// (a refusal that does not come back cost one abort); refused again, it is
/// produced alone the next time (everything before it delivered first, its
/// own reports awaited), and a record refused alone is the one at fault:
/// when routed again after that abort it fails as `broker-refused` without
/// producing, so the replay cannot abort the same way forever. A commit
/// forgets the suspects.
#[derive(Debug, Default)]
pub(super) struct RefusedRecords {
    /// Whether `records` holds anything: what every record of an
    /// exactly-once route checks (one atomic load) before looking.
    any: AtomicBool,
    records: std::sync::Mutex<HashMap<RecordKey, Verdict>>,
}

/// A source record: its topic, partition and offset.
type RecordKey = (Arc<str>, i32, i64);

/// What is known of a record an output of which the broker refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Refused in a batch this many times in a row.
    Suspect(u8),
    /// Refused alone, with the broker's reason; `settled` once it failed
    /// as such on a replay (forgotten when that commits).
    Refused { reason: String, settled: bool },
}

impl RefusedRecords {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<RecordKey, Verdict>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(record: &SourceRecord) -> RecordKey {
        (record.topic.clone(), record.partition, record.offset)
    }

    /// An output of `record` was refused in a batch (one more time a
    /// suspect, unless it was already found at fault).
    pub(super) fn suspect(&self, record: &SourceRecord) {
        let mut records = self.records();
        let verdict = records
            .entry(Self::key(record))
            .or_insert(Verdict::Suspect(0));
        if let Verdict::Suspect(times) = verdict {
            *times = times.saturating_add(1);
        }
        self.any.store(true, Ordering::Release);
    }

    /// An output of `record` was refused though produced alone.
    pub(super) fn refused(&self, record: &SourceRecord, reason: String) {
        self.records().insert(
            Self::key(record),
            Verdict::Refused {
                reason,
                settled: false,
            },
        );
        self.any.store(true, Ordering::Release);
    }

    /// `record`'s outputs went through alone: it was not at fault.
    pub(super) fn cleared(&self, record: &SourceRecord) {
        self.records().remove(&Self::key(record));
    }

    /// A transaction committed: the suspects went through, and the records
    /// refused alone that failed as such are committed with it.
    pub(super) fn committed(&self) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut records = self.records();
        records.retain(|_, verdict| matches!(verdict, Verdict::Refused { settled: false, .. }));
        self.any.store(!records.is_empty(), Ordering::Release);
    }

    /// What is known of `record` (one atomic load when nothing is).
    fn verdict(&self, record: &SourceRecord) -> Option<Verdict> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.records().get(&Self::key(record)).cloned()
    }

    /// Whether `record` is to be produced alone: refused in batches twice.
    pub(super) fn produce_alone(&self, record: &SourceRecord) -> bool {
        matches!(self.verdict(record), Some(Verdict::Suspect(times)) if times >= 2)
    }

    /// Whether `record` was refused alone.
    pub(super) fn is_refused(&self, record: &SourceRecord) -> bool {
        matches!(self.verdict(record), Some(Verdict::Refused { .. }))
    }

    /// Why `record` was refused alone, marking it settled (it fails as
    /// such now).
    pub(super) fn settle(&self, record: &SourceRecord) -> Option<String> {
        match self.records().get_mut(&Self::key(record))? {
            Verdict::Refused { reason, settled } => {
                *settled = true;
                Some(reason.clone())
            }
            Verdict::Suspect(_) => None,
        }
    }
}

/// How long a suspect's outputs, produced alone, are waited for.
pub(super) const ALONE_WAIT: Duration = Duration::from_secs(60);

impl Routing<'_> {
    /// Settles the outputs of this partition the broker refused: each is
    /// sent again alone first (it may only have shared a batch with the
    /// output at fault); refused alone, its record fails with kind
    /// `broker-refused` and the route's policy settles it: dead-lettered
    /// (the dead-letter record stands for the refused output), skipped, or
    /// the partition stops there.
    pub(super) fn settle_refusals(&mut self) {
        // Exactly-once: the transaction aborts; the pipeline takes the
        // refusals then, and the records are settled when routed again.
        if self.exactly_once() {
            return;
        }
        for refusal in self.lane.offsets.take_refused() {
            if let Some(refusal) = self.send_alone(refusal) {
                self.settle_for_good(refusal);
            }
        }
    }

    /// Sends a refused output again alone, unless it already was; gives
    /// the refusal back if it stands.
    fn send_alone(&mut self, refusal: Refusal) -> Option<Refusal> {
        let (false, Some(index)) = (refusal.alone, refusal.index) else {
            return Some(refusal);
        };
        if self.alone.is_none() {
            *self.alone = self.shared.alone.get().map(Sender::new);
        }
        let Some(alone) = self.alone.as_mut() else {
            // Its neighbours cannot be told from it: stop rather than
            // dead-letter a record that may be innocent.
            refusal.delivery.fail(index, &refusal.error);
            return None;
        };
        let stopping = || self.lane.stop.raised();
        match alone.send(&refusal.delivery, index, &stopping) {
            Ok(()) => None,
            Err(error) if refuses_the_record(&error) => Some(Refusal {
                error,
                alone: true,
                ..refusal
            }),
            // Not sent: the record stays unfinished (stopping: its next
            // owner routes it again; else its partition stops there).
            Err(error) => {
                if !stopping() {
                    refusal.delivery.fail(index, &error);
                }
                None
            }
        }
    }

    /// A refused output's record fails for good, and the route's policy
    /// settles it.
    fn settle_for_good(&mut self, refusal: Refusal) {
        let Some((index, routed)) = refusal.output() else {
            return;
        };
        let record = routed.output.source.clone();
        let reason = refusal.reason();
        let Refusal {
            delivery, error, ..
        } = refusal;
        let route = self.slot.route.clone();
        if delivery.is_stand_in() {
            // A dead-letter record the broker refused has nowhere to go.
            tracing::error!(
                route = route.name(),
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                error = %error,
                "the broker refused the dead-letter record of a refused output"
            );
            delivery.fail(index, &error);
            return;
        }
        let failure = RouteFailure::new(FailureKind::BrokerRefused, reason);
        self.started
            .meters
            .refused(&self.started.instance, failure.kind);
        self.shared.failures.failed(&RecordFailure {
            route: route.name(),
            record: &record,
            failure: &failure,
            attempts: 1,
            policy: route.policy(),
        });
        match route.policy() {
            FailurePolicy::DeadLetter(topic) => {
                let dead = dead_letter(
                    topic,
                    &record,
                    &failure,
                    1,
                    &self.started.instance,
                    route.config.limits.max_output_bytes,
                );
                let stand_in = Delivery::standing_for(delivery, dead);
                let stopping = || self.lane.stop.raised();
                if let Err(e) = self.sender.send(&stand_in, 0, &stopping)
                    && !stopping()
                {
                    stand_in.fail(0, &e);
                }
            }
            FailurePolicy::Skip => delivery.settle(),
            // The worker stops, and says where (its exit path).
            FailurePolicy::Stop => delivery.fail(index, &error),
        }
    }
}
