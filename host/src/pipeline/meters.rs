//! Where a worker counts what it does: the route's counts of the plugin
//! version routing now ([`crate::stats`], which `/routes` and `/metrics`
//! both read) and the call timings.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::Metrics;
use crate::plugin::{FailureKind, Plugin};
use crate::route::{Route, RouteInstance};
use crate::stats::VersionStats;

/// A worker's handles on its route's counts and histograms: looked up
/// again only when the version routing changes.
pub(super) struct Meters {
    route: Arc<Route>,
    call: Histogram,
    call_records: Histogram,
    stats: Arc<VersionStats>,
}

impl Meters {
    /// The handles of `route`, whose worker routes with `instance`.
    pub(super) fn new(route: &Arc<Route>, metrics: &Metrics, instance: &RouteInstance) -> Self {
        let name = route.name();
        Self {
            route: route.clone(),
            call: metrics.call_duration(name),
            call_records: metrics.call_records(name),
            stats: route.stats.version(version_of(instance)),
        }
    }

    /// The counts of the version `instance` runs now.
    pub(super) fn stats(&mut self, instance: &RouteInstance) -> &Arc<VersionStats> {
        self.follow(instance);
        &self.stats
    }

    fn follow(&mut self, instance: &RouteInstance) {
        let version = version_of(instance);
        if self.stats.version != version {
            self.stats = self.route.stats.version(version);
        }
    }

    /// A plugin call that took `took` routed `records` records.
    pub(super) fn called(&self, took: Duration, records: usize) {
        self.call.observe(took.as_secs_f64());
        // A batch is at most a few hundred records: exact in an f64.
        #[allow(clippy::cast_precision_loss, reason = "small integer")]
        self.call_records.observe(records as f64);
    }

    /// A record was routed to `outputs` outputs.
    pub(super) fn routed(&mut self, instance: &RouteInstance, outputs: usize) {
        self.stats(instance).routed(outputs);
    }

    /// The plugin asked for a retry, and will be asked again.
    pub(super) fn retried(&mut self, instance: &RouteInstance) {
        self.stats(instance).retried();
    }

    /// A record failed for good.
    pub(super) fn failed(&mut self, instance: &RouteInstance, kind: FailureKind) {
        self.follow(instance);
        self.stats.failed(kind, self.route.policy(), true);
    }

    /// A record already counted as consumed (routed, then refused by the
    /// broker) failed for good.
    pub(super) fn refused(&mut self, instance: &RouteInstance, kind: FailureKind) {
        self.follow(instance);
        self.stats.failed(kind, self.route.policy(), false);
    }
}

fn version_of(instance: &RouteInstance) -> &str {
    instance.plugin().map_or("none", Plugin::version)
}
