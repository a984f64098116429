//! A configured route at run time: its plugin, and the checks every output
//! passes before it is produced.

use std::sync::Arc;

use crate::config::RouteConfig;
use crate::plugin::{
    FailureKind, PartitionCounts, Plugin, PluginError, PluginInstance, RouteContext, RouteFailure,
};
use crate::record::{Output, SourceRecord};

/// Looks topics up for the route's checks and the plugin's questions.
pub trait Topics: Send + Sync {
    /// Partition count of `topic`, refreshing what is known if it is missing.
    fn partition_count(&self, topic: &str) -> Option<u32>;

    /// Partition count of `topic` after a refresh (partitions may have been
    /// added since the last one).
    fn refreshed_partition_count(&self, topic: &str) -> Option<u32>;
}

/// A route ready to make workers.
pub struct Route {
    /// Its configuration.
    pub config: RouteConfig,
    plugin: Option<Plugin>,
    topics: Arc<dyn Topics>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.config.name)
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

/// What the plugin may ask about: only topics the route may write to.
struct AllowedTopics {
    config: RouteConfig,
    topics: Arc<dyn Topics>,
}

impl PartitionCounts for AllowedTopics {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        if self.config.allows(topic) {
            self.topics.partition_count(topic)
        } else {
            None
        }
    }
}

impl Route {
    /// A route with its (already loaded) plugin.
    pub fn new(config: RouteConfig, plugin: Option<Plugin>, topics: Arc<dyn Topics>) -> Self {
        Self {
            config,
            plugin,
            topics,
        }
    }

    /// The route's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The plugin, if the route has one.
    #[must_use]
    pub fn plugin(&self) -> Option<&Plugin> {
        self.plugin.as_ref()
    }

    /// A new router for one partition worker (with its own plugin instance).
    pub fn instance(&self) -> Result<RouteInstance, PluginError> {
        let plugin = match &self.plugin {
            None => None,
            Some(plugin) => {
                let context = RouteContext {
                    default_target: self.config.default_target.clone(),
                    partitions: Arc::new(AllowedTopics {
                        config: self.config.clone(),
                        topics: self.topics.clone(),
                    }),
                };
                Some(plugin.instantiate(
                    &self.config.plugin_config_pairs(),
                    context,
                    self.config.limits.limits(),
                )?)
            }
        };
        Ok(RouteInstance {
            plugin,
            config: self.config.clone(),
            topics: self.topics.clone(),
        })
    }
}

/// Routes the records of one partition.
pub struct RouteInstance {
    plugin: Option<PluginInstance>,
    config: RouteConfig,
    topics: Arc<dyn Topics>,
}

impl std::fmt::Debug for RouteInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteInstance")
            .field("route", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// An output that passed the route's checks, with its target resolved.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Target topic.
    pub topic: String,
    /// The output.
    pub output: Output,
}

impl RouteInstance {
    /// The plugin's decision for `record` (passthrough without a plugin),
    /// with every output checked: topic allowed and existing, partition in
    /// range.
    pub fn route(&mut self, record: &Arc<SourceRecord>) -> Result<Vec<Routed>, RouteFailure> {
        let outputs = match &mut self.plugin {
            Some(plugin) => plugin.route(record)?,
            None => vec![Output::forward(record.clone())],
        };
        outputs
            .into_iter()
            .enumerate()
            .map(|(i, output)| self.check(i, output))
            .collect()
    }

    fn check(&self, i: usize, output: Output) -> Result<Routed, RouteFailure> {
        let invalid = |message: String| {
            RouteFailure::new(FailureKind::Invalid, format!("output {i}: {message}"))
        };
        let topic = output
            .topic
            .clone()
            .unwrap_or_else(|| self.config.default_target.clone());
        if !self.config.allows(&topic) {
            return Err(invalid(format!(
                "topic '{topic}' is not an allowed target of route '{}'",
                self.config.name
            )));
        }
        let Some(count) = self.topics.partition_count(&topic) else {
            return Err(invalid(format!("topic '{topic}' does not exist")));
        };
        if let Some(p) = output.partition {
            let out_of_range = |count: u32| p < 0 || p.unsigned_abs() >= count;
            // The cache may predate partitions added since: look again
            // before refusing.
            if out_of_range(count) {
                let fresh = self
                    .topics
                    .refreshed_partition_count(&topic)
                    .unwrap_or(count);
                if out_of_range(fresh) {
                    return Err(invalid(format!(
                        "partition {p} is out of range for topic '{topic}' ({fresh} partitions)"
                    )));
                }
            }
        }
        Ok(Routed { topic, output })
    }
}
