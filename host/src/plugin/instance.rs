//! Running a plugin: one `Store` and instance, reused across records and
//! replaced after a trap.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::{Resource, ResourceTable, ResourceTableError};
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtx;

use super::bindings::{Router, types};
use super::engine::{Bounded, Plugin, one_line};
use super::error::PluginError;
use super::interrupt::Interrupt;
use super::limits::{Limits, MAX_HOST_HANDLES, MemoryLimiter};
use super::state::{Batch, HostState, RouteContext};
use super::stdio::{LogStream, LogTag, RecentLines};
use crate::record::{Data, Header, Output, OutputHeaders, SourceRecord};

/// Why a record was not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The plugin asked for a retry.
    Retry,
    /// The plugin rejected the record.
    Reject,
    /// The plugin trapped (panic, `unreachable`, exit, bad host call...).
    Trap,
    /// The call ran past the route's time limit.
    Timeout,
    /// The call was ended because its partition's worker must stop (a
    /// rebalance, a shutdown): nothing is known of the record, which is
    /// routed again by the partition's next owner.
    Interrupted,
    /// The plugin tried to grow past the route's memory limit.
    Memory,
    /// The plugin's outputs break the route's rules.
    Invalid,
    /// The broker refused an output (its size, contents, timestamp, or the
    /// right to write it), even sent alone.
    BrokerRefused,
    /// The record's key or value is not in the schema registry's wire
    /// format, names a schema that does not exist or does not compile, or
    /// does not match its schema (the plugin is not called).
    Schema,
}

