//! The router's configuration file (TOML), parsed and validated.
//!
//! Every field is documented in `docs/config.md`. Errors name the file and
//! the field: `router.toml: routes[0] ('orders'): ...`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::plugin::Limits;

/// A configuration file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config '{path}': {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// Not valid TOML, or fields missing, unknown or of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// Parsed, but breaks a rule.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// How to reach Kafka.
    pub kafka: KafkaConfig,
    /// What to route. At least one.
    pub routes: Vec<RouteConfig>,
    /// The HTTP endpoint (health, readiness, metrics, routes).
    #[serde(default)]
    pub http: HttpConfig,
    /// How the router stops.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Where the file was read from (set by [`RouterConfig::load`]).
    #[serde(skip)]
    pub source: PathBuf,
}

/// The `[kafka]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` of the brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Consumer group. Instances with the same group share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// librdkafka consumer properties, passed through.
    #[serde(default)]
    pub consumer: BTreeMap<String, Property>,
    /// librdkafka producer properties, passed through.
    #[serde(default)]
    pub producer: BTreeMap<String, Property>,
    /// At-least-once (the default) or exactly-once.
    #[serde(default)]
    pub delivery: Delivery,
    /// The producer's transactional id in exactly-once mode: stable for
    /// this instance across restarts, unique among instances. Default:
    /// `<group_id>-<hostname>`.
    pub transactional_id: Option<String>,
    /// Exactly-once mode: how often the transaction (outputs and consumed
    /// offsets together) is committed, in milliseconds.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
}

/// The `kafka.delivery` field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Offsets committed after every output is acknowledged; a crash may
    /// route a record again.
    #[default]
    AtLeastOnce,
    /// Outputs and consumed offsets committed in one Kafka transaction;
    /// `read_committed` consumers see each record's outputs once.
    ExactlyOnce,
}

fn default_group_id() -> String {
    "switchyard".to_owned()
}

/// Kafka Streams' choice for exactly-once: short transactions keep the
/// latency `read_committed` readers see low.
const fn default_commit_interval_ms() -> u64 {
    100
}

impl KafkaConfig {
    /// The transactional id in exactly-once mode (none otherwise).
    #[must_use]
    pub fn transactional_id(&self) -> Option<String> {
        if self.delivery != Delivery::ExactlyOnce {
            return None;
        }
        Some(self.transactional_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                .unwrap_or_default();
            let host = host.trim();
            let host = if host.is_empty() { "localhost" } else { host };
            format!("{}-{host}", self.group_id)
        }))
    }
}

/// A librdkafka property value: TOML strings, integers, floats and booleans
/// are all accepted and passed as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Property {
    /// Text.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl std::fmt::Display for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The `[shutdown]` table.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long a stop (and the drain of revoked partitions) may wait for
    /// outputs in flight, in milliseconds.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub timeout_ms: u64,
}

const fn default_shutdown_timeout_ms() -> u64 {
    30_000
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_shutdown_timeout_ms(),
        }
    }
}

impl ShutdownConfig {
    /// [`ShutdownConfig::timeout_ms`] as a duration.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// The `[http]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `address:port` to listen on (port 0 picks a free one).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Whether to serve at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Connections served at once; more are closed as soon as they are
    /// accepted, so that idle clients cannot use up the file descriptors
    /// the Kafka clients need.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (also how
    /// long an idle kept-alive connection stays open), in milliseconds.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
}

/// Enough for probes, a few scrapers and curl, far below the usual
/// 1,024 descriptors a process may have.
const fn default_max_connections() -> usize {
    64
}

/// Probes and scrapers send their headers at once; 5 s is generous.
const fn default_header_timeout_ms() -> u64 {
    5_000
}

/// Loopback: a sidecar's endpoint is for its pod, not the network.
fn default_listen() -> String {
    "127.0.0.1:9180".to_owned()
}

