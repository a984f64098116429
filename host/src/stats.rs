//! What each route did, counted once: per plugin version, where the
//! records are routed. `GET /routes` shows a route's totals
//! ([`RouteStats::snapshot`]); `GET /metrics` exports the same counts per
//! version ([`RouteStats::versions`]). Nothing else keeps a copy.
//!
//! A worker keeps the [`VersionStats`] of the version it routes with, so
//! counting is one relaxed atomic add, with no lookup per record.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::FailurePolicy;
use crate::plugin::FailureKind;

/// What a route did since the router started, per plugin version.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// One entry per version that routed here (a handful: one per swap).
    versions: Mutex<Vec<Arc<VersionStats>>>,
}

impl RouteStats {
    /// The counts of plugin `version` (`"none"` for a route without a
    /// plugin), made at zero the first time.
    #[must_use]
    pub fn version(&self, version: &str) -> Arc<VersionStats> {
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = versions.iter().find(|v| v.version == version) {
            return found.clone();
        }
        let made = Arc::new(VersionStats::new(version));
        versions.push(made.clone());
        made
    }

    /// The counts of every version that routed here, oldest first.
    #[must_use]
    pub fn versions(&self) -> Vec<Arc<VersionStats>> {
        self.versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The route's totals now, all versions together.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut total = StatsSnapshot::default();
        for version in self.versions() {
            total.add(&version.snapshot());
        }
        total
    }
}

/// What a route did with one plugin version.
#[derive(Debug)]
pub struct VersionStats {
    /// The plugin version (`"none"`: the route has no plugin).
    pub version: String,
    routed: AtomicU64,
    outputs: AtomicU64,
    consumed: AtomicU64,
    produced: AtomicU64,
    filtered: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    skipped: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl VersionStats {
    fn new(version: &str) -> Self {
        Self {
            version: version.to_owned(),
            routed: AtomicU64::new(0),
            outputs: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failures: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// A record was routed to `outputs` outputs (none: filtered).
    pub(crate) fn routed(&self, outputs: usize) {
        add(&self.routed, 1);
        add(&self.consumed, 1);
        if outputs == 0 {
            add(&self.filtered, 1);
        } else {
            add(&self.outputs, outputs as u64);
        }
    }

    /// The plugin asked for a retry, and will be asked again.
    pub(crate) fn retried(&self) {
        add(&self.retries, 1);
    }

    /// A record failed for good with `kind` and `policy` settles it;
    /// `consumed` unless it was counted so already (routed, then refused by
    /// the broker). A record held (`on_failure = "stop"`) is not consumed:
    /// it is routed again after a swap.
    pub(crate) fn failed(&self, kind: FailureKind, policy: &FailurePolicy, consumed: bool) {
        add(&self.failures[kind as usize], 1);
        match policy {
            FailurePolicy::DeadLetter(_) => add(&self.dead_lettered, 1),
            FailurePolicy::Skip => add(&self.skipped, 1),
            FailurePolicy::Stop => return,
        }
        if consumed {
            add(&self.consumed, 1);
        }
    }

    /// The broker acknowledged an output (not a dead-letter record).
    pub(crate) fn produced(&self) {
        add(&self.produced, 1);
    }

    /// The counts now.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        StatsSnapshot {
            routed: get(&self.routed),
            outputs: get(&self.outputs),
            consumed: get(&self.consumed),
            produced: get(&self.produced),
            filtered: get(&self.filtered),
            retries: get(&self.retries),
            dead_lettered: get(&self.dead_lettered),
            skipped: get(&self.skipped),
            failures: FailureKind::ALL
                .iter()
                .map(|kind| (kind.as_str(), get(&self.failures[*kind as usize])))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// Counts at one moment (of a route, or of one of its versions).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Records the plugin routed (one or more outputs, or none).
    pub routed: u64,
    /// Outputs handed to the producer (dead-letter records not included).
    pub outputs: u64,
    /// Records taken from the source topics: routed, dead-lettered or
    /// skipped (`switchyard_records_consumed_total`).
    pub consumed: u64,
    /// Outputs the broker acknowledged (dead-letter records not included).
    pub produced: u64,
    /// Routed records with no output.
    pub filtered: u64,
    /// Calls repeated after a `retry` answer.
    pub retries: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Failed records skipped (`on_failure = "skip"`).
    pub skipped: u64,
    /// Failed records by kind (one count per record, after its last
    /// attempt); kinds that did not happen are left out.
    pub failures: BTreeMap<&'static str, u64>,
}

impl StatsSnapshot {
    fn add(&mut self, other: &Self) {
        self.routed += other.routed;
        self.outputs += other.outputs;
        self.consumed += other.consumed;
        self.produced += other.produced;
        self.filtered += other.filtered;
        self.retries += other.retries;
        self.dead_lettered += other.dead_lettered;
        self.skipped += other.skipped;
        for (kind, n) in &other.failures {
            *self.failures.entry(kind).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_s_totals_are_the_sum_of_its_versions() {
        let stats = RouteStats::default();
        let (v1, v2) = (stats.version("v1"), stats.version("v2"));
        assert!(
            Arc::ptr_eq(&v1, &stats.version("v1")),
            "one entry per version"
        );
        let dlq = FailurePolicy::DeadLetter("dlq".to_owned());
        v1.routed(2);
        v1.routed(0);
        v1.failed(FailureKind::Trap, &dlq, true);
        v2.routed(1);
        v2.produced();
        v2.retried();
        // Routed, then refused by the broker: consumed once.
        v2.failed(FailureKind::BrokerRefused, &dlq, false);
        let total = stats.snapshot();
        assert_eq!(
            (total.routed, total.outputs, total.filtered, total.consumed),
            (3, 3, 1, 4)
        );
        assert_eq!(
            (total.produced, total.retries, total.dead_lettered),
            (1, 1, 2)
        );
        assert_eq!(total.failures, [("trap", 1), ("broker-refused", 1)].into());
    }

    #[test]
    fn a_held_record_is_a_failure_but_not_consumed() {
        let stats = RouteStats::default();
        stats
            .version("v1")
            .failed(FailureKind::Reject, &FailurePolicy::Stop, true);
        let total = stats.snapshot();
        assert_eq!(
            (total.consumed, total.skipped, total.dead_lettered),
            (0, 0, 0)
        );
        assert_eq!(total.failures, [("reject", 1)].into());
    }
}
