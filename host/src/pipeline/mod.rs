//! The record path: consume → route → produce → store the offset.
//!
//! Each assigned partition has a worker that reads the partition's own
//! queue, split from the consumer's before the partition is assigned, and
//! routes its records in order; workers run concurrently. One thread polls
//! the consumer for everything else: rebalances (which start and stop
//! workers), errors, statistics, and storing finished offsets. Offsets are
//! stored only as [`offsets`] allows; librdkafka commits what was stored
//! every `auto.commit.interval.ms`, and the pipeline commits synchronously
//! when partitions are revoked and when it stops.

pub mod offsets;
mod transactions;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, TopicPartitionList};

use self::offsets::PartitionOffsets;
use self::transactions::{Transactions, TxnError};
use self::worker::{AloneProducer, RefusedRecords, Worker, WorkerParts};
use crate::config::{FailurePolicy, RouterConfig};
use crate::kafka::{self, OutputProducer, PartitionQueue, TopicCache};
use crate::metrics::Metrics;
use crate::plugin::{PluginEngine, PluginError, RouteFailure};
use crate::record::SourceRecord;
use crate::route::{Route, Topics};
use crate::status::Status;

/// How long startup waits for the cluster's metadata.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often partition counts are read again (partitions can be added).
const METADATA_REFRESH: Duration = Duration::from_secs(30);
/// How long the consumer thread waits for an event before it stores the
/// offsets the workers finished.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// A record the route could not route.
#[derive(Debug)]
pub struct RecordFailure<'a> {
    /// The route's name.
    pub route: &'a str,
    /// The record.
    pub record: &'a SourceRecord,
    /// What went wrong (at the last attempt).
    pub failure: &'a RouteFailure,
    /// Calls of the plugin for the record.
    pub attempts: u32,
    /// What happens to the record now.
    pub policy: &'a FailurePolicy,
}

