//! A configured route at run time: its plugin, and the checks every output
//! passes before it is produced.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use smallvec::SmallVec;

use crate::config::{FailurePolicy, RouteConfig};
use crate::plugin::{
    FailureKind, Interrupt, LogBudget, PartitionCounts, Plugin, PluginError, PluginInstance,
    RouteContext, RouteFailure,
};
use crate::record::{Output, SourceRecord};
use crate::rollout::{Rollout, RolloutLog};
use crate::schema::check::RecordSchemas;
use crate::schema::store::SchemaStore;
use crate::stats::RouteStats;

/// Headers one output may have: librdkafka refuses to parse the headers
/// of a consumed record with more (its consumers, Switchyard's own among
/// them, would see none).
pub const MAX_OUTPUT_HEADERS: usize = 100_000;

/// Earlier plugin versions a route keeps for a rollback (each holds its
/// compiled code: tens of MiB for an interpreted plugin).
pub const KEPT_VERSIONS: usize = 3;

/// Whether `output` can be produced at all: at most [`MAX_OUTPUT_HEADERS`]
/// headers, and at most `max_bytes` (the route's
/// `limits.max_output_bytes`) counted as librdkafka counts it, headers and
/// framing included. The one size rule of every output: a plugin's (in
/// `switchyard run` and `switchyard route` alike, see
/// [`RouteInstance::route`]) and a dead-letter record, which is cut to fit.
pub fn fits(output: &Output, max_bytes: u64) -> Result<(), String> {
    let headers = output.headers().count();
    if headers > MAX_OUTPUT_HEADERS {
        return Err(format!(
            "{headers} headers: consumers built on librdkafka (Switchyard among them) read no headers of a record with more than {MAX_OUTPUT_HEADERS}"
        ));
    }
    let size = output.wire_size() as u64;
    if size > max_bytes {
        return Err(format!(
            "{size} bytes with its headers and framing: the route's limit (limits.max_output_bytes) is {max_bytes}"
        ));
    }
    Ok(())
}

/// Looks topics up for the route's checks and the plugin's questions.
pub trait Topics: Send + Sync {
    /// Partition count of `topic`, refreshing what is known if it is missing.
    fn partition_count(&self, topic: &str) -> Option<u32>;

    /// Partition count of `topic` after a refresh (partitions may have been
    /// added since the last one).
    fn refreshed_partition_count(&self, topic: &str) -> Option<u32>;

    /// Partition count of `topic` as known now, without asking the broker
    /// (what a plugin is told: a host call must not wait on the network).
    fn known_partition_count(&self, topic: &str) -> Option<u32> {
        self.partition_count(topic)
    }

    /// Whether a topic of unknown partition count is taken to exist (its
    /// partitions then unchecked): only where nothing can be asked, as in
    /// `switchyard route`.
    fn unknown_topics_exist(&self) -> bool {
        false
    }
}

