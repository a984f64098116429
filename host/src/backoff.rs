//! Exponential backoff with jitter, for records a plugin asks to retry.
//!
//! The wait before attempt `n + 1` is `initial × multiplier^(n-1)`, capped
//! at `max`, then spread uniformly over `±jitter` of itself so that
//! partitions failing together do not retry in lockstep. The jittered wait
//! never exceeds `max` either.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Wait after the first failed attempt.
    pub initial: Duration,
    /// Growth of the wait per attempt (at least 1).
    pub multiplier: f64,
    /// Longest wait.
    pub max: Duration,
    /// Spread of each wait, as a fraction of it (0 to 1).
    pub jitter: f64,
}

impl Backoff {
    /// The wait before the attempt after failed attempt `attempt` (1-based),
    /// before jitter.
    #[must_use]
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// The wait after failed attempt `attempt`, jittered with `unit`, a
    /// number in `[0, 1)` (0.5 gives the nominal wait).
    #[must_use]
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let nominal = self.nominal(attempt).as_secs_f64();
        let spread = nominal * self.jitter * unit.mul_add(2.0, -1.0);
        Duration::from_secs_f64((nominal + spread).clamp(0.0, self.max.as_secs_f64()))
    }

    /// The wait after failed attempt `attempt`, randomly jittered.
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, random_unit())
    }
}

/// A random number in `[0, 1)`. The standard library's hasher keys are
/// random per instance; that is enough randomness for spreading retries
/// and needs no extra dependency.
fn random_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // 53 random bits → a double in [0, 1).
    #[allow(
        clippy::cast_precision_loss,
        reason = "53 bits fit a double's mantissa exactly"
    )]
    let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(1),
            jitter: 0.2,
        }
    }

    #[test]
    fn waits_grow_by_the_multiplier_up_to_the_cap() {
        let b = schedule();
        let waits: Vec<u128> = (1..=7).map(|n| b.nominal(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(1), "no overflow");
    }

    #[test]
    fn jitter_spreads_each_wait_within_its_fraction() {
        let b = schedule();
        assert_eq!(b.delay_with(2, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay_with(2, 0.0), Duration::from_millis(160));
        let top = b.delay_with(2, 0.999_999).as_secs_f64();
        assert!((0.239..0.240).contains(&top), "{top}");
    }

    #[test]
    fn jitter_never_goes_past_the_cap() {
        let b = schedule();
        assert_eq!(b.delay_with(10, 0.999), Duration::from_secs(1));
        assert_eq!(b.delay_with(10, 0.0), Duration::from_millis(800));
    }

    #[test]
    fn no_jitter_and_multiplier_one_give_a_constant_wait() {
        let b = Backoff {
            multiplier: 1.0,
            jitter: 0.0,
            ..schedule()
        };
        for n in 1..20 {
            assert_eq!(b.delay(n), Duration::from_millis(100));
        }
    }

    #[test]
    fn random_waits_stay_in_range_and_are_spread() {
        let b = schedule();
        let waits: Vec<Duration> = (0..1000).map(|_| b.delay(1)).collect();
        assert!(
            waits
                .iter()
                .all(|w| (Duration::from_millis(80)..=Duration::from_millis(120)).contains(w))
        );
        let below = waits
            .iter()
            .filter(|w| **w < Duration::from_millis(100))
            .count();
        // Uniform jitter: about half below the nominal wait; 350..650 fails
        // with a probability far below 1e-20.
        assert!((350..650).contains(&below), "{below} of 1000 below nominal");
    }
}
