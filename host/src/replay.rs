//! Replays: a route's source records from an offset or a timestamp up to
//! the end its partitions had when the replay started, routed again by the
//! route's plugin (the version routing now) into one named topic, while
//! the route goes on. A replay reads with a consumer of its own that
//! commits nothing: the route's consumer group and its offsets are not
//! touched.
//!
//! Every output of the plugin goes to the replay's topic (at the partition
//! the plugin chose if that topic has it, else by key); records that fail
//! go where the route's failure policy says (its dead-letter topic, with
//! the usual headers), and `on_failure = "stop"` stops the replay at that
//! record. A replay is at-least-once like the route: it is done when every
//! output is acknowledged. At most [`MAX_RUNNING`] run at once, one per
//! route, each with its own consumer, producer and plugin instance (its
//! own log budget): one replay's trouble (a target without a leader, a
//! slow plugin) is its own. A cancelled replay stops at once (a plugin
//! call in progress is interrupted); the router joins its replays when it
//! stops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{FailurePolicy, KafkaConfig};
use crate::kafka::{Outgoing, OutputProducer, Report, Sender};
use crate::plugin::{FailureKind, Interrupt, LogBudget, RouteFailure};
use crate::record::{Header, SourceRecord};
use crate::route::{Route, RouteInstance, Routed};
use crate::schema::check::Check;

/// Replays running at once, at most.
pub const MAX_RUNNING: usize = 4;

/// Finished replays kept for `GET /replays`, the latest.
const KEPT: usize = 20;

/// How long a broker request of the replay's may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a record waits for its schema before it fails.
const SCHEMA_WAIT: Duration = Duration::from_secs(30);

/// How long an output may wait for its acknowledgement (the replay
/// producer's `message.timeout.ms`); the replay waits a little longer at
/// its end.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the partitions left are checked for having reached their end
/// (a partition may end in records no consumer is handed: a transaction's
/// markers).
const POSITION_CHECK: Duration = Duration::from_millis(500);

/// A replay that reads nothing and gets no partition further for this
/// long fails, saying the last error it saw.
const STALL: Duration = Duration::from_secs(300);

/// Where a replay starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum From {
    /// This offset (or the partition's first, if that is later).
    Offset(i64),
    /// The first record at or after this time, in milliseconds since the
    /// Unix epoch.
    TimestampMs(i64),
}

/// What an operator asked to replay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Request {
    /// Where every output goes.
    pub to: String,
    /// Where it starts.
    pub from: From,
    /// Only this partition of the route's source topics, if given.
    pub partition: Option<i32>,
}

/// How far a replay got.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum State {
    /// Reading and routing.
    Running,
    /// Every record up to the end routed, every output acknowledged.
    Done,
    /// Stopped before the end, for this reason.
    Failed(String),
    /// Cancelled by an operator (or the router stopping).
    Cancelled,
}

/// What a replay did so far.
#[derive(Debug, Default)]
struct Counts {
    records: AtomicU64,
    routed: AtomicU64,
    outputs: AtomicU64,
    acknowledged: AtomicU64,
    dead_lettered: AtomicU64,
    skipped: AtomicU64,
    undelivered: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// One replay.
#[derive(Debug)]
pub struct Replay {
    /// Its number, from 1 in this router.
    pub id: u64,
    /// The route replayed.
    pub route: String,
    /// What was asked.
    pub request: Request,
    started_at: SystemTime,
    state: Mutex<State>,
    /// Records left to read, by partition: (topic, partition) to the end.
    plan: Mutex<Vec<(String, i32, i64, i64)>>,
    counts: Counts,
    cancel: AtomicBool,
    /// Ends its plugin call in progress when it is cancelled.
    interrupt: Interrupt,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Replay {
    /// How far it got.
    #[must_use]
    pub fn state(&self) -> State {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether it is still running.
    #[must_use]
    pub fn running(&self) -> bool {
        self.state() == State::Running
    }

    /// Stops it: at once, a plugin call in progress interrupted.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
        self.interrupt.raise();
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    fn finish(&self, state: State) {
        let mut current = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == State::Running {
            *current = state;
        }
    }

    /// Its state and counts, for `GET /replays`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let plan: Vec<serde_json::Value> = self
            .plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(topic, partition, from, to)| {
                serde_json::json!({ "topic": topic, "partition": partition, "from_offset": from, "end_offset": to })
            })
            .collect();
        let c = &self.counts;
        serde_json::json!({
            "id": self.id,
            "route": self.route,
            "request": self.request,
            "started_at_ms": self
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            "status": self.state(),
            "partitions": plan,
            "records": get(&c.records),
            "routed": get(&c.routed),
            "outputs": get(&c.outputs),
            "acknowledged": get(&c.acknowledged),
            "dead_lettered": get(&c.dead_lettered),
            "skipped": get(&c.skipped),
            "undelivered": get(&c.undelivered),
            "last_error": c.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        })
    }
}

/// The outputs of one replayed record, and where their reports count.
struct Replayed {
    outputs: Vec<Routed>,
    replay: Arc<Replay>,
}

impl Outgoing for Replayed {
    fn outputs(&self) -> &[Routed] {
        &self.outputs
    }

