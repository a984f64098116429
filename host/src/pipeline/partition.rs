//! A source partition assigned to the router: the consumer thread's handle
//! on it ([`Partition`]: placed on a worker when assigned, taken off when
//! revoked) and what its worker keeps of it ([`Lane`]: the records taken
//! from the queue and not routed yet, and where the first of them waits).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::consumer::RouterContext;
use super::offsets::PartitionOffsets;
use super::pool::WorkerHandle;
use crate::kafka::FetchQueue;
use crate::plugin::Plugin;
use crate::record::SourceRecord;
use crate::route::{Halt, Route, Track};

/// A queue of fetched records: a worker's, or a partition's own.
pub(super) type Queue = FetchQueue<RouterContext>;

/// Why a partition's routing gave way before its records were done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Yield {
    /// The partition must stop: what it was doing is left unfinished. The
    /// record's offset is not stored, so the partition's next owner routes
    /// it again.
    Stopped,
    /// Its first record waits ([`Lane::resume`] says for what); the
    /// records after it wait behind it.
    Wait,
    /// The worker's plugin call was ended from outside (another of its
    /// partitions was revoked): the call's records are routed again, with
    /// new instances.
    Interrupted,
}

/// A step of a partition's routing, which ends early as [`Yield`] says.
pub(super) type Step<T = ()> = Result<T, Yield>;

/// How the consumer thread takes a partition off its worker without
/// waiting on anything but the partition itself: the worker takes a turn
/// on the partition ([`Control::enter`]) for whatever touches it (routing,
/// settling its refusals), and a partition told to stop is let go of as
/// soon as no turn is in progress ([`Control::release`]).
#[derive(Debug, Default)]
pub(super) struct Control {
    told: AtomicBool,
    turn: Mutex<Turn>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Turn {
    /// The worker is routing the partition.
    active: bool,
    /// The consumer thread let go of it: no turn may start.
    released: bool,
    /// A release waits for the turn in progress to end.
    awaited: bool,
}

/// How often a release in progress looks again whether the worker is gone.
const RELEASE_RECHECK: Duration = Duration::from_millis(50);

impl Control {
    fn turn(&self) -> MutexGuard<'_, Turn> {
        self.turn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the worker's turn on the partition, unless it was told to
    /// stop; the turn ends when the guard is dropped (a panic included).
    pub(super) fn enter(&self) -> Option<TurnGuard<'_>> {
        let mut turn = self.turn();
        if turn.released || self.told.load(Ordering::Acquire) {
            return None;
        }
        turn.active = true;
        Some(TurnGuard(self))
    }

    /// Tells the partition to stop, and waits until no turn on it is in
    /// progress: from then on no turn starts. `during_turn` is called (once)
    /// if one is in progress, to cut it short; `gone` says whether the
    /// worker's thread ended (then nothing more happens on it).
    pub(super) fn release(&self, during_turn: impl FnOnce(), gone: impl Fn() -> bool) {
        self.told.store(true, Ordering::Release);
        let mut turn = self.turn();
        let mut during_turn = Some(during_turn);
        while turn.active && !gone() {
            turn.awaited = true;
            if let Some(cut_short) = during_turn.take() {
                cut_short();
            }
            turn = self
                .changed
                .wait_timeout(turn, RELEASE_RECHECK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        turn.released = true;
    }
}

/// The worker's turn on a partition, ended when dropped.
pub(super) struct TurnGuard<'c>(&'c Control);

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        let mut turn = self.0.turn();
        turn.active = false;
        // A wake-up costs a system call: only for a release that waits.
        if std::mem::take(&mut turn.awaited) {
            self.0.changed.notify_all();
        }
    }
}

/// Whether a partition must stop: it was told to (a revocation, shutdown),
/// or it stopped at a record whose output cannot be delivered.
#[derive(Debug, Clone)]
pub(super) struct StopFlag {
    control: Arc<Control>,
    offsets: Arc<PartitionOffsets>,
}

impl StopFlag {
    /// Whether the partition must stop now.
    pub(super) fn raised(&self) -> bool {
        self.told() || self.offsets.is_stopped()
    }

    /// Whether the consumer thread told it to stop.
    pub(super) fn told(&self) -> bool {
        self.control.told.load(Ordering::Acquire)
    }

    /// `Err(Yield::Stopped)` if the partition must stop now.
    pub(super) fn check(&self) -> Step {
        if self.raised() {
            Err(Yield::Stopped)
        } else {
            Ok(())
        }
    }
}

