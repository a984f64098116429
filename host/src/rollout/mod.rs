//! Safe rollout of a plugin version: a *candidate* (the route's
//! `[routes.rollout]` file) is tried beside the live version before it
//! routes everything.
//!
//! - **Canary**: the candidate routes the lowest-numbered partitions of
//!   each source topic (whole partitions, so each keeps its order), the
//!   live version the rest. Workers look at a partition's side at each of
//!   its turns ([`crate::route::Route::candidate_routes`]).
//! - **Shadow**: the candidate sees the records the live version routes,
//!   on a thread of its own ([`shadow`]); its decisions are compared with
//!   the live ones, and nothing of it is produced.
//!
//! A policy ([`supervise`]) looks at every rollout twice a second: it
//! rolls back a candidate whose failure rate exceeds the live version's by
//! more than the route allows, widens a healthy canary step by step, and
//! promotes a healthy candidate once it has taken enough records or time.
//! An operator can do each of these at any time (`switchyard ctl`). Every
//! decision is logged with its figures, counted, and kept for `/routes`.

pub mod shadow;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{RolloutConfig, RolloutMode};
use crate::plugin::Plugin;
use crate::route::Route;
use crate::stats::StatsSnapshot;

use self::shadow::Shadow;

/// Rollout decisions a route keeps for `/routes`, the latest last.
const KEPT_DECISIONS: usize = 10;

/// How often the policy looks at the rollouts.
const POLICY_TICK: Duration = Duration::from_millis(500);

/// A candidate version being tried on a route.
pub struct Rollout {
    /// The route's `[routes.rollout]`.
    pub config: RolloutConfig,
    /// The version tried.
    pub candidate: Arc<Plugin>,
    started: Instant,
    started_at: SystemTime,
    /// Canary: how many of each source topic's partitions it routes.
    canary: AtomicU32,
    /// When the canary was last widened (or the rollout started).
    stepped: Mutex<Instant>,
    /// The route's counts when the rollout started, all versions and the
    /// candidate's own (a version tried before has some).
    base_total: StatsSnapshot,
    base_candidate: StatsSnapshot,
    /// Shadow: the candidate's thread and what it found.
    pub(crate) shadow: Option<Shadow>,
}

impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollout")
            .field("mode", &self.config.mode)
            .field("candidate", &self.candidate.version())
            .finish_non_exhaustive()
    }
}

/// What a rollout has shown so far: the candidate's records and failures
/// beside the live version's since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Figures {
    /// Records the candidate took (canary: routed or failed for good;
    /// shadow: compared).
    pub candidate_records: u64,
    /// Of these, the ones the candidate failed (traps, time-outs, rejects,
    /// invalid outputs, memory; not schema or broker refusals).
    pub candidate_failures: u64,
    /// Records the live version took meanwhile (a canary on every
    /// partition: before the rollout).
    pub live_records: u64,
    /// Of these, the ones it failed.
    pub live_failures: u64,
    /// Shadow: records whose two decisions differ.
    pub differences: u64,
    /// Seconds since the rollout started.
    pub seconds: u64,
}

impl Figures {
    fn rate(failed: u64, of: u64) -> f64 {
        if of == 0 {
            0.0
        } else {
            #[allow(clippy::cast_precision_loss, reason = "a rate")]
            let rate = failed as f64 / of as f64;
            rate
        }
    }

    /// The candidate's failure rate.
    #[must_use]
    pub fn candidate_failure_rate(&self) -> f64 {
        Self::rate(self.candidate_failures, self.candidate_records)
    }

    /// The live version's failure rate.
    #[must_use]
    pub fn live_failure_rate(&self) -> f64 {
        Self::rate(self.live_failures, self.live_records)
    }

    /// Shadow: the share of compared records whose decisions differ.
    #[must_use]
    pub fn difference_rate(&self) -> f64 {
        Self::rate(self.differences, self.candidate_records)
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "candidate {} of {} records failed ({:.2}%), live {} of {} ({:.2}%)",
            self.candidate_failures,
            self.candidate_records,
            100.0 * self.candidate_failure_rate(),
            self.live_failures,
            self.live_records,
            100.0 * self.live_failure_rate(),
        )?;
        if self.differences > 0 {
            write!(
                f,
                ", {} decisions differ ({:.2}%)",
                self.differences,
                100.0 * self.difference_rate()
            )?;
        }
        write!(f, ", after {} s", self.seconds)
    }
}

/// A decision about a rollout, kept for `/routes`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    /// `started`, `widened`, `promoted`, `rolled-back` or `withdrawn`.
    pub action: &'static str,
    /// The candidate's version.
    pub candidate: String,
    /// Who decided: `policy`, `operator` or `file`.
    pub by: &'static str,
    /// Why, in words (with the figures).
    pub reason: String,
    /// Its figures then.
    pub figures: Figures,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The rollout state a route keeps besides the rollout running.