/// Told about every record that failed for good (after its retries),
/// before the route's failure policy is applied to it.
pub trait FailureSink: Send + Sync {
    /// `failure` happened.
    fn failed(&self, failure: &RecordFailure<'_>);
}

/// Failure lines logged per route per second; past this they are counted
/// and their number logged when the second is over (the metrics count
/// every failed record).
const FAILURE_LOG_BURST: u32 = 20;

/// Logs each failed record (WARN) with its coordinates, reason and fate,
/// at most [`FAILURE_LOG_BURST`] lines per route per second: a plugin
/// failing every record must not flood the log.
#[derive(Debug, Default)]
pub struct LogFailures {
    windows: Mutex<HashMap<String, LogWindow>>,
}

/// One route's current second of failure lines.
#[derive(Debug)]
struct LogWindow {
    start: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

impl LogWindow {
    fn new(now: std::time::Instant) -> Self {
        Self {
            start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`, and how many lines the
    /// second that just ended suppressed (to report once).
    fn admit(&mut self, now: std::time::Instant) -> (bool, u64) {
        let mut ended = 0;
        if now.duration_since(self.start) >= Duration::from_secs(1) {
            ended = self.suppressed;
            *self = Self::new(now);
        }
        if self.logged < FAILURE_LOG_BURST {
            self.logged += 1;
            (true, ended)
        } else {
            self.suppressed += 1;
            (false, ended)
        }
    }
}

impl FailureSink for LogFailures {
    fn failed(&self, f: &RecordFailure<'_>) {
        let now = std::time::Instant::now();
        let (log, suppressed) = {
            let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
            match windows.get_mut(f.route) {
                Some(window) => window.admit(now),
                None => windows
                    .entry(f.route.to_owned())
                    .or_insert_with(|| LogWindow::new(now))
                    .admit(now),
            }
        };
        if suppressed > 0 {
            tracing::warn!(
                route = f.route,
                suppressed,
                "{suppressed} more failed records of this route were not logged in the last second (switchyard_record_failures_total counts them all)"
            );
        }
        if !log {
            return;
        }
        let fate = match f.policy {
            FailurePolicy::DeadLetter(topic) => format!("to dead-letter topic '{topic}'"),
            FailurePolicy::Skip => "skipped".to_owned(),
            FailurePolicy::Stop => "the partition is held at it".to_owned(),
        };
        tracing::warn!(
            route = f.route,
            topic = %f.record.topic,
            partition = f.record.partition,
            offset = f.record.offset,
            kind = %f.failure.kind,
            attempts = f.attempts,
            reason = %f.failure.message,
            "record not routed: {fate}"
        );
    }
}

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A route's plugin cannot be used.
    #[error("route '{route}': {error}")]
    Plugin {
        /// The route.
        route: String,
        /// Why.
        error: PluginError,
    },
    /// Kafka cannot be reached or refused a client.
    #[error("cannot reach Kafka at '{bootstrap}': {error}")]
    Kafka {
        /// `bootstrap_servers`.
        bootstrap: String,
        /// librdkafka's error.
        error: KafkaError,
    },
    /// A route's default target or dead-letter topic does not exist.
    #[error("route '{route}': {field} '{topic}' does not exist on the cluster")]
    MissingTarget {
        /// The route.
        route: String,
        /// `default_target` or `dead_letter_topic`.
        field: &'static str,
        /// The topic.
        topic: String,
    },
    /// The HTTP endpoint cannot listen.
    #[error("cannot listen on '{listen}' (http.listen): {error}")]
    Http {
        /// The configured address.
        listen: String,
        /// Why.
        error: std::io::Error,
    },
    /// The plugin files cannot be watched for changes.
    #[error("cannot watch the plugin files: {0}")]
    Watch(String),
    /// Exactly-once mode could not start its transactions.
    #[error("exactly-once mode: {0}")]
    Transactions(String),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A running router.
#[derive(Debug)]
pub struct RouterHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    refresher: Option<JoinHandle<()>>,
    watcher: Option<crate::reload::PluginWatcher>,
    http: Option<crate::http::HttpServer>,
    routes: Vec<Arc<Route>>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    shared: Arc<Shared>,
}

impl RouterHandle {
    /// Why the router stopped by itself (exactly-once mode, fenced by
    /// another instance with the same transactional id, say), if it did.
    #[must_use]
    pub fn fatal(&self) -> Option<String> {
        self.shared.fatal()
    }

    /// Exactly-once mode: the source offsets committed in transactions so
    /// far, by (topic, partition); empty in at-least-once mode.
    #[must_use]
    pub fn transaction_offsets(&self) -> HashMap<(String, i32), i64> {
        self.shared
            .transactions
            .as_ref()
            .map(Transactions::committed)
            .unwrap_or_default()
    }

    /// Whether the router is still routing (it stops by itself only after
    /// a fatal error).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Asks the router to stop: stop fetching, finish records in flight,
    /// wait for their outputs, commit, leave the group.
    pub fn shutdown(&self) {
        self.status.set_stopping();
        self.stop.store(true, Ordering::Release);
        if let Some(refresher) = &self.refresher {
            refresher.thread().unpark();
        }
    }

    /// The routes, with their current plugins.
    #[must_use]
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The router's metrics.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the router is alive and ready.
    #[must_use]
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Where the HTTP endpoint listens, if configured.
    #[must_use]
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(crate::http::HttpServer::addr)
    }

    /// What hot reload did so far.
    #[must_use]
    pub fn reload_stats(&self) -> Option<&crate::reload::ReloadStats> {
        self.watcher.as_ref().map(|w| &*w.stats)
    }

    /// Waits until the router has stopped.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the consumer thread panicked");
        }
        // The consumer loop may have ended by itself (a fatal error): the
        // other threads still need telling.
        self.shutdown();
        if let Some(refresher) = self.refresher.take() {
            let _ = refresher.join();
        }
    }
}

impl Drop for RouterHandle {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(refresher) = self.refresher.take() {
            let _ = refresher.join();
        }
    }
}

struct CachedTopics {
    cache: TopicCache,
    producer: Arc<OutputProducer>,
}

impl Topics for CachedTopics {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.cache
            .partition_count_or_refresh(topic, self.producer.client())
    }

    fn refreshed_partition_count(&self, topic: &str) -> Option<u32> {
        self.cache
            .refreshed_partition_count(topic, self.producer.client())
    }

    fn known_partition_count(&self, topic: &str) -> Option<u32> {
        self.cache.partition_count(topic)
    }
}

/// Starts routing as `config` says: loads the plugins, connects, joins the
/// consumer group. Errors name what is wrong before anything is consumed.
pub fn start(
    config: &RouterConfig,
    engine: &PluginEngine,
    failures: Arc<dyn FailureSink>,
) -> Result<RouterHandle, StartError> {
    let mut plugins = Vec::new();
    for route in &config.routes {
        let plugin = match &route.plugin {
            None => None,
            Some(path) => {
                let plugin_error = |error| StartError::Plugin {
                    route: route.name.clone(),
                    error,
                };
                let started = std::time::Instant::now();
                let plugin = engine.load(path).map_err(plugin_error)?;
                tracing::info!(
                    route = %route.name,
                    file = %path.display(),
                    version = plugin.version(),
                    load_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
                    "plugin loaded"
                );
                Some(plugin)
            }
        };
        plugins.push(plugin);
    }

    let kafka_error = |error| StartError::Kafka {
        bootstrap: config.kafka.bootstrap_servers.clone(),
        error,
    };
    let producer_config = kafka::producer_config(&config.kafka);
    let producer = Arc::new(OutputProducer::new(&producer_config).map_err(kafka_error)?);
    // Refused outputs are sent again alone by a producer of their own,
    // never in a transaction (exactly-once settles them when replayed).
    let mut alone_config = producer_config;
    alone_config.remove("transactional.id");
    let topics = Arc::new(CachedTopics {
        cache: TopicCache::new(CONNECT_TIMEOUT),
        producer: producer.clone(),
    });
    topics
        .cache
        .refresh(producer.client())
        .map_err(kafka_error)?;

    let mut routes = HashMap::new();
    for (route_config, plugin) in config.routes.iter().zip(plugins) {
        let targets = [
            ("default_target", Some(&route_config.default_target)),
            ("dead_letter_topic", route_config.dead_letter_topic.as_ref()),
        ];
        for (field, topic) in targets {
            if let Some(topic) = topic
                && topics.cache.partition_count(topic).is_none()
            {
                return Err(StartError::MissingTarget {
                    route: route_config.name.clone(),
                    field,
                    topic: topic.clone(),
                });
            }
        }
        let route = Arc::new(Route::new(route_config.clone(), plugin, topics.clone()));
        // Check the plugin accepts its configuration before consuming.
        if let Err(error) = route.instance() {
            return Err(StartError::Plugin {
                route: route_config.name.clone(),
                error,
            });
        }
        for topic in &route_config.source_topics {
            if topics.cache.partition_count(topic).is_none() {
                tracing::warn!(route = %route_config.name, topic, "source topic does not exist (yet): waiting for it");
            }
            routes.insert(topic.clone(), route.clone());
        }
    }

    let mut unique: Vec<Arc<Route>> = Vec::new();
    for route in routes.values() {
        if !unique.iter().any(|r| Arc::ptr_eq(r, route)) {
            unique.push(route.clone());
        }
    }
    let watcher =
        crate::reload::watch(&unique, engine).map_err(|e| StartError::Watch(e.to_string()))?;
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status::new(config.statistics_interval()));
    let http = if config.http.enabled {
        let shown = crate::http::Shown {
            routes: Arc::new(unique.clone()),
            reload: Some(watcher.stats.clone()),
            metrics: metrics.clone(),
            status: status.clone(),
            producer: Some(producer.clone()),
        };
        Some(
            crate::http::serve(&config.http, shown).map_err(|e| StartError::Http {
                listen: config.http.listen.clone(),
                error: e,
            })?,
        )
    } else {
        None
    };

    let transactions = match config.kafka.delivery {
        crate::config::Delivery::AtLeastOnce => None,
        crate::config::Delivery::ExactlyOnce => Some(
            Transactions::start(
                &producer,
                Duration::from_millis(config.kafka.commit_interval_ms),
            )
            .map_err(|e| StartError::Transactions(e.to_string()))?,
        ),
    };
    let store_offsets = transactions.is_none();
    let shared = Arc::new(Shared {
        transactions,
        fatal: Mutex::default(),
        routes,
        consumer: OnceLock::new(),
        producer,
        alone: Arc::new(AloneProducer::new(alone_config)),
        refused: Arc::default(),
        failures,
        store_offsets,
        workers: Mutex::default(),
        metrics: metrics.clone(),
        status: status.clone(),
        drain_timeout: config.shutdown.timeout(),
        reset_offset: match config
            .kafka
            .consumer
            .get("auto.offset.reset")
            .map(ToString::to_string)
            .as_deref()
        {
            Some("latest" | "largest" | "end") => rdkafka::Offset::End,
            _ => rdkafka::Offset::Beginning,
        },
    });
    let consumer: Arc<BaseConsumer<RouterContext>> = Arc::new(
        kafka::consumer_config(&config.kafka)
            .create_with_context(RouterContext {
                shared: shared.clone(),
            })
            .map_err(kafka_error)?,
    );
    // Workers split their partition's queue from it; rebalances, which
    // start them, only happen inside its poll.
    let _ = shared.consumer.set(Arc::downgrade(&consumer));
    let sources: Vec<&str> = shared.routes.keys().map(String::as_str).collect();
    consumer.subscribe(&sources).map_err(kafka_error)?;

    let stop = Arc::new(AtomicBool::new(false));
    let refresher = std::thread::Builder::new()
        .name("switchyard-metadata".to_owned())
        .spawn({
            let (stop, topics) = (stop.clone(), topics.clone());
            move || {
                loop {
                    std::thread::park_timeout(METADATA_REFRESH);
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    if let Err(e) = topics.cache.refresh(topics.producer.client()) {
                        tracing::warn!(error = %e, "cannot refresh topic metadata");
                    }
                }
            }
        })?;
    let mut handle = RouterHandle {
        stop,
        thread: None,
        refresher: Some(refresher),
        watcher: Some(watcher),
        http,
        routes: unique,
        metrics,
        status,
        shared: shared.clone(),
    };
    // On error the handle's drop stops the refresher again.
    handle.thread = Some(
        std::thread::Builder::new()
            .name("switchyard-consumer".to_owned())
            .spawn({
                let stop = handle.stop.clone();
                move || poll_loop(&consumer, &shared, &stop)
            })?,
    );
    Ok(handle)
}

/// What the consumer thread, the rebalance callbacks and the workers share.
struct Shared {
    /// Exactly-once mode's transactions; none in at-least-once mode.
    transactions: Option<Transactions>,
    /// Why the router stopped by itself, if it did.
    fatal: Mutex<Option<String>>,
    /// Route of each source topic.
    routes: HashMap<String, Arc<Route>>,
    /// The consumer (it owns this through its context, hence weak).
    consumer: OnceLock<Weak<BaseConsumer<RouterContext>>>,
    producer: Arc<OutputProducer>,
    /// Sends refused outputs again alone (started when first needed).
    alone: Arc<AloneProducer>,
    /// Exactly-once: records the broker refused in aborted transactions.
    refused: Arc<RefusedRecords>,
    failures: Arc<dyn FailureSink>,
    /// At-least-once mode: finished offsets go to the consumer's offset
    /// store (exactly-once mode puts them into its transactions).
    store_offsets: bool,
    /// Workers of the assigned partitions. Only the consumer thread touches
    /// it (rebalance callbacks run inside its `poll`).
    workers: Mutex<HashMap<(String, i32), Worker>>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    /// How long stopping or a revocation may wait for outputs in flight
    /// (what is not acknowledged by then is not committed: nothing is lost).
    drain_timeout: Duration,
    /// Where a partition with no committed offset starts again after an
    /// abort: the consumer's `auto.offset.reset`.
    reset_offset: rdkafka::Offset,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Worker>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the worker of `topic`/`partition` on the partition's own
    /// queue. Called before the partition is assigned: once a partition's
    /// queue is split, librdkafka never forwards it to the consumer's queue
    /// again, so none of its records can go past the worker.
    fn spawn_worker(&self, topic: &str, partition: i32) -> Option<Worker> {
        let route = self.routes.get(topic)?.clone();
        let Some(queue) = self
            .consumer
            .get()
            .and_then(Weak::upgrade)
            .and_then(|consumer| PartitionQueue::split(&consumer, topic, partition))
        else {
            tracing::error!(
                topic,
                partition,
                "cannot give the partition a queue of its own: it is not consumed"
            );
            return None;
        };
        let offsets = Arc::new(PartitionOffsets::new(topic, partition));
        let parts = WorkerParts {
            route,
            producer: self.producer.clone(),
            failures: self.failures.clone(),
            offsets,
            metrics: self.metrics.clone(),
            gate: self.transactions.as_ref().map(|t| t.gate.clone()),
            alone: self.alone.clone(),
            refused: self.refused.clone(),
        };
        match Worker::spawn(topic, partition, parts, queue) {
            Ok(worker) => Some(worker),
            Err(e) => {
                tracing::error!(topic, partition, error = %e, "cannot start a partition worker");
                None
            }
        }
    }

    /// At-least-once mode: hands what `workers` finished since the last
    /// call to the consumer's offset store, in one call (librdkafka commits
    /// it every `auto.commit.interval.ms`, and when partitions go).
    fn store_finished<'w>(
        &self,
        consumer: &BaseConsumer<RouterContext>,
        workers: impl Iterator<Item = &'w Worker>,
    ) {
        if !self.store_offsets {
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

    fn set_assigned(&self, count: usize) {
        self.status.set_assigned(count);
        self.metrics.set_assigned(count);
    }

    /// Exactly-once: holds the workers at a record boundary, waits for every
    /// output, and commits them with the offsets the workers (and
    /// `extra`, workers just stopped) finished.
    fn commit_transaction(
        &self,
        consumer: &BaseConsumer<RouterContext>,
        extra: &[&Worker],
    ) -> Result<(), TxnError> {
        let Some(txn) = &self.transactions else {
            return Ok(());
        };
        let _held = txn.gate.write().unwrap_or_else(PoisonError::into_inner);
        // Wait for every output — but not for ones that will never be
        // acknowledged: once one failed, the transaction must abort.
        let failed = |workers: &HashMap<(String, i32), Worker>| {
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
        let deadline = std::time::Instant::now() + self.drain_timeout;
        while self.producer.flush(Duration::from_millis(10)).is_err() {
            if let Some(error) = failed(&self.workers()) {
                return Err(error);
            }
            if std::time::Instant::now() > deadline {
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
        let result = txn.commit(&self.producer, &tpl, consumer.group_metadata().as_ref());
        if result.is_ok() {
            self.metrics.transaction("committed");
            self.refused.committed();
        }
        result
    }

    /// Exactly-once: what to do after a transaction failed — abort and
    /// route again from the committed offsets, or stop for good.
    fn transaction_failed(&self, consumer: &BaseConsumer<RouterContext>, error: &TxnError) {
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
                let mut stopped: Vec<Worker> = workers.drain().map(|(_, w)| w).collect();
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
    fn rewind(
        &self,
        consumer: &BaseConsumer<RouterContext>,
        partitions: &[(String, i32)],
    ) -> Result<(), KafkaError> {
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

    /// The router cannot go on: say why, and stop.
    fn stop_for_good(&self, reason: &str) {
        tracing::error!(reason, "the router stops: it cannot go on");
        self.status.set_stopping();
        *self.fatal.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
    }

    fn fatal(&self) -> Option<String> {
        self.fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the workers of `partitions` (all if `None`), waits for their
    /// outputs and commits what they finished.
    fn drain(
        &self,
        consumer: &BaseConsumer<RouterContext>,
        partitions: Option<&TopicPartitionList>,
    ) {
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
            let extra: Vec<&Worker> = stopped.iter().map(|(_, w)| w).collect();
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
}

struct RouterContext {
    shared: Arc<Shared>,
}

impl ClientContext for RouterContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        kafka::client_log("consumer", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(client = "consumer", %error, "{reason}");
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let shared = &self.shared;
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        shared.status.set_broker_up(up);
        shared.metrics.set_broker_up(up);
        let workers = shared.workers();
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
                shared
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
                self.shared.drain(consumer, Some(tpl));
            }
            Rebalance::Assign(tpl) => {
                // Before librdkafka starts fetching them: each partition's
                // records go to its worker's queue from the first on.
                let mut workers = self.shared.workers();
                for elem in tpl.elements() {
                    let key = (elem.topic().to_owned(), elem.partition());
                    if workers.contains_key(&key) {
                        continue;
                    }
                    if let Some(worker) = self.shared.spawn_worker(&key.0, key.1) {
                        workers.insert(key, worker);
                    }
                }
                self.shared.set_assigned(workers.len());
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
fn stop_all(mut workers: Vec<&mut Worker>) {
    for worker in &workers {
        worker.signal_stop();
    }
    for worker in &mut workers {
        worker.stop();
    }
}

fn poll_loop(consumer: &BaseConsumer<RouterContext>, shared: &Shared, stop: &AtomicBool) {
    // Partitions whose records came to the consumer's queue instead of a
    // worker's (see `stray`), once logged.
    let mut logged: Vec<(String, i32)> = Vec::new();
    shared.status.set_consumer_running(true);
    while !stop.load(Ordering::Acquire) && shared.fatal().is_none() {
        shared.status.polled();
        let mut wait = POLL_WAIT;
        if let Some(txn) = &shared.transactions {
            if txn.due()
                && let Err(e) = shared.commit_transaction(consumer, &[])
            {
                shared.transaction_failed(consumer, &e);
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
        shared.store_finished(consumer, shared.workers().values());
    }
    shared.drain(consumer, None);
    consumer.unsubscribe();
    shared.status.set_consumer_running(false);
    tracing::info!("router stopped");
}

/// A record that came to the consumer's queue: its partition has no queue
/// of its own (`spawn_worker` said why), so no worker routes it. It is not
/// routed and nothing of its partition is committed; the partition is
/// paused until it is assigned again.
fn stray(
    consumer: &BaseConsumer<RouterContext>,
    message: &BorrowedMessage<'_>,
    logged: &mut Vec<(String, i32)>,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_lines_are_limited_per_second_and_the_rest_reported_once() {
        let start = std::time::Instant::now();
        let mut window = LogWindow::new(start);
        let admitted = (0..100).filter(|_| window.admit(start).0).count();
        assert_eq!(admitted, FAILURE_LOG_BURST as usize);
        let next = start + Duration::from_secs(1);
        assert_eq!(
            window.admit(next),
            (true, 100 - u64::from(FAILURE_LOG_BURST))
        );
        assert_eq!(window.admit(next), (true, 0), "reported once");
    }
}
