//! Bounds on what one plugin instance may use.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Per-instance limits. A plugin that exceeds one fails the record (or its
/// `init`), never the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall time one `route` call (a batch of records) may take.
    pub route_timeout: Duration,
    /// Wall time `init` may take (plugins in other languages start slowly).
    pub init_timeout: Duration,
    /// Outputs one record may have (checked before they are converted).
    pub max_outputs: usize,
}

impl Limits {
    /// 64 MiB: a Rust plugin needs ~1 MiB; interpreted plugins (Python, JS)
    /// need tens of MiB.
    pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;
    /// One second per call: generous for routing a batch, short enough that
    /// a runaway plugin cannot stall a partition for long.
    pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(1);
    /// Ten seconds for `init`.
    pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(10);
    /// A thousand outputs per record: far above any fan-out seen in
    /// practice, far below what would hurt the producer.
    pub const DEFAULT_MAX_OUTPUTS: usize = 1000;
    /// Plugin log lines a route may write per second by default (its
    /// [`LogBudget`](super::LogBudget), shared by all its instances): a
    /// hundred, plenty to debug with, at most
    /// ~400 KiB/s of log (lines are cut at 4 KiB) whatever a plugin does.
    pub const DEFAULT_LOG_LINES_PER_SECOND: u32 = 100;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            route_timeout: Self::DEFAULT_ROUTE_TIMEOUT,
            init_timeout: Self::DEFAULT_INIT_TIMEOUT,
            max_outputs: Self::DEFAULT_MAX_OUTPUTS,
        }
    }
}

/// Enforces [`Limits::memory_bytes`] over all of an instance's linear
/// memories together (a component may declare many), bounds the number of
/// core instances, memories and tables it may create, and remembers a
/// refusal, so that the resulting trap is reported as a memory failure.
///
/// A refused growth of a memory is not a trap by itself: the plugin's
/// `memory.grow` fails, as wasm says it may, and the plugin decides. A
/// Rust plugin aborts (the call fails, as `memory`); a garbage-collected
/// language (JavaScript, Python) collects and goes on within its limit,
/// and its call succeeds.
#[derive(Debug)]
pub(super) struct MemoryLimiter {
    max_bytes: usize,
    /// Bytes of all the instance's memories so far (memories only grow,
    /// and live as long as the store).
    total_bytes: usize,
    /// Elements of all its tables so far.
    total_elements: usize,
    /// Set when a growth was refused: what was asked for, in one line.
    pub(super) exceeded: Option<String>,
}

/// Table elements, all of an instance's tables together: function
/// references, a few per function of the plugin; no sane plugin needs a
/// million.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Core instances, memories and tables one plugin instance may create. A
/// Rust plugin has 4 core instances, 2 memories and 3 tables; an
/// interpreted one (Python, JavaScript) a few more.
pub(super) const MAX_CORE_INSTANCES: usize = 64;
pub(super) const MAX_MEMORIES: usize = 16;
pub(super) const MAX_TABLES: usize = 64;

/// Host-side objects (streams, pollables...) one instance may hold at
/// once: WASI plugins hold a handful.
pub(super) const MAX_HOST_HANDLES: usize = 4096;

impl MemoryLimiter {
    pub(super) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            total_bytes: 0,
            total_elements: 0,
            exceeded: None,
        }
    }

    /// Bytes of all the instance's linear memories now.
    pub(super) fn memory_bytes(&self) -> usize {
        self.total_bytes
    }

    fn refuse(&mut self, message: String) -> wasmtime::Result<bool> {
        self.exceeded = Some(message.clone());
        wasmtime::bail!(message)
    }

    /// Refuses a memory growth: `memory.grow` returns -1 to the plugin.
    fn deny(&mut self, message: String) -> bool {
        self.exceeded = Some(message);
        false
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            // The memory's own type forbids it: wasmtime refuses it anyway.
            return Ok(false);
        }
        let total = self.total_bytes - current.min(self.total_bytes) + desired;
        if total > self.max_bytes {
            return Ok(self.deny(format!(
                "plugin tried to grow its memory to {} MiB; the route's limit (limits.memory_mib) is {} MiB",
                total.div_ceil(1 << 20),
                self.max_bytes >> 20
            )));
        }
        self.total_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self.total_elements - current.min(self.total_elements) + desired;
        if total > MAX_TABLE_ELEMENTS {
            return self.refuse(format!(
                "plugin tried to grow its tables to {total} elements in all; the most is {MAX_TABLE_ELEMENTS}"
            ));
        }
        self.total_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_counts_every_memory_of_the_instance_together() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        // A new memory of 4 MiB, another of 4 MiB: 8 MiB in all.
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        // The first growing by 1 MiB: 9 MiB.
        assert!(limiter.memory_growing(4 << 20, 5 << 20, None).unwrap());
        // A third memory of 2 MiB would make 11 MiB: refused (the
        // plugin's memory.grow fails), and remembered for the failure.
        assert!(!limiter.memory_growing(0, 2 << 20, None).unwrap());
        let refused = limiter.exceeded.as_deref().unwrap_or_default();
        assert!(refused.contains("to 11 MiB"), "{refused}");
        assert_eq!(limiter.memory_bytes(), 9 << 20, "nothing counted for it");
    }

    #[test]
    fn the_table_limit_counts_every_table_of_the_instance_together() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        assert!(
            limiter
                .table_growing(0, MAX_TABLE_ELEMENTS / 2, None)
                .unwrap()
        );
        assert!(
            limiter
                .table_growing(0, MAX_TABLE_ELEMENTS / 2, None)
                .unwrap()
        );
        assert!(limiter.table_growing(0, 1, None).is_err());
    }

    #[test]
    fn a_growth_past_the_memorys_own_maximum_is_refused_without_counting() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        assert!(!limiter.memory_growing(0, 2 << 20, Some(1 << 20)).unwrap());
        assert!(limiter.memory_growing(0, 10 << 20, None).unwrap());
    }
}