const fn default_true() -> bool {
    true
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            enabled: true,
            max_connections: default_max_connections(),
            header_timeout_ms: default_header_timeout_ms(),
        }
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Topics consumed by this route.
    pub source_topics: Vec<String>,
    /// The plugin's `.wasm` file, relative to the config file. None: records
    /// pass through unchanged to `default_target`.
    pub plugin: Option<PathBuf>,
    /// Where outputs without an explicit topic go.
    pub default_target: String,
    /// Topics (with `*` wildcards) outputs may go to; by default only
    /// `default_target`.
    #[serde(default)]
    pub allowed_targets: Vec<String>,
    /// Passed to the plugin's `init`.
    #[serde(default)]
    pub plugin_config: BTreeMap<String, Property>,
    /// Resource limits of the plugin.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where records the route cannot route go, with their reasons in
    /// headers.
    pub dead_letter_topic: Option<String>,
    /// What a record the route cannot route does; must be said when there
    /// is no `dead_letter_topic` (see [`RouteConfig::failure_policy`]).
    pub on_failure: Option<OnFailure>,
    /// How `retry` answers are retried.
    #[serde(default)]
    pub retry: RetryConfig,
}

/// The `on_failure` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// To the route's `dead_letter_topic`.
    DeadLetter,
    /// Logged and counted; the partition moves on.
    Skip,
    /// The partition waits at the record (nothing past it is committed)
    /// until a new plugin version is swapped in or the router restarts.
    Stop,
}

/// What happens to a record that failed for good, resolved from
/// `dead_letter_topic` and `on_failure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Produce it to this topic, with headers that say why.
    DeadLetter(String),
    /// Log, count, move on.
    Skip,
    /// Hold the partition at the record.
    Stop,
}

/// A route's `[routes.retry]` table: exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Calls of the plugin for one record, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt, in milliseconds.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Each wait is this many times the previous one.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// No wait is longer than this, in milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Each wait is drawn from ±`jitter` × its nominal value (0 to 1).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

const fn default_max_attempts() -> u32 {
    5
}

const fn default_initial_backoff_ms() -> u64 {
    100
}

const fn default_multiplier() -> f64 {
    2.0
}

const fn default_max_backoff_ms() -> u64 {
    10_000
}

const fn default_jitter() -> f64 {
    0.2
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            multiplier: default_multiplier(),
            max_backoff_ms: default_max_backoff_ms(),
            jitter: default_jitter(),
        }
    }
}

impl RetryConfig {
    /// The schedule these settings describe.
    #[must_use]
    pub fn backoff(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff {
            initial: Duration::from_millis(self.initial_backoff_ms),
            multiplier: self.multiplier,
            max: Duration::from_millis(self.max_backoff_ms),
            jitter: self.jitter,
        }
    }
}

/// A route's `[routes.limits]` table.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Linear memory per plugin instance, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Wall time of one plugin call, in milliseconds (a batch that runs
    /// past it is routed again one record per call).
    #[serde(default = "default_route_timeout_ms")]
    pub route_timeout_ms: u64,
    /// Wall time for the plugin's `init`, in milliseconds.
    #[serde(default = "default_init_timeout_ms")]
    pub init_timeout_ms: u64,
    /// Outputs one record may have.
    #[serde(default = "default_max_outputs")]
    pub max_outputs: u32,
    /// Bytes (key, value and headers) one output may have.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
    /// Plugin log lines (`log` calls, stdout and stderr lines) per second,
    /// all the route's instances together; the rest are dropped and
    /// counted.
    #[serde(default = "default_log_lines_per_second")]
    pub log_lines_per_second: u32,
}

const fn default_log_lines_per_second() -> u32 {
    Limits::DEFAULT_LOG_LINES_PER_SECOND
}

/// The smallest `max_output_bytes`: room for a dead-letter record's
/// `dlq-*` headers (`dlq-error` alone may be 4 KiB) with nothing else.
const MIN_OUTPUT_BYTES: u64 = 8192;

const fn default_max_outputs() -> u32 {
    Limits::DEFAULT_MAX_OUTPUTS as u32
}

/// librdkafka's own default `message.max.bytes`: a larger output would be
/// refused by the producer anyway.
const fn default_max_output_bytes() -> u64 {
    1_000_000
}

const fn default_memory_mib() -> u32 {
    (Limits::DEFAULT_MEMORY_BYTES >> 20) as u32
}

