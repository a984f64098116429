//! The workers: a bounded set of threads (by default one per core), each
//! routing many partitions. Each assigned partition's queue is forwarded to
//! one worker's queue, so a worker reads all its partitions' records in one
//! batch call, each partition's in order; partitions are routed one after
//! the other, each its own records in order, with the worker's one
//! instance of their route ([`super::instances`]).
//!
//! Nothing a partition waits for blocks its worker: a retry's backoff, a
//! partition held at a failed record, a schema being fetched, a plugin
//! that cannot start are a state of the partition ([`Resume`]), looked at
//! again when due, while the worker routes its other partitions. The
//! records that come meanwhile wait in the partition's backlog; past
//! [`WAITING_BACKLOG`] records the partition's fetching is paused, and it
//! is resumed once the backlog is routed (librdkafka then fetches again
//! from the record after the last one it handed out).
//!
//! The consumer thread places partitions ([`Workers::place`]) and takes
//! them off; a plugin call in progress on a worker ends at once when one
//! of its partitions is taken off, and the call's records are routed again
//! with new instances. What one partition's plugin call costs its
//! worker's other partitions is bounded by the route's time limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer as _;

use super::delivery::Sender;
use super::instances::Slot;
use super::partition::{Control, Lane, Resume, Yield};
use super::pool::{Command, Shared, WorkerHandle, lock};
use super::routing::Routing;
use crate::kafka::{FetchedMessage, HeaderNames};
use crate::route::{Route, Track};

/// Records a worker takes from its queue at once, at most: what librdkafka
/// has at hand, without waiting once the first is there.
pub(super) const BATCH: usize = 128;

/// How long a worker with nothing to route waits for a record before it
/// looks at its partitions' waits again.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// How often a worker frees what was delivered and settles refusals of
/// the partitions it did not route meanwhile.
const SWEEP: Duration = Duration::from_millis(100);

/// A partition whose first record waits has its fetching paused once this
/// many records wait behind it.
const WAITING_BACKLOG: usize = 4 * BATCH;

/// A worker's thread.
pub(super) struct Worker {
    handle: Arc<WorkerHandle>,
    shared: Arc<Shared>,
    /// Its partitions.
    lanes: Vec<Lane>,
    /// Index in `lanes` by the message's topic (see
    /// [`FetchedMessage::topic_id`]) and partition, learnt as records come.
    by_topic: HashMap<(usize, i32), usize>,
    /// The last lookup's key and index: records come in runs of a
    /// partition.
    last_lane: Option<((usize, i32), usize)>,
    /// Its routes, with its instance of each.
    slots: Vec<Slot>,
    /// Hands outputs to the shared producer.
    sender: Sender,
    /// Sends refused outputs again alone (made when first needed).
    alone: Option<Sender>,
    /// The header names of its records, each allocated once.
    header_names: HeaderNames,
}

/// Marks its worker gone when dropped.
struct Running<'h>(&'h WorkerHandle);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                "a worker panicked: its partitions are not routed until they are assigned again"
            );
        }
        self.0.running.store(false, Ordering::Release);
    }
}

impl Worker {
    pub(super) fn new(handle: Arc<WorkerHandle>, shared: Arc<Shared>) -> Self {
        Self {
            sender: Sender::new(shared.producer.clone()),
            handle,
            shared,
            lanes: Vec::new(),
            by_topic: HashMap::new(),
            last_lane: None,
            slots: Vec::new(),
            alone: None,
            header_names: HeaderNames::default(),
        }
    }

    pub(super) fn run(mut self) {
        let handle = self.handle.clone();
        // However the loop ends (a panic included), the worker is known
        // to be gone: nothing waits on it, nothing is placed on it.
        let _running = Running(&handle);
        let mut fetched: Vec<FetchedMessage<'_>> = Vec::with_capacity(BATCH);
        let mut swept = Instant::now();
        while !handle.stop.load(Ordering::Acquire) {
            self.take_commands();
            let now = Instant::now();
            let (wait, ready) = self.route_ready(now);
            // Records routed more slowly than they come wait in librdkafka's
            // bounded queue, not in the backlogs.
            if ready < BATCH {
                handle.queue.take(wait, BATCH, &mut fetched);
                self.distribute(&mut fetched);
            }
            if swept.elapsed() >= SWEEP {
                self.sweep();
                swept = Instant::now();
            }
        }
        // Whatever it still held is unfinished: routed again by the
        // partitions' next owners.
        self.lanes.clear();
        self.slots.clear();
    }

