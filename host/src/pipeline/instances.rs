//! A worker's instances: one per route it routes partitions of (not one
//! per partition), started when the route's first partition comes to the
//! worker, dropped when its last one goes, and made again after an
//! interrupted call. A plugin that cannot start here is tried again after
//! [`START_RETRY_MIN`], doubling up to [`START_RETRY_MAX`], and at once
//! after a swap; meanwhile the route's partitions on the worker are held.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::meters::Meters;
use super::routing::CallSize;
use crate::metrics::Metrics;
use crate::plugin::{Interrupt, PluginError};
use crate::route::{Route, RouteInstance, Track};

/// A plugin that cannot start is tried again after this, doubling up to
/// [`START_RETRY_MAX`].
const START_RETRY_MIN: Duration = Duration::from_millis(500);
const START_RETRY_MAX: Duration = Duration::from_secs(30);

/// A route as one worker routes it.
pub(super) struct Slot {
    pub(super) state: SlotState,
    /// The worker's instance of the route, once started.
    pub(super) started: Option<Started>,
    /// The worker's partitions of the route.
    pub(super) lanes: usize,
}

/// What a worker keeps of a route besides its instance.
pub(super) struct SlotState {
    pub(super) route: Arc<Route>,
    /// The version it follows: the live one, or a canary candidate.
    pub(super) track: Track,
    /// How many records a call takes.
    pub(super) size: CallSize,
    /// Why the plugin could not start here, until it does.
    pub(super) failed: Option<StartFailure>,
}

/// A started instance, and where it counts.
pub(super) struct Started {
    pub(super) instance: RouteInstance,
    pub(super) meters: Meters,
}

/// A plugin that could not start on a worker.
#[derive(Debug)]
pub(super) struct StartFailure {
    /// The route's generation it failed at: a swap tries again at once.
    generation: u64,
    /// When it is tried again.
    next: Instant,
    wait: Duration,
    /// Why, for `/ready` and `/routes`.
    pub(super) reason: String,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("route", &self.state.route.name())
            .field("track", &self.state.track)
            .field("started", &self.started.is_some())
            .field("lanes", &self.lanes)
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// `route`, with no instance yet.
    pub(super) fn new(route: Arc<Route>, track: Track) -> Self {
        Self {
            state: SlotState {
                route,
                track,
                size: CallSize::FULL,
                failed: None,
            },
            started: None,
            lanes: 0,
        }
    }

    /// Starts the instance, whose calls end when `interrupt` is raised.
    pub(super) fn start(
        &mut self,
        interrupt: Interrupt,
        metrics: &Metrics,
    ) -> Result<(), PluginError> {
        let instance = self
            .state
            .route
            .interruptible_instance(Some(interrupt), self.state.track)?;
        self.started = Some(Started {
            meters: Meters::new(&self.state.route, metrics, &instance),
            instance,
        });
        if self.state.failed.take().is_some() {
            tracing::info!(
                route = self.state.route.name(),
                "the plugin started: routing again"
            );
        }
        Ok(())
    }
}

impl SlotState {
    /// Whether the plugin, which could not start here, is not to be tried
    /// again yet at `now`.
    pub(super) fn unstarted(&self, now: Instant) -> bool {
        self.failed
            .as_ref()
            .is_some_and(|f| f.generation == self.route.generation() && now < f.next)
    }

    /// When the plugin is tried again, if it could not start.
    pub(super) fn retries_at(&self) -> Option<Instant> {
        self.failed.as_ref().map(|f| f.next)
    }

    /// The plugin (a new version, or a new instance) could not start at
    /// `now`: say so, and when it is tried again.
    pub(super) fn failed_to_start(&mut self, error: &PluginError, now: Instant) {
        let generation = self.route.generation();
        let wait = match &self.failed {
            Some(f) if f.generation == generation => (f.wait * 2).min(START_RETRY_MAX),
            _ => START_RETRY_MIN,
        };
        let version = self
            .route
            .plugin_of(self.track)
            .map_or_else(|| "none".to_owned(), |p| p.version().to_owned());
        tracing::error!(
            route = self.route.name(),
            version,
            error = %error,
            retry_ms = wait.as_millis(),
            "the plugin cannot start: the route's partitions on this worker are held until it does"
        );
        self.failed = Some(StartFailure {
            generation,
            next: now + wait,
            wait,
            reason: format!("plugin version {version} cannot start: {error}"),
        });
    }
}