const fn default_route_timeout_ms() -> u64 {
    Limits::DEFAULT_ROUTE_TIMEOUT.as_millis() as u64
}

const fn default_init_timeout_ms() -> u64 {
    Limits::DEFAULT_INIT_TIMEOUT.as_millis() as u64
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            memory_mib: default_memory_mib(),
            route_timeout_ms: default_route_timeout_ms(),
            init_timeout_ms: default_init_timeout_ms(),
            max_outputs: default_max_outputs(),
            max_output_bytes: default_max_output_bytes(),
            log_lines_per_second: default_log_lines_per_second(),
        }
    }
}

impl LimitsConfig {
    /// As plugin limits.
    #[must_use]
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: (self.memory_mib as usize) << 20,
            route_timeout: Duration::from_millis(self.route_timeout_ms),
            init_timeout: Duration::from_millis(self.init_timeout_ms),
            max_outputs: self.max_outputs as usize,
        }
    }
}

/// Consumer properties Switchyard sets itself, and why a user may not.
const FIXED_CONSUMER: &[(&str, &str)] = &[
    (
        "enable.auto.offset.store",
        "Switchyard stores each offset only after every output of the record and of all earlier records is acknowledged (at-least-once); automatic storing would commit records that were never produced",
    ),
    ("group.id", "set it with kafka.group_id"),
    ("bootstrap.servers", "set it with kafka.bootstrap_servers"),
];

/// Producer properties that would break a guarantee, with the values that
/// keep it.
const GUARDED_PRODUCER: &[(&str, &[&str], &str)] = &[
    (
        "acks",
        &["all", "-1"],
        "an output is acknowledged only once all in-sync replicas have it; fewer acks could lose records whose offsets are already committed",
    ),
    (
        "request.required.acks",
        &["all", "-1"],
        "an output is acknowledged only once all in-sync replicas have it; fewer acks could lose records whose offsets are already committed",
    ),
    (
        "enable.idempotence",
        &["true"],
        "the idempotent producer keeps retried outputs in order and free of duplicates",
    ),
    (
        "transactional.id",
        &[],
        "set kafka.delivery = \"exactly-once\" (and kafka.transactional_id if the default <group_id>-<hostname> does not suit)",
    ),
    (
        "bootstrap.servers",
        &[],
        "set it with kafka.bootstrap_servers",
    ),
];

impl RouterConfig {
    /// How often librdkafka reports statistics (what readiness and the lag
    /// metrics are computed from).
    #[must_use]
    pub fn statistics_interval(&self) -> Duration {
        let ms = self
            .kafka
            .consumer
            .get("statistics.interval.ms")
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or(crate::kafka::STATISTICS_INTERVAL_MS);
        Duration::from_millis(ms)
    }

