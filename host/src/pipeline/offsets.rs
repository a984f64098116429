//! The at-least-once rule, in one place: a record's offset is stored for
//! commit only when every output of that record **and of every earlier
//! record of its partition** has been acknowledged by Kafka.
//!
//! Each partition keeps its records in consumption order, each with the
//! number of outputs still unacknowledged. Acknowledgements may arrive in
//! any order (outputs go to different topics and partitions); the finished
//! offset only ever advances over an unbroken prefix of finished records.
//! The consumer thread takes what advanced ([`PartitionOffsets::take_unstored`])
//! into librdkafka's offset store, for all partitions in one call, rather
//! than each delivery report storing its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::delivery::Refusal;
use crate::route::RoutedOutputs;

/// A record registered for acknowledgement: its place in its partition's
/// order, and how many of its outputs are still unacknowledged.
#[derive(Debug)]
pub struct RecordAck {
    offset: i64,
    /// Its place among the records registered on its partition.
    seq: u64,
    remaining: AtomicUsize,
}

impl RecordAck {
    /// The source record's offset.
    #[must_use]
    pub fn offset(&self) -> i64 {
        self.offset
    }
}

/// In-order acknowledgement tracking of one source partition.
pub struct PartitionOffsets {
    topic: String,
    partition: i32,
    state: Mutex<State>,
    /// Mirrors `State::failed` for a lock-free check per record.
    stopped: AtomicBool,
    /// Whether `State::refused` may hold anything: the worker looks once
    /// per batch without the lock.
    any_refused: AtomicBool,
}

/// A registered record not yet past the finished prefix.
#[derive(Debug, Clone, Copy)]
struct Pending {
    offset: i64,
    finished: bool,
}

#[derive(Default)]
struct State {
    /// Registered records from the first unfinished one on, in order.
    pending: VecDeque<Pending>,
    /// `RecordAck::seq` of `pending`'s front.
    front: u64,
    /// Next offset to consume after the finished prefix.
    stored: Option<i64>,
    /// `stored` moved since [`PartitionOffsets::take_unstored`] last took it.
    unstored: bool,
    /// Outputs of finished records handed back by the delivery thread, for
    /// the partition's worker to free ([`PartitionOffsets::take_retired`]).
    retired: Vec<RoutedOutputs>,
    /// Set when an output could not be delivered: the partition stops
    /// advancing, so nothing past the record is ever committed.
    failed: Option<String>,
    /// Outputs the broker refused, for the partition's worker to settle
    /// (their records stay unfinished until then).
    refused: Vec<Refusal>,
}