/// A route ready to make workers. Its plugin can be replaced while it runs
/// ([`Route::swap_plugin`]); workers notice at their next call.
pub struct Route {
    /// Its configuration.
    pub config: RouteConfig,
    plugin: ArcSwapOption<Plugin>,
    /// `config.default_target`, shared by every output that goes there.
    default_target: Arc<str>,
    /// Bumped on every swap; workers compare it (one atomic load per
    /// record, no lock) with the generation their instance was built from.
    generation: AtomicU64,
    topics: Arc<dyn Topics>,
    /// What happens to records that fail for good.
    policy: FailurePolicy,
    /// Counts of what the route did.
    pub stats: RouteStats,
    /// Partitions held at a failed record (`on_failure = "stop"`).
    halted: Mutex<BTreeMap<(String, i32), Halt>>,
    /// Paused by an operator: nothing of it is routed until resumed.
    paused: AtomicBool,
    /// The versions that routed before the one routing now, the latest
    /// last: what a rollback returns to without reading any file.
    earlier: Mutex<VecDeque<Arc<Plugin>>>,
    /// The SHA-256 of the version an operator rolled back from: the plugin
    /// file still holds it, and it is not swapped in again until the file
    /// changes.
    rolled_back_from: Mutex<Option<String>>,
    /// The SHA-256 of the version a promoted candidate replaced: the
    /// plugin file still holds it, and it is not swapped in again until
    /// the file changes.
    promoted_over: Mutex<Option<String>>,
    /// A candidate version being tried beside the live one.
    rollout: ArcSwapOption<Rollout>,
    /// One change of version at a time: a swap, a rollback, a rollout's
    /// start, end or step.
    versions_change: Mutex<()>,
    /// The router stops: no rollout starts.
    stopped: AtomicBool,
    /// The decisions about its rollouts.
    pub rollouts: RolloutLog,
    /// Where a shadow candidate's differences are written, and with what.
    shadow_topic: Option<(String, Arc<rdkafka::producer::BaseProducer>)>,
    /// The budget of plugin log lines all the route's instances share.
    log_budget: Arc<LogBudget>,
    /// How its records are checked against their schemas, if they are.
    schemas: Option<RecordSchemas>,
}

/// A partition held at a record (`on_failure = "stop"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    /// The record's offset: nothing from here on is committed (`None`:
    /// held before its first record, whose offset is not known yet).
    pub offset: Option<i64>,
    /// Why the record failed.
    pub reason: String,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.config.name)
            .field(
                "plugin",
                &self.plugin.load().as_deref().map(Plugin::version),
            )
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
            self.topics.known_partition_count(topic)
        } else {
            None
        }
    }
}

impl Route {
    /// A route with its (already loaded) plugin.
    pub fn new(config: RouteConfig, plugin: Option<Plugin>, topics: Arc<dyn Topics>) -> Self {
        Self {
            default_target: config.default_target.as_str().into(),
            plugin: ArcSwapOption::from(plugin.map(Arc::new)),
            generation: AtomicU64::new(0),
            topics,
            policy: config.failure_policy(),
            stats: RouteStats::default(),
            halted: Mutex::default(),
            paused: AtomicBool::new(false),
            earlier: Mutex::default(),
            rolled_back_from: Mutex::default(),
            promoted_over: Mutex::default(),
            rollout: ArcSwapOption::empty(),
            versions_change: Mutex::default(),
            stopped: AtomicBool::new(false),
            rollouts: RolloutLog::default(),
            shadow_topic: None,
            log_budget: Arc::new(LogBudget::new(config.limits.log_lines_per_second)),
            schemas: None,
            config,
        }
    }

    /// The route with the schemas of `store`: its records' framed parts
    /// (as its config says) are read with them, and its plugin may write
    /// values with them.
    #[must_use]
    pub fn with_schemas(mut self, store: Arc<SchemaStore>) -> Self {
        use crate::config::RecordFormat;
        self.schemas = Some(
            RecordSchemas::new(
                store,
                self.config.key_format == RecordFormat::SchemaRegistry,
                self.config.value_format == RecordFormat::SchemaRegistry,
            )
            .registering(self.config.register_schemas),
        );
        self
    }

    /// The route with `producer` writing its shadow candidate's
    /// differences to its `rollout.shadow_topic` (if it has one).
    #[must_use]
    pub fn with_shadow_producer(mut self, producer: Arc<rdkafka::producer::BaseProducer>) -> Self {
        self.shadow_topic = self
            .config
            .rollout
            .as_ref()
            .and_then(|r| r.shadow_topic.clone())
            .map(|topic| (topic, producer));
        self
    }

    /// Where a shadow candidate's differences are written, if anywhere.
    pub(crate) fn shadow_topic(&self) -> Option<(&str, &rdkafka::producer::BaseProducer)> {
        self.shadow_topic
            .as_ref()
            .map(|(topic, producer)| (topic.as_str(), &**producer))
    }

    /// Its schemas, if `[schemas]` is configured.
    #[must_use]
    pub fn schemas(&self) -> Option<&RecordSchemas> {
        self.schemas.as_ref()
    }