/// What the first record of a partition waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resume {
    /// The plugin asked to retry it after `attempts` calls: it is called
    /// again at `at`, or at once (with fresh attempts) once another
    /// version routes the partition (a swap, a rollout's step).
    Retry {
        attempts: u32,
        version: VersionId,
        at: Instant,
    },
    /// It failed on a route with `on_failure = "stop"`: held until another
    /// plugin version routes the partition.
    Held { version: VersionId },
    /// Its schema `id` is being fetched: looked up again at `at`; `halted`
    /// if requests for it failed (`/ready` says so).
    Schema { id: u32, at: Instant, halted: bool },
    /// The route's plugin cannot start on this worker: routed when it does
    /// (the worker's slot of the route says when it is tried again).
    Unstarted,
}

/// A partition as its worker keeps it.
pub(super) struct Lane {
    pub(super) topic: Arc<str>,
    /// The worker's slot of the route (set by the worker).
    pub(super) slot: usize,
    pub(super) partition: i32,
    pub(super) route: Arc<Route>,
    pub(super) offsets: Arc<PartitionOffsets>,
    pub(super) stop: StopFlag,
    /// The worker's turns on it.
    pub(super) control: Arc<Control>,
    /// What the first record of `backlog` waits for, if anything.
    pub(super) resume: Option<Resume>,
    /// Records taken from the worker's queue and not settled yet, in
    /// order.
    pub(super) backlog: VecDeque<Arc<SourceRecord>>,
    /// Whether the worker paused the partition's fetching (its backlog
    /// grew while it waited).
    pub(super) paused: bool,
    /// Stopped at an output that cannot be delivered: nothing more of it
    /// is routed while it is this router's.
    pub(super) dead: bool,
    /// Marked held because its route's plugin could not start here.
    pub(super) held_unstarted: bool,
    /// The offset after the last record taken from the queue: where its
    /// fetching goes on after a pause.
    pub(super) next_offset: Option<i64>,
    /// The offset after the last record a shadow candidate was handed: a
    /// record routed again (after a hold, a retry, an interrupted call) is
    /// compared once.
    pub(super) shadowed_to: i64,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("resume", &self.resume)
            .field("backlog", &self.backlog.len())
            .finish_non_exhaustive()
    }
}

/// A plugin version, as a number: the first 64 bits of its SHA-256 (0:
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct VersionId(u64);

impl VersionId {
    pub(super) fn of(plugin: Option<&Plugin>) -> Self {
        Self(plugin.map_or(0, |p| {
            p.sha256()
                .get(..16)
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .unwrap_or(u64::MAX)
        }))
    }
}

impl Lane {
    /// The version that routes it now: a canary's partitions are the
    /// candidate's while it is tried.
    pub(super) fn track(&self) -> Track {
        if self.route.candidate_routes(self.partition) {
            Track::Candidate
        } else {
            Track::Live
        }
    }

    /// The plugin version that routes it now.
    pub(super) fn version_now(&self) -> VersionId {
        VersionId::of(self.route.plugin_of(self.track()).as_deref())
    }

    /// Whether its first record waits for something that has not come by
    /// `now` (a plugin that cannot start is the worker's to tell: see
    /// `SlotState::unstarted`).
    pub(super) fn waiting(&self, now: Instant) -> bool {
        match self.resume {
            None | Some(Resume::Unstarted) => false,
            Some(Resume::Retry { version, at, .. }) => now < at && self.version_now() == version,
            Some(Resume::Held { version }) => self.version_now() == version,
            Some(Resume::Schema { at, .. }) => now < at,
        }
    }

    /// When its wait ends by the clock, if it does.
    pub(super) fn wakes_at(&self) -> Option<Instant> {
        match self.resume {
            Some(Resume::Retry { at, .. } | Resume::Schema { at, .. }) => Some(at),
            _ => None,
        }
    }

    /// The route's plugin cannot start here (for `reason`, when known): the
    /// partition waits for it, held at `offset` (`None`: before its first
    /// record).
    pub(super) fn hold_unstarted(&mut self, offset: Option<i64>, reason: Option<&str>) {
        if self.resume.is_none() {
            self.resume = Some(Resume::Unstarted);
        }
        if let Some(reason) = reason {
            self.set_halted(offset, Some(reason.to_owned()));
            self.held_unstarted = true;
        }
    }