impl FailureKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [Self; 9] = [
        Self::Retry,
        Self::Reject,
        Self::Trap,
        Self::Timeout,
        Self::Interrupted,
        Self::Memory,
        Self::Invalid,
        Self::BrokerRefused,
        Self::Schema,
    ];

    /// Lower-case name used in reports and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Reject => "reject",
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::Interrupted => "interrupted",
            Self::Memory => "memory",
            Self::Invalid => "invalid-output",
            Self::BrokerRefused => "broker-refused",
            Self::Schema => "schema",
        }
    }

    /// The `dlq-error-kind` header of a record that failed for good this
    /// way: a `retry` answer only fails for good once attempts run out.
    #[must_use]
    pub const fn dead_letter_kind(self) -> &'static str {
        match self {
            Self::Retry => "retry-exhausted",
            other => other.as_str(),
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that could not be routed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RouteFailure {
    /// The kind, which decides what happens next.
    pub kind: FailureKind,
    /// A human-readable reason.
    pub message: String,
}

impl RouteFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// A plugin instance ready to route, with its own `Store`.
pub struct PluginInstance {
    plugin: Plugin,
    config: Vec<(String, String)>,
    context: RouteContext,
    limits: Limits,
    store: Store<HostState>,
    router: Router,
    /// Set after a trap (the store cannot be entered again), or when the
    /// instance's memory has grown too near its limit: the next call
    /// starts from a fresh instance.
    poisoned: bool,
    /// The instance's memory once started (after `init`): what it grows
    /// from.
    started_bytes: usize,
    /// Fresh instances started in place of one whose memory grew too near
    /// its limit.
    recycled: u64,
    /// Ends calls early when raised (the worker is stopping).
    interrupt: Option<Interrupt>,
    /// Reused for every call: its buffers keep their capacity.
    call: types::CallContext,
}

/// What the plugin decided for each record of a call, in order.
pub type Answers = Vec<Result<Outputs, RouteFailure>>;

/// One record's outputs: inline for the usual one (no allocation).
pub type Outputs = smallvec::SmallVec<[Output; 1]>;

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("plugin", &self.plugin)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// A new instance, initialized with `config`.
    pub fn instantiate(
        &self,
        config: &[(String, String)],
        context: RouteContext,
        limits: Limits,
    ) -> Result<PluginInstance, PluginError> {
        self.instantiate_interruptible(config, context, limits, None)
    }

    /// A new instance, initialized with `config`, whose calls (its `init`
    /// included) end at once when `interrupt` is raised.
    pub fn instantiate_interruptible(
        &self,
        config: &[(String, String)],
        context: RouteContext,
        limits: Limits,
        interrupt: Option<Interrupt>,
    ) -> Result<PluginInstance, PluginError> {
        let (store, router) = self.fresh(config, &context, limits, interrupt.as_ref())?;
        let started_bytes = store.data().limiter.memory_bytes();
        Ok(PluginInstance {
            plugin: self.clone(),
            config: config.to_vec(),
            context,
            limits,
            store,
            router,
            poisoned: false,
            started_bytes,
            recycled: 0,
            interrupt,
            call: types::CallContext {
                default_target_partitions: 0,
                header_spans: Vec::new(),
                header_bytes: Vec::new(),
            },
        })
    }

    fn fresh(
        &self,
        config: &[(String, String)],
        context: &RouteContext,
        limits: Limits,
        interrupt: Option<&Interrupt>,
    ) -> Result<(Store<HostState>, Router), PluginError> {
        let stderr = Arc::new(RecentLines::default());
        // No preopened directories, no environment, no arguments, no
        // network: the plugin sees nothing of the machine.
        let tag = Arc::new(LogTag {
            route: context.route.clone(),
            plugin: self.name.clone(),
            version: self.version.clone(),
            budget: context.log_budget.clone(),
        });
        let streams = [
            LogStream::new(tag.clone(), "stdout"),
            LogStream::new(tag.clone(), "stderr").keeping_recent(stderr.clone()),
        ];
        let wasi = WasiCtx::builder()
            .stdout(streams[0].clone())
            .stderr(streams[1].clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // Random bytes are made on the host before they are copied in:
            // never more than the plugin's own memory could take.
            .max_random_size(limits.memory_bytes as u64)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory_bytes),
            stderr,
            tag,
            context: context.clone(),
            batch: Vec::new(),
            wanted_headers: Vec::new(),
            give_partitions: false,
            streams,
        };
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|state| &mut state.limiter);
        // What the host holds for the plugin is bounded too: handles in the
        // table, and the bytes one host call may copy out of the plugin
        // (never more than its own memory could hold).
        store.data_mut().table.set_max_capacity(MAX_HOST_HANDLES);
        store.set_hostcall_fuel(limits.memory_bytes);
        // Code that runs on and on yields at every epoch tick, so that the
        // deadline of its call (`PluginEngine::bounded`) can end it.
        store.epoch_deadline_async_yield_and_update(1);
        store.set_epoch_deadline(1);

        // Instantiation (start functions) and `init` share the init time.
        let pre = &self.pre;
        let started = self.engine.bounded(limits.init_timeout, interrupt, async {
            let router = match pre.instantiate_async(&mut store).await {
                Ok(router) => router,
                Err(e) => return Err(Start::Instantiate(e)),
            };
            match router.call_init(&mut store, config).await {
                Ok(Ok(())) => Ok(router),
                Ok(Err(reason)) => Err(Start::Refused(reason)),
                Err(e) => Err(Start::Init(e)),
            }
        });
        store.data().finish_lines();
        let path = self.path.clone();
        match started {
            Bounded::Done(Ok(router)) => Ok((store, router)),
            Bounded::Done(Err(Start::Instantiate(e))) => Err(PluginError::Instantiate {
                path,
                reason: describe_trap(&e, &store).message,
            }),
            Bounded::Done(Err(Start::Refused(reason))) => {
                Err(PluginError::InitRefused { path, reason })
            }
            Bounded::Done(Err(Start::Init(e))) => Err(PluginError::InitFailed {
                path,
                reason: describe_trap(&e, &store).to_string(),
            }),
            Bounded::TimedOut => Err(PluginError::InitFailed {
                path,
                reason: format!(
                    "plugin ran past its time limit: init did not return within limits.init_timeout_ms ({} ms)",
                    limits.init_timeout.as_millis()
                ),
            }),
            Bounded::Interrupted => Err(PluginError::InitFailed {
                path,
                reason: "init interrupted: the partition's worker is stopping".to_owned(),
            }),
        }
    }
}

/// How starting an instance failed.
enum Start {
    Instantiate(wasmtime::Error),
    Refused(String),
    Init(wasmtime::Error),
}

impl PluginInstance {
    /// The plugin this instance runs.
    #[must_use]
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Routes one record: [`route_batch`](Self::route_batch) with a batch
    /// of one, whose failure as a whole is the record's.
    pub fn route(&mut self, record: &Arc<SourceRecord>) -> Result<Outputs, RouteFailure> {
        let mut answers = self.route_batch(std::slice::from_ref(record))?;
        answers.pop().unwrap_or_else(|| {
            Err(RouteFailure::new(
                FailureKind::Invalid,
                "plugin gave no answer for the record",
            ))
        })
    }