    /// Plugin log lines dropped so far (over `limits.log_lines_per_second`).
    #[must_use]
    pub fn log_lines_dropped(&self) -> u64 {
        self.log_budget.dropped()
    }

    /// What happens to records that fail for good.
    #[must_use]
    pub fn policy(&self) -> &FailurePolicy {
        &self.policy
    }

    /// Partitions held at a failed record, with the record and the reason.
    #[must_use]
    pub fn halted(&self) -> BTreeMap<(String, i32), Halt> {
        self.halted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_halted(&self, topic: &str, partition: i32, halt: Option<Halt>) {
        let mut halted = self.halted.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (topic.to_owned(), partition);
        match halt {
            Some(halt) => halted.insert(key, halt),
            None => halted.remove(&key),
        };
    }

    /// Pauses (`true`) or resumes the route: while paused, its partitions
    /// stay assigned, nothing of them is routed or committed, and their
    /// fetching is paused. Whether that changed anything.
    pub fn set_paused(&self, paused: bool) -> bool {
        let was = self.paused.swap(paused, Ordering::AcqRel);
        if was != paused {
            tracing::info!(
                route = self.name(),
                paused,
                "route {} by an operator",
                if paused { "paused" } else { "resumed" }
            );
        }
        was != paused
    }

    /// Whether an operator paused the route.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// The generation of the plugin routing now (bumped by each swap).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The route's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The plugin routing now, if the route has one.
    #[must_use]
    pub fn plugin(&self) -> Option<Arc<Plugin>> {
        self.plugin.load_full()
    }

    /// A checked instance of `plugin` with this route's configuration,
    /// context and limits (runs the plugin's `init`).
    pub fn instantiate(&self, plugin: &Plugin) -> Result<PluginInstance, PluginError> {
        self.instantiate_interruptible(plugin, None)
    }

    /// [`instantiate`](Self::instantiate), with calls that end at once
    /// when `interrupt` is raised.
    fn instantiate_interruptible(
        &self,
        plugin: &Plugin,
        interrupt: Option<Interrupt>,
    ) -> Result<PluginInstance, PluginError> {
        self.instantiate_with(plugin, interrupt, self.log_budget.clone())
    }

    /// An instance of `plugin` whose calls end when `interrupt` is raised
    /// and whose log lines count against `log_budget`.
    fn instantiate_with(
        &self,
        plugin: &Plugin,
        interrupt: Option<Interrupt>,
        log_budget: Arc<LogBudget>,
    ) -> Result<PluginInstance, PluginError> {
        let context = RouteContext {
            route: self.config.name.clone(),
            default_target: self.config.default_target.clone(),
            partitions: Arc::new(AllowedTopics {
                config: self.config.clone(),
                topics: self.topics.clone(),
            }),
            log_budget,
            schemas: self.schemas.clone(),
        };
        plugin.instantiate_interruptible(
            &self.config.plugin_config_pairs(),
            context,
            self.config.limits.limits(),
            interrupt,
        )
    }

    /// Makes `plugin` the route's plugin. Records already being routed
    /// finish on the previous one; each worker switches before its next
    /// call (a batch of records).
    pub fn swap_plugin(self: &Arc<Self>, plugin: Plugin) {
        let _changing = self.changing_versions();
        self.swap_to(Arc::new(plugin));
        for skipped in [&self.rolled_back_from, &self.promoted_over] {
            *skipped.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        self.live_changed();
    }

    /// The live version changed (a swap, a rollback) during a rollout: the
    /// rollout starts again against it, its figures from zero (or ends, if
    /// the live version is now the candidate).
    fn live_changed(self: &Arc<Self>) {
        let Some(rollout) = self.rollout() else {
            return;
        };
        let live = self.plugin();
        let live_version = live.as_ref().map_or("none", |p| p.version());
        self.end_locked(
            &rollout,
            "withdrawn",
            "file",
            format!("the live version changed to {live_version}: compared against it from now on"),
        );
        let same = live
            .as_ref()
            .is_some_and(|p| p.sha256() == rollout.candidate.sha256());
        if !same {
            self.start_locked(rollout.candidate.clone());
        }
    }

    /// Whether the plugin file's version with `sha256` is not to be swapped
    /// in: an operator rolled back from it, or a promoted candidate
    /// replaced it.
    #[must_use]
    pub fn skips_file_version(&self, sha256: &str) -> bool {
        [&self.rolled_back_from, &self.promoted_over]
            .iter()
            .any(|skipped| {
                skipped
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_deref()
                    == Some(sha256)
            })
    }

    /// Routes with `plugin` from the next record on, keeping the version
    /// it replaces among the earlier ones.
    fn swap_to(&self, plugin: Arc<Plugin>) {
        let sha256 = plugin.sha256().to_owned();
        let old = self.plugin.swap(Some(plugin));
        self.generation.fetch_add(1, Ordering::Release);
        let mut earlier = self.earlier.lock().unwrap_or_else(PoisonError::into_inner);
        earlier.retain(|p| p.sha256() != sha256);
        if let Some(old) = old
            && old.sha256() != sha256
        {
            earlier.retain(|p| p.sha256() != old.sha256());
            earlier.push_back(old);
            while earlier.len() > KEPT_VERSIONS {
                earlier.pop_front();
            }
        }
    }

    /// Returns to an earlier version: `version` (its version or SHA-256),
    /// else the one before the version routing now. The version rolled
    /// back from is not swapped in again from the plugin file until the
    /// file changes. Gives (from, to) versions, or why not.
    pub fn roll_back(self: &Arc<Self>, version: Option<&str>) -> Result<(String, String), String> {
        let _changing = self.changing_versions();
        if version.is_none()
            && let Some(rollout) = self.rollout()
        {
            let live = self
                .plugin()
                .map_or_else(|| "none".to_owned(), |p| p.version().to_owned());
            self.end_locked(
                &rollout,
                "rolled-back",
                "operator",
                "rolled back by an operator".to_owned(),
            );
            return Ok((rollout.candidate.version().to_owned(), live));
        }
        let current = self
            .plugin()
            .ok_or_else(|| "the route has no plugin".to_owned())?;
        let target = {
            let mut earlier = self.earlier.lock().unwrap_or_else(PoisonError::into_inner);
            let at = match version {
                None => earlier.len().checked_sub(1),
                Some(v) => earlier
                    .iter()
                    .rposition(|p| p.version() == v || p.sha256() == v),
            };
            let Some(at) = at else {
                let kept: Vec<&str> = earlier.iter().map(|p| p.version()).collect();
                return Err(match version {
                    Some(v) => format!("no earlier version '{v}' kept (kept: {kept:?})"),
                    None => "no earlier version kept: the route has run only one".to_owned(),
                });
            };
            earlier
                .remove(at)
                .ok_or_else(|| "no such version".to_owned())?
        };
        let to = target.version().to_owned();
        self.swap_to(target);
        *self
            .rolled_back_from
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(current.sha256().to_owned());
        tracing::warn!(
            route = self.name(),
            from = current.version(),
            to,
            "rolled back by an operator: the plugin file's version is not swapped in again until the file changes"
        );
        self.live_changed();
        Ok((current.version().to_owned(), to))
    }

    /// The versions a rollback can return to, the latest last.
    #[must_use]
    pub fn earlier_versions(&self) -> Vec<String> {
        self.earlier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|p| p.version().to_owned())
            .collect()
    }

    /// The SHA-256 of the version an operator rolled back from, while the
    /// plugin file still holds it.
    #[must_use]
    pub fn rolled_back_from(&self) -> Option<String> {
        self.rolled_back_from
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The candidate version being tried, if any.
    #[must_use]
    pub fn rollout(&self) -> Option<Arc<Rollout>> {
        self.rollout.load_full()
    }

    /// Whether the candidate (a canary) routes `partition` of the route's
    /// source topics now.
    #[must_use]
    pub fn candidate_routes(&self, partition: i32) -> bool {
        self.rollout
            .load()
            .as_ref()
            .is_some_and(|rollout| rollout.routes(partition))
    }

    /// The partition count of `topic`, asking the broker if it is not
    /// known yet.
    #[must_use]
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics.partition_count(topic)
    }

    /// The most partitions any of its source topics has (as known now).
    #[must_use]
    pub fn source_partitions(&self) -> u32 {
        self.config
            .source_topics
            .iter()
            .filter_map(|t| self.topics.known_partition_count(t))
            .max()
            .unwrap_or(0)
    }

    fn changing_versions(&self) -> std::sync::MutexGuard<'_, ()> {
        self.versions_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts trying `candidate` (checked already) as the route's
    /// `[routes.rollout]` says, in place of any candidate tried now.
    /// Nothing happens for the version routing now, for one rolled back
    /// before (until its file changes), or once the router stops. Whether
    /// it started.
    pub fn start_rollout(self: &Arc<Self>, candidate: Plugin) -> bool {
        let _changing = self.changing_versions();
        let sha256 = candidate.sha256();
        if self.stopped.load(Ordering::Acquire)
            || self.plugin().is_some_and(|p| p.sha256() == sha256)
            || self.rollouts.is_rejected(sha256)
            || self.skips_file_version(sha256)
            || self
                .rollout()
                .is_some_and(|r| r.candidate.sha256() == sha256)
        {
            return false;
        }
        if let Some(running) = self.rollout() {
            self.end_locked(
                &running,
                "withdrawn",
                "file",
                format!("replaced by candidate {}", candidate.version()),
            );
        }
        self.start_locked(Arc::new(candidate))
    }

    fn start_locked(self: &Arc<Self>, candidate: Arc<Plugin>) -> bool {
        let Some(config) = self.config.rollout.clone() else {
            return false;
        };
        let live = self.plugin();
        let rollout = Arc::new(Rollout::new(self, config, candidate));
        let live = live.as_ref().map_or("none", |p| p.version());
        let reason = match rollout.canary_partitions() {
            Some(n) => format!(
                "canary on the first {n} partition(s) of each source topic, beside live version {live}"
            ),
            None => format!("in the shadow of live version {live}: compared, not produced"),
        };
        let decision = rollout.decision(self, "started", "file", reason);
        self.rollout.store(Some(rollout));
        self.generation.fetch_add(1, Ordering::Release);
        self.rollouts.record(self.name(), decision);
        true
    }

    /// Ends `rollout` if it is still the route's: `promoted` (the
    /// candidate routes everything from the next call on), `rolled-back`
    /// (it is not tried again until its file changes) or `withdrawn`.
    pub fn end_rollout(
        &self,
        rollout: &Arc<Rollout>,
        action: &'static str,
        by: &'static str,
        reason: String,
    ) -> Result<(), String> {
        let _changing = self.changing_versions();
        if self.end_locked(rollout, action, by, reason) {
            Ok(())
        } else {
            Err("the rollout already ended".to_owned())
        }
    }

    /// [`end_rollout`](Self::end_rollout), the versions' lock held.
    fn end_locked(
        &self,
        rollout: &Arc<Rollout>,
        action: &'static str,
        by: &'static str,
        reason: String,
    ) -> bool {
        if !self
            .rollout()
            .is_some_and(|current| Arc::ptr_eq(&current, rollout))
        {
            return false;
        }
        let decision = rollout.decision(self, action, by, reason);
        match action {
            "promoted" => {
                let replaced = self.plugin().map(|p| p.sha256().to_owned());
                if replaced.as_deref() != Some(rollout.candidate.sha256()) {
                    *self
                        .promoted_over
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = replaced;
                }
                // The live version first: a canary partition never goes
                // back to the version replaced.
                self.swap_to(rollout.candidate.clone());
            }
            "rolled-back" => {
                *self
                    .rollouts
                    .rejected
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    Some(rollout.candidate.sha256().to_owned());
            }
            _ => {}
        }
        self.rollout.store(None);
        self.generation.fetch_add(1, Ordering::Release);
        self.rollouts.record(self.name(), decision);
        true
    }

    /// The candidate's file is gone (or cannot be read): its rollout ends.
    pub fn withdraw_candidate(&self, reason: &str) {
        if let Some(rollout) = self.rollout() {
            let _ = self.end_rollout(&rollout, "withdrawn", "file", reason.to_owned());
        }
    }

    /// Promotes the candidate being tried, by an operator. Gives (from,
    /// to) versions, or why not.
    pub fn promote(&self) -> Result<(String, String), String> {
        let rollout = self
            .rollout()
            .ok_or_else(|| "no candidate is being tried".to_owned())?;
        let from = self
            .plugin()
            .map_or_else(|| "none".to_owned(), |p| p.version().to_owned());
        self.end_rollout(
            &rollout,
            "promoted",
            "operator",
            "promoted by an operator".to_owned(),
        )?;
        Ok((from, rollout.candidate.version().to_owned()))
    }

    /// Sets how many partitions of each source topic the canary routes,
    /// by an operator. Gives (from, to), or why not.
    pub fn set_canary(&self, partitions: u32) -> Result<(u32, u32), String> {
        let rollout = self
            .rollout()
            .ok_or_else(|| "no candidate is being tried".to_owned())?;
        let from = rollout
            .canary_partitions()
            .ok_or_else(|| "the candidate runs in the shadow, not as a canary".to_owned())?;
        if partitions == 0 {
            return Err("a canary routes at least 1 partition: roll it back instead".to_owned());
        }
        self.widen(
            &rollout,
            from,
            partitions,
            "operator",
            format!("from {from} to {partitions} partitions of each source topic"),
        )?;
        Ok((from, partitions))
    }

    /// Makes the canary of `rollout`, if it is still the route's and on
    /// `from` partitions of each source topic, route `to`. Partitions that
    /// change version do so at their next turn, holds and retries starting
    /// afresh with the version that routes them then.
    pub(crate) fn widen(
        &self,
        rollout: &Arc<Rollout>,
        from: u32,
        to: u32,
        by: &'static str,
        reason: String,
    ) -> Result<(), String> {
        let _changing = self.changing_versions();
        if !self
            .rollout()
            .is_some_and(|current| Arc::ptr_eq(&current, rollout))
        {
            return Err("the rollout already ended".to_owned());
        }
        if !rollout.set_canary(from, to) {
            return Err("the canary changed meanwhile: ask again".to_owned());
        }
        let decision = rollout.decision(self, "widened", by, reason);
        self.rollouts.record(self.name(), decision);
        Ok(())
    }

    /// Ends any rollout without a decision, and starts none from now on:
    /// the router stops (its shadow thread ends).
    pub fn stop_rollout(&self) {
        let _changing = self.changing_versions();
        self.stopped.store(true, Ordering::Release);
        self.rollout.store(None);
    }

    /// A new router for one partition worker (with its own plugin instance).
    pub fn instance(self: &Arc<Self>) -> Result<RouteInstance, PluginError> {
        self.interruptible_instance(None, Track::Live)
    }

    /// An instance of `plugin` with the route's configuration, checks and
    /// limits, which does not follow swaps (a shadow candidate's): its
    /// calls end when `interrupt` is raised, its log lines count against
    /// `log_budget`.
    pub fn pinned_instance(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        interrupt: Interrupt,
        log_budget: Arc<LogBudget>,
    ) -> Result<RouteInstance, PluginError> {
        Ok(RouteInstance {
            route: self.clone(),
            plugin: Some(self.instantiate_with(
                plugin,
                Some(interrupt.clone()),
                log_budget.clone(),
            )?),
            generation: self.generation(),
            interrupt: Some(interrupt),
            track: Track::Pinned,
            log_budget: Some(log_budget),
        })
    }

    /// An instance of the live version that follows swaps, apart from the
    /// workers' (a replay's): its calls end when `interrupt` is raised,
    /// its log lines count against `log_budget`.
    pub fn separate_instance(
        self: &Arc<Self>,
        interrupt: Interrupt,
        log_budget: Arc<LogBudget>,
    ) -> Result<RouteInstance, PluginError> {
        let generation = self.generation();
        let plugin = match self.plugin() {
            None => None,
            Some(plugin) => {
                Some(self.instantiate_with(&plugin, Some(interrupt.clone()), log_budget.clone())?)
            }
        };
        Ok(RouteInstance {
            route: self.clone(),
            plugin,
            generation,
            interrupt: Some(interrupt),
            track: Track::Live,
            log_budget: Some(log_budget),
        })
    }

    /// [`instance`](Self::instance), whose plugin calls end at once when
    /// `interrupt` is raised (the worker must stop).
    pub fn interruptible_instance(
        self: &Arc<Self>,
        interrupt: Option<Interrupt>,
        track: Track,
    ) -> Result<RouteInstance, PluginError> {
        let generation = self.generation.load(Ordering::Acquire);
        let plugin = match self.plugin_of(track) {
            None => None,
            Some(plugin) => Some(self.instantiate_interruptible(&plugin, interrupt.clone())?),
        };
        Ok(RouteInstance {
            route: self.clone(),
            plugin,
            generation,
            interrupt,
            track,
            log_budget: None,
        })
    }

    /// The version `track` routes with now: a canary's candidate while it
    /// is tried (the live version once it ended).
    pub(crate) fn plugin_of(&self, track: Track) -> Option<Arc<Plugin>> {
        match track {
            Track::Candidate => self
                .rollout()
                .map(|r| r.candidate.clone())
                .or_else(|| self.plugin()),
            Track::Live | Track::Pinned => self.plugin(),
        }
    }
}

/// Which version a worker's instance of a route follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// The live version.
    Live,
    /// A canary candidate (the live version when there is none).
    Candidate,
    /// The version it was made with, whatever happens.
    Pinned,
}