    /// Reads, parses and validates `path`; plugin paths become relative to
    /// the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, which came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_owned(),
            },
        })?;
        config.source = path.to_owned();
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        for route in &mut config.routes {
            if let Some(plugin) = &mut route.plugin
                && plugin.is_relative()
            {
                *plugin = base.join(&*plugin);
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(self.invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(self.invalid("kafka.group_id", "must not be empty"));
        }
        for (key, why) in FIXED_CONSUMER {
            if self.kafka.consumer.contains_key(*key) {
                return Err(self.invalid(
                    format!("kafka.consumer.\"{key}\""),
                    format!("cannot be set: {why}"),
                ));
            }
        }
        if let Some(interval) = self.kafka.consumer.get("statistics.interval.ms")
            && interval.to_string().parse::<u64>().is_ok_and(|ms| ms == 0)
        {
            return Err(self.invalid(
                "kafka.consumer.\"statistics.interval.ms\"",
                "cannot be 0: readiness (is a broker reachable?) and the lag metrics come from librdkafka's statistics",
            ));
        }
        if self.kafka.delivery == Delivery::ExactlyOnce {
            for (key, why) in [
                (
                    "enable.auto.commit",
                    "in exactly-once mode offsets are committed in the transaction, with the outputs",
                ),
                (
                    "isolation.level",
                    "in exactly-once mode only committed records are read (read_committed)",
                ),
            ] {
                if self.kafka.consumer.contains_key(key) {
                    return Err(self.invalid(
                        format!("kafka.consumer.\"{key}\""),
                        format!("cannot be set: {why}"),
                    ));
                }
            }
            if self.kafka.commit_interval_ms == 0 {
                return Err(self.invalid("kafka.commit_interval_ms", "must be positive"));
            }
            if self
                .kafka
                .transactional_id
                .as_deref()
                .is_some_and(|id| id.trim().is_empty())
            {
                return Err(self.invalid("kafka.transactional_id", "must not be empty"));
            }
        } else if self.kafka.transactional_id.is_some() {
            return Err(self.invalid(
                "kafka.transactional_id",
                "is only used with kafka.delivery = \"exactly-once\"",
            ));
        }
        if self.shutdown.timeout_ms == 0 {
            return Err(self.invalid("shutdown.timeout_ms", "must be positive"));
        }
        if self.http.max_connections == 0 {
            return Err(self.invalid("http.max_connections", "must be at least 1"));
        }
        if self.http.header_timeout_ms == 0 {
            return Err(self.invalid("http.header_timeout_ms", "must be positive"));
        }
        if self.http.enabled && self.http.listen.trim().is_empty() {
            return Err(self.invalid(
                "http.listen",
                "must not be empty (set http.enabled = false to serve nothing)",
            ));
        }
        for (key, allowed, why) in GUARDED_PRODUCER {
            if let Some(value) = self.kafka.producer.get(*key)
                && !allowed.contains(&value.to_string().as_str())
            {
                return Err(self.invalid(
                    format!("kafka.producer.\"{key}\""),
                    format!("cannot be '{value}': {why}"),
                ));
            }
        }
        if self.routes.is_empty() {
            return Err(self.invalid(
                "routes",
                "no route configured: add at least one [[routes]] table",
            ));
        }
        let mut names = HashMap::new();
        let mut sources: HashMap<&str, &str> = HashMap::new();
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}] ('{}')", route.name);
            if route.name.trim().is_empty() {
                return Err(self.invalid(format!("routes[{i}].name"), "must not be empty"));
            }
            if let Some(first) = names.insert(route.name.as_str(), i) {
                return Err(self.invalid(
                    format!("{at}.name"),
                    format!("route name already used by routes[{first}]"),
                ));
            }
            if route.source_topics.is_empty() {
                return Err(self.invalid(
                    format!("{at}.source_topics"),
                    "must name at least one topic",
                ));
            }
            for topic in &route.source_topics {
                if topic.trim().is_empty() {
                    return Err(self.invalid(
                        format!("{at}.source_topics"),
                        "contains an empty topic name",
                    ));
                }
                if let Some(other) = sources.insert(topic, &route.name) {
                    return Err(self.invalid(
                        format!("{at}.source_topics"),
                        format!("topic '{topic}' is already consumed by route '{other}': a topic belongs to one route"),
                    ));
                }
            }
            if route.default_target.trim().is_empty() {
                return Err(self.invalid(format!("{at}.default_target"), "must not be empty"));
            }
            if route.source_topics.contains(&route.default_target) {
                return Err(self.invalid(
                    format!("{at}.default_target"),
                    format!(
                        "'{}' is also a source of this route: records would loop forever",
                        route.default_target
                    ),
                ));
            }
            if !route.allowed_targets.is_empty() && !route.allows(&route.default_target) {
                return Err(self.invalid(
                    format!("{at}.allowed_targets"),
                    format!(
                        "does not match the route's own default_target '{}'",
                        route.default_target
                    ),
                ));
            }
            if route.plugin.is_none() && !route.plugin_config.is_empty() {
                return Err(self.invalid(
                    format!("{at}.plugin_config"),
                    "is set but the route has no plugin",
                ));
            }
            let limits = &route.limits;
            if limits.memory_mib < 2 {
                return Err(self.invalid(
                    format!("{at}.limits.memory_mib"),
                    "must be at least 2 (a minimal plugin needs about 1.1 MiB)",
                ));
            }
            if limits.route_timeout_ms == 0 || limits.init_timeout_ms == 0 {
                return Err(self.invalid(format!("{at}.limits"), "timeouts must be positive"));
            }
            if limits.max_output_bytes < MIN_OUTPUT_BYTES {
                return Err(self.invalid(
                    format!("{at}.limits.max_output_bytes"),
                    format!("must be at least {MIN_OUTPUT_BYTES}: a dead-letter record, cut to fit, still carries the headers that say why (up to ~5 KiB)"),
                ));
            }
            if limits.max_outputs == 0 {
                return Err(self.invalid(format!("{at}.limits.max_outputs"), "must be at least 1"));
            }
            let producer_max = self
                .kafka
                .producer
                .get("message.max.bytes")
                .and_then(|max| max.to_string().parse::<u64>().ok())
                .unwrap_or(default_max_output_bytes());
            if limits.max_output_bytes > producer_max {
                return Err(self.invalid(
                    format!("{at}.limits.max_output_bytes"),
                    format!("{} is more than kafka.producer.\"message.max.bytes\" ({producer_max}{}): the producer would refuse such outputs; raise that too", limits.max_output_bytes, if self.kafka.producer.contains_key("message.max.bytes") { "" } else { ", librdkafka's default" }),
                ));
            }
            self.validate_failures(i, route)?;
        }
        self.validate_reach()
    }
}

