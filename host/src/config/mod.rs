//! The router's configuration file (TOML), parsed and validated.
//!
//! Every field is documented in `docs/config.md`. Errors name the file and
//! the field: `router.toml: routes[0] ('orders'): ...`.
//!
//! - here: the file as a whole ([`RouterConfig`]), loading, and the checks
//!   across its sections; `[shutdown]` and `[http]`;
//! - `kafka`: `[kafka]`, and the librdkafka properties Switchyard fixes or
//!   guards, with their reasons;
//! - `route`: `[[routes]]` with their limits, retries and failure policy,
//!   and the checks between routes (where outputs may reach).

mod kafka;
mod route;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use self::kafka::{Delivery, KafkaConfig, Property};
use self::kafka::{FIXED_CONSUMER, GUARDED_PRODUCER};
pub use self::route::{
    FailurePolicy, LimitsConfig, OnFailure, RecordFormat, RetryConfig, RolloutConfig, RolloutMode,
    RouteConfig, wildcard_match,
};
use self::route::{MIN_OUTPUT_BYTES, default_max_output_bytes};

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
    /// How the router routes (its workers).
    #[serde(default)]
    pub router: RouterTable,
    /// Where schemas come from (routes with `value_format` or
    /// `key_format` = "schema-registry").
    pub schemas: Option<SchemasConfig>,
    /// Where the file was read from (set by [`RouterConfig::load`]).
    #[serde(skip)]
    pub source: PathBuf,
}

/// The `[schemas]` table: a directory of schemas by ID, a registry, or
/// both (the directory is read first).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemasConfig {
    /// A directory of schemas by ID (relative to the config file): see
    /// `docs/config.md` for its layout.
    pub dir: Option<PathBuf>,
    /// A Confluent-compatible schema registry.
    pub registry: Option<RegistryConfig>,
    /// How long a subject's latest version (what a plugin writes with when
    /// it names a subject) is used before it is asked for again, in
    /// milliseconds; the one known is used while it is.
    #[serde(default = "default_subject_ttl_ms")]
    pub subject_ttl_ms: u64,
}

const fn default_subject_ttl_ms() -> u64 {
    300_000
}

/// The `[schemas.registry]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `http(s)://host:port[/path]`.
    pub url: String,
    /// HTTP basic authentication's user (Confluent Cloud: the API key).
    pub username: Option<String>,
    /// The environment variable that holds the password (or API secret):
    /// secrets stay out of the file.
    pub password_env: Option<String>,
    /// The environment variable that holds a bearer token.
    pub bearer_token_env: Option<String>,
    /// PEM file of the certificate authorities to trust (default: the
    /// system's).
    pub ca_file: Option<PathBuf>,
    /// PEM file of a client certificate (mutual TLS), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's PKCS#8 key.
    pub key_file: Option<PathBuf>,
    /// How long one request may take, connection included, in
    /// milliseconds.
    #[serde(default = "default_registry_timeout_ms")]
    pub timeout_ms: u64,
}

const fn default_registry_timeout_ms() -> u64 {
    5_000
}

impl RegistryConfig {
    /// The client settings, with secrets read from the environment.
    ///
    /// # Errors
    /// The field at fault and why: a secret's variable unset, a user
    /// without a password, both kinds of credentials, half a client
    /// certificate.
    pub fn settings(&self) -> Result<crate::schema::registry::RegistrySettings, (String, String)> {
        use crate::schema::registry::{Auth, RegistrySettings};
        let secret = |field: &str, var: &str| {
            std::env::var(var).map_err(|_| {
                (
                    format!("schemas.registry.{field}"),
                    format!("the environment variable '{var}' is not set"),
                )
            })
        };
        let auth = match (&self.username, &self.password_env, &self.bearer_token_env) {
            (None, None, None) => Auth::None,
            (Some(username), Some(var), None) => Auth::Basic {
                username: username.clone(),
                password: secret("password_env", var)?,
            },
            (None, None, Some(var)) => Auth::Bearer(secret("bearer_token_env", var)?),
            (Some(_), None, None) | (None, Some(_), None) => {
                return Err((
                    "schemas.registry".to_owned(),
                    "basic authentication needs both username and password_env".to_owned(),
                ));
            }
            _ => {
                return Err((
                    "schemas.registry".to_owned(),
                    "give either username and password_env, or bearer_token_env, not both"
                        .to_owned(),
                ));
            }
        };
        let client_cert = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => {
                return Err((
                    "schemas.registry".to_owned(),
                    "a client certificate needs both cert_file and key_file".to_owned(),
                ));
            }
        };
        if self.timeout_ms == 0 {
            return Err((
                "schemas.registry.timeout_ms".to_owned(),
                "must be positive".to_owned(),
            ));
        }
        Ok(RegistrySettings {
            url: self.url.clone(),
            auth,
            ca_file: self.ca_file.clone(),
            client_cert,
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}

/// The `[router]` table.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterTable {
    /// Threads that route records, each many partitions; by default the
    /// cores the process may use.
    pub workers: Option<usize>,
}

/// The most workers a router may be given: far more than cores any
/// machine has, far fewer than partitions a topic may have.
pub const MAX_WORKERS: usize = 256;

impl RouterTable {
    /// How many workers route: [`RouterTable::workers`], else the cores
    /// the process may use.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
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
    /// The environment variable holding the token that the endpoints which
    /// change the router's state (pause, resume) require; those endpoints
    /// are off without it (or `control_token_file`).
    pub control_token_env: Option<String>,
    /// A file holding that token (a mounted secret, say), readable by the
    /// router's user only.
    pub control_token_file: Option<PathBuf>,
}

/// The shortest control token taken: guessing one must not be practical.
pub const MIN_CONTROL_TOKEN_BYTES: usize = 16;

impl HttpConfig {
    /// The control token (`None`: the control endpoints are off), or the
    /// field at fault and why.
    pub fn control_token(&self) -> Result<Option<String>, (String, String)> {
        let (field, place, token) = match (&self.control_token_env, &self.control_token_file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err((
                    "http.control_token_file".to_owned(),
                    "give either control_token_env or control_token_file, not both".to_owned(),
                ));
            }
            (Some(var), None) => (
                "http.control_token_env",
                format!("'{var}'"),
                std::env::var(var)
                    .map_err(|_| format!("the environment variable '{var}' is not set")),
            ),
            (None, Some(file)) => (
                "http.control_token_file",
                format!("'{}'", file.display()),
                read_secret_file(file),
            ),
        };
        let token = token.map_err(|why| (field.to_owned(), why))?;
        let token = token.trim().to_owned();
        if token.len() < MIN_CONTROL_TOKEN_BYTES {
            return Err((
                field.to_owned(),
                format!(
                    "the token in {place} is {} bytes: use at least {MIN_CONTROL_TOKEN_BYTES} random ones",
                    token.len()
                ),
            ));
        }
        Ok(Some(token))
    }
}