/// Routes the records of one partition.
pub struct RouteInstance {
    route: Arc<Route>,
    plugin: Option<PluginInstance>,
    /// The route's generation `plugin` was built from.
    generation: u64,
    /// Ends the plugin's calls when the worker must stop.
    interrupt: Option<Interrupt>,
    /// Which version it follows.
    track: Track,
    /// Its plugin's log budget, when not the route's.
    log_budget: Option<Arc<LogBudget>>,
}

impl std::fmt::Debug for RouteInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteInstance")
            .field("route", &self.route.config.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// What a record is routed to: its outputs, checked, in order (inline for
/// the usual one, which then costs no allocation of its own).
pub type RoutedOutputs = SmallVec<[Routed; 1]>;

/// An output that passed the route's checks, with its target resolved.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Target topic.
    pub topic: Arc<str>,
    /// The output.
    pub output: Output,
}

impl RouteInstance {
    /// The route's name.
    #[must_use]
    pub fn route_name(&self) -> &str {
        self.route.name()
    }

    /// The route's schemas, if `[schemas]` is configured.
    #[must_use]
    pub fn schemas(&self) -> Option<&RecordSchemas> {
        self.route.schemas()
    }

    /// The plugin this instance routes with, if any.
    #[must_use]
    pub fn plugin(&self) -> Option<&Plugin> {
        self.plugin.as_ref().map(PluginInstance::plugin)
    }

