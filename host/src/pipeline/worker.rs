//! One worker per assigned source partition: a thread that reads its
//! partition's records straight from librdkafka (its own queue, split from
//! the consumer's) and routes them in order (`super::routing`). This file
//! is the worker's life: started, stopped from the consumer thread, and
//! its plugin started (and held while it cannot start).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::consumer::RouterContext;
use super::delivery::Producer;
use super::failures::FailureSink;
use super::offsets::PartitionOffsets;
use super::refusals::{AloneProducer, RefusedRecords};
use super::routing::Routing;
use crate::kafka::{FetchedMessage, PartitionQueue};
use crate::metrics::Metrics;
use crate::plugin::{Interrupt, PluginError};
use crate::record::SourceRecord;
use crate::route::{Halt, Route, RouteInstance};

/// Records a worker takes from its queue at once, at most: what librdkafka
/// has at hand, without waiting once the first is there.
pub(super) const BATCH: usize = 128;

/// How long a worker with nothing to route waits for a record before it
/// looks at its stop flag again.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// A partition's own queue of fetched records.
pub(super) type Queue = PartitionQueue<RouterContext>;

/// A partition whose plugin cannot start (a swapped-in version whose
/// `init` fails here) tries again after this, doubling up to
/// [`START_RETRY_MAX`], and at once after a swap.
const START_RETRY_MIN: Duration = Duration::from_millis(500);
const START_RETRY_MAX: Duration = Duration::from_secs(30);

/// The consumer's side of a worker.
pub(super) struct Worker {
    route: Arc<Route>,
    stop: Arc<AtomicBool>,
    /// Ends a plugin call in progress when the worker must stop.
    interrupt: Interrupt,
    thread: Option<JoinHandle<()>>,
    pub(super) offsets: Arc<PartitionOffsets>,
}

/// What a worker routes with, shared with the rest of the pipeline.
pub(super) struct WorkerParts {
    pub route: Arc<Route>,
    pub producer: Arc<Producer>,
    pub failures: Arc<dyn FailureSink>,
    pub offsets: Arc<PartitionOffsets>,
    pub metrics: Arc<Metrics>,
    /// Exactly-once mode: held (read) while a record's outputs are handed
    /// over, so that a commit never splits a record.
    pub gate: Option<Arc<std::sync::RwLock<()>>>,
    /// The producer that sends a refused output again alone.
    pub alone: Arc<AloneProducer>,
    /// Records whose outputs the broker refused in an aborted transaction:
    /// settled by the route's policy when they come again.
    pub refused: Arc<RefusedRecords>,
}

/// The worker must stop: what it was doing is left unfinished. The
/// record's offset is not stored, so the partition's next owner routes it
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stopped;

/// A step of a worker, which ends early when the worker must stop.
pub(super) type Step<T = ()> = Result<T, Stopped>;

/// Whether a worker must stop: it was told to (a revocation, shutdown), or
/// its partition stopped at a record whose output cannot be delivered.
#[derive(Debug, Clone)]
pub(super) struct StopFlag {
    told: Arc<AtomicBool>,
    offsets: Arc<PartitionOffsets>,
}

impl StopFlag {
    /// Whether the worker must stop now.
    pub(super) fn raised(&self) -> bool {
        self.told.load(Ordering::Acquire) || self.offsets.is_stopped()
    }

    /// `Err(Stopped)` if the worker must stop now.
    pub(super) fn check(&self) -> Step {
        if self.raised() { Err(Stopped) } else { Ok(()) }
    }
}

impl Worker {
    /// Starts the worker of `topic`/`partition`, reading `queue`.
    pub(super) fn spawn(
        topic: &str,
        partition: i32,
        parts: WorkerParts,
        queue: Queue,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let interrupt = Interrupt::new();
        let offsets = parts.offsets.clone();
        let route = parts.route.clone();
        let topic: Arc<str> = topic.into();
        let flag = StopFlag {
            told: stop.clone(),
            offsets: offsets.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("{topic}-{partition}"))
            .spawn({
                let interrupt = interrupt.clone();
                move || run(parts, &queue, &topic, flag, interrupt)
            })?;
        Ok(Self {
            route,
            stop,
            interrupt,
            thread: Some(thread),
            offsets,
        })
    }

    /// Tells the worker to stop at its next record boundary, without
    /// waiting for it ([`stop`](Self::stop) waits).
    pub(super) fn signal_stop(&self) {
        self.stop.store(true, Ordering::Release);
        // A plugin call in progress ends now, not at its time limit: its
        // record is not finished, so the partition's next owner routes it.
        self.interrupt.raise();
        // A worker backing off or held at a record waits on its route.
        self.route.wake_all();
    }

    /// The partition is no longer this router's: whatever held it here is
    /// its next owner's to find.
    pub(super) fn forget_hold(&self) {
        self.route
            .set_halted(self.offsets.topic(), self.offsets.partition(), None);
    }

    /// Stops the worker at its next record boundary and waits for it.
    /// Fetched, and routed but unproduced records are dropped: their
    /// offsets were never stored, so they are consumed again by whoever
    /// owns the partition next.
    pub(super) fn stop(&mut self) {
        self.signal_stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("a partition worker panicked");
        }
    }
}

