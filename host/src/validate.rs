//! `switchyard validate`: what `switchyard run` checks before it consumes
//! anything, without consuming: the configuration, every route's plugin
//! compiled, checked against the contract and `init`-ed with the route's
//! configuration and limits, and (with a broker) the topics the routes
//! read and write. For CI pipelines that change routing rules.
//!
//! Every problem found is reported, one line each, naming the file, the
//! route and the field, topic or plugin at fault; a configuration that does
//! not parse or validate stops there (the rest depends on it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{RouteConfig, RouterConfig};
use crate::kafka;
use crate::offline::GivenTopics;
use crate::plugin::{Plugin, PluginEngine};
use crate::route::{Route, Topics as _};

/// How long the cluster's metadata may take to arrive (`--broker`).
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What validation found.
#[derive(Debug, Default)]
pub struct Report {
    /// What was checked and found good, one line each.
    pub checked: Vec<String>,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
}

impl Report {
    fn problem(&mut self, config: &Path, what: impl std::fmt::Display) {
        self.problems.push(format!("{}: {what}", config.display()));
    }
}

/// Validates the configuration file at `path` as `switchyard run` would
/// before consuming; with `broker`, also reads the cluster's topics (the
/// only network access).
#[must_use]
pub fn validate(path: &Path, engine: &PluginEngine, broker: bool) -> Report {
    let mut report = Report::default();
    let config = match RouterConfig::load(path) {
        Ok(config) => config,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    report.checked.push(format!(
        "{}: {} route{}",
        path.display(),
        config.routes.len(),
        if config.routes.len() == 1 { "" } else { "s" }
    ));
    let topics = Arc::new(if broker {
        match cluster_topics(&config) {
            Ok(counts) => {
                report.checked.push(format!(
                    "kafka at '{}': {} topics",
                    config.kafka.bootstrap_servers,
                    counts.len()
                ));
                GivenTopics(counts)
            }
            Err(e) => {
                report.problem(
                    path,
                    format!(
                        "cannot reach Kafka at '{}' (kafka.bootstrap_servers): {e}",
                        config.kafka.bootstrap_servers
                    ),
                );
                return report;
            }
        }
    } else {
        GivenTopics(HashMap::new())
    });
    if broker {
        for route in &config.routes {
            check_topics(path, route, &topics, &mut report);
        }
    }
    let schemas = match &config.schemas {
        Some(schemas) => match crate::router::schema_store(schemas) {
            Ok(store) => Some(Arc::new(store)),
            Err(e) => {
                report.problem(path, format!("schemas: {e}"));
                None
            }
        },
        None => None,
    };
    let mut loaded: HashMap<PathBuf, Option<Plugin>> = HashMap::new();
    for route_config in &config.routes {
        let Some(file) = &route_config.plugin else {
            report.checked.push(format!(
                "route '{}': no plugin (records forwarded unchanged)",
                route_config.name
            ));
            continue;
        };
        let plugin = loaded
            .entry(file.clone())
            .or_insert_with(|| match engine.load(file) {
                Ok(plugin) => Some(plugin),
                Err(e) => {
                    report.problem(path, format!("route '{}': {e}", route_config.name));
                    None
                }
            })
            .clone();
        let Some(plugin) = plugin else {
            continue;
        };
        let version = plugin.version().to_owned();
        let mut route = Route::new(route_config.clone(), Some(plugin), topics.clone());
        if let Some(schemas) = &schemas {
            route = route.with_schemas(schemas.clone());
        }
        let route = Arc::new(route);
        match route.instance() {
            Ok(_) => report.checked.push(format!(
                "route '{}': plugin {} (version {version}): init ok",
                route_config.name,
                file.display()
            )),
            Err(e) => report.problem(path, format!("route '{}': {e}", route_config.name)),
        }
        if let Some(rollout) = &route_config.rollout {
            check_candidate(path, &route, &rollout.candidate, engine, &mut report);
        }
    }
    report
}

/// Whether a rollout's candidate, if its file is there, would start: what
/// the router checks before it tries one.
fn check_candidate(
    path: &Path,
    route: &Route,
    file: &Path,
    engine: &PluginEngine,
    report: &mut Report,
) {
    let name = route.name();
    if !file.exists() {
        report.checked.push(format!(
            "route '{name}': rollout candidate {} not there (no rollout until it is)",
            file.display()
        ));
        return;
    }
    match engine
        .load(file)
        .and_then(|plugin| route.instantiate(&plugin).map(|_| plugin))
    {
        Ok(plugin) => report.checked.push(format!(
            "route '{name}': rollout candidate {} (version {}): init ok",
            file.display(),
            plugin.version()
        )),
        Err(e) => report.problem(path, format!("route '{name}': rollout candidate: {e}")),
    }
}

/// The partition count of every topic of the cluster `config` names.
fn cluster_topics(config: &RouterConfig) -> Result<HashMap<String, u32>, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let client: BaseConsumer = kafka::consumer_config(&config.kafka)
        .create()
        .map_err(|e| e.to_string())?;
    let metadata = client
        .fetch_metadata(None, METADATA_TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok(kafka::partition_counts(&metadata))
}

/// Whether the topics `route` reads and writes exist on the cluster.
fn check_topics(path: &Path, route: &RouteConfig, topics: &GivenTopics, report: &mut Report) {
    let mut found = Vec::new();
    let mut named: Vec<(&str, &str)> = route
        .source_topics
        .iter()
        .map(|t| ("source_topics", t.as_str()))
        .collect();
    named.push(("default_target", &route.default_target));
    if let Some(dead) = &route.dead_letter_topic {
        named.push(("dead_letter_topic", dead));
    }
    // Allowed targets without a wildcard name one topic each.
    named.extend(
        route
            .allowed_targets
            .iter()
            .filter(|t| !t.contains('*'))
            .map(|t| ("allowed_targets", t.as_str())),
    );
    for (field, topic) in named {
        match topics.partition_count(topic) {
            Some(count) => found.push(format!("{topic} ({count})")),
            None => {
                let consequence = match field {
                    "source_topics" => "run would wait for it",
                    "allowed_targets" => "outputs to it would fail",
                    _ => "run would refuse to start",
                };
                report.problem(
                    path,
                    format!(
                        "route '{}': {field} '{topic}' does not exist on the cluster ({consequence})",
                        route.name
                    ),
                );
            }
        }
    }
    if !found.is_empty() {
        found.dedup();
        report.checked.push(format!(
            "route '{}': topics (partitions) {}",
            route.name,
            found.join(", ")
        ));
    }
}
