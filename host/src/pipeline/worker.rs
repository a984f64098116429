//! One worker per assigned source partition: routes its records in order,
//! hands outputs to the producer, registers each record for in-order
//! acknowledgement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use super::offsets::PartitionOffsets;
use super::{FailureSink, RecordFailure};
use crate::kafka::{Delivery, OutputProducer};
use crate::record::SourceRecord;
use crate::route::Route;

/// Records buffered between the consumer and one worker; beyond this the
/// consumer pauses the partition.
const QUEUE: usize = 1024;

/// The consumer's side of a worker.
pub(super) struct Worker {
    tx: Option<SyncSender<SourceRecord>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub(super) offsets: Arc<PartitionOffsets>,
    /// Records that did not fit in the queue; the partition is paused while
    /// this is not empty.
    pub(super) stash: std::collections::VecDeque<SourceRecord>,
    /// The worker is gone (its plugin could not start, or an output could
    /// not be delivered): the partition stays paused.
    pub(super) dead: bool,
}

/// What `offer` did with a record.
pub(super) enum Offer {
    /// Queued for the worker.
    Queued,
    /// Queue full: stashed; pause the partition.
    Stashed,
    /// The worker is gone.
    Dead,
}

enum TryQueue {
    Queued,
    Full(SourceRecord),
    Gone,
}

pub(super) struct WorkerParts {
    pub route: Arc<Route>,
    pub producer: Arc<OutputProducer>,
    pub failures: Arc<dyn FailureSink>,
    pub offsets: Arc<PartitionOffsets>,
}

impl Worker {
    pub(super) fn spawn(topic: &str, partition: i32, parts: WorkerParts) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let offsets = parts.offsets.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{topic}-{partition}"))
            .spawn({
                let stop = stop.clone();
                move || run(&parts, &rx, &stop)
            })?;
        Ok(Self {
            tx: Some(tx),
            stop,
            thread: Some(thread),
            offsets,
            stash: std::collections::VecDeque::new(),
            dead: false,
        })
    }

    /// Queues `record` behind anything stashed.
    pub(super) fn offer(&mut self, record: SourceRecord) -> Offer {
        if !self.stash.is_empty() {
            self.stash.push_back(record);
            return Offer::Stashed;
        }
        match self.try_queue(record) {
            TryQueue::Queued => Offer::Queued,
            TryQueue::Full(record) => {
                self.stash.push_back(record);
                Offer::Stashed
            }
            TryQueue::Gone => Offer::Dead,
        }
    }

    /// Moves stashed records into the queue; true when the stash is empty.
    pub(super) fn unstash(&mut self) -> bool {
        while let Some(record) = self.stash.pop_front() {
            match self.try_queue(record) {
                TryQueue::Queued => {}
                TryQueue::Full(record) => {
                    self.stash.push_front(record);
                    return false;
                }
                TryQueue::Gone => return false,
            }
        }
        true
    }

    fn try_queue(&mut self, record: SourceRecord) -> TryQueue {
        let Some(tx) = &self.tx else {
            return TryQueue::Gone;
        };
        match tx.try_send(record) {
            Ok(()) => TryQueue::Queued,
            Err(TrySendError::Full(record)) => TryQueue::Full(record),
            Err(TrySendError::Disconnected(_)) => {
                self.dead = true;
                TryQueue::Gone
            }
        }
    }

    /// Stops the worker after the record it is routing and waits for it.
    /// Queued records are dropped: their offsets were never stored, so they
    /// are consumed again by whoever owns the partition next.
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.tx = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("a partition worker panicked");
        }
    }
}

fn run(parts: &WorkerParts, rx: &Receiver<SourceRecord>, stop: &AtomicBool) {
    let WorkerParts {
        route,
        producer,
        failures,
        offsets,
    } = parts;
    let mut instance = match route.instance() {
        Ok(instance) => instance,
        Err(e) => {
            tracing::error!(route = route.name(), error = %e, "cannot start the route's plugin: the partition is paused");
            return;
        }
    };
    while let Ok(record) = rx.recv() {
        if stop.load(Ordering::Acquire) || offsets.is_stopped() {
            break;
        }
        let record = Arc::new(record);
        let routed = match instance.route(&record) {
            Ok(routed) => routed,
            Err(failure) => {
                failures.failed(&RecordFailure {
                    route: route.name(),
                    record: &record,
                    failure: &failure,
                });
                Vec::new()
            }
        };
        let ack = offsets.begin(record.offset, routed.len());
        for out in &routed {
            let delivery = Box::new(Delivery {
                ack: ack.clone(),
                offsets: offsets.clone(),
            });
            if let Err(e) = producer.send(&out.topic, &out.output, delivery) {
                offsets.fail(&ack, format!("cannot produce to '{}': {e}", out.topic));
                break;
            }
        }
    }
}