impl std::fmt::Debug for PartitionOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionOffsets")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl PartitionOffsets {
    /// Tracking for `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
            state: Mutex::default(),
            stopped: AtomicBool::new(false),
            any_refused: AtomicBool::new(false),
        }
    }

    /// The source topic.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The source partition.
    #[must_use]
    pub fn partition(&self) -> i32 {
        self.partition
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked mid-way:
        // every update is a single push, pop or assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the record at `offset` with `outputs` outputs about to be
    /// produced. Records must be registered in offset order. A record with
    /// no outputs is finished at once.
    pub fn begin(&self, offset: i64, outputs: usize) -> RecordAck {
        let mut state = self.state();
        let seq = state.front + state.pending.len() as u64;
        state.pending.push_back(Pending {
            offset,
            finished: outputs == 0,
        });
        if outputs == 0 {
            Self::advance(&mut state);
        }
        RecordAck {
            offset,
            seq,
            remaining: AtomicUsize::new(outputs),
        }
    }

    /// One output of `ack`'s record was acknowledged.
    pub fn acknowledge(&self, ack: &RecordAck) {
        if ack.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            Self::finish(&mut self.state(), ack);
        }
    }

    /// The last acknowledgement of `ack`'s record, handing back its
    /// `outputs` for the partition's worker to free: memory is freed
    /// fastest by the thread that allocated it, and the records an output
    /// refers to were allocated by the worker.
    pub fn acknowledge_last(&self, ack: &RecordAck, outputs: RoutedOutputs) {
        let finished = ack.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        let mut state = self.state();
        if finished {
            Self::finish(&mut state, ack);
        }
        state.retired.push(outputs);
    }

    /// Hands back the outputs of a record (for the worker to free) without
    /// settling anything: a dead-letter record's, whose acknowledgement
    /// settles the output it stands for.
    pub fn retire(&self, outputs: RoutedOutputs) {
        self.state().retired.push(outputs);
    }

    /// An output was refused by the broker: its record stays unfinished
    /// until the partition's worker settles the refusal
    /// ([`take_refused`](Self::take_refused)) by the route's policy.
    pub fn refuse(&self, refusal: Refusal) {
        self.state().refused.push(refusal);
        self.any_refused.store(true, Ordering::Release);
    }

    /// The refusals of the record at `offset` (others stay queued).
    pub fn take_refused_of(&self, offset: i64) -> Vec<Refusal> {
        let mut state = self.state();
        let (of, others): (Vec<Refusal>, Vec<Refusal>) = std::mem::take(&mut state.refused)
            .into_iter()
            .partition(|r| r.delivery.offset() == offset);
        self.any_refused
            .store(!others.is_empty(), Ordering::Release);
        state.refused = others;
        of
    }

    /// The refusals not yet taken, oldest first.
    pub fn take_refused(&self) -> Vec<Refusal> {
        if !self.any_refused.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut self.state().refused)
    }

    /// What was handed back since the last call, for the caller to free.
    /// The partition keeps no room for the next ones: a worker routes
    /// hundreds of partitions, and room kept for each one's busiest moment
    /// would add up to more than the records in flight (a vector grows
    /// again in a few steps, each for many records).
    #[must_use]
    pub fn take_retired(&self) -> Vec<RoutedOutputs> {
        std::mem::take(&mut self.state().retired)
    }

    /// Frees what was handed back, on the calling thread (the worker's).
    pub fn free_retired(&self) {
        drop(self.take_retired());
    }

    fn finish(state: &mut State, ack: &RecordAck) {
        // Only unfinished records are pending, and a record finishes once.
        let index = ack
            .seq
            .checked_sub(state.front)
            .and_then(|index| usize::try_from(index).ok());
        debug_assert!(index.is_some(), "record at {} finished twice", ack.offset);
        if let Some(pending) = index.and_then(|index| state.pending.get_mut(index)) {
            pending.finished = true;
        }
        Self::advance(state);
    }

    /// An output of `ack`'s record could not be delivered: this partition
    /// stops advancing at that record.
    pub fn fail(&self, ack: &RecordAck, reason: String) {
        let mut state = self.state();
        if state.failed.is_none() {
            tracing::error!(
                topic = %self.topic,
                partition = self.partition,
                offset = ack.offset,
                reason = %reason,
                "output not delivered: the partition stops here and nothing past this record is committed"
            );
            state.failed = Some(format!("offset {}: {reason}", ack.offset));
            self.stopped.store(true, Ordering::Release);
        }
    }

    /// Whether an output could not be delivered (see [`failure`](Self::failure)).
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Why the partition stopped, if it did.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.state().failed.clone()
    }

    /// Records registered and not yet finished.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.state().pending.len()
    }

    /// The next offset to consume after everything finished so far, if
    /// anything finished.
    #[must_use]
    pub fn stored(&self) -> Option<i64> {
        self.state().stored
    }

    /// The next offset to consume, if it moved since the last call: for
    /// the consumer's offset store.
    pub fn take_unstored(&self) -> Option<i64> {
        let mut state = self.state();
        std::mem::take(&mut state.unstored)
            .then_some(state.stored)
            .flatten()
    }

    /// Moves the stored offset over the finished prefix.
    fn advance(state: &mut State) {
        if state.failed.is_some() {
            return;
        }
        let mut last = None;
        while let Some(front) = state.pending.front() {
            if !front.finished {
                break;
            }
            last = Some(front.offset);
            state.pending.pop_front();
            state.front += 1;
        }
        if let Some(last) = last {
            state.stored = Some(last + 1);
            state.unstored = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> PartitionOffsets {
        PartitionOffsets::new("t", 0)
    }

    #[test]
    fn offset_advances_only_over_a_finished_prefix() {
        let offsets = tracker();
        let a = offsets.begin(10, 2);
        let b = offsets.begin(11, 1);
        let c = offsets.begin(12, 1);
        offsets.acknowledge(&c);
        offsets.acknowledge(&b);
        offsets.acknowledge(&a);
        assert_eq!(offsets.take_unstored(), None, "10 has one output left");
        offsets.acknowledge(&a);
        assert_eq!(offsets.take_unstored(), Some(13));
        assert_eq!(offsets.take_unstored(), None, "taken once");
        assert_eq!(offsets.stored(), Some(13));
        assert_eq!(offsets.in_flight(), 0);
    }

    #[test]
    fn dropped_records_finish_at_once_but_wait_for_earlier_ones() {
        let offsets = tracker();
        let a = offsets.begin(0, 1);
        let _dropped = offsets.begin(1, 0);
        assert_eq!(offsets.take_unstored(), None);
        offsets.acknowledge(&a);
        assert_eq!(offsets.take_unstored(), Some(2));
        let _dropped = offsets.begin(2, 0);
        assert_eq!(offsets.take_unstored(), Some(3));
    }

    #[test]
    fn a_failed_delivery_stops_the_partition_for_good() {
        let offsets = tracker();
        let a = offsets.begin(0, 1);
        let b = offsets.begin(1, 1);
        offsets.fail(&a, "broker said no".into());
        offsets.acknowledge(&b);
        offsets.acknowledge(&a);
        assert_eq!(offsets.take_unstored(), None);
        assert_eq!(offsets.stored(), None);
        assert_eq!(
            offsets.failure().as_deref(),
            Some("offset 0: broker said no")
        );
    }
}