    /// Routes `records`, consumed in this order from one partition, in one
    /// call: one answer per record, in order. An `Err` is the call failing
    /// as a whole (a trap, the time limit, the memory limit, or not one
    /// answer per record), which tells nothing about any one record. A
    /// trap, timeout or memory failure discards this instance's store; the
    /// next call starts from a fresh instance.
    ///
    /// The time limit (`limits.route_timeout_ms`) applies to the call: a
    /// batch that needs longer fails as a whole (the workers size their
    /// calls to take at most a quarter of it), and routing its records one
    /// at a time then gives each record the whole limit.
    pub fn route_batch(&mut self, records: &[Arc<SourceRecord>]) -> Result<Answers, RouteFailure> {
        if self.poisoned {
            let (store, router) = self
                .plugin
                .fresh(
                    &self.config,
                    &self.context,
                    self.limits,
                    self.interrupt.as_ref(),
                )
                .map_err(|e| {
                    let kind = if self.interrupt.as_ref().is_some_and(Interrupt::is_raised) {
                        FailureKind::Interrupted
                    } else {
                        FailureKind::Trap
                    };
                    RouteFailure::new(kind, format!("cannot restart plugin: {e}"))
                })?;
            self.started_bytes = store.data().limiter.memory_bytes();
            self.store = store;
            self.router = router;
            self.poisoned = false;
        }
        let state = self.store.data_mut();
        state.batch.extend(records.iter().cloned());
        state.limiter.exceeded = None;
        state.stderr.next_call();
        fill_call_context(&mut self.call, state);
        self.store.set_epoch_deadline(1);
        // A batch is far smaller than 2^32 records.
        let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
        let call = self.router.call_route(
            &mut self.store,
            Resource::<Batch>::new_borrow(0),
            count,
            &self.call,
        );
        let result = match self.plugin.engine.bounded(
            self.limits.route_timeout,
            self.interrupt.as_ref(),
            call,
        ) {
            Bounded::Done(result) => result,
            Bounded::TimedOut => Err(wasmtime::Error::new(Ended::TimedOut)),
            Bounded::Interrupted => Err(wasmtime::Error::new(Ended::Interrupted)),
        };
        let state = self.store.data_mut();
        state.batch.clear();
        state.finish_lines();
        if result.is_ok() {
            self.recycle_if_grown();
        }
        match result {
            Ok(answers) if answers.len() == records.len() => Ok(answers
                .into_iter()
                .zip(records)
                .map(|(answer, record)| self.answer(answer, record))
                .collect()),
            Ok(answers) => Err(RouteFailure::new(
                FailureKind::Invalid,
                format!(
                    "plugin gave {} answers for {} records: the contract is one per record",
                    answers.len(),
                    records.len()
                ),
            )),
            Err(e) => {
                self.poisoned = true;
                Err(describe_trap(&e, &self.store))
            }
        }
    }

    /// After a call that succeeded: replaces the instance before its next
    /// call if its memory has used up half of the room it had once
    /// started (between its size after `init` and the route's limit), or
    /// if it was refused memory during the call and recovered. Memory a
    /// plugin's language never gives back (a garbage collector that runs
    /// late, or a leak in its bindings, as componentize-js has) then costs
    /// a fresh instance now and then (a few milliseconds), never a record.
    fn recycle_if_grown(&mut self) {
        let limiter = &self.store.data().limiter;
        let now = limiter.memory_bytes();
        let room = self.limits.memory_bytes.saturating_sub(self.started_bytes);
        if limiter.exceeded.is_some() || now > self.started_bytes + room / 2 {
            tracing::debug!(
                plugin = %self.plugin.name(),
                started_mib = self.started_bytes >> 20,
                now_mib = now >> 20,
                limit_mib = self.limits.memory_bytes >> 20,
                "replacing a plugin instance whose memory grew near its limit"
            );
            self.poisoned = true;
            self.recycled += 1;
        }
    }

    /// Bytes of all the instance's linear memories now.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limiter.memory_bytes()
    }

    /// How many times this instance was replaced because its memory grew
    /// near its limit.
    #[must_use]
    pub fn recycled(&self) -> u64 {
        self.recycled
    }

    /// The router's form of the plugin's answer for `record`.
    fn answer(
        &self,
        answer: Result<types::Routing, types::RouteError>,
        record: &Arc<SourceRecord>,
    ) -> Result<Outputs, RouteFailure> {
        match answer {
            Ok(types::Routing::Forward(placement)) => {
                let mut output = Output::forward(record.clone());
                output.topic = placement.topic;
                output.partition = placement.partition;
                Ok(smallvec::smallvec![output])
            }
            Ok(types::Routing::Outputs(outputs)) if outputs.len() > self.limits.max_outputs => {
                Err(RouteFailure::new(
                    FailureKind::Invalid,
                    format!(
                        "{} outputs for one record: the route's limit (limits.max_outputs) is {}",
                        outputs.len(),
                        self.limits.max_outputs
                    ),
                ))
            }
            Ok(types::Routing::Outputs(outputs)) => {
                Ok(outputs.into_iter().map(|o| convert(o, record)).collect())
            }
            Err(types::RouteError::Retry(reason)) => {
                Err(RouteFailure::new(FailureKind::Retry, reason))
            }
            Err(types::RouteError::Reject(reason)) => {
                Err(RouteFailure::new(FailureKind::Reject, reason))
            }
        }
    }
}