    /// The route's plugin started: a hold for it is over.
    pub(super) fn started(&mut self) {
        if self.resume == Some(Resume::Unstarted) {
            self.resume = None;
        }
        if std::mem::take(&mut self.held_unstarted) {
            self.set_halted(None, None);
        }
    }

    /// Marks the partition held at `offset` (`None`: before its first
    /// record) for `reason`, or no longer held: `/ready` and `/routes`
    /// say why.
    pub(super) fn set_halted(&self, offset: Option<i64>, reason: Option<String>) {
        self.route.set_halted(
            &self.topic,
            self.partition,
            reason.map(|reason| Halt { offset, reason }),
        );
    }
}

/// An assigned partition as the consumer thread sees it: routed by one of
/// the workers, from its own queue forwarded to the worker's.
pub(super) struct Partition {
    route: Arc<Route>,
    pub(super) offsets: Arc<PartitionOffsets>,
    control: Arc<Control>,
    /// The partition's own queue, forwarded to its worker's while it is
    /// routed there.
    queue: Queue,
    worker: Arc<WorkerHandle>,
    /// Exactly-once mode: refused outputs are the pipeline's to take when
    /// it aborts (else they are dropped with the partition).
    exactly_once: bool,
    /// Whether the worker let go of it.
    released: bool,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("offsets", &self.offsets)
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// Places `topic`/`partition` of `route`, whose records come to
    /// `queue`, on `worker`. Called before the partition is assigned, so
    /// that its first record already goes to the worker.
    pub(super) fn start(
        topic: &str,
        partition: i32,
        route: Arc<Route>,
        queue: Queue,
        worker: Arc<WorkerHandle>,
        exactly_once: bool,
    ) -> Self {
        let offsets = Arc::new(PartitionOffsets::new(topic, partition));
        let control = Arc::new(Control::default());
        let lane = Lane {
            topic: topic.into(),
            slot: 0,
            partition,
            route: route.clone(),
            offsets: offsets.clone(),
            stop: StopFlag {
                control: control.clone(),
                offsets: offsets.clone(),
            },
            control: control.clone(),
            resume: None,
            backlog: VecDeque::new(),
            paused: false,
            dead: false,
            held_unstarted: false,
            next_offset: None,
            shadowed_to: i64::MIN,
        };
        worker.add(lane);
        queue.forward(Some(worker.queue()));
        Self {
            route,
            offsets,
            control,
            queue,
            worker,
            exactly_once,
            released: false,
        }
    }

    /// Tells the partition to stop at its next record boundary, without
    /// waiting ([`stop`](Self::stop) waits).
    pub(super) fn signal_stop(&self) {
        self.control.told.store(true, Ordering::Release);
    }

    /// The partition is no longer this router's: whatever held it here is
    /// its next owner's to find.
    pub(super) fn forget_hold(&self) {
        self.route
            .set_halted(self.offsets.topic(), self.offsets.partition(), None);
    }

    /// Takes the partition off its worker and waits for it to let go.
    /// Fetched, and routed but unproduced records are dropped: their
    /// offsets were never stored, so they are consumed again by whoever
    /// owns the partition next.
    pub(super) fn stop(&mut self) {
        if self.released {
            return;
        }
        // A plugin call in progress on the partition ends now, not at its
        // time limit: its records are not finished, so the partition's
        // next owner routes them.
        self.control.release(
            || self.worker.interrupt_call(),
            || !self.worker.is_running(),
        );
        self.worker.remove(&self.control);
        self.queue.forward(None);
        self.released = true;
        let (topic, partition) = (self.offsets.topic(), self.offsets.partition());
        match self.offsets.failure() {
            // Stopped for good at a record: say so while the partition is
            // ours (a revocation clears it).
            Some(failure) => self.route.set_halted(
                topic,
                partition,
                Some(Halt {
                    offset: None,
                    reason: format!(
                        "an output could not be delivered ({failure}): nothing past it is committed until the partition is consumed again"
                    ),
                }),
            ),
            None => self.route.set_halted(topic, partition, None),
        }
        // Reports may still come (a revocation waits for them); what they
        // hand back then is freed with the partition's tracking. Refusals
        // not settled leave their records unfinished (consumed again by the
        // next owner); dropped here, they hold nothing.
        self.offsets.free_retired();
        if !self.exactly_once {
            drop(self.offsets.take_refused());
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.stop();
    }
}