    fn reported(self: Arc<Self>, report: Report<'_>) {
        let counts = &self.replay.counts;
        let error = match report {
            Report::Acknowledged => {
                counts.acknowledged.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Report::Refused { error, .. } | Report::Failed(error) => error.to_string(),
        };
        counts.undelivered.fetch_add(1, Ordering::Relaxed);
        *counts
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }
}

/// Starts and keeps the router's replays.
pub struct Replayer {
    kafka: KafkaConfig,
    next: AtomicU64,
    replays: Mutex<Vec<Arc<Replay>>>,
    /// The router stops: no replay starts.
    stopped: AtomicBool,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer").finish_non_exhaustive()
    }
}

impl Drop for Replayer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Replayer {
    /// A replayer reading and writing with `kafka`'s settings.
    #[must_use]
    pub fn new(kafka: KafkaConfig) -> Self {
        Self {
            kafka,
            next: AtomicU64::new(1),
            replays: Mutex::default(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Every replay kept, the latest last.
    #[must_use]
    pub fn replays(&self) -> Vec<Arc<Replay>> {
        self.replays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Cancels every running replay and waits for their threads to end;
    /// none starts from now on (the router stops).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        for replay in self.replays() {
            replay.cancel();
            let thread = replay
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
    }

    /// Starts replaying `route` as `request` says, `routes` being every
    /// route of the router (none may read the target). Gives the replay,
    /// or why not.
    pub fn start(
        &self,
        route: &Arc<Route>,
        routes: &[Arc<Route>],
        request: Request,
    ) -> Result<Arc<Replay>, String> {
        if self.stopped.load(Ordering::Acquire) {
            return Err("the router is stopping".to_owned());
        }
        let to = request.to.trim().to_owned();
        let to = to.as_str();
        if to.is_empty() {
            return Err("name the topic to replay into: to=TOPIC".to_owned());
        }
        for other in routes {
            let why = if other.config.source_topics.iter().any(|t| t == to) {
                "a source"
            } else if other.config.dead_letter_topic.as_deref() == Some(to) {
                "the dead-letter topic"
            } else {
                continue;
            };
            return Err(format!(
                "'{to}' is {why} of route '{}': replay into a topic no route reads",
                other.name()
            ));
        }
        if route.partition_count(to).is_none() {
            return Err(format!("topic '{to}' does not exist"));
        }
        let mut replays = self.replays.lock().unwrap_or_else(PoisonError::into_inner);
        let running: Vec<&Arc<Replay>> = replays.iter().filter(|r| r.running()).collect();
        if let Some(same) = running.iter().find(|r| r.route == route.name()) {
            return Err(format!(
                "replay {} of route '{}' is still running: wait for it or cancel it",
                same.id,
                route.name()
            ));
        }
        if running.len() >= MAX_RUNNING {
            return Err(format!(
                "{MAX_RUNNING} replays are running already: wait for one to end"
            ));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let replay = Arc::new(Replay {
            id,
            route: route.name().to_owned(),
            request,
            started_at: SystemTime::now(),
            state: Mutex::new(State::Running),
            plan: Mutex::default(),
            counts: Counts::default(),
            cancel: AtomicBool::new(false),
            interrupt: Interrupt::new(),
            thread: Mutex::default(),
        });
        let job = Job {
            replay: replay.clone(),
            route: route.clone(),
            consumer: self.consumer(id)?,
            producer: self.producer()?,
            to: to.into(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("replay-{id}"))
            .spawn(move || job.run())
            .map_err(|e| format!("cannot start the replay's thread: {e}"))?;
        *replay.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread);
        tracing::info!(
            route = route.name(),
            replay = id,
            to,
            from = ?replay.request.from,
            partition = replay.request.partition,
            "replay started"
        );
        replays.push(replay.clone());
        while replays.len() > KEPT {
            match replays.iter().position(|r| !r.running()) {
                Some(at) => {
                    replays.remove(at);
                }
                None => break,
            }
        }
        Ok(replay)
    }

    /// A producer of the replay's own, outside the route's transactions
    /// (a replay is at-least-once), whose outputs wait at most
    /// [`DELIVERY_TIMEOUT`].
    fn producer(&self) -> Result<Arc<OutputProducer<Replayed>>, String> {
        let mut config = crate::kafka::producer_config(&self.kafka);
        config.remove("transactional.id");
        config.set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        );
        OutputProducer::new(&config)
            .map(Arc::new)
            .map_err(|e| format!("cannot make the replay producer: {e}"))
    }

    /// A consumer of its own for replay `id`, which commits nothing and
    /// reads from a partition's first record when the start is gone.
    fn consumer(&self, id: u64) -> Result<BaseConsumer, String> {
        let mut config = crate::kafka::consumer_config(&self.kafka);
        config
            .set(
                "group.id",
                format!("{}.replay-{id}-{}", self.kafka.group_id, std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .set("statistics.interval.ms", "0");
        config
            .create()
            .map_err(|e| format!("cannot make the replay consumer: {e}"))
    }
}

/// How a replay's reading ended.
enum Outcome {
    /// Every partition read to its end.
    Completed,
    /// Cancelled on the way.
    Cancelled,
}

/// Marks its replay failed if its thread panics.
struct Finishing<'r>(&'r Replay);

impl Drop for Finishing<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0
                .finish(State::Failed("the replay's thread panicked".to_owned()));
        }
    }
}

/// A replay on its thread.
struct Job {
    replay: Arc<Replay>,
    route: Arc<Route>,
    consumer: BaseConsumer,
    producer: Arc<OutputProducer<Replayed>>,
    to: Arc<str>,
}

impl Job {
    fn run(self) {
        let _finishing = Finishing(&self.replay);
        // Made here: its topic handles stay on this thread.
        let mut sender = Sender::new(self.producer.clone());
        let result = self.replay_all(&mut sender);
        drop(sender);
        let delivered = self.wait_for_deliveries();
        let counts = &self.replay.counts;
        let undelivered = counts.undelivered.load(Ordering::Relaxed);
        let state = match result {
            Err(why) => State::Failed(why),
            Ok(Outcome::Cancelled) => State::Cancelled,
            Ok(Outcome::Completed) if !delivered => State::Failed(format!(
                "outputs not acknowledged within {DELIVERY_TIMEOUT:?}"
            )),
            Ok(Outcome::Completed) if undelivered > 0 => State::Failed(format!(
                "{undelivered} outputs were not delivered: {}",
                counts
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default()
            )),
            Ok(Outcome::Completed) => State::Done,
        };
        match &state {
            State::Failed(why) => {
                tracing::error!(
                    route = self.route.name(),
                    replay = self.replay.id,
                    "replay failed: {why}"
                );
            }
            state => {
                tracing::info!(
                    route = self.route.name(),
                    replay = self.replay.id,
                    ?state,
                    records = counts.records.load(Ordering::Relaxed),
                    "replay ended"
                );
            }
        }
        self.replay.finish(state);
    }