#[derive(Debug, Default)]
pub struct RolloutLog {
    decisions: Mutex<VecDeque<Decision>>,
    /// Decisions by action, for `/metrics`.
    pub started: AtomicU64,
    /// Canary steps.
    pub widened: AtomicU64,
    /// Candidates promoted.
    pub promoted: AtomicU64,
    /// Candidates rolled back.
    pub rolled_back: AtomicU64,
    /// Candidates withdrawn (their file removed).
    pub withdrawn: AtomicU64,
    /// The SHA-256 of the candidate last rolled back: not tried again
    /// until its file changes.
    pub rejected: Mutex<Option<String>>,
    /// What its shadow candidates found, all together.
    pub shadow: Arc<shadow::ShadowTotals>,
}

impl RolloutLog {
    /// Keeps `decision`, logs it and counts it.
    pub(crate) fn record(&self, route: &str, decision: Decision) {
        let counter = match decision.action {
            "started" => &self.started,
            "widened" => &self.widened,
            "promoted" => &self.promoted,
            "rolled-back" => &self.rolled_back,
            _ => &self.withdrawn,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if decision.action == "rolled-back" {
            tracing::warn!(
                route,
                candidate = decision.candidate,
                by = decision.by,
                "rollout: candidate rolled back: {}",
                decision.reason
            );
        } else {
            tracing::info!(
                route,
                candidate = decision.candidate,
                by = decision.by,
                "rollout: candidate {}: {}",
                decision.action,
                decision.reason
            );
        }
        let mut decisions = self
            .decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        decisions.push_back(decision);
        while decisions.len() > KEPT_DECISIONS {
            decisions.pop_front();
        }
    }

    /// The decisions kept, the latest last.
    #[must_use]
    pub fn decisions(&self) -> Vec<Decision> {
        self.decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// The candidate file now holds `sha256`: a candidate rolled back
    /// before is tried again once its file held another.
    pub(crate) fn candidate_file_is(&self, sha256: &str) {
        let mut rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        if rejected.as_deref().is_some_and(|r| r != sha256) {
            *rejected = None;
        }
    }

    /// Whether the candidate with `sha256` was rolled back.
    #[must_use]
    pub fn is_rejected(&self, sha256: &str) -> bool {
        self.rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_deref()
            == Some(sha256)
    }
}

/// Milliseconds since the Unix epoch at `time`.
fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Rollout {
    /// A rollout of `candidate` on `route`, starting now.
    pub(crate) fn new(route: &Arc<Route>, config: RolloutConfig, candidate: Arc<Plugin>) -> Self {
        let shadow =
            (config.mode == RolloutMode::Shadow).then(|| Shadow::start(route, candidate.clone()));
        let now = Instant::now();
        Self {
            canary: AtomicU32::new(config.canary_partitions.unwrap_or(1)),
            base_total: route.stats.snapshot(),
            base_candidate: route.stats.version(candidate.version()).snapshot(),
            config,
            candidate,
            started: now,
            started_at: SystemTime::now(),
            stepped: Mutex::new(now),
            shadow,
        }
    }

    /// Whether the candidate routes `partition` (of any source topic).
    #[must_use]
    pub fn routes(&self, partition: i32) -> bool {
        self.config.mode == RolloutMode::Canary
            && u32::try_from(partition).is_ok_and(|p| p < self.canary.load(Ordering::Acquire))
    }

    /// Canary: how many of each source topic's partitions it routes.
    #[must_use]
    pub fn canary_partitions(&self) -> Option<u32> {
        (self.config.mode == RolloutMode::Canary).then(|| self.canary.load(Ordering::Acquire))
    }

    /// Canary: routes `to` partitions of each source topic from now on,
    /// if it routed `from` until now; whether it did.
    pub(crate) fn set_canary(&self, from: u32, to: u32) -> bool {
        let changed = self
            .canary
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            *self.stepped.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
        changed
    }

    /// Shadow: what the candidate found so far.
    #[must_use]
    pub fn shadow_counts(&self) -> Option<shadow::ShadowSnapshot> {
        self.shadow.as_ref().map(|s| s.counts.snapshot())
    }

    /// When it started, in milliseconds since the Unix epoch.
    #[must_use]
    pub fn started_ms(&self) -> u64 {
        epoch_ms(self.started_at)
    }

    /// What it has shown so far on `route`.
    #[must_use]
    pub fn figures(&self, route: &Route) -> Figures {
        let seconds = self.started.elapsed().as_secs();
        if let Some(shadow) = &self.shadow {
            let counts = shadow.counts.snapshot();
            return Figures {
                candidate_records: counts.compared,
                candidate_failures: counts.candidate_failed,
                live_records: counts.compared,
                live_failures: counts.live_failed,
                differences: counts.differed,
                seconds,
            };
        }
        // The candidate's first: the total, read after, holds at least
        // what it counted.
        let candidate = route.stats.version(self.candidate.version()).snapshot();
        let total = route.stats.snapshot();
        let (t1, tf1) = (records(&total), plugin_failures(&total));
        let (t0, tf0) = (records(&self.base_total), plugin_failures(&self.base_total));
        let (c1, cf1) = (records(&candidate), plugin_failures(&candidate));
        let (c0, cf0) = (
            records(&self.base_candidate),
            plugin_failures(&self.base_candidate),
        );
        let (candidate_records, candidate_failures) = (c1 - c0, cf1 - cf0);
        let (mut live_records, mut live_failures) = (
            (t1 - t0).saturating_sub(candidate_records),
            (tf1 - tf0).saturating_sub(candidate_failures),
        );
        if live_records == 0 {
            // The candidate routes every partition: the live version is
            // judged by what it did before the rollout.
            (live_records, live_failures) = (t0.saturating_sub(c0), tf0.saturating_sub(cf0));
        }
        Figures {
            candidate_records,
            candidate_failures,
            live_records,
            live_failures,
            differences: 0,
            seconds,
        }
    }

    /// A decision about it, with its figures on `route` now.
    pub(crate) fn decision(
        &self,
        route: &Route,
        action: &'static str,
        by: &'static str,
        reason: String,
    ) -> Decision {
        Decision {
            action,
            candidate: self.candidate.version().to_owned(),
            by,
            reason,
            figures: self.figures(route),
            at_ms: epoch_ms(SystemTime::now()),
        }
    }

    /// What the policy does now, if anything.
    fn policy(&self, route: &Route) -> Option<Step> {
        let since_step = self
            .stepped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        judge(
            &self.config,
            &self.figures(route),
            self.shadow.is_some(),
            self.canary_partitions()
                .map(|n| (n, since_step, route.source_partitions())),
        )
    }
}

/// What `config`'s policy does for a rollout that has shown `figures`:
/// a shadow one (`shadow`), or a canary on so many partitions, last
/// widened so long ago, of source topics with so many partitions.
fn judge(
    config: &RolloutConfig,
    figures: &Figures,
    shadow: bool,
    canary: Option<(u32, Duration, u32)>,
) -> Option<Step> {
    let judged = figures.candidate_records >= config.min_records;
    let worse = figures.candidate_failure_rate()
        > figures.live_failure_rate() + config.max_failure_rate_increase;
    if judged && worse {
        return config.auto_rollback.then(|| {
            Step::RollBack(format!(
                "its failure rate exceeds the live version's by more than max_failure_rate_increase ({}): {figures}",
                config.max_failure_rate_increase
            ))
        });
    }
    let differs = shadow && figures.difference_rate() > config.max_difference_rate;
    let healthy = judged && !worse && !differs;
    let records_due = config
        .promote_after_records
        .is_none_or(|n| figures.candidate_records >= n);
    let time_due = config
        .promote_after_seconds
        .is_none_or(|s| figures.seconds >= s);
    if config.promotes() && healthy && records_due && time_due {
        return Some(Step::Promote(format!(
            "healthy past the policy's bar: {figures}"
        )));
    }
    match canary {
        Some((partitions, since_step, widest))
            if config.step_partitions > 0
                && healthy
                && since_step >= Duration::from_secs(config.step_seconds)
                && partitions < widest =>
        {
            Some(Step::Widen(
                partitions,
                partitions
                    .saturating_add(config.step_partitions)
                    .min(widest),
                *figures,
            ))
        }
        _ => None,
    }
}

/// Records a version took (routed, or failed for good by its plugin).
fn records(stats: &StatsSnapshot) -> u64 {
    stats.routed + plugin_failures(stats)
}

/// Records a version's plugin failed for good (not refused by the broker,
/// not failed their schema check, not interrupted).
fn plugin_failures(stats: &StatsSnapshot) -> u64 {
    stats
        .failures
        .iter()
        .filter(|(kind, _)| !matches!(**kind, "broker-refused" | "schema" | "interrupted"))
        .map(|(_, n)| n)
        .sum()
}

/// What the policy decided for a rollout.
#[derive(Debug, PartialEq)]
enum Step {
    RollBack(String),
    Promote(String),
    /// From so many partitions to so many.
    Widen(u32, u32, Figures),
}

/// The thread that applies every route's rollout policy; stops when
/// dropped.
#[derive(Debug)]
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Applies the rollout policies of `routes` (those with a
/// `[routes.rollout]`) until the supervisor is dropped.
pub fn supervise(routes: &[Arc<Route>]) -> std::io::Result<Option<Supervisor>> {
    let routes: Vec<Arc<Route>> = routes
        .iter()
        .filter(|r| r.config.rollout.is_some())
        .cloned()
        .collect();
    if routes.is_empty() {
        return Ok(None);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name("switchyard-rollout".to_owned())
        .spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Acquire) {
                    for route in &routes {
                        apply_policy(route);
                    }
                    std::thread::park_timeout(POLICY_TICK);
                }
            }
        })?;
    Ok(Some(Supervisor {
        stop,
        thread: Some(thread),
    }))
}

