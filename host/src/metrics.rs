//! Prometheus metrics (`GET /metrics`, OpenMetrics text format).
//!
//! Counters are incremented where things happen, through handles a worker
//! keeps per route and plugin version (one atomic add each, no lookup per
//! record). Gauges that mirror state kept elsewhere (plugin versions, held
//! partitions, the producer's queue, reload counts) are set when scraped.
//!
//! Labels stay bounded: routes come from the config, kinds are a fixed set,
//! partitions are the assigned ones (removed when revoked), and plugin
//! versions are the ones this process has run.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::plugin::FailureKind;
use crate::reload::ReloadStats;
use crate::route::Route;
use crate::schema::store::SchemaStore;
use crate::stats::StatsSnapshot;
use crate::status::Status;

/// Upper bounds of the plugin call latency buckets, in seconds: 1 µs to
/// the default time limit.
const CALL_BUCKETS: [f64; 14] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    route: String,
    plugin_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    route: String,
    plugin_version: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    route: String,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CandidateLabels {
    route: String,
    candidate_version: String,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultRouteLabels {
    route: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    route: String,
    plugin: String,
    plugin_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

/// Upper bounds of the records-per-call buckets: powers of two up to the
/// largest batch a worker is handed.
const CALL_RECORDS_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

fn call_records_histogram() -> Histogram {
    Histogram::new(CALL_RECORDS_BUCKETS)
}

/// Every metric the router exports.
pub struct Metrics {
    registry: Registry,
    call_seconds: Family<RouteLabels, Histogram>,
    call_records: Family<RouteLabels, Histogram>,
    plugin_info: Family<InfoLabels, Gauge>,
    held: Family<RouteLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    log_dropped: Family<RouteLabels, Counter>,
    lag: Family<PartitionLabels, Gauge>,
    assigned: Gauge,
    broker_up: Gauge,
    producer_queue: Gauge,
    transactions: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics, registered, at zero.
    #[must_use]
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("switchyard"),
            call_seconds: Family::new_with_constructor(call_histogram),
            call_records: Family::new_with_constructor(call_records_histogram),
            plugin_info: Family::default(),
            held: Family::default(),
            reloads: Family::default(),
            log_dropped: Family::default(),
            lag: Family::default(),
            assigned: Gauge::default(),
            broker_up: Gauge::default(),
            producer_queue: Gauge::default(),
            transactions: Family::default(),
        };
        let r = &mut metrics.registry;
        r.register_with_unit(
            "plugin_call_duration",
            "Time of one plugin route call (a batch of up to 128 records of one partition), output checks included",
            Unit::Seconds,
            metrics.call_seconds.clone(),
        );
        r.register(
            "plugin_call_records",
            "Records routed by one plugin route call",
            metrics.call_records.clone(),
        );
        r.register(
            "plugin_info",
            "The plugin version routing now, per route (always 1)",
            metrics.plugin_info.clone(),
        );
        r.register(
            "plugin_log_lines_dropped",
            "Plugin log lines dropped over the route's limits.log_lines_per_second",
            metrics.log_dropped.clone(),
        );
        r.register(
            "partitions_held",
            "Partitions held at a failed record (on_failure = \"stop\")",
            metrics.held.clone(),
        );
        r.register(
            "plugin_reloads",
            "Plugin file changes: swapped in, refused, or unreadable",
            metrics.reloads.clone(),
        );
        r.register(
            "consumer_lag_records",
            "Records on a source partition not yet finished (high watermark minus stored offset), per assigned partition",
            metrics.lag.clone(),
        );
        r.register(
            "partitions_assigned",
            "Source partitions assigned to this instance",
            metrics.assigned.clone(),
        );
        r.register(
            "broker_up",
            "1 when a connection to a broker is up (from the consumer's statistics)",
            metrics.broker_up.clone(),
        );
        r.register(
            "producer_queue_messages",
            "Outputs handed to the producer and not yet acknowledged",
            metrics.producer_queue.clone(),
        );
        r.register(
            "transactions",
            "Exactly-once mode: transactions committed or aborted",
            metrics.transactions.clone(),
        );
        metrics
    }

    /// Counts a transaction that was `result` (`committed`, `aborted`).
    pub fn transaction(&self, result: &'static str) {
        self.transactions
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Transactions that ended as `result` so far.
    #[must_use]
    pub fn transactions(&self, result: &'static str) -> u64 {
        self.transactions
            .get(&ResultLabels { result })
            .map_or(0, |c| c.get())
    }

    /// The call latency histogram of `route`.
    #[must_use]
    pub fn call_duration(&self, route: &str) -> Histogram {
        self.call_seconds.get_or_create_owned(&RouteLabels {
            route: route.to_owned(),
        })
    }

    /// The records-per-call histogram of `route`.
    #[must_use]
    pub fn call_records(&self, route: &str) -> Histogram {
        self.call_records.get_or_create_owned(&RouteLabels {
            route: route.to_owned(),
        })
    }

    /// Sets the lag of a source partition.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .get_or_create(&PartitionLabels {
                topic: topic.to_owned(),
                partition,
            })
            .set(lag);
    }

    /// Forgets a source partition's lag (revoked).
    pub fn remove_lag(&self, topic: &str, partition: i32) {
        self.lag.remove(&PartitionLabels {
            topic: topic.to_owned(),
            partition,
        });
    }

    /// The metrics in OpenMetrics text format: the routes' counts read
    /// from [`Route::stats`], gauges refreshed from `routes`, `status`,
    /// `reload` and the producer's queue first.
    pub fn encode(
        &self,
        routes: &[Arc<Route>],
        status: &Status,
        reload: Option<&ReloadStats>,
        producer_queue: Option<i64>,
    ) -> String {
        self.assigned
            .set(i64::try_from(status.assigned()).unwrap_or(i64::MAX));
        self.broker_up.set(i64::from(status.broker_up()));
        self.plugin_info.clear();
        for route in routes {
            let labels = RouteLabels {
                route: route.name().to_owned(),
            };
            if let Some(plugin) = route.plugin() {
                self.plugin_info
                    .get_or_create(&InfoLabels {
                        route: route.name().to_owned(),
                        plugin: plugin.name().to_owned(),
                        plugin_version: plugin.version().to_owned(),
                    })
                    .set(1);
            }
            let held = i64::try_from(route.halted().len()).unwrap_or(i64::MAX);
            self.held.get_or_create(&labels).set(held);
            catch_up(
                &self.log_dropped.get_or_create(&labels),
                route.log_lines_dropped(),
            );
            // Every route has a latency series, even before its first call.
            let _ = self.call_seconds.get_or_create(&labels);
            let _ = self.call_records.get_or_create(&labels);
        }
        if let Some(reload) = reload {
            for (result, count) in [
                ("swapped", &reload.swaps),
                ("refused", &reload.failures),
                ("unreadable", &reload.unreadable),
            ] {
                let counter = self.reloads.get_or_create(&ReloadLabels { result });
                catch_up(&counter, count.load(Ordering::Relaxed));
            }
        }
        if let Some(queue) = producer_queue {
            self.producer_queue.set(queue);
        }
        let mut counts = Registry::with_prefix("switchyard");
        counts.register_collector(Box::new(RouteCounts(routes.to_vec())));
        counts.register_collector(Box::new(RolloutCounts(routes.to_vec())));
        if let Some(store) = routes
            .iter()
            .find_map(|r| r.schemas())
            .map(|s| s.store().clone())
        {
            counts.register_collector(Box::new(SchemaCounts(store)));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry);
        let _ = encode_registry(&mut text, &counts);
        let _ = encode_eof(&mut text);
        text
    }
}

