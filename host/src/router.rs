//! The router as a whole: [`start`] assembles it from its configuration
//! (plugins, producer, topic metadata, routes, plugin watcher, HTTP
//! endpoint, the record path) and gives a [`RouterHandle`] to stop it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::KafkaError;

use crate::config::{RouterConfig, SchemasConfig};
use crate::kafka::{self, TopicCache};
use crate::metrics::Metrics;
use crate::pipeline::{self, FailureSink, Pipeline, Producer};
use crate::plugin::{Plugin, PluginEngine, PluginError};
use crate::route::{Route, Topics};
use crate::schema::dir::SchemaDir;
use crate::schema::registry::Registry;
use crate::schema::store::SchemaStore;
use crate::status::Status;

/// How long startup waits for the cluster's metadata.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often partition counts are read again (partitions can be added).
const METADATA_REFRESH: Duration = Duration::from_secs(30);

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
    /// The schema sources cannot be used.
    #[error("schemas: {0}")]
    Schemas(String),
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
    /// Applies the routes' rollout policies.
    rollouts: Option<crate::rollout::Supervisor>,
    /// Replays the routes' records on request.
    replayer: Arc<crate::replay::Replayer>,
    http: Option<crate::http::HttpServer>,
    routes: Vec<Arc<Route>>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    pipeline: Arc<Pipeline>,
}

impl RouterHandle {
    /// Why the router stopped by itself (exactly-once mode, fenced by
    /// another instance with the same transactional id, say), if it did.
    #[must_use]
    pub fn fatal(&self) -> Option<String> {
        self.pipeline.fatal()
    }

