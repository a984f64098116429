//! One worker per assigned source partition: reads its partition's records
//! straight from librdkafka (its own queue, split from the consumer's),
//! routes them in order, hands outputs to the producer, registers each
//! record for in-order acknowledgement.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;

use super::offsets::PartitionOffsets;
use super::{FailureSink, RecordFailure, RouterContext};
use crate::config::FailurePolicy;
use crate::kafka::{
    Delivery, FetchedMessage, OutputProducer, PartitionQueue, Refusal, Sender, refusal_reason,
    refuses_the_record,
};
use crate::metrics::{Metrics, RouteCounters};
use crate::plugin::{FailureKind, Interrupt, Plugin, PluginError, RouteFailure};
use crate::record::{Data, Header, Output, OutputHeaders, SourceRecord};
use crate::route::{Halt, Route, RouteInstance, Routed, RoutedOutputs};

/// Records a worker takes from its queue at once, at most: what librdkafka
/// has at hand, without waiting once the first is there.
const BATCH: usize = 128;

/// How long a worker with nothing to route waits for a record before it
/// looks at its stop flag again.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// A partition's own queue of fetched records.
pub(super) type Queue = PartitionQueue<RouterContext>;

/// How many records a worker hands its plugin in one call: all it has, up
/// to a batch, unless the plugin is slow enough per record that a full
/// batch would come near the route's time limit (which applies per call).
/// Sized from the last call's time per record so that a call takes at most
/// a quarter of the limit; after a call that ran past it, a quarter of that
/// call's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CallSize(usize);

impl CallSize {
    const FULL: Self = Self(BATCH);

    /// A call of `records` records took `took`.
    fn took(&mut self, records: usize, took: Duration, limit: Duration) {
        let per_record = took.as_nanos() / records.max(1) as u128;
        let fit = (limit.as_nanos() / 4) / per_record.max(1);
        self.0 = usize::try_from(fit).unwrap_or(BATCH).clamp(1, BATCH);
    }

    /// A call of `records` records ran past the time limit.
    fn timed_out(&mut self, records: usize) {
        self.0 = (records / 4).max(1);
    }
}

/// A held partition looks at its stop flag at least this often (it is also
/// woken at once by a swap or a stop).
const HALT_RECHECK: Duration = Duration::from_secs(1);

/// `dlq-error` is cut to this many bytes (a trap message carries what the
/// plugin printed).
const MAX_ERROR_HEADER: usize = 4096;

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

pub(super) struct WorkerParts {
    pub route: Arc<Route>,
    pub producer: Arc<OutputProducer>,
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

/// The producer of outputs sent again alone after the broker refused them
/// (one record per request, so that only the output at fault fails),
/// started the first time one is needed.
pub(super) struct AloneProducer {
    config: rdkafka::ClientConfig,
    producer: std::sync::OnceLock<Option<Arc<OutputProducer>>>,
}

impl AloneProducer {
    pub(super) fn new(config: rdkafka::ClientConfig) -> Self {
        Self {
            config,
            producer: std::sync::OnceLock::new(),
        }
    }

    /// The producer, started now if it was not; `None` if it cannot be.
    fn get(&self) -> Option<Arc<OutputProducer>> {
        self.producer
            .get_or_init(|| match OutputProducer::alone(&self.config) {
                Ok(producer) => Some(Arc::new(producer)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the producer that sends refused outputs alone");
                    None
                }
            })
            .clone()
    }