    /// The plugin's decision for `record` (passthrough without a plugin),
    /// with every output checked: not too large, topic allowed and
    /// existing, partition in range. Routes with the version this instance
    /// runs: [`follow_swaps`](Self::follow_swaps) moves to a newer one.
    pub fn route(&mut self, record: &Arc<SourceRecord>) -> Result<RoutedOutputs, RouteFailure> {
        let outputs = match &mut self.plugin {
            Some(plugin) => plugin.route(record)?,
            None => return self.checked(std::iter::once(Output::forward(record.clone()))),
        };
        self.checked(outputs)
    }

    /// The plugin's decisions for `records` of one partition, in order, in
    /// one call ([`PluginInstance::route_batch`]), each checked as by
    /// [`route`](Self::route). An `Err` is the call failing as a whole.
    pub fn route_batch(
        &mut self,
        records: &[Arc<SourceRecord>],
    ) -> Result<Vec<Result<RoutedOutputs, RouteFailure>>, RouteFailure> {
        Ok(match &mut self.plugin {
            Some(plugin) => plugin
                .route_batch(records)?
                .into_iter()
                .map(|answer| answer.and_then(|outputs| self.checked(outputs)))
                .collect(),
            None => records
                .iter()
                .map(|record| self.checked(std::iter::once(Output::forward(record.clone()))))
                .collect(),
        })
    }