/// Applies `route`'s rollout policy once.
pub fn apply_policy(route: &Route) {
    let Some(rollout) = route.rollout() else {
        return;
    };
    match rollout.policy(route) {
        None => {}
        Some(Step::RollBack(reason)) => {
            let _ = route.end_rollout(&rollout, "rolled-back", "policy", reason);
        }
        Some(Step::Promote(reason)) => {
            let _ = route.end_rollout(&rollout, "promoted", "policy", reason);
        }
        Some(Step::Widen(from, to, figures)) => {
            let _ = route.widen(
                &rollout,
                from,
                to,
                "policy",
                format!("from {from} to {to} partitions of each source topic, healthy: {figures}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> RolloutConfig {
        toml::from_str(&format!("candidate = \"next.wasm\"\n{text}"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn figures(candidate: (u64, u64), live: (u64, u64), seconds: u64) -> Figures {
        Figures {
            candidate_records: candidate.0,
            candidate_failures: candidate.1,
            live_records: live.0,
            live_failures: live.1,
            differences: 0,
            seconds,
        }
    }

    #[test]
    fn a_candidate_failing_more_than_the_live_version_allows_is_rolled_back_once_judged() {
        let policy = config("min_records = 100\nmax_failure_rate_increase = 0.05");
        // 10% against 1%: too many, but not judged before 100 records.
        assert_eq!(
            judge(&policy, &figures((99, 10), (1000, 10), 5), false, None),
            None
        );
        let step = judge(&policy, &figures((100, 10), (1000, 10), 5), false, None);
        assert!(
            matches!(step, Some(Step::RollBack(ref why)) if why.contains("candidate 10 of 100 records failed (10.00%), live 10 of 1000 (1.00%)")),
            "{step:?}"
        );
        // 5.9% against 1%: within the margin.
        assert_eq!(
            judge(&policy, &figures((1000, 59), (1000, 10), 5), false, None),
            None
        );
        // Without auto_rollback, only an operator rolls back.
        let manual = config("min_records = 100\nauto_rollback = false");
        assert_eq!(
            judge(&manual, &figures((100, 100), (100, 0), 5), false, None),
            None
        );
    }

    #[test]
    fn a_healthy_candidate_is_promoted_when_both_bars_are_passed() {
        let policy =
            config("promote_after_records = 500\npromote_after_seconds = 60\nmin_records = 100");
        let healthy = |records, seconds| {
            judge(
                &policy,
                &figures((records, 0), (records, 0), seconds),
                false,
                None,
            )
        };
        assert_eq!(healthy(499, 600), None);
        assert_eq!(healthy(5000, 59), None);
        assert!(matches!(healthy(500, 60), Some(Step::Promote(_))));
        // No bar set: never by the policy.
        let none = config("min_records = 1");
        assert_eq!(
            judge(&none, &figures((1_000_000, 0), (0, 0), 86_400), false, None),
            None
        );
    }

    #[test]
    fn a_shadow_candidate_is_promoted_only_with_few_enough_differences() {
        let policy =
            config("mode = \"shadow\"\npromote_after_records = 100\nmax_difference_rate = 0.01");
        let mut seen = figures((1000, 0), (1000, 0), 10);
        seen.differences = 11;
        assert_eq!(judge(&policy, &seen, true, None), None);
        seen.differences = 10;
        assert!(matches!(
            judge(&policy, &seen, true, None),
            Some(Step::Promote(_))
        ));
    }

    #[test]
    fn a_healthy_canary_is_widened_step_by_step_up_to_every_partition() {
        let policy = config("step_partitions = 2\nstep_seconds = 30\nmin_records = 10");
        let seen = figures((100, 0), (100, 0), 100);
        let step = |partitions, since: u64| {
            judge(
                &policy,
                &seen,
                false,
                Some((partitions, Duration::from_secs(since), 6)),
            )
        };
        assert_eq!(step(1, 29), None);
        assert_eq!(step(1, 30), Some(Step::Widen(1, 3, seen)));
        assert_eq!(step(5, 30), Some(Step::Widen(5, 6, seen)));
        assert_eq!(step(6, 30), None);
        // Not while it fails.
        let failing = figures((100, 50), (100, 0), 100);
        assert!(matches!(
            judge(
                &policy,
                &failing,
                false,
                Some((1, Duration::from_secs(60), 6))
            ),
            Some(Step::RollBack(_))
        ));
    }
}