    /// Exactly-once mode: the source offsets committed in transactions so
    /// far, by (topic, partition); empty in at-least-once mode.
    #[must_use]
    pub fn transaction_offsets(&self) -> HashMap<(String, i32), i64> {
        self.pipeline.transaction_offsets()
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

    /// The replays started so far (the latest kept).
    #[must_use]
    pub fn replays(&self) -> Vec<Arc<crate::replay::Replay>> {
        self.replayer.replays()
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
        self.stop_rollouts();
    }

    /// Ends the rollouts (their shadow threads with them) and replays, and
    /// what starts them: the file watcher first.
    fn stop_rollouts(&mut self) {
        self.watcher = None;
        self.rollouts = None;
        self.replayer.stop();
        for route in &self.routes {
            route.stop_rollout();
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
        self.stop_rollouts();
    }
}

/// Ends the routes' rollouts when dropped (a router that fails to start
/// after its candidates were loaded), unless disarmed.
struct StopRollouts(Vec<Arc<Route>>);

impl Drop for StopRollouts {
    fn drop(&mut self) {
        for route in &self.0 {
            route.stop_rollout();
        }
    }
}

/// Topic metadata for the routes' checks, from the producer's client.
struct CachedTopics {
    cache: TopicCache,
    producer: Arc<Producer>,
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

/// The schema sources `config` names: its directory, and its registry
/// (fetched from on a runtime of the store's own).
pub(crate) fn schema_store(config: &SchemasConfig) -> Result<SchemaStore, String> {
    let dir = config
        .dir
        .as_deref()
        .map(SchemaDir::open)
        .transpose()
        .map_err(|e| e.to_string())?;
    let ttl = Duration::from_millis(config.subject_ttl_ms);
    let Some(registry) = &config.registry else {
        return Ok(SchemaStore::new(dir, None, None).with_subject_ttl(ttl));
    };
    let settings = registry
        .settings()
        .map_err(|(field, why)| format!("{field}: {why}"))?;
    let registry = Registry::new(&settings)
        .map_err(|(field, why)| format!("schemas.registry.{field}: {why}"))?;
    SchemaStore::with_own_runtime(dir, registry)
        .map(|store| store.with_subject_ttl(ttl))
        .map_err(|e| format!("cannot start the registry client: {e}"))
}

/// Starts routing as `config` says: loads the plugins, connects, joins the
/// consumer group. Errors name what is wrong before anything is consumed.
pub fn start(
    config: &RouterConfig,
    engine: &PluginEngine,
    failures: Arc<dyn FailureSink>,
) -> Result<RouterHandle, StartError> {
    let mut plugins = Vec::new();
    // Routes sharing a plugin file share its compilation (a Python or
    // TypeScript plugin takes seconds to compile).
    let mut loaded: HashMap<&Path, Plugin> = HashMap::new();
    for route in &config.routes {
        let plugin = match &route.plugin {
            None => None,
            Some(path) if let Some(plugin) = loaded.get(path.as_path()) => Some(plugin.clone()),
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
                loaded.insert(path, plugin.clone());
                Some(plugin)
            }
        };
        plugins.push(plugin);
    }

    let kafka_error = |error| StartError::Kafka {
        bootstrap: config.kafka.bootstrap_servers.clone(),
        error,
    };
    let producer =
        Arc::new(Producer::new(&kafka::producer_config(&config.kafka)).map_err(kafka_error)?);
    let topics = Arc::new(CachedTopics {
        cache: TopicCache::new(CONNECT_TIMEOUT),
        producer: producer.clone(),
    });
    topics
        .cache
        .refresh(producer.client())
        .map_err(kafka_error)?;

    let schemas = match &config.schemas {
        Some(schemas) => Some(Arc::new(
            schema_store(schemas).map_err(StartError::Schemas)?,
        )),
        None => None,
    };

    // Shadow candidates' differences are written outside any transaction.
    let shadow_producer = if config
        .routes
        .iter()
        .any(|r| r.rollout.as_ref().is_some_and(|r| r.shadow_topic.is_some()))
    {
        let mut shadow_config = kafka::producer_config(&config.kafka);
        shadow_config.remove("transactional.id");
        Some(Arc::new(
            shadow_config
                .create::<rdkafka::producer::BaseProducer>()
                .map_err(kafka_error)?,
        ))
    } else {
        None
    };

    let mut routes = HashMap::new();
    for (route_config, plugin) in config.routes.iter().zip(plugins) {
        let shadow_topic = route_config
            .rollout
            .as_ref()
            .and_then(|r| r.shadow_topic.as_ref());
        let targets = [
            ("default_target", Some(&route_config.default_target)),
            ("dead_letter_topic", route_config.dead_letter_topic.as_ref()),
            ("rollout.shadow_topic", shadow_topic),
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
        let mut route = Route::new(route_config.clone(), plugin, topics.clone());
        if let Some(schemas) = &schemas {
            route = route.with_schemas(schemas.clone());
        }
        if let Some(producer) = &shadow_producer {
            route = route.with_shadow_producer(producer.clone());
        }
        let route = Arc::new(route);
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
    let mut stop_rollouts = StopRollouts(unique.clone());
    let watcher =
        crate::reload::watch(&unique, engine).map_err(|e| StartError::Watch(e.to_string()))?;
    let rollouts = crate::rollout::supervise(&unique)?;
    let replayer = Arc::new(crate::replay::Replayer::new(config.kafka.clone()));
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status::new(config.statistics_interval()));
    let http = if config.http.enabled {
        let shown = crate::http::Shown {
            routes: Arc::new(unique.clone()),
            reload: Some(watcher.stats.clone()),
            metrics: metrics.clone(),
            status: status.clone(),
            producer: Some(producer.clone()),
            control_token: config.http.control_token().ok().flatten().map(Arc::from),
            replayer: Some(replayer.clone()),
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

    let pipeline = Arc::new(
        Pipeline::new(
            config,
            routes,
            producer,
            failures,
            metrics.clone(),
            status.clone(),
        )
        .map_err(|e| StartError::Transactions(e.to_string()))?,
    );
    let consumer = pipeline::subscribe(&pipeline, &config.kafka).map_err(kafka_error)?;

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
    // From here the handle ends them.
    stop_rollouts.0.clear();
    let mut handle = RouterHandle {
        stop,
        thread: None,
        refresher: Some(refresher),
        watcher: Some(watcher),
        rollouts,
        replayer,
        http,
        routes: unique,
        metrics,
        status,
        pipeline: pipeline.clone(),
    };
    // The consumer loop counts as running from here, not from its thread's
    // first instruction: `/health` asked right after the start must not
    // find it missing. On error the handle's drop stops the refresher
    // again.
    handle.status.set_consumer_running(true);
    let thread = std::thread::Builder::new()
        .name("switchyard-consumer".to_owned())
        .spawn({
            let stop = handle.stop.clone();
            move || pipeline::run(&consumer, &pipeline, &stop)
        });
    match thread {
        Ok(thread) => handle.thread = Some(thread),
        Err(e) => {
            handle.status.set_consumer_running(false);
            return Err(e.into());
        }
    }
    Ok(handle)
}
