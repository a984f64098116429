//! `[[routes]]`: a route's sources, plugin, targets, limits, retries and
//! failure policy, and the checks between routes: where outputs may reach.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Property, RouterConfig};
use crate::plugin::Limits;

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
    /// How the source records' values are written.
    #[serde(default)]
    pub value_format: RecordFormat,
    /// How the source records' keys are written.
    #[serde(default)]
    pub key_format: RecordFormat,
    /// Whether the plugin may register new schemas in the registry (when
    /// it writes a value with a schema of its own). Off by default: a
    /// route writes with the schemas the registry already has.
    #[serde(default)]
    pub register_schemas: bool,
    /// A candidate version rolled out beside the live one.
    pub rollout: Option<RolloutConfig>,
}

/// The `value_format` and `key_format` fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordFormat {
    /// Bytes the router does not read: handed to the plugin as they are.
    #[default]
    Bytes,
    /// A schema registry's wire format (Avro, Protobuf or JSON Schema
    /// behind a magic byte and a schema ID): each one is checked against
    /// its schema (from `[schemas]`) before the plugin sees it, a record
    /// that does not match fails (kind `schema`), and the plugin can read
    /// it decoded. A null one (a tombstone) is not checked.
    SchemaRegistry,
}

impl RouteConfig {
    /// Whether the route reads its records by schema (a key or value in a
    /// schema registry's wire format).
    #[must_use]
    pub fn uses_schemas(&self) -> bool {
        self.value_format == RecordFormat::SchemaRegistry
            || self.key_format == RecordFormat::SchemaRegistry
    }
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

/// A route's `[routes.rollout]` table: a candidate plugin version tried
/// beside the live one (in its shadow, or on a share of the partitions)
/// before it routes everything.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// The candidate's `.wasm` file, relative to the config file. Watched
    /// like the plugin: a new file starts a new rollout, and removing it
    /// ends the one running.
    pub candidate: PathBuf,
    /// How the candidate is tried.
    #[serde(default)]
    pub mode: RolloutMode,
    /// Canary: how many of each source topic's partitions (the lowest
    /// numbered) the candidate routes at first (1 if not set).
    pub canary_partitions: Option<u32>,
    /// Canary: partitions added to the candidate's share at each step of
    /// the policy (0: only an operator widens it).
    #[serde(default)]
    pub step_partitions: u32,
    /// Canary: seconds between two steps, each taken only if the
    /// candidate is healthy.
    #[serde(default = "default_step_seconds")]
    pub step_seconds: u64,
    /// Shadow: where the records whose decisions differ are written (a
    /// JSON description of both decisions), a bounded sample of them.
    pub shadow_topic: Option<String>,
    /// Promote once the candidate has taken this many records (and
    /// `promote_after_seconds` have passed, if set) while healthy. Neither
    /// set: only an operator promotes.
    pub promote_after_records: Option<u64>,
    /// Promote once the rollout has run this long (and taken
    /// `promote_after_records`, if set) while healthy.
    pub promote_after_seconds: Option<u64>,
    /// Healthy: the candidate's failure rate (records failed for good:
    /// traps, time-outs, rejects, invalid outputs) is at most the live
    /// version's plus this. Past it, the candidate is rolled back.
    #[serde(default = "default_max_failure_rate_increase")]
    pub max_failure_rate_increase: f64,
    /// Shadow: promotion also needs the share of records whose decisions
    /// differ from the live version's to be at most this.
    #[serde(default)]
    pub max_difference_rate: f64,
    /// Records the candidate takes before its failure rate is judged.
    #[serde(default = "default_min_records")]
    pub min_records: u64,
    /// Whether an unhealthy candidate is rolled back without an operator.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
}

/// The `rollout.mode` field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutMode {
    /// The candidate routes a share of the partitions (whole partitions:
    /// their order holds), the live version the rest.
    #[default]
    Canary,
    /// The candidate sees the records the live version routes, in its own
    /// instances; its decisions are compared with the live version's and
    /// nothing of it is produced (but to `shadow_topic`).
    Shadow,
}

const fn default_step_seconds() -> u64 {
    60
}

const fn default_max_failure_rate_increase() -> f64 {
    0.01
}

const fn default_min_records() -> u64 {
    100
}

const fn default_true() -> bool {
    true
}

