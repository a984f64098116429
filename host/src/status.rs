//! Is the router alive, and is it ready? What `/health` and `/ready` answer.
//!
//! - Alive: the consumer loop is running and has polled recently (a loop
//!   stuck for a minute is dead to an orchestrator).
//! - Ready: a broker connection is up (from librdkafka's statistics, which
//!   arrive every `statistics.interval.ms`), partitions are assigned, every
//!   route's plugin is loaded, no partition is held at a failed record, and
//!   the router is not stopping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::route::Route;

/// The consumer loop polls every 100 ms; a rebalance may hold it for the
/// drain timeout (30 s). Past this it is considered stuck.
const STUCK_AFTER: Duration = Duration::from_secs(60);

/// Shared state the loops update and the HTTP endpoint reads.
#[derive(Debug)]
pub struct Status {
    started: Instant,
    /// Milliseconds since `started` of the consumer loop's last poll.
    last_poll_ms: AtomicU64,
    consumer_running: AtomicBool,
    assigned: AtomicUsize,
    broker_up: AtomicBool,
    /// Milliseconds since `started` of the last statistics; 0: none yet.
    stats_ms: AtomicU64,
    stats_interval: Duration,
    stopping: AtomicBool,
}

/// An answer of `/health` or `/ready`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Healthy, or ready.
    pub ok: bool,
    /// What is wrong, one line each; empty when `ok`.
    pub problems: Vec<String>,
}

impl Status {
    /// A router that has not polled yet; librdkafka statistics are expected
    /// every `stats_interval`.
    #[must_use]
    pub fn new(stats_interval: Duration) -> Self {
        Self {
            started: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
            consumer_running: AtomicBool::new(false),
            assigned: AtomicUsize::new(0),
            broker_up: AtomicBool::new(false),
            stats_ms: AtomicU64::new(0),
            stats_interval,
            stopping: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The consumer loop is running (or has ended).
    pub fn set_consumer_running(&self, running: bool) {
        self.consumer_running.store(running, Ordering::Release);
    }

    /// The consumer loop is about to poll.
    pub fn polled(&self) {
        self.last_poll_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// `count` partitions are assigned now.
    pub fn set_assigned(&self, count: usize) {
        self.assigned.store(count, Ordering::Relaxed);
    }

    /// Partitions assigned now.
    #[must_use]
    pub fn assigned(&self) -> usize {
        self.assigned.load(Ordering::Relaxed)
    }

    /// New statistics arrived: a broker connection is `up` or not.
    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.store(up, Ordering::Relaxed);
        self.stats_ms.store(self.now_ms().max(1), Ordering::Relaxed);
    }

    /// Whether a broker connection was up at the last statistics.
    #[must_use]
    pub fn broker_up(&self) -> bool {
        self.broker_up.load(Ordering::Relaxed)
    }

    /// The router is stopping.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// `/health`.
    #[must_use]
    pub fn health(&self) -> Verdict {
        let mut problems = Vec::new();
        if !self.consumer_running.load(Ordering::Acquire) {
            problems.push("the consumer loop is not running".to_owned());
        } else {
            let since = self
                .now_ms()
                .saturating_sub(self.last_poll_ms.load(Ordering::Relaxed));
            if since > millis(STUCK_AFTER) {
                problems.push(format!(
                    "the consumer loop has not polled for {} s",
                    since / 1000
                ));
            }
        }
        Verdict {
            ok: problems.is_empty(),
            problems,
        }
    }

    /// `/ready`.
    #[must_use]
    pub fn ready(&self, routes: &[Arc<Route>]) -> Verdict {
        let mut problems = self.health().problems;
        if self.stopping.load(Ordering::Relaxed) {
            problems.push("the router is stopping".to_owned());
        }
        let stats_ms = self.stats_ms.load(Ordering::Relaxed);
        let stale_after = 3 * millis(self.stats_interval) + 2000;
        if stats_ms == 0 {
            problems.push("no statistics from the consumer yet: broker state unknown".to_owned());
        } else if self.now_ms().saturating_sub(stats_ms) > stale_after {
            problems.push(format!(
                "no statistics from the consumer for {} s: broker state unknown",
                self.now_ms().saturating_sub(stats_ms) / 1000
            ));
        } else if !self.broker_up.load(Ordering::Relaxed) {
            problems.push("no broker reachable: no connection to any broker is up".to_owned());
        }
        if self.assigned() == 0 {
            problems.push("no partitions assigned (yet)".to_owned());
        }
        for route in routes {
            if route.is_paused() {
                problems.push(format!(
                    "route '{}': paused by an operator (resume it: switchyard ctl resume {})",
                    route.name(),
                    route.name()
                ));
            }
            if route.config.plugin.is_some() && route.plugin().is_none() {
                problems.push(format!("route '{}': no plugin loaded", route.name()));
            }
            if let Some(why) = route.schemas().and_then(|s| s.store().registry_down()) {
                problems.push(format!(
                    "route '{}': the schema registry cannot be used: {why}",
                    route.name()
                ));
            }
            for ((topic, partition), halt) in route.halted() {
                let at = halt.offset.map_or_else(
                    || "before its next record".to_owned(),
                    |o| format!("at offset {o}"),
                );
                problems.push(format!(
                    "route '{}': partition {topic}[{partition}] held {at}: {}",
                    route.name(),
                    halt.reason
                ));
            }
        }
        Verdict {
            ok: problems.is_empty(),
            problems,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_broker_partitions_and_a_live_loop() {
        let status = Status::new(Duration::from_secs(1));
        let verdict = status.ready(&[]);
        assert!(!verdict.ok);
        assert_eq!(
            verdict.problems,
            [
                "the consumer loop is not running",
                "no statistics from the consumer yet: broker state unknown",
                "no partitions assigned (yet)"
            ]
        );
        status.set_consumer_running(true);
        status.polled();
        status.set_broker_up(false);
        status.set_assigned(3);
        assert_eq!(
            status.ready(&[]).problems,
            ["no broker reachable: no connection to any broker is up"]
        );
        status.set_broker_up(true);
        assert!(status.ready(&[]).ok);
        assert!(status.health().ok);
        status.set_stopping();
        assert_eq!(status.ready(&[]).problems, ["the router is stopping"]);
        assert!(status.health().ok, "stopping is not dying");
    }
}