impl RouterConfig {
    /// Outputs may not reach a dead-letter topic (a plugin could forge
    /// failure records) nor come back to the route that wrote them, directly
    /// or through other routes (records would be routed forever, each pass
    /// possibly multiplying them). Routes that feed each other in a chain
    /// are fine.
    fn validate_reach(&self) -> Result<(), ConfigError> {
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}] ('{}')", route.name);
            for other in &self.routes {
                if let Some(dlq) = &other.dead_letter_topic
                    && route.allows(dlq)
                {
                    return Err(self.invalid(
                        format!("{at}.allowed_targets"),
                        format!(
                            "reaches '{dlq}', the dead-letter topic of route '{}': a plugin could write records that look like dead letters; list the targets it may write to instead",
                            other.name
                        ),
                    ));
                }
            }
        }
        // A route feeds another when one of its targets is the other's
        // source; a cycle in that graph is a loop.
        let feeds =
            |from: &RouteConfig, to: &RouteConfig| to.source_topics.iter().any(|t| from.allows(t));
        let n = self.routes.len();
        for start in 0..n {
            // Depth-first from `start`, looking for a way back to it; `path`
            // holds the routes on the way.
            let mut path = vec![start];
            let mut next = vec![0_usize];
            let mut seen = vec![false; n];
            while let (Some(&at), Some(cursor)) = (path.last(), next.last_mut()) {
                let Some(to) = (*cursor..n).find(|&to| {
                    feeds(&self.routes[at], &self.routes[to]) && (to == start || !seen[to])
                }) else {
                    path.pop();
                    next.pop();
                    continue;
                };
                *cursor = to + 1;
                if to == start {
                    return Err(self.loop_error(&path));
                }
                seen[to] = true;
                path.push(to);
                next.push(0);
            }
        }
        Ok(())
    }

    /// The error for routes `cycle` (indexes, in order) that feed each
    /// other in a loop.
    fn loop_error(&self, cycle: &[usize]) -> ConfigError {
        let route = |i: usize| &self.routes[i];
        let first = cycle[0];
        let hops: Vec<String> = cycle
            .iter()
            .enumerate()
            .map(|(k, &from)| {
                let to = cycle.get(k + 1).copied().unwrap_or(first);
                let topic = route(to)
                    .source_topics
                    .iter()
                    .find(|t| route(from).allows(t))
                    .map_or("?", String::as_str);
                format!(
                    "route '{}' may write to '{topic}', a source of route '{}'",
                    route(from).name,
                    route(to).name
                )
            })
            .collect();
        self.invalid(
            format!("routes[{first}] ('{}').allowed_targets", route(first).name),
            format!(
                "{}: records would be routed in a loop; narrow allowed_targets so that no route's outputs come back to it",
                hops.join(", and ")
            ),
        )
    }
}