/// What the plugin asked to be handed with every call, for the records of
/// the call: filled into buffers kept from the last call.
fn fill_call_context(call: &mut types::CallContext, state: &HostState) {
    call.default_target_partitions = if state.give_partitions {
        state
            .context
            .partitions
            .partition_count(&state.context.default_target)
            .unwrap_or(0)
    } else {
        0
    };
    call.header_spans.clear();
    call.header_bytes.clear();
    let wanted = &state.wanted_headers;
    if wanted.is_empty() {
        return;
    }
    // Offsets past 4 GiB cannot occur: lowering that much into a 32-bit
    // plugin fails first (a memory failure of the call).
    let offset = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    for record in &state.batch {
        for key in wanted {
            let span = record.headers.iter().find(|h| *h.key == **key).map(|h| {
                let start = call.header_bytes.len();
                call.header_bytes.extend_from_slice(&h.value);
                types::Span {
                    start: offset(start),
                    len: offset(h.value.len()),
                }
            });
            call.header_spans.push(span);
        }
    }
}

/// Why a call was abandoned wherever it was (its store cannot be entered
/// again).
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("plugin ran past its time limit")]
    TimedOut,
    #[error("plugin call interrupted: the partition's worker is stopping")]
    Interrupted,
}

/// Classifies a failed call and says what happened in one line.
fn describe_trap(e: &wasmtime::Error, store: &Store<HostState>) -> RouteFailure {
    let state = store.data();
    if let Some(message) = &state.limiter.exceeded {
        return RouteFailure::new(FailureKind::Memory, message.clone());
    }
    // Plugin code yields at each epoch tick rather than trapping, so its
    // time limit ends it here, like a wait in a host import.
    match e.downcast_ref::<Ended>() {
        Some(ended @ Ended::TimedOut) => {
            return RouteFailure::new(FailureKind::Timeout, ended.to_string());
        }
        Some(ended @ Ended::Interrupted) => {
            return RouteFailure::new(FailureKind::Interrupted, ended.to_string());
        }
        None => {}
    }
    if matches!(
        e.downcast_ref::<ResourceTableError>(),
        Some(ResourceTableError::Full)
    ) {
        return RouteFailure::new(
            FailureKind::Memory,
            format!(
                "plugin holds {MAX_HOST_HANDLES} host handles (streams, pollables) without closing them, the most an instance may"
            ),
        );
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return RouteFailure::new(FailureKind::Trap, format!("plugin called exit({})", exit.0));
    }
    let mut message = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => one_line(e),
    };
    // What the plugin printed during the call explains the trap (Rust's
    // panic message, for one); the hint about RUST_BACKTRACE does not.
    let printed: Vec<String> = state
        .stderr
        .of_current_call()
        .into_iter()
        .filter(|line| !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    if !printed.is_empty() {
        message = format!("{message}; plugin stderr: {}", printed.join(" "));
    }
    RouteFailure::new(FailureKind::Trap, message)
}

fn convert(out: types::Output, source: &Arc<SourceRecord>) -> Output {
    let data = |d: types::Data| match d {
        types::Data::Original => Data::Original,
        types::Data::Null => Data::Null,
        types::Data::Bytes(b) => Data::Bytes(Bytes::from(b)),
    };
    let headers = |list: Vec<types::Header>| {
        list.into_iter()
            .map(|h| Header {
                key: h.key.into(),
                value: Bytes::from(h.value),
            })
            .collect()
    };
    Output {
        source: source.clone(),
        topic: out.topic,
        partition: out.partition,
        key: data(out.key),
        value: data(out.value),
        headers: match out.headers {
            types::OutputHeaders::Original => OutputHeaders::Original,
            types::OutputHeaders::Append(h) => OutputHeaders::Append(headers(h)),
            types::OutputHeaders::Replace(h) => OutputHeaders::Replace(headers(h)),
        },
        timestamp_ms: out.timestamp_ms,
    }
}
