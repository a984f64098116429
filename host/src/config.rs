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
    /// The HTTP endpoint; none without an `[http]` table.
    #[serde(default)]
    pub http: Option<HttpConfig>,
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
}

fn default_group_id() -> String {
    "switchyard".to_owned()
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

/// The `[http]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `address:port` to listen on (port 0 picks a free one).
    pub listen: String,
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
}

/// A route's `[routes.limits]` table.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Linear memory per plugin instance, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Wall time per record, in milliseconds.
    #[serde(default = "default_route_timeout_ms")]
    pub route_timeout_ms: u64,
    /// Wall time for the plugin's `init`, in milliseconds.
    #[serde(default = "default_init_timeout_ms")]
    pub init_timeout_ms: u64,
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
        "transactions are not configured through producer properties",
    ),
    (
        "bootstrap.servers",
        &[],
        "set it with kafka.bootstrap_servers",
    ),
];

impl RouterConfig {
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
        }
        Ok(())
    }
}

impl RouteConfig {
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