impl RolloutConfig {
    /// Whether a policy promotes the candidate.
    #[must_use]
    pub fn promotes(&self) -> bool {
        self.promote_after_records.is_some() || self.promote_after_seconds.is_some()
    }
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
pub(super) const MIN_OUTPUT_BYTES: u64 = 8192;

const fn default_max_outputs() -> u32 {
    Limits::DEFAULT_MAX_OUTPUTS as u32
}

/// librdkafka's own default `message.max.bytes`: a larger output would be
/// refused by the producer anyway.
pub(super) const fn default_max_output_bytes() -> u64 {
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

impl RouterConfig {
    /// Outputs may not reach a dead-letter topic (a plugin could forge
    /// failure records) nor come back to the route that wrote them, directly
    /// or through other routes (records would be routed forever, each pass
    /// possibly multiplying them). Routes that feed each other in a chain
    /// are fine.
    pub(super) fn validate_reach(&self) -> Result<(), ConfigError> {
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
    pub(super) fn validate_failures(
        &self,
        i: usize,
        route: &RouteConfig,
    ) -> Result<(), ConfigError> {
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

/// Whether two paths name the same file (the same path, or, when both
/// exist, the same file through links).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(a), Ok(b)) if a == b
        )
}

impl RouterConfig {
    /// `[routes.rollout]`: a candidate beside a live plugin, with rates
    /// that are rates.
    pub(super) fn validate_rollout(
        &self,
        at: &str,
        route: &RouteConfig,
    ) -> Result<(), ConfigError> {
        let Some(rollout) = &route.rollout else {
            return Ok(());
        };
        let field = |name: &str| format!("{at}.rollout.{name}");
        match &route.plugin {
            None => {
                return Err(self.invalid(
                    field("candidate"),
                    "the route has no plugin to roll a candidate out beside: set plugin",
                ));
            }
            Some(plugin) if same_file(plugin, &rollout.candidate) => {
                return Err(self.invalid(
                    field("candidate"),
                    format!(
                        "'{}' is the route's plugin file: the candidate is another file",
                        plugin.display()
                    ),
                ));
            }
            Some(_) => {}
        }
        if rollout.canary_partitions == Some(0) {
            return Err(self.invalid(field("canary_partitions"), "must be at least 1"));
        }
        if rollout.step_seconds == 0 {
            return Err(self.invalid(field("step_seconds"), "must be at least 1"));
        }
        if rollout.min_records == 0 {
            return Err(self.invalid(field("min_records"), "must be at least 1"));
        }
        for (name, rate) in [
            (
                "max_failure_rate_increase",
                rollout.max_failure_rate_increase,
            ),
            ("max_difference_rate", rollout.max_difference_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(self.invalid(field(name), "must be from 0 to 1 (a share of records)"));
            }
        }
        if rollout.mode == RolloutMode::Canary {
            for (name, set) in [
                ("shadow_topic", rollout.shadow_topic.is_some()),
                ("max_difference_rate", rollout.max_difference_rate > 0.0),
            ] {
                if set {
                    return Err(self.invalid(
                        field(name),
                        "applies to mode = \"shadow\" only: a canary's outputs are produced, not compared",
                    ));
                }
            }
        }
        if rollout.mode == RolloutMode::Shadow {
            for (name, set) in [
                ("canary_partitions", rollout.canary_partitions.is_some()),
                ("step_partitions", rollout.step_partitions > 0),
            ] {
                if set {
                    return Err(self.invalid(
                        field(name),
                        "applies to mode = \"canary\" only: a shadow candidate sees every partition",
                    ));
                }
            }
        }
        if let Some(topic) = &rollout.shadow_topic {
            if topic.trim().is_empty() {
                return Err(self.invalid(field("shadow_topic"), "must not be empty"));
            }
            for other in &self.routes {
                let why = if other.source_topics.contains(topic) {
                    "a source"
                } else if other.dead_letter_topic.as_ref() == Some(topic) {
                    "the dead-letter topic"
                } else if other.allows(topic) {
                    "an allowed target"
                } else {
                    continue;
                };
                return Err(self.invalid(
                    field("shadow_topic"),
                    format!(
                        "'{topic}' is {why} of route '{}': the shadow topic holds only the router's comparisons",
                        other.name
                    ),
                ));
            }
        }
        Ok(())
    }
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