    fn checked(
        &self,
        outputs: impl IntoIterator<Item = Output>,
    ) -> Result<RoutedOutputs, RouteFailure> {
        outputs
            .into_iter()
            .enumerate()
            .map(|(i, output)| self.check(i, output))
            .collect()
    }

    /// Moves to the route's current plugin if it was swapped since this
    /// instance was built (a record boundary: nothing is in flight here).
    ///
    /// The new version was checked before the swap, so its `init` failing
    /// here is rare (a plugin whose `init` depends on chance, or memory
    /// running short). Routing on with the old version would hide that a
    /// partition is not on the version `/routes` shows: the worker holds
    /// the partition until the new version starts (the error says why).
    pub fn follow_swaps(&mut self) -> Result<(), PluginError> {
        let generation = self.route.generation.load(Ordering::Acquire);
        if generation == self.generation || self.track == Track::Pinned {
            return Ok(());
        }
        let Some(plugin) = self.route.plugin_of(self.track) else {
            self.plugin = None;
            self.generation = generation;
            return Ok(());
        };
        if self
            .plugin()
            .is_some_and(|current| current.sha256() == plugin.sha256())
        {
            // A change of the rollout, not of this version.
            self.generation = generation;
            return Ok(());
        }
        let log_budget = self
            .log_budget
            .clone()
            .unwrap_or_else(|| self.route.log_budget.clone());
        let instance = self
            .route
            .instantiate_with(&plugin, self.interrupt.clone(), log_budget)?;
        self.plugin = Some(instance);
        self.generation = generation;
        Ok(())
    }