    /// The producer, if it was started.
    pub(super) fn started(&self) -> Option<&Arc<OutputProducer>> {
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
    fn refused(&self, record: &SourceRecord, reason: String) {
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
    fn cleared(&self, record: &SourceRecord) {
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
    fn produce_alone(&self, record: &SourceRecord) -> bool {
        matches!(self.verdict(record), Some(Verdict::Suspect(times)) if times >= 2)
    }

    /// Whether `record` was refused alone.
    fn is_refused(&self, record: &SourceRecord) -> bool {
        matches!(self.verdict(record), Some(Verdict::Refused { .. }))
    }

    /// Why `record` was refused alone, marking it settled (it fails as
    /// such now).
    fn settle(&self, record: &SourceRecord) -> Option<String> {
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
const ALONE_WAIT: Duration = Duration::from_secs(60);

/// Where a worker counts what it does: the route's totals (`GET /routes`)
/// and the metrics of the plugin version routing now (handles looked up
/// again only when the version changes).
struct Meters {
    route: Arc<Route>,
    metrics: Arc<Metrics>,
    call: Histogram,
    call_records: Histogram,
    counters: RouteCounters,
}

impl Meters {
    fn new(parts: &WorkerParts, instance: &RouteInstance) -> Self {
        let name = parts.route.name();
        Self {
            route: parts.route.clone(),
            metrics: parts.metrics.clone(),
            call: parts.metrics.call_duration(name),
            call_records: parts.metrics.call_records(name),
            counters: parts.metrics.route_counters(name, version_of(instance)),
        }
    }

    /// The counters of the version `instance` runs now.
    fn counters(&mut self, instance: &RouteInstance) -> &RouteCounters {
        let version = version_of(instance);
        if self.counters.version != version {
            self.counters = self.metrics.route_counters(self.route.name(), version);
        }
        &self.counters
    }

    /// A plugin call that took `took` routed `records` records.
    fn called(&self, took: Duration, records: usize) {
        self.call.observe(took.as_secs_f64());
        // A batch is at most a few hundred records: exact in an f64.
        #[allow(clippy::cast_precision_loss, reason = "small integer")]
        self.call_records.observe(records as f64);
    }

    /// A record was routed to `outputs` outputs.
    fn routed(&mut self, instance: &RouteInstance, outputs: usize) {
        self.route.stats.add_routed(outputs);
        let counters = self.counters(instance);
        counters.consumed.inc();
        if outputs == 0 {
            counters.filtered.inc();
        }
    }

    /// The plugin asked for a retry, and will be asked again.
    fn retried(&mut self, instance: &RouteInstance) {
        self.route.stats.add_retry();
        self.counters(instance).retries.inc();
    }

    /// A record failed for good.
    fn failed(&mut self, instance: &RouteInstance, kind: FailureKind) {
        self.failed_counting(instance, kind, true);
    }

    /// A record already counted as consumed (routed, then refused by the
    /// broker) failed for good.
    fn refused(&mut self, instance: &RouteInstance, kind: FailureKind) {
        self.failed_counting(instance, kind, false);
    }

    fn failed_counting(&mut self, instance: &RouteInstance, kind: FailureKind, consumed: bool) {
        let route = self.route.clone();
        route.stats.add_failure(kind, route.policy());
        let counters = self.counters(instance);
        counters.failures[kind as usize].inc();
        match route.policy() {
            FailurePolicy::DeadLetter(_) => counters.dead_lettered.inc(),
            FailurePolicy::Skip => counters.skipped.inc(),
            // Not consumed yet: it is routed again after a swap.
            FailurePolicy::Stop => return,
        };
        if consumed {
            counters.consumed.inc();
        }
    }
}

fn version_of(instance: &RouteInstance) -> &str {
    instance.plugin().map_or("none", Plugin::version)
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
        let thread = std::thread::Builder::new()
            .name(format!("{topic}-{partition}"))
            .spawn({
                let stop = stop.clone();
                let interrupt = interrupt.clone();
                move || run(&parts, &queue, &topic, &stop, interrupt)
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

fn run(
    parts: &WorkerParts,
    queue: &Queue,
    topic: &Arc<str>,
    stop: &AtomicBool,
    interrupt: Interrupt,
) {
    let WorkerParts { route, offsets, .. } = parts;
    let stopping = || stop.load(Ordering::Acquire) || offsets.is_stopped();
    let Some(mut instance) = start_instance(route, offsets, interrupt, &stopping) else {
        route.set_halted(offsets.topic(), offsets.partition(), None);
        return;
    };
    let mut meters = Meters::new(parts, &instance);
    let mut sender = Sender::new(parts.producer.clone());
    let mut size = CallSize::FULL;
    let mut fetched: Vec<FetchedMessage<'_>> = Vec::with_capacity(BATCH);
    let mut records: Vec<Arc<SourceRecord>> = Vec::with_capacity(BATCH);
    let mut retired = Vec::new();
    let mut refusals = Refusals { alone: None };
    while !stopping() {
        // Free what the delivery thread handed back; settle what the
        // broker refused.
        offsets.take_retired(&mut retired);
        retired.clear();
        refusals.settle(parts, &instance, &mut meters, &mut sender, &stopping);
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
        if !handle_batch(
            parts,
            &mut instance,
            &records,
            &mut meters,
            &mut sender,
            &mut size,
            &stopping,
        ) {
            break;
        }
    }
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
    if parts.gate.is_none() {
        drop(offsets.take_refused());
    }
}

/// The partition's instance of the route, once its plugin starts: see
/// [`until_started`]. `None` when the worker must stop first.
fn start_instance(
    route: &Arc<Route>,
    offsets: &PartitionOffsets,
    interrupt: Interrupt,
    stopping: &dyn Fn() -> bool,
) -> Option<RouteInstance> {
    let instance = until_started(route, offsets, None, stopping, || {
        route.interruptible_instance(Some(interrupt.clone()))
    })?;
    // Whatever held this partition before (a worker that stopped at an
    // undeliverable output) is over: it is consumed again from here.
    route.set_halted(offsets.topic(), offsets.partition(), None);
    Some(instance)
}

/// Brings `instance` to the version routing now before a call that starts
/// at `offset` (see [`until_started`]); false when the worker must stop
/// first.
fn follow_swaps(
    route: &Route,
    offsets: &PartitionOffsets,
    instance: &mut RouteInstance,
    offset: i64,
    stopping: &dyn Fn() -> bool,
) -> bool {
    until_started(route, offsets, Some(offset), stopping, || {
        instance.follow_swaps()
    })
    .is_some()
}

/// Runs `start` (starting the route's plugin on this partition) until it
/// succeeds. While it fails (an `init` that fails here though it passed
/// when the version was checked, say), the partition is held at `offset`
/// (`None`: before its first record) — `/ready` and `/routes` say why —
/// and it is tried again after [`START_RETRY_MIN`], doubling up to
/// [`START_RETRY_MAX`], and at once after a swap. `None` when the worker
/// must stop first.
fn until_started<T>(
    route: &Route,
    offsets: &PartitionOffsets,
    offset: Option<i64>,
    stopping: &dyn Fn() -> bool,
    mut start: impl FnMut() -> Result<T, PluginError>,
) -> Option<T> {
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
                return Some(started);
            }
            Err(e) => {
                if stopping() {
                    return None;
                }
                held = true;
                hold_unstarted(route, offsets, offset, &e, wait);
                route.wait(generation, wait, stopping);
                if stopping() {
                    return None;
                }
                wait = (wait * 2).min(START_RETRY_MAX);
            }
        }
    }
}

/// Marks `record`'s partition held at it because of `failure`
/// (`on_failure = "stop"`), for `/ready` and `/routes`.
fn hold_at(route: &Route, record: &SourceRecord, failure: &RouteFailure) {
    route.set_halted(
        &record.topic,
        record.partition,
        Some(Halt {
            offset: Some(record.offset),
            reason: failure.to_string(),
        }),
    );
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

/// Routes `records` (one partition's, in order) with as few plugin calls
/// as their answers and `size` allow, and hands what was decided to the
/// producer record by record; false when the worker must stop first.
///
/// A record that is not routed is settled on its own (retried, dead-lettered,
/// skipped or held), and the records after it are routed again afterwards,
/// by the plugin version routing then. A call that fails as a whole (a trap,
/// say) tells nothing about which record is at fault, so its records are
/// then routed one at a time, which names that record exactly.
fn handle_batch(
    parts: &WorkerParts,
    instance: &mut RouteInstance,
    records: &[Arc<SourceRecord>],
    meters: &mut Meters,
    sender: &mut Sender,
    size: &mut CallSize,
    stopping: &dyn Fn() -> bool,
) -> bool {
    let limit = parts.route.config.limits.limits().route_timeout;
    let mut rest = records;
    while !rest.is_empty() {
        if stopping() {
            return false;
        }
        let mut call = &rest[..rest.len().min(size.0)];
        // Exactly-once: a record the broker refused in an aborted
        // transaction fails as such, without its outputs.
        if let Some(at) = call.iter().position(|r| parts.refused.is_refused(r)) {
            if at == 0 {
                let reason = parts.refused.settle(&call[0]).unwrap_or_default();
                let failure = RouteFailure::new(FailureKind::BrokerRefused, reason);
                if !handle(
                    parts,
                    instance,
                    &call[0],
                    Some(Err(failure)),
                    meters,
                    sender,
                    stopping,
                ) {
                    return false;
                }
                rest = &rest[1..];
                continue;
            }
            call = &call[..at];
        }
        if !follow_swaps(
            &parts.route,
            &parts.offsets,
            instance,
            call[0].offset,
            stopping,
        ) {
            return false;
        }
        // A route without a plugin makes no call to time.
        let started = instance.plugin().is_some().then(Instant::now);
        let answers = instance.route_batch(call);
        if let Some(started) = started {
            let took = started.elapsed();
            meters.called(took, call.len());
            if answers.is_ok() {
                size.took(call.len(), took, limit);
            }
        }
        let answers = match answers {
            // A call of one record that failed is that record's answer.
            Err(failure) if call.len() == 1 => vec![Err(failure)],
            Ok(answers) => answers,
            Err(failure) => {
                tracing::debug!(
                    route = parts.route.name(),
                    records = call.len(),
                    reason = %failure,
                    "a plugin call failed as a whole: routing its records one at a time"
                );
                if failure.kind == FailureKind::Timeout {
                    size.timed_out(call.len());
                }
                if !call.iter().all(|record| {
                    !stopping() && handle(parts, instance, record, None, meters, sender, stopping)
                }) {
                    return false;
                }
                rest = &rest[call.len()..];
                continue;
            }
        };
        let mut settled = 0;
        for (record, answer) in call.iter().zip(answers) {
            // Routed but not produced: consumed again by whoever owns the
            // partition next.
            if stopping() {
                return false;
            }
            settled += 1;
            match answer {
                Ok(routed) => {
                    meters.routed(instance, routed.len());
                    produce(parts, record, routed, true, meters, sender, stopping);
                }
                Err(failure) => {
                    if !handle(
                        parts,
                        instance,
                        record,
                        Some(Err(failure)),
                        meters,
                        sender,
                        stopping,
                    ) {
                        return false;
                    }
                    break;
                }
            }
        }
        rest = &rest[settled..];
    }
    true
}

/// Settles `record` on its own, starting from the plugin's `first` answer
/// if there is one, and hands what was decided to the producer; false when
/// the worker must stop first.
fn handle(
    parts: &WorkerParts,
    instance: &mut RouteInstance,
    record: &Arc<SourceRecord>,
    first: Option<Result<RoutedOutputs, RouteFailure>>,
    meters: &mut Meters,
    sender: &mut Sender,
    stopping: &dyn Fn() -> bool,
) -> bool {
    let Some((routed, routed_normally)) = decide(parts, instance, record, first, meters, stopping)
    else {
        return false;
    };
    produce(
        parts,
        record,
        routed,
        routed_normally,
        meters,
        sender,
        stopping,
    );
    true
}

/// Hands `routed`, what was decided for `record`, to the producer, and
/// registers the record for in-order acknowledgement. Stops waiting for
/// room in librdkafka's queue when the worker must stop.
fn produce(
    parts: &WorkerParts,
    record: &SourceRecord,
    routed: RoutedOutputs,
    routed_normally: bool,
    meters: &Meters,
    sender: &mut Sender,
    stopping: &dyn Fn() -> bool,
) {
    let offsets = &parts.offsets;
    let _held = parts.gate.as_ref().map(|gate| {
        gate.read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    });
    if routed.is_empty() {
        // Filtered or skipped: finished at once.
        offsets.begin(record.offset, 0);
        return;
    }
    // Exactly-once: a record refused in an aborted transaction's batch is
    // produced alone, to tell whether it is the one at fault.
    let alone = parts.gate.is_some() && parts.refused.produce_alone(record);
    if alone {
        let _ = parts.producer.flush(ALONE_WAIT);
    }
    // Acknowledged outputs count as produced (dead-letter records not).
    let produced = routed_normally.then(|| meters.counters.produced.clone());
    let delivery = Delivery::new(offsets, record.offset, routed, produced);
    for index in 0..delivery.outputs().len() {
        match sender.send(&delivery, index, stopping) {
            Ok(()) => {}
            // librdkafka refused it for what it is: settled like a refusal
            // by the broker (already alone), and the other outputs go on.
            // Exactly-once: the transaction must not commit without it;
            // replayed, the record fails as refused.
            Err(error) if refuses_the_record(&error) && parts.gate.is_some() => {
                parts
                    .refused
                    .refused(record, refusal_reason(&delivery, index, &error));
                delivery.fail(index, &error);
            }
            Err(error) if refuses_the_record(&error) => offsets.refuse(Refusal {
                delivery: delivery.clone(),
                index: Some(index),
                error,
                alone: true,
            }),
            Err(e) => {
                // Stopping while librdkafka's queue is full: the record is
                // not finished, so the partition's next owner routes it
                // again.
                if !stopping() {
                    delivery.fail(index, &e);
                }
                break;
            }
        }
    }
    if alone {
        drop(delivery);
        let _ = parts.producer.flush(ALONE_WAIT);
        match offsets.take_refused_of(record.offset).first() {
            Some(refusal) => parts.refused.refused(record, refusal.reason()),
            None => parts.refused.cleared(record),
        }
    }
}

/// The worker's side of outputs the broker refused: each is sent again
/// alone first (it may only have shared a batch with the output at fault);
/// refused alone, its record fails with kind `broker-refused` and the
/// route's policy settles it: dead-lettered (the dead-letter record stands
/// for the refused output), skipped, or the partition stops there.
struct Refusals {
    alone: Option<Sender>,
}

impl Refusals {
    fn settle(
        &mut self,
        parts: &WorkerParts,
        instance: &RouteInstance,
        meters: &mut Meters,
        sender: &mut Sender,
        stopping: &dyn Fn() -> bool,
    ) {
        // Exactly-once: the transaction aborts; the pipeline takes the
        // refusals then, and the records are settled when routed again.
        if parts.gate.is_some() {
            return;
        }
        for refusal in parts.offsets.take_refused() {
            let refusal = match self.send_alone(parts, refusal, stopping) {
                Some(refusal) => refusal,
                None => continue,
            };
            self.settle_for_good(parts, instance, meters, sender, refusal, stopping);
        }
    }

    /// Sends a refused output again alone, unless it already was; gives
    /// the refusal back if it stands.
    fn send_alone(
        &mut self,
        parts: &WorkerParts,
        refusal: Refusal,
        stopping: &dyn Fn() -> bool,
    ) -> Option<Refusal> {
        let (false, Some(index)) = (refusal.alone, refusal.index) else {
            return Some(refusal);
        };
        if self.alone.is_none() {
            self.alone = parts.alone.get().map(Sender::new);
        }
        let Some(alone) = &mut self.alone else {
            // Its neighbours cannot be told from it: stop rather than
            // dead-letter a record that may be innocent.
            refusal.delivery.fail(index, &refusal.error);
            return None;
        };
        match alone.send(&refusal.delivery, index, stopping) {
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

    fn settle_for_good(
        &mut self,
        parts: &WorkerParts,
        instance: &RouteInstance,
        meters: &mut Meters,
        sender: &mut Sender,
        refusal: Refusal,
        stopping: &dyn Fn() -> bool,
    ) {
        let Some((index, routed)) = refusal.output() else {
            return;
        };
        let record = routed.output.source.clone();
        let reason = refusal.reason();
        let Refusal {
            delivery, error, ..
        } = refusal;
        if delivery.is_stand_in() {
            // A dead-letter record the broker refused has nowhere to go.
            tracing::error!(
                route = parts.route.name(),
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
        let route = &parts.route;
        meters.refused(instance, failure.kind);
        parts.failures.failed(&RecordFailure {
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
                    instance,
                    route.config.limits.max_output_bytes,
                );
                let stand_in = Delivery::standing_for(delivery, dead);
                if let Err(e) = sender.send(&stand_in, 0, stopping)
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

/// What to produce for `record`: its outputs (then `true`), its
/// dead-letter record, or nothing (filtered or skipped), starting from the
/// plugin's `first` answer if there is one. `None` when the worker must
/// stop first.
fn decide(
    parts: &WorkerParts,
    instance: &mut RouteInstance,
    record: &Arc<SourceRecord>,
    mut first: Option<Result<RoutedOutputs, RouteFailure>>,
    meters: &mut Meters,
    stopping: &dyn Fn() -> bool,
) -> Option<(RoutedOutputs, bool)> {
    let route = &parts.route;
    loop {
        let (result, attempts) = attempt(
            route,
            &parts.offsets,
            instance,
            record,
            first.take(),
            meters,
            stopping,
        )?;
        let failure = match result {
            Ok(routed) => {
                meters.routed(instance, routed.len());
                return Some((routed, true));
            }
            Err(failure) => failure,
        };
        meters.failed(instance, failure.kind);
        parts.failures.failed(&RecordFailure {
            route: route.name(),
            record,
            failure: &failure,
            attempts,
            policy: route.policy(),
        });
        match route.policy() {
            FailurePolicy::DeadLetter(topic) => {
                let dead = dead_letter(
                    topic,
                    record,
                    &failure,
                    attempts,
                    instance,
                    route.config.limits.max_output_bytes,
                );
                return Some((smallvec::smallvec![dead], false));
            }
            FailurePolicy::Skip => return Some((RoutedOutputs::new(), false)),
            FailurePolicy::Stop => {
                // Hold the partition at this record until a new plugin
                // version is swapped in; then route it again.
                let generation = route.generation();
                tracing::error!(
                    route = route.name(),
                    topic = %record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    "partition held at a failed record (on_failure = \"stop\"): nothing past it is routed or committed until a new plugin version is swapped in"
                );
                hold_at(route, record, &failure);
                while !stopping() && route.generation() == generation {
                    // Nothing is routed meanwhile: free what was in flight.
                    parts.offsets.free_retired();
                    route.wait(generation, HALT_RECHECK, stopping);
                }
                if stopping() {
                    return None;
                }
                route.set_halted(&record.topic, record.partition, None);
                tracing::info!(
                    route = route.name(),
                    topic = %record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    "plugin swapped: routing the held record again"
                );
            }
        }
    }
}

/// Routes `record`, calling the plugin again after `retry` answers as the
/// route's backoff says; `first` is the answer of a call already made.
/// Gives the result and the number of calls made for the plugin version
/// routing now; `None` when the worker must stop.
fn attempt(
    route: &Route,
    offsets: &PartitionOffsets,
    instance: &mut RouteInstance,
    record: &Arc<SourceRecord>,
    mut first: Option<Result<RoutedOutputs, RouteFailure>>,
    meters: &mut Meters,
    stopping: &dyn Fn() -> bool,
) -> Option<(Result<RoutedOutputs, RouteFailure>, u32)> {
    let retry = &route.config.retry;
    let backoff = retry.backoff();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = match first.take() {
            Some(result) => result,
            None => {
                if !follow_swaps(route, offsets, instance, record.offset, stopping) {
                    return None;
                }
                // A route without a plugin makes no call to time.
                let started = instance.plugin().is_some().then(Instant::now);
                let result = instance.route(record);
                if let Some(started) = started {
                    meters.called(started.elapsed(), 1);
                }
                result
            }
        };
        // A call ended because the worker must stop says nothing of the
        // record: it is routed again by the partition's next owner.
        if stopping() {
            return None;
        }
        let failure = match result {
            Ok(routed) => return Some((Ok(routed), attempts)),
            Err(failure) => failure,
        };
        if failure.kind != FailureKind::Retry || attempts >= retry.max_attempts {
            return Some((Err(failure), attempts));
        }
        meters.retried(instance);
        let wait = backoff.delay(attempts);
        tracing::debug!(
            route = route.name(),
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            attempt = attempts,
            wait_ms = wait.as_millis(),
            reason = %failure.message,
            "plugin asked to retry"
        );
        let generation = route.generation();
        route.wait(generation, wait, stopping);
        if stopping() {
            return None;
        }
        if route.generation() != generation {
            // A new plugin version gets a fresh set of attempts.
            attempts = 0;
        }
    }
}

/// The dead-letter record of `record`: its key, value, timestamp and
/// headers (earlier `dlq-*` headers replaced), plus headers that say why.
///
/// It is never larger than the route's `limits.max_output_bytes` (the
/// producer would refuse it, and the partition could not move on): what
/// does not fit goes, the value first, then the record's own headers, then
/// its key, each named in a `dlq-dropped` header with its size. The
/// headers that say why and where the record came from always stay.
fn dead_letter(
    topic: &str,
    record: &Arc<SourceRecord>,
    failure: &RouteFailure,
    attempts: u32,
    instance: &RouteInstance,
    max_bytes: u64,
) -> Routed {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let (plugin, version) = instance
        .plugin()
        .map_or(("none", "none"), |p| (p.name(), p.version()));
    let mut error = failure.message.clone();
    if error.len() > MAX_ERROR_HEADER {
        let mut end = MAX_ERROR_HEADER;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
        error.push_str("...");
    }
    let why: Vec<Header> = [
        ("dlq-error", error),
        ("dlq-error-kind", failure.kind.dead_letter_kind().to_owned()),
        ("dlq-attempts", attempts.to_string()),
        ("dlq-original-topic", record.topic.to_string()),
        ("dlq-original-partition", record.partition.to_string()),
        ("dlq-original-offset", record.offset.to_string()),
        ("dlq-timestamp", now_ms.to_string()),
        ("dlq-route", instance.route_name().to_owned()),
        ("dlq-plugin", plugin.to_owned()),
        ("dlq-plugin-version", version.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| Header {
        key: key.to_owned(),
        value: Bytes::from(value),
    })
    .collect();
    let own: Vec<Header> = record
        .headers
        .iter()
        .filter(|h| !h.key.starts_with("dlq-"))
        .cloned()
        .collect();
    let mut output = Output::forward(record.clone());
    let mut dropped: Vec<String> = Vec::new();
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    // Room for the `dlq-dropped` header itself, should one be needed.
    let fits = |output: &Output, dropped: &[String]| {
        let note = if dropped.is_empty() {
            0
        } else {
            Header {
                key: "dlq-dropped".to_owned(),
                value: Bytes::from(dropped.join(",")),
            }
            .wire_size()
        };
        output.wire_size() + note <= limit
    };
    output.headers = OutputHeaders::Replace(own.iter().chain(&why).cloned().collect());
    if !fits(&output, &dropped) {
        dropped.push(format!(
            "value:{}",
            record.value.as_ref().map_or(0, Bytes::len)
        ));
        output.value = Data::Null;
    }
    if !fits(&output, &dropped) {
        let size: usize = own.iter().map(Header::wire_size).sum();
        dropped.push(format!("headers:{size}"));
        output.headers = OutputHeaders::Replace(why.clone());
    }
    if !fits(&output, &dropped) {
        dropped.push(format!("key:{}", record.key.as_ref().map_or(0, Bytes::len)));
        output.key = Data::Null;
    }
    if !dropped.is_empty() {
        let mut headers = match std::mem::replace(&mut output.headers, OutputHeaders::Original) {
            OutputHeaders::Replace(headers) => headers,
            _ => why,
        };
        headers.push(Header {
            key: "dlq-dropped".to_owned(),
            value: Bytes::from(dropped.join(",")),
        });
        output.headers = OutputHeaders::Replace(headers);
    }
    Routed {
        topic: topic.into(),
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_take_a_full_batch_unless_the_plugin_is_slow_for_the_time_limit() {
        let limit = Duration::from_secs(1);
        let mut size = CallSize::FULL;
        // 2 µs per record: a full batch is far below a quarter second.
        size.took(128, Duration::from_micros(256), limit);
        assert_eq!(size, CallSize::FULL);
        // 20 ms per record: 12 records fit a quarter of a second.
        size.took(128, Duration::from_millis(2560), limit);
        assert_eq!(size, CallSize(12));
        // Faster again: back to a full batch.
        size.took(12, Duration::from_micros(24), limit);
        assert_eq!(size, CallSize::FULL);
        // Slower than the limit per record: one record per call.
        size.took(1, Duration::from_secs(2), limit);
        assert_eq!(size, CallSize(1));
    }

    #[test]
    fn a_call_past_the_time_limit_makes_the_next_ones_smaller() {
        let mut size = CallSize::FULL;
        size.timed_out(128);
        assert_eq!(size, CallSize(32));
        size.timed_out(2);
        assert_eq!(size, CallSize(1));
    }
}
