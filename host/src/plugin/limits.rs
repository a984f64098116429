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

/// Enforces [`Limits::memory_bytes`] and remembers that it did, so that the
/// resulting trap is reported as a memory failure.
#[derive(Debug)]
pub(super) struct MemoryLimiter {
    max_bytes: usize,
    /// Set when a growth was refused: what was asked for, in one line.
    pub(super) exceeded: Option<String>,
}

/// Tables hold function references; no sane plugin needs more elements.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl MemoryLimiter {
    pub(super) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            exceeded: None,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            let message = format!(
                "plugin tried to grow its memory to {} MiB; the route's limit (limits.memory_mib) is {} MiB",
                desired.div_ceil(1 << 20),
                self.max_bytes >> 20
            );
            self.exceeded = Some(message.clone());
            wasmtime::bail!(message);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