/// What the schema store did, as counters (and the registry's state).
#[derive(Debug)]
struct SchemaCounts(Arc<SchemaStore>);

impl Collector for SchemaCounts {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let stats = self.0.stats();
        let read = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let mut family = encoder.encode_descriptor(
            "schema_lookups",
            "Schema lookups of records: answered from memory (hit) or starting a fetch (miss)",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [("hit", read(&stats.hits)), ("miss", read(&stats.misses))] {
            ConstCounter::new(count).encode(family.encode_family(&ResultLabels { result })?)?;
        }
        if self.0.registry().is_some() {
            let mut family = encoder.encode_descriptor(
                "schema_registry_requests",
                "Schema registry requests: answered (ok), not found, refused (a schema to register: incompatible or invalid), or failed (no answer, an error, an unusable answer)",
                None,
                MetricType::Counter,
            )?;
            for (result, count) in [
                ("ok", read(&stats.registry_ok)),
                ("not-found", read(&stats.registry_not_found)),
                ("refused", read(&stats.registry_refused)),
                ("failed", read(&stats.registry_failed)),
            ] {
                ConstCounter::new(count).encode(family.encode_family(&ResultLabels { result })?)?;
            }
            let up = encoder.encode_descriptor(
                "schema_registry_up",
                "1 unless the schema registry's last request failed",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(self.0.registry_down().is_none())).encode(up)?;
        }
        let invalid = encoder.encode_descriptor(
            "schema_invalid",
            "Schemas that did not compile (their records fail, kind schema)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(read(&stats.invalid)).encode(invalid)?;
        Ok(())
    }
}

/// Brings `counter`, which mirrors a count kept elsewhere, up to `now`.
fn catch_up(counter: &Counter, now: u64) {
    let seen = counter.get();
    if now > seen {
        counter.inc_by(now - seen);
    }
}

/// The routes' rollouts: decisions, the candidate tried, what a shadow
/// candidate found.
#[derive(Debug)]
struct RolloutCounts(Vec<Arc<Route>>);

impl Collector for RolloutCounts {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let routes: Vec<&Arc<Route>> = self
            .0
            .iter()
            .filter(|r| r.config.rollout.is_some())
            .collect();
        if routes.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "rollout_decisions",
            "Rollout decisions: a candidate started, widened (canary), promoted, rolled back or withdrawn (its file removed)",
            None,
            MetricType::Counter,
        )?;
        for route in &routes {
            let log = &route.rollouts;
            for (action, count) in [
                ("started", &log.started),
                ("widened", &log.widened),
                ("promoted", &log.promoted),
                ("rolled-back", &log.rolled_back),
                ("withdrawn", &log.withdrawn),
            ] {
                let labels = ActionLabels {
                    route: route.name().to_owned(),
                    action,
                };
                ConstCounter::new(count.load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "rollout_canary_partitions",
            "Partitions of each source topic the candidate routes (0 for a shadow candidate), while one is tried",
            None,
            MetricType::Gauge,
        )?;
        let rollouts: Vec<_> = routes
            .iter()
            .filter_map(|route| route.rollout().map(|r| (route, r)))
            .collect();
        for (route, rollout) in &rollouts {
            let labels = CandidateLabels {
                route: route.name().to_owned(),
                candidate_version: rollout.candidate.version().to_owned(),
                mode: if rollout.shadow.is_some() {
                    "shadow"
                } else {
                    "canary"
                },
            };
            ConstGauge::new(i64::from(rollout.canary_partitions().unwrap_or(0)))
                .encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "shadow_records",
            "Records the route's shadow candidates were handed: decided alike (agreed) or differently (differed) from the live version, or not seen (skipped: the queue was full)",
            None,
            MetricType::Counter,
        )?;
        for route in &routes {
            let totals = &route.rollouts.shadow;
            for (result, count) in [
                ("agreed", &totals.agreed),
                ("differed", &totals.differed),
                ("skipped", &totals.skipped),
            ] {
                let labels = ResultRouteLabels {
                    route: route.name().to_owned(),
                    result,
                };
                ConstCounter::new(count.load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The routes' counts ([`Route::stats`]), per plugin version, as counters.
#[derive(Debug)]
struct RouteCounts(Vec<Arc<Route>>);

/// One counter family read from a version's counts.
type Read = fn(&StatsSnapshot) -> u64;

/// The per-version counter families: name, help, count.
const VERSION_COUNTERS: [(&str, &str, Read); 6] = [
    (
        "records_consumed",
        "Records a route took from its source topics",
        |s| s.consumed,
    ),
    (
        "records_produced",
        "Outputs the broker acknowledged (dead-letter records not included)",
        |s| s.produced,
    ),
    (
        "records_filtered",
        "Records the plugin answered with no output",
        |s| s.filtered,
    ),
    (
        "records_dead_lettered",
        "Failed records produced to the route's dead-letter topic",
        |s| s.dead_lettered,
    ),
    (
        "records_skipped",
        "Failed records skipped (on_failure = \"skip\")",
        |s| s.skipped,
    ),
    (
        "record_retries",
        "Plugin calls repeated after a retry answer",
        |s| s.retries,
    ),
];

impl Collector for RouteCounts {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let versions: Vec<(&str, String, StatsSnapshot)> = self
            .0
            .iter()
            .flat_map(|route| {
                route
                    .stats
                    .versions()
                    .into_iter()
                    .map(|v| (route.name(), v.version.clone(), v.snapshot()))
            })
            .collect();
        for (name, help, read) in VERSION_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (route, version, counts) in &versions {
                let labels = VersionLabels {
                    route: (*route).to_owned(),
                    plugin_version: version.clone(),
                };
                ConstCounter::new(read(counts)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "record_failures",
            "Records that failed for good, by kind (reject, retry, trap, timeout, memory, invalid-output, broker-refused, schema, interrupted)",
            None,
            MetricType::Counter,
        )?;
        for (route, version, counts) in &versions {
            // Every kind, zeros included: a rate over a series that appears
            // only at its first failure misses that failure.
            for kind in FailureKind::ALL {
                let labels = FailureLabels {
                    route: (*route).to_owned(),
                    plugin_version: version.clone(),
                    kind: kind.as_str(),
                };
                let n = counts.failures.get(kind.as_str()).copied().unwrap_or(0);
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