    /// Takes the partitions the consumer thread placed or took off.
    fn take_commands(&mut self) {
        let commands = {
            let mut inbox = lock(&self.handle.inbox);
            self.handle.commands.store(false, Ordering::Release);
            std::mem::take(&mut *inbox)
        };
        for command in commands {
            match command {
                Command::Add(lane) => self.add(lane),
                Command::Remove(control) => self.remove(&control),
            }
        }
    }

    fn add(&mut self, mut lane: Lane) {
        lane.slot = self.slot_of(&lane.route, lane.track());
        self.slots[lane.slot].lanes += 1;
        let control = lane.control.clone();
        self.lanes.push(lane);
        // Started now, so that a plugin that cannot start says so before
        // the partition's first record, and the first record finds it warm.
        let index = self.lanes.len() - 1;
        if let Some(_turn) = control.enter() {
            self.ensure_started(index, Instant::now());
        }
    }

    /// The index of the worker's slot of `route` on `track`, made if it
    /// has none.
    fn slot_of(&mut self, route: &Arc<Route>, track: Track) -> usize {
        match self
            .slots
            .iter()
            .position(|s| Arc::ptr_eq(&s.state.route, route) && s.state.track == track)
        {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::new(route.clone(), track));
                self.slots.len() - 1
            }
        }
    }

    /// Moves lane `index` to the slot of the version that routes it now
    /// (a canary's partitions are the candidate's while it is tried), at
    /// the start of its turn: nothing of it is in a call.
    fn follow_track(&mut self, index: usize) {
        let track = self.lanes[index].track();
        let from = self.lanes[index].slot;
        if self.slots[from].state.track == track {
            return;
        }
        let route = self.lanes[index].route.clone();
        let to = self.slot_of(&route, track);
        self.release_slot(from);
        self.lanes[index].slot = to;
        self.slots[to].lanes += 1;
    }

    /// A lane left slot `index`: its instance goes with its last lane.
    fn release_slot(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.lanes -= 1;
        if slot.lanes == 0 {
            slot.started = None;
            slot.state.failed = None;
        }
    }

    fn remove(&mut self, control: &Arc<Control>) {
        if let Some(index) = self
            .lanes
            .iter()
            .position(|l| Arc::ptr_eq(&l.control, control))
        {
            let lane = self.lanes.swap_remove(index);
            self.by_topic.clear();
            self.last_lane = None;
            self.release_slot(lane.slot);
            self.handle.load.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Puts each fetched record at the end of its partition's backlog.
    fn distribute(&mut self, fetched: &mut Vec<FetchedMessage<'_>>) {
        for message in fetched.drain(..) {
            let Some(index) = self.lane_of(&message) else {
                // A partition no longer routed here: its next owner routes
                // the record.
                continue;
            };
            let lane = &mut self.lanes[index];
            if lane.dead {
                continue;
            }
            match message.error() {
                None => {
                    let record =
                        Arc::new(message.record(lane.topic.clone(), &mut self.header_names));
                    lane.next_offset = Some(record.offset + 1);
                    lane.backlog.push_back(record);
                }
                Some(e) => {
                    tracing::warn!(topic = %lane.topic, partition = lane.partition, error = %e, "consumer error");
                }
            }
        }
    }

    /// The index of `message`'s partition in `lanes`, if it is routed here.
    fn lane_of(&mut self, message: &FetchedMessage<'_>) -> Option<usize> {
        let key = (message.topic_id(), message.partition());
        if let Some((last, index)) = self.last_lane
            && last == key
        {
            return Some(index);
        }
        if let Some(&index) = self.by_topic.get(&key) {
            self.last_lane = Some((key, index));
            return Some(index);
        }
        let topic = message.topic_name()?;
        let find = |lanes: &[Lane]| {
            lanes
                .iter()
                .position(|l| l.partition == key.1 && *l.topic == *topic)
        };
        // A partition placed here just now: its first records can come
        // before the worker took the command.
        let index = match find(&self.lanes) {
            None if self.handle.commands_pending() => {
                self.take_commands();
                find(&self.lanes)?
            }
            found => found?,
        };
        self.by_topic.insert(key, index);
        self.last_lane = Some((key, index));
        Some(index)
    }

    /// Routes every partition with records whose wait is over, one call's
    /// worth each; gives how long the worker may wait for records before
    /// the next wait ends, and how many records are left ready to route.
    fn route_ready(&mut self, now: Instant) -> (Duration, usize) {
        let mut wake = now + POLL_WAIT;
        let mut ready = 0;
        for index in 0..self.lanes.len() {
            if self.handle.commands_pending() {
                // Partitions come or go: seen to first.
                return (Duration::ZERO, ready);
            }
            // A canary widened or narrowed, a rollout ended: the partition
            // goes to the version that routes it now.
            self.follow_track(index);
            let lane = &mut self.lanes[index];
            let slot = &self.slots[lane.slot].state;
            // The route's plugin cannot start here yet: none of its
            // partitions is routed until it is tried again.
            let blocked = slot.unstarted(now);
            if blocked && lane.resume.is_none() && !lane.backlog.is_empty() {
                let offset = lane.backlog.front().map(|r| r.offset);
                lane.hold_unstarted(offset, slot.failed.as_ref().map(|f| f.reason.as_str()));
            }
            // An operator paused the route: its partitions wait for the
            // resume (checked every `POLL_WAIT`).
            let paused = lane.route.is_paused();
            let due = !blocked && !paused && !lane.waiting(now);
            if due && (!lane.backlog.is_empty() || lane.resume == Some(Resume::Unstarted)) {
                self.route_lane(index, now);
            }
            let lane = &self.lanes[index];
            let slot = &self.slots[lane.slot].state;
            let at = if paused {
                None
            } else if slot.unstarted(now) {
                slot.retries_at()
            } else if lane.waiting(now) {
                lane.wakes_at()
            } else if lane.backlog.is_empty() || lane.dead {
                None
            } else {
                // Records left for its next turn.
                ready += lane.backlog.len();
                Some(now)
            };
            if let Some(at) = at {
                wake = wake.min(at);
            }
            self.pause_or_resume(index);
        }
        (wake.saturating_duration_since(Instant::now()), ready)
    }

    /// Starts the instance of the route of lane `index` if it has none
    /// (during the lane's turn); whether it has one now. While it cannot
    /// start, the lane is held.
    fn ensure_started(&mut self, index: usize, now: Instant) -> bool {
        let lane = &mut self.lanes[index];
        let slot = &mut self.slots[lane.slot];
        if slot.started.is_none() && !slot.state.unstarted(now) {
            let interrupt = self.handle.interrupt();
            let stop = lane.stop.clone();
            let (started, interrupted) = self.handle.calling(
                || stop.raised(),
                || slot.start(interrupt, &self.shared.metrics),
            );
            if interrupted {
                // Ended from outside: says nothing of the plugin.
                self.renew_instances();
                return false;
            }
            if let Some(Err(e)) = started {
                slot.state.failed_to_start(&e, Instant::now());
            }
        }
        let lane = &mut self.lanes[index];
        let slot = &self.slots[lane.slot];
        match (&slot.started, &slot.state.failed) {
            (Some(_), _) => {
                lane.started();
                true
            }
            (None, failed) => {
                let offset = lane.backlog.front().map(|r| r.offset);
                lane.hold_unstarted(offset, failed.as_ref().map(|f| f.reason.as_str()));
                false
            }
        }
    }

    /// Routes lane `index`'s backlog as far as it goes.
    fn route_lane(&mut self, index: usize, now: Instant) {
        let control = self.lanes[index].control.clone();
        let Some(_turn) = control.enter() else {
            // Told to stop: let go of at the next command.
            return;
        };
        // Its track was followed by `route_ready` just before.
        if !self.ensure_started(index, now) {
            return;
        }
        let result = self.routing(index, |routing| {
            routing.free_retired();
            routing.settle_refusals();
            let mut backlog = std::mem::take(&mut routing.lane.backlog);
            let result = routing.route_backlog(&mut backlog);
            routing.lane.backlog = backlog;
            result
        });
        match result {
            None | Some(Ok(()) | Err(Yield::Wait)) => {}
            Some(Err(Yield::Stopped)) => self.stopped(index),
            Some(Err(Yield::Interrupted)) => self.renew_instances(),
        }
    }

    /// Runs `step` on lane `index` routed with the worker's instance of
    /// its route (`None` if it has none).
    fn routing<T>(&mut self, index: usize, step: impl FnOnce(&mut Routing<'_>) -> T) -> Option<T> {
        let Self {
            handle,
            shared,
            lanes,
            slots,
            sender,
            alone,
            ..
        } = self;
        let lane = &mut lanes[index];
        let slot = &mut slots[lane.slot];
        let started = slot.started.as_mut()?;
        let mut routing = Routing {
            shared,
            handle,
            lane,
            started,
            slot: &mut slot.state,
            sender,
            alone,
            shadowed: None,
        };
        Some(step(&mut routing))
    }

    /// A call was interrupted: every instance of the worker is made again
    /// (with a new interrupt) before its next call.
    fn renew_instances(&mut self) {
        self.handle.renew_interrupt();
        for slot in &mut self.slots {
            slot.started = None;
        }
    }

    /// Lane `index` stopped: told to (it is let go of at the next command),
    /// or at an output that cannot be delivered.
    fn stopped(&mut self, index: usize) {
        let lane = &mut self.lanes[index];
        if lane.stop.told() || lane.dead {
            return;
        }
        if let Some(failure) = lane.offsets.failure() {
            lane.dead = true;
            lane.backlog.clear();
            lane.resume = None;
            lane.set_halted(
                None,
                Some(format!(
                    "an output could not be delivered ({failure}): nothing past it is committed until the partition is consumed again"
                )),
            );
        }
    }

    /// Pauses the fetching of lane `index` while its records wait (or it
    /// is dead, or its route paused), and resumes it once they are routed.
    fn pause_or_resume(&mut self, index: usize) {
        let lane = &mut self.lanes[index];
        // A paused route's partitions wait like any other: fetched up to
        // the bound (their lag stays known that far), then paused.
        let waiting = lane.resume.is_some() || lane.dead || lane.route.is_paused();
        let pause = if lane.paused {
            !(lane.backlog.is_empty() && !waiting)
        } else {
            lane.dead || (waiting && lane.backlog.len() >= WAITING_BACKLOG)
        };
        if pause == lane.paused || lane.stop.told() {
            return;
        }
        let Some(consumer) = self.shared.consumer.upgrade() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&lane.topic, lane.partition);
        let result = if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        match result {
            Ok(()) => lane.paused = pause,
            Err(e) => {
                tracing::warn!(topic = %lane.topic, partition = lane.partition, pause, error = %e, "cannot pause or resume the partition's fetching");
                return;
            }
        }
        // librdkafka fetches again from the position after the last message
        // it handed out, which a consumer error moves too: the fetch goes
        // on exactly after the last record taken (asynchronously).
        if !pause
            && let Some(next) = lane.next_offset
            && let Err(e) = consumer.seek(
                &lane.topic,
                lane.partition,
                rdkafka::Offset::Offset(next),
                Duration::ZERO,
            )
        {
            tracing::warn!(topic = %lane.topic, partition = lane.partition, offset = next, error = %e, "cannot seek the resumed partition to its next record");
        }
    }

    /// Frees what was delivered and settles refusals of every partition,
    /// and finds the ones stopped at an undeliverable output.
    fn sweep(&mut self) {
        for index in 0..self.lanes.len() {
            let control = self.lanes[index].control.clone();
            let Some(_turn) = control.enter() else {
                continue;
            };
            if self.lanes[index].offsets.is_stopped() {
                self.stopped(index);
            }
            self.lanes[index].offsets.free_retired();
            self.routing(index, |routing| routing.settle_refusals());
        }
    }
}