impl RouterConfig {
    fn validate_failures(&self, i: usize, route: &RouteConfig) -> Result<(), ConfigError> {
        let at = format!("routes[{i}] ('{}')", route.name);
        match (&route.dead_letter_topic, route.on_failure) {
            (None, None) => {
                return Err(self.invalid(
                    at.clone(),
                    "say where a record the route cannot route goes: dead_letter_topic = \"<topic>\", or on_failure = \"skip\" (log, count, move on) or \"stop\" (hold the partition at that record)",
                ));
            }
            (None, Some(OnFailure::DeadLetter)) => {
                return Err(self.invalid(
                    format!("{at}.on_failure"),
                    "is \"dead-letter\" but the route has no dead_letter_topic",
                ));
            }
            (Some(_), Some(policy @ (OnFailure::Skip | OnFailure::Stop))) => {
                return Err(self.invalid(
                    format!("{at}.on_failure"),
                    format!(
                        "is \"{}\" but dead_letter_topic is set: choose one",
                        if policy == OnFailure::Skip {
                            "skip"
                        } else {
                            "stop"
                        }
                    ),
                ));
            }
            (Some(topic), _) => {
                if topic.trim().is_empty() {
                    return Err(
                        self.invalid(format!("{at}.dead_letter_topic"), "must not be empty")
                    );
                }
                if route.source_topics.contains(topic) {
                    return Err(self.invalid(
                        format!("{at}.dead_letter_topic"),
                        format!("'{topic}' is also a source of this route: failed records would come back"),
                    ));
                }
            }
            (None, Some(_)) => {}
        }
        let retry = &route.retry;
        let field = |name: &str| format!("{at}.retry.{name}");
        if retry.max_attempts == 0 {
            return Err(self.invalid(
                field("max_attempts"),
                "must be at least 1 (the first call counts)",
            ));
        }
        if retry.initial_backoff_ms == 0 {
            return Err(self.invalid(field("initial_backoff_ms"), "must be positive"));
        }
        if !(retry.multiplier.is_finite() && retry.multiplier >= 1.0) {
            return Err(self.invalid(field("multiplier"), "must be a number of at least 1"));
        }
        if retry.max_backoff_ms < retry.initial_backoff_ms {
            return Err(self.invalid(
                field("max_backoff_ms"),
                format!(
                    "{} is less than initial_backoff_ms ({})",
                    retry.max_backoff_ms, retry.initial_backoff_ms
                ),
            ));
        }
        if !(0.0..=1.0).contains(&retry.jitter) {
            return Err(self.invalid(field("jitter"), "must be between 0 and 1"));
        }
        Ok(())
    }
}

impl RouteConfig {
    /// What happens to a record that failed for good (validated: exactly
    /// one is configured).
    #[must_use]
    pub fn failure_policy(&self) -> FailurePolicy {
        match (&self.dead_letter_topic, self.on_failure) {
            (Some(topic), _) => FailurePolicy::DeadLetter(topic.clone()),
            (None, Some(OnFailure::Stop)) => FailurePolicy::Stop,
            (None, _) => FailurePolicy::Skip,
        }
    }

    /// Whether outputs may go to `topic`.
    #[must_use]
    pub fn allows(&self, topic: &str) -> bool {
        if self.allowed_targets.is_empty() {
            return topic == self.default_target;
        }
        self.allowed_targets
            .iter()
            .any(|pattern| wildcard_match(pattern, topic))
    }

    /// The plugin configuration as the plugin's `init` receives it.
    #[must_use]
    pub fn plugin_config_pairs(&self) -> Vec<(String, String)> {
        self.plugin_config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }
}

/// `*` matches any run of characters (also none); everything else matches
/// itself.
#[must_use]
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_shell_globs_without_classes() {
        assert!(wildcard_match("orders-*", "orders-eu"));
        assert!(wildcard_match("orders-*", "orders-"));
        assert!(!wildcard_match("orders-*", "order-eu"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard_match("a*b*c", "a-x-c-y-b"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exact2"));
        assert!(wildcard_match("*-dlq", "orders-dlq"));
        assert!(!wildcard_match("ab*ba", "aba"));
    }
}