    /// Waits until every output handed over is acknowledged or failed (at
    /// most a little past [`DELIVERY_TIMEOUT`], or until cancelled);
    /// whether they all were.
    fn wait_for_deliveries(&self) -> bool {
        let give_up = Instant::now() + DELIVERY_TIMEOUT + Duration::from_secs(10);
        loop {
            if self.producer.flush(Duration::from_secs(1)).is_ok() {
                return true;
            }
            if self.replay.cancelled() || Instant::now() >= give_up {
                return false;
            }
        }
    }

    /// Where each partition starts and ends (its end when the replay
    /// started), those with nothing to replay left out.
    fn plan(&self) -> Result<Vec<(String, i32, i64, i64)>, String> {
        let request = &self.replay.request;
        let mut bounds = Vec::new();
        for topic in &self.route.config.source_topics {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .map_err(|e| format!("cannot read the partitions of '{topic}': {e}"))?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .flat_map(|t| {
                    t.partitions()
                        .iter()
                        .map(rdkafka::metadata::MetadataPartition::id)
                })
                .filter(|p| request.partition.is_none_or(|only| only == *p))
                .collect();
            for partition in partitions {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                    .map_err(|e| {
                        format!("cannot read the offsets of '{topic}' [{partition}]: {e}")
                    })?;
                bounds.push((topic.clone(), partition, low, high));
            }
        }
        if bounds.is_empty() {
            return Err(match request.partition {
                Some(p) => format!("the route's source topics have no partition {p}"),
                None => "the route's source topics have no partitions".to_owned(),
            });
        }
        let starts: Vec<i64> = match request.from {
            From::Offset(offset) => bounds.iter().map(|b| offset.max(b.2)).collect(),
            From::TimestampMs(ms) => {
                let mut tpl = TopicPartitionList::new();
                for (topic, partition, _, _) in &bounds {
                    tpl.add_partition_offset(topic, *partition, Offset::Offset(ms))
                        .map_err(|e| e.to_string())?;
                }
                let found = self
                    .consumer
                    .offsets_for_times(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| format!("cannot find the offsets at {ms} ms: {e}"))?;
                let mut starts = Vec::with_capacity(bounds.len());
                for (topic, partition, _, high) in &bounds {
                    let found = found.find_partition(topic, *partition);
                    if let Some(Err(e)) = found
                        .as_ref()
                        .map(rdkafka::topic_partition_list::TopicPartitionListElem::error)
                    {
                        return Err(format!(
                            "cannot find the offset at {ms} ms of '{topic}' [{partition}]: {e}"
                        ));
                    }
                    starts.push(match found.map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        // No record at or after that time.
                        _ => *high,
                    });
                }
                starts
            }
        };
        Ok(bounds
            .into_iter()
            .zip(starts)
            .map(|((topic, partition, _, high), start)| (topic, partition, start, high))
            .filter(|(_, _, start, high)| start < high)
            .collect())
    }