/// The worker's thread: starts the route's plugin on the partition, routes
/// what comes until it must stop, then says whether the partition stopped
/// at a record.
fn run(parts: WorkerParts, queue: &Queue, topic: &Arc<str>, stop: StopFlag, interrupt: Interrupt) {
    let (route, offsets) = (parts.route.clone(), parts.offsets.clone());
    let Ok(instance) = start_instance(&route, &offsets, interrupt, &stop) else {
        route.set_halted(offsets.topic(), offsets.partition(), None);
        return;
    };
    let mut routing = Routing::new(parts, stop, instance);
    let Err(Stopped) = consume(&mut routing, queue, topic);
    match offsets.failure() {
        // Stopped for good at a record: say so while the partition is ours
        // (a revocation clears it).
        Some(failure) => route.set_halted(
            offsets.topic(),
            offsets.partition(),
            Some(Halt {
                offset: None,
                reason: format!("an output could not be delivered ({failure}): nothing past it is committed until the partition is consumed again"),
            }),
        ),
        None => route.set_halted(offsets.topic(), offsets.partition(), None),
    }
    // Reports may still come (a revocation waits for them); what they hand
    // back then is freed with the partition's tracking. Refusals not
    // settled leave their records unfinished (consumed again by the next
    // owner); dropped here, they hold nothing.
    offsets.free_retired();
    if !routing.exactly_once() {
        drop(offsets.take_refused());
    }
}

/// Routes the records of `queue` as they come, until the worker must stop.
fn consume(
    routing: &mut Routing,
    queue: &Queue,
    topic: &Arc<str>,
) -> Result<std::convert::Infallible, Stopped> {
    let offsets = routing.offsets().clone();
    let mut fetched: Vec<FetchedMessage<'_>> = Vec::with_capacity(BATCH);
    let mut records: Vec<Arc<SourceRecord>> = Vec::with_capacity(BATCH);
    let mut retired = Vec::new();
    loop {
        routing.stop.check()?;
        // Free what the delivery thread handed back; settle what the
        // broker refused.
        offsets.take_retired(&mut retired);
        retired.clear();
        routing.settle_refusals();
        // Wait for a record, then take what else is at hand.
        queue.take(POLL_WAIT, BATCH, &mut fetched);
        records.clear();
        for message in fetched.drain(..) {
            match message.error() {
                None => records.push(Arc::new(message.record(topic.clone()))),
                Some(e) => {
                    tracing::warn!(topic = offsets.topic(), partition = offsets.partition(), error = %e, "consumer error");
                }
            }
        }
        routing.route_batch(&records)?;
    }
}

/// The partition's instance of the route, once its plugin starts: see
/// [`until_started`].
fn start_instance(
    route: &Arc<Route>,
    offsets: &PartitionOffsets,
    interrupt: Interrupt,
    stop: &StopFlag,
) -> Step<RouteInstance> {
    let instance = until_started(route, offsets, None, stop, || {
        route.interruptible_instance(Some(interrupt.clone()))
    })?;
    // Whatever held this partition before (a worker that stopped at an
    // undeliverable output) is over: it is consumed again from here.
    route.set_halted(offsets.topic(), offsets.partition(), None);
    Ok(instance)
}

/// Runs `start` (starting the route's plugin on this partition) until it
/// succeeds. While it fails (an `init` that fails here though it passed
/// when the version was checked, say), the partition is held at `offset`
/// (`None`: before its first record) — `/ready` and `/routes` say why —
/// and it is tried again after [`START_RETRY_MIN`], doubling up to
/// [`START_RETRY_MAX`], and at once after a swap.
pub(super) fn until_started<T>(
    route: &Route,
    offsets: &PartitionOffsets,
    offset: Option<i64>,
    stop: &StopFlag,
    mut start: impl FnMut() -> Result<T, PluginError>,
) -> Step<T> {
    let mut wait = START_RETRY_MIN;
    let mut held = false;
    loop {
        let generation = route.generation();
        match start() {
            Ok(started) => {
                if held {
                    route.set_halted(offsets.topic(), offsets.partition(), None);
                    tracing::info!(
                        route = route.name(),
                        topic = offsets.topic(),
                        partition = offsets.partition(),
                        "the plugin started: routing again"
                    );
                }
                return Ok(started);
            }
            Err(e) => {
                stop.check()?;
                held = true;
                hold_unstarted(route, offsets, offset, &e, wait);
                route.wait(generation, wait, || stop.raised());
                stop.check()?;
                wait = (wait * 2).min(START_RETRY_MAX);
            }
        }
    }
}

/// Marks the partition held because its plugin cannot start, and says so.
fn hold_unstarted(
    route: &Route,
    offsets: &PartitionOffsets,
    offset: Option<i64>,
    error: &PluginError,
    retry_in: Duration,
) {
    let version = route
        .plugin()
        .map_or_else(|| "none".to_owned(), |p| p.version().to_owned());
    tracing::error!(
        route = route.name(),
        topic = offsets.topic(),
        partition = offsets.partition(),
        version,
        error = %error,
        retry_ms = retry_in.as_millis(),
        "the plugin cannot start on this partition: nothing of it is routed until it does"
    );
    route.set_halted(
        offsets.topic(),
        offsets.partition(),
        Some(Halt {
            offset,
            reason: format!("plugin version {version} cannot start: {error}"),
        }),
    );
}