/// The contents of a file holding a secret, which only its owner may read.
fn read_secret_file(file: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt as _;
    let shown = file.display();
    let meta = std::fs::metadata(file).map_err(|e| format!("'{shown}': {e}"))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "'{shown}' may be read by others (mode {:o}): make it readable by its owner only (chmod 600)",
            meta.mode() & 0o777
        ));
    }
    std::fs::read_to_string(file).map_err(|e| format!("'{shown}': {e}"))
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
            control_token_env: None,
            control_token_file: None,
        }
    }
}

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
            if let Some(rollout) = &mut route.rollout
                && rollout.candidate.is_relative()
            {
                rollout.candidate = base.join(&rollout.candidate);
            }
        }
        if let Some(file) = &mut config.http.control_token_file
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
        if let Some(schemas) = &mut config.schemas {
            let registry = schemas.registry.as_mut();
            let files = registry
                .map(|r| [&mut r.ca_file, &mut r.cert_file, &mut r.key_file])
                .into_iter()
                .flatten();
            for path in std::iter::once(&mut schemas.dir).chain(files).flatten() {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
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
        if let Err((field, why)) = self.http.control_token() {
            return Err(self.invalid(field, why));
        }
        if let Some(workers) = self.router.workers
            && !(1..=MAX_WORKERS).contains(&workers)
        {
            return Err(self.invalid("router.workers", format!("must be from 1 to {MAX_WORKERS}")));
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
            self.validate_rollout(&at, route)?;
            if route.uses_schemas() && self.schemas.is_none() {
                let field = if route.value_format == RecordFormat::SchemaRegistry {
                    "value_format"
                } else {
                    "key_format"
                };
                return Err(self.invalid(
                    format!("{at}.{field}"),
                    "\"schema-registry\" needs a [schemas] table (a dir, a registry, or both)",
                ));
            }
            if route.register_schemas && self.schemas.as_ref().is_none_or(|s| s.registry.is_none())
            {
                return Err(self.invalid(
                    format!("{at}.register_schemas"),
                    "registering schemas needs a registry ([schemas.registry])",
                ));
            }
        }
        self.validate_schemas()?;
        self.validate_reach()
    }

    /// `[schemas]`: a source, and one that can be used.
    fn validate_schemas(&self) -> Result<(), ConfigError> {
        let Some(schemas) = &self.schemas else {
            return Ok(());
        };
        if schemas.dir.is_none() && schemas.registry.is_none() {
            return Err(self.invalid("schemas", "give a dir, a registry, or both"));
        }
        if schemas.subject_ttl_ms == 0 {
            return Err(self.invalid("schemas.subject_ttl_ms", "must be positive"));
        }
        if let Some(dir) = &schemas.dir
            && let Err(e) = crate::schema::dir::SchemaDir::open(dir)
        {
            return Err(self.invalid("schemas.dir", format!("'{}': {}", dir.display(), e.reason)));
        }
        if let Some(registry) = &schemas.registry {
            let settings = registry
                .settings()
                .map_err(|(field, message)| self.invalid(field, message))?;
            crate::schema::registry::Registry::new(&settings).map_err(|(field, message)| {
                self.invalid(format!("schemas.registry.{field}"), message)
            })?;
        }
        Ok(())
    }
}