    fn replay_all(&self, sender: &mut Sender<Replayed>) -> Result<Outcome, String> {
        let plan = self.plan()?;
        *self
            .replay
            .plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = plan.clone();
        if plan.is_empty() {
            return Ok(Outcome::Completed);
        }
        let mut tpl = TopicPartitionList::new();
        // Each source topic's name once, shared by its records.
        let topics: HashMap<String, Arc<str>> = plan
            .iter()
            .map(|(topic, ..)| (topic.clone(), Arc::from(topic.as_str())))
            .collect();
        let mut left: HashMap<(Arc<str>, i32), i64> = HashMap::new();
        for (topic, partition, start, end) in &plan {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*start))
                .map_err(|e| e.to_string())?;
            left.insert((topics[topic].clone(), *partition), *end);
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| format!("cannot read the partitions: {e}"))?;
        let mut instance = self
            .route
            .separate_instance(
                self.replay.interrupt.clone(),
                Arc::new(LogBudget::new(
                    self.route.config.limits.log_lines_per_second,
                )),
            )
            .map_err(|e| format!("the plugin cannot start: {e}"))?;
        let mut checked = Instant::now();
        let mut progress = Instant::now();
        while !left.is_empty() {
            if self.replay.cancelled() {
                return Ok(Outcome::Cancelled);
            }
            if checked.elapsed() >= POSITION_CHECK {
                checked = Instant::now();
                if self.finish_ended(&mut left) {
                    progress = Instant::now();
                }
                if left.is_empty() {
                    break;
                }
            }
            if progress.elapsed() >= STALL {
                let last = self
                    .replay
                    .counts
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                return Err(format!(
                    "no record read for {STALL:?}; last error: {}",
                    last.as_deref().unwrap_or("none")
                ));
            }
            let message = match self.consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Ok(message)) => message,
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // Look at once: the partition may be at its end.
                    checked = Instant::now() - POSITION_CHECK;
                    continue;
                }
                Some(Err(e)) => {
                    self.consumer_error(&e)?;
                    continue;
                }
            };
            let Some(topic) = topics.get(message.topic()) else {
                continue;
            };
            let key = (topic.clone(), message.partition());
            let Some(&end) = left.get(&key) else {
                continue;
            };
            progress = Instant::now();
            if message.offset() >= end {
                self.finished(&mut left, &key);
                continue;
            }
            let record = Arc::new(record_of(&message, key.0.clone()));
            drop(message);
            if record.offset + 1 >= end {
                self.finished(&mut left, &key);
            }
            self.replay.counts.records.fetch_add(1, Ordering::Relaxed);
            if !self.route_one(&mut instance, &record, sender)? {
                return Ok(Outcome::Cancelled);
            }
        }
        Ok(Outcome::Completed)
    }

    /// Partition `key` is read to its end: nothing more of it is fetched.
    fn finished(&self, left: &mut HashMap<(Arc<str>, i32), i64>, key: &(Arc<str>, i32)) {
        left.remove(key);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&key.0, key.1);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::debug!(replay = self.replay.id, error = %e, "cannot pause a partition read to its end");
        }
    }

    /// Finishes the partitions whose position reached their end (past
    /// records no consumer is handed); whether any did.
    fn finish_ended(&self, left: &mut HashMap<(Arc<str>, i32), i64>) -> bool {
        let Ok(positions) = self.consumer.position() else {
            return false;
        };
        let ended: Vec<(Arc<str>, i32)> = left
            .iter()
            .filter(|((topic, partition), end)| {
                matches!(
                    positions.find_partition(topic, *partition).map(|e| e.offset()),
                    Some(Offset::Offset(at)) if at >= **end
                )
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &ended {
            self.finished(left, key);
        }
        !ended.is_empty()
    }

    /// A consumer error: the replay fails on one it cannot get past (the
    /// consumer is gone, a source it may not read), else goes on (the
    /// consumer retries by itself) with the error kept for its status.
    fn consumer_error(&self, error: &KafkaError) -> Result<(), String> {
        use RDKafkaErrorCode as E;
        let fatal = match error {
            KafkaError::MessageConsumptionFatal(_) => true,
            KafkaError::MessageConsumption(code) => matches!(
                code,
                E::TopicAuthorizationFailed | E::GroupAuthorizationFailed | E::UnknownTopic
            ),
            _ => false,
        };
        if fatal {
            return Err(format!("cannot read: {error}"));
        }
        tracing::warn!(replay = self.replay.id, error = %error, "replay: consumer error (retried)");
        *self
            .replay
            .counts
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        Ok(())
    }

    /// Routes `record` (retrying as the route says) and hands its outputs
    /// (or its dead-letter record) to the producer.
    /// Whether to go on (`false`: cancelled).
    fn route_one(
        &self,
        instance: &mut RouteInstance,
        record: &Arc<SourceRecord>,
        sender: &mut Sender<Replayed>,
    ) -> Result<bool, String> {
        let route = self.route.clone();
        let retry = route.config.retry;
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            instance
                .follow_swaps()
                .map_err(|e| format!("the plugin cannot start: {e}"))?;
            let answer = match self.schema_checked(record) {
                Err(failure) => Err(failure),
                Ok(()) => instance.route(record),
            };
            // Cancelled: an interrupted call says nothing of the record.
            if self.replay.cancelled() {
                return Ok(false);
            }
            match answer {
                Err(failure)
                    if failure.kind == FailureKind::Retry && attempts < retry.max_attempts =>
                {
                    let until = Instant::now() + retry.backoff().delay(attempts);
                    while Instant::now() < until {
                        if self.replay.cancelled() {
                            return Ok(false);
                        }
                        std::thread::park_timeout(
                            until
                                .saturating_duration_since(Instant::now())
                                .min(Duration::from_millis(100)),
                        );
                    }
                }
                answer => break answer,
            }
        };
        let counts = &self.replay.counts;
        let outputs: Vec<Routed> = match result {
            Ok(routed) => {
                counts.routed.fetch_add(1, Ordering::Relaxed);
                let partitions = route.partition_count(&self.to);
                routed
                    .into_iter()
                    .map(|mut routed| {
                        routed.topic = self.to.clone();
                        if routed
                            .output
                            .partition
                            .is_some_and(|p| partitions.is_none_or(|n| p.unsigned_abs() >= n))
                        {
                            routed.output.partition = None;
                        }
                        routed
                    })
                    .collect()
            }
            Err(failure) => match route.policy() {
                FailurePolicy::DeadLetter(topic) => {
                    counts.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    vec![crate::pipeline::dead_letter(
                        topic,
                        record,
                        &failure,
                        attempts,
                        instance,
                        route.config.limits.max_output_bytes,
                    )]
                }
                FailurePolicy::Skip => {
                    counts.skipped.fetch_add(1, Ordering::Relaxed);
                    Vec::new()
                }
                FailurePolicy::Stop => {
                    return Err(format!(
                        "stopped at '{}' [{}] offset {} (on_failure = \"stop\"): {failure}",
                        record.topic, record.partition, record.offset
                    ));
                }
            },
        };
        if outputs.is_empty() {
            return Ok(true);
        }
        counts
            .outputs
            .fetch_add(outputs.len() as u64, Ordering::Relaxed);
        let replayed = Arc::new(Replayed {
            outputs,
            replay: self.replay.clone(),
        });
        let cancel = &self.replay.cancel;
        for index in 0..replayed.outputs.len() {
            if let Err(e) = sender.send(&replayed, index, &|| cancel.load(Ordering::Acquire)) {
                if cancel.load(Ordering::Acquire) {
                    return Ok(false);
                }
                return Err(format!(
                    "cannot produce an output of '{}' [{}] offset {} to '{}': {e}",
                    record.topic, record.partition, record.offset, replayed.outputs[index].topic
                ));
            }
        }
        Ok(true)
    }

    /// The record's framed parts against their schemas (waiting a while
    /// for one being fetched).
    fn schema_checked(&self, record: &SourceRecord) -> Result<(), RouteFailure> {
        let Some(schemas) = self.route.schemas() else {
            return Ok(());
        };
        let give_up = Instant::now() + SCHEMA_WAIT;
        loop {
            match schemas.check(record) {
                Check::Ok => return Ok(()),
                Check::Failed(why) => return Err(RouteFailure::new(FailureKind::Schema, why)),
                Check::Pending { id, why } if Instant::now() >= give_up => {
                    return Err(RouteFailure::new(
                        FailureKind::Schema,
                        format!(
                            "schema {id} not fetched within {SCHEMA_WAIT:?}: {}",
                            why.as_deref().unwrap_or("no answer")
                        ),
                    ));
                }
                // Cancelled: the caller looks before it goes on.
                Check::Pending { .. } if self.replay.cancelled() => return Ok(()),
                Check::Pending { .. } => std::thread::park_timeout(Duration::from_millis(100)),
            }
        }
    }
}

/// `message` as a source record of `topic`.
fn record_of(message: &BorrowedMessage<'_>, topic: Arc<str>) -> SourceRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| Header {
                    key: h.key.into(),
                    value: bytes::Bytes::copy_from_slice(h.value.unwrap_or_default()),
                })
                .collect()
        })
        .unwrap_or_default();
    SourceRecord {
        topic,
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(bytes::Bytes::copy_from_slice),
        value: message.payload().map(bytes::Bytes::copy_from_slice),
        headers,
        wire_headers: Default::default(),
    }
}