    fn check(&self, i: usize, mut output: Output) -> Result<Routed, RouteFailure> {
        let invalid = |message: String| {
            RouteFailure::new(FailureKind::Invalid, format!("output {i}: {message}"))
        };
        if let Err(why) = fits(&output, self.route.config.limits.max_output_bytes) {
            return Err(invalid(why));
        }
        // Per output: the default target is shared, not copied.
        let topic: Arc<str> = match output.topic.take() {
            Some(topic) => topic.into(),
            None => self.route.default_target.clone(),
        };
        if !self.route.config.allows(&topic) {
            return Err(invalid(format!(
                "topic '{topic}' is not an allowed target of route '{}'",
                self.route.config.name
            )));
        }
        let count = match self.route.topics.partition_count(&topic) {
            Some(count) => Some(count),
            None if self.route.topics.unknown_topics_exist() => None,
            None => return Err(invalid(format!("topic '{topic}' does not exist"))),
        };
        if let Some(p) = output.partition.filter(|&p| p < 0) {
            return Err(invalid(format!(
                "partition {p} is out of range for topic '{topic}'"
            )));
        }
        if let (Some(p), Some(count)) = (output.partition, count) {
            let out_of_range = |count: u32| p < 0 || p.unsigned_abs() >= count;
            // The cache may predate partitions added since: look again
            // before refusing.
            if out_of_range(count) {
                let fresh = self
                    .route
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
