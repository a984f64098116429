//! What a worker does with one partition's records: routes them with as
//! few plugin calls as their answers allow, settles each record that is
//! not routed (retried, dead-lettered, skipped or held), and hands what
//! was decided to the producer, registering every record for in-order
//! acknowledgement ([`super::offsets`]).
//!
//! Nothing here waits: a record that must wait (a retry's backoff, a hold,
//! a schema being fetched, a plugin that cannot start) is left first in
//! the partition's backlog with what it waits for ([`Resume`]), and
//! [`Yield::Wait`] carries that out to the worker, which routes its other
//! partitions meanwhile. When the partition must stop, [`Yield::Stopped`]
//! does: the record it was at stays unfinished, for the partition's next
//! owner.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::delivery::{Delivery, Refusal, Sender, refusal_reason};
use super::failures::{RecordFailure, dead_letter};
use super::instances::{SlotState, Started};
use super::partition::{Lane, Resume, Step, VersionId, Yield};
use super::pool::{Shared, WorkerHandle};
use super::refusals::ALONE_WAIT;
use super::worker::BATCH;
use crate::config::FailurePolicy;
use crate::kafka::refuses_the_record;
use crate::plugin::{FailureKind, RouteFailure};
use crate::record::SourceRecord;
use crate::rollout::shadow::{LiveAnswer, ShadowBatch};
use crate::route::{RouteInstance, RoutedOutputs, Track};
use crate::schema::check::Check;
use crate::schema::store::Lookup;

/// How many records a worker hands its plugin in one call: all it has, up
/// to a batch, unless the plugin is slow enough per record that a full
/// batch would come near the route's time limit (which applies per call).
/// Sized from the last call's time per record so that a call takes at most
/// a quarter of the limit; after a call that ran past it, a quarter of that
/// call's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CallSize(usize);

impl CallSize {
    pub(super) const FULL: Self = Self(BATCH);

    /// A call of `records` records took `took`.
    fn took(&mut self, records: usize, took: Duration, limit: Duration) {
        let per_record = took.as_nanos() / records.max(1) as u128;
        let fit = (limit.as_nanos() / 4) / per_record.max(1);
        self.0 = usize::try_from(fit).unwrap_or(BATCH).clamp(1, BATCH);
    }

    /// A call of `records` records ran past the time limit.
    fn timed_out(&mut self, records: usize) {
        self.0 = (records / 4).max(1);
    }
}

/// A partition waiting for a schema looks it up again this often.
const SCHEMA_RECHECK: Duration = Duration::from_millis(100);

/// A plugin's answer for one record: its outputs, or why not.
type Answer = Result<RoutedOutputs, RouteFailure>;

/// A worker routing one of its partitions.
pub(super) struct Routing<'w> {
    pub(super) shared: &'w Shared,
    pub(super) handle: &'w WorkerHandle,
    pub(super) lane: &'w mut Lane,
    /// The worker's instance of the partition's route.
    pub(super) started: &'w mut Started,
    pub(super) slot: &'w mut SlotState,
    /// Hands outputs to the shared producer.
    pub(super) sender: &'w mut Sender,
    /// Sends refused outputs again alone (made when first needed).
    pub(super) alone: &'w mut Option<Sender>,
    /// The records routed this turn and what was decided, for a shadow
    /// candidate (while one is tried).
    pub(super) shadowed: Option<ShadowBatch>,
}

impl Routing<'_> {
    /// Whether the route runs in exactly-once mode (its outputs go into
    /// transactions).
    pub(super) fn exactly_once(&self) -> bool {
        self.shared.gate.is_some()
    }

    fn instance(&self) -> &RouteInstance {
        &self.started.instance
    }

    /// Frees what the delivery thread handed back.
    pub(super) fn free_retired(&self) {
        self.lane.offsets.free_retired();
    }

    /// Routes the first records of `backlog` (the partition's records,
    /// in order) with one plugin call, or settles the first alone when it
    /// must be: one turn of the partition, so that a worker's partitions
    /// take turns. What was settled leaves the backlog.
    pub(super) fn route_backlog(&mut self, backlog: &mut VecDeque<Arc<SourceRecord>>) -> Step {
        if backlog.is_empty() {
            return Ok(());
        }
        let rollout = match self.slot.track {
            Track::Live => self.slot.route.rollout().filter(|r| r.shadow.is_some()),
            Track::Candidate | Track::Pinned => None,
        };
        if rollout.is_some() {
            self.shadowed = Some(ShadowBatch::default());
        }
        let mut settled = 0;
        let result = self.route_front(backlog.make_contiguous(), &mut settled);
        backlog.drain(..settled);
        if let (Some(rollout), Some(batch)) = (rollout, self.shadowed.take())
            && !batch.records.is_empty()
            && let Some(shadow) = &rollout.shadow
        {
            shadow.offer(batch);
        }
        result
    }

    /// The live version decided `answer` for `record`: a shadow candidate
    /// is asked too.
    fn observe(&mut self, record: &Arc<SourceRecord>, answer: &Answer) {
        if let Some(batch) = &mut self.shadowed
            && record.offset >= self.lane.shadowed_to
        {
            self.lane.shadowed_to = record.offset + 1;
            let live = match answer {
                Ok(routed) => LiveAnswer::Routed(routed.clone()),
                Err(failure) => LiveAnswer::Failed(failure.kind),
            };
            batch.push(record, live);
        }
    }

    /// Routes the first records of `records` with one plugin call (or
    /// settles the first alone when it must be), counting in `settled` the
    /// records settled.
    ///
    /// A record that is not routed is settled on its own (retried,
    /// dead-lettered, skipped or held), and the records after it are routed
    /// again afterwards, by the plugin version routing then. A call that
    /// fails as a whole (a trap, say) tells nothing about which record is
    /// at fault, so its records are then routed one at a time, which names
    /// that record exactly.
    fn route_front(&mut self, records: &[Arc<SourceRecord>], settled: &mut usize) -> Step {
        self.lane.stop.check()?;
        match self.lane.resume {
            Some(Resume::Retry { .. } | Resume::Held { .. }) => {
                self.resume_front(&records[0])?;
                *settled += 1;
                return Ok(());
            }
            Some(Resume::Schema { id, halted, .. }) => {
                self.schema_arrived(&records[0], id, halted)?
            }
            Some(Resume::Unstarted) | None => {}
        }
        let limit = self.slot.route.config.limits.limits().route_timeout;
        let mut call = &records[..records.len().min(self.slot.size.0)];
        // Exactly-once: a record the broker refused in an aborted
        // transaction fails as such, without its outputs.
        if let Some(at) = call.iter().position(|r| self.shared.refused.is_refused(r)) {
            if at == 0 {
                let reason = self.shared.refused.settle(&call[0]).unwrap_or_default();
                let failure = RouteFailure::new(FailureKind::BrokerRefused, reason);
                self.handle(&call[0], Some(Err(failure)), 0)?;
                *settled += 1;
                return Ok(());
            }
            call = &call[..at];
        }
        // Schema-framed records go to the plugin once their schemas are
        // here and their bytes match them.
        match self.schema_checked(call)? {
            (0, Some(failure)) => {
                self.handle(&call[0], Some(Err(failure)), 0)?;
                *settled += 1;
                return Ok(());
            }
            (ready, _) => call = &call[..ready.max(1)],
        }
        self.follow_swaps(call[0].offset)?;
        // A route without a plugin makes no call to time.
        let timed = self.instance().plugin().is_some();
        let started = Instant::now();
        let answers = self.call(|instance| instance.route_batch(call))?;
        if timed {
            let took = started.elapsed();
            self.started.meters.called(took, call.len());
            if answers.is_ok() {
                self.slot.size.took(call.len(), took, limit);
            }
        }
        let answers = match answers {
            // A call of one record that failed is that record's answer.
            Err(failure) if call.len() == 1 => vec![Err(failure)],
            Ok(answers) => answers,
            Err(failure) => {
                tracing::debug!(
                    route = self.slot.route.name(),
                    records = call.len(),
                    reason = %failure,
                    "a plugin call failed as a whole: routing its records one at a time"
                );
                if failure.kind == FailureKind::Timeout {
                    self.slot.size.timed_out(call.len());
                }
                for record in call {
                    self.lane.stop.check()?;
                    self.handle(record, None, 0)?;
                    *settled += 1;
                }
                return Ok(());
            }
        };
        for (record, answer) in call.iter().zip(answers) {
            // Routed but not produced: consumed again by whoever owns the
            // partition next.
            self.lane.stop.check()?;
            self.observe(record, &answer);
            match answer {
                Ok(routed) => {
                    self.started
                        .meters
                        .routed(&self.started.instance, routed.len());
                    self.produce(record, routed, true);
                    *settled += 1;
                }
                Err(failure) => {
                    self.handle(record, Some(Err(failure)), 0)?;
                    *settled += 1;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Runs a plugin call (or a swapped-in version's start) on the
    /// worker's instance, as a call that taking another partition off the
    /// worker may end ([`Yield::Interrupted`]: nothing of it counts).
    fn call<T>(&mut self, call: impl FnOnce(&mut RouteInstance) -> T) -> Step<T> {
        let instance = &mut self.started.instance;
        let stop = &self.lane.stop;
        let (result, interrupted) = self.handle.calling(|| stop.raised(), || call(instance));
        if interrupted {
            // The worker's instances are made again before its next call.
            return Err(Yield::Interrupted);
        }
        // A call ended because the partition must stop says nothing of
        // its records: they are routed again by the partition's next
        // owner.
        self.lane.stop.check()?;
        result.ok_or(Yield::Stopped)
    }

    /// Goes on with the first record, which waited for a retry or a swap.
    fn resume_front(&mut self, record: &Arc<SourceRecord>) -> Step {
        let version = self.lane.version_now();
        let attempts = match self.lane.resume {
            Some(Resume::Retry {
                attempts,
                version: at,
                ..
            }) => {
                // Another plugin version gets a fresh set of attempts.
                if at == version { attempts } else { 0 }
            }
            _ => {
                self.lane.set_halted(None, None);
                tracing::info!(
                    route = self.slot.route.name(),
                    topic = %record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    "plugin swapped: routing the held record again"
                );
                0
            }
        };
        // The wait stays until the record settles: routed again after an
        // interrupted call, it goes on from the same attempt.
        self.handle(record, None, attempts)?;
        self.lane.resume = None;
        Ok(())
    }

    /// Settles `record` on its own, starting from the plugin's `first`
    /// answer if there is one (after `attempts` calls already made), and
    /// hands what was decided to the producer.
    fn handle(&mut self, record: &Arc<SourceRecord>, first: Option<Answer>, attempts: u32) -> Step {
        let (routed, routed_normally) = self.decide(record, first, attempts)?;
        self.produce(record, routed, routed_normally);
        Ok(())
    }

    /// Brings the instance to the version routing now before a call that
    /// starts at `offset`. A swapped-in version that cannot start here
    /// holds the partition there until it does (see
    /// [`super::instances`]).
    fn follow_swaps(&mut self, offset: i64) -> Step {
        let result = if self.slot.unstarted(Instant::now()) {
            // It failed for another partition of the worker: not tried
            // again before its time.
            None
        } else {
            Some(self.call(RouteInstance::follow_swaps)?)
        };
        match result {
            Some(Ok(())) => {
                self.slot.failed = None;
                if self.lane.held_unstarted {
                    self.lane.started();
                }
                Ok(())
            }
            failed => {
                if let Some(Err(e)) = failed {
                    self.slot.failed_to_start(&e, Instant::now());
                }
                let reason = self.slot.failed.as_ref().map(|f| f.reason.as_str());
                self.lane.hold_unstarted(Some(offset), reason);
                Err(Yield::Wait)
            }
        }
    }

    /// What to produce for `record`: its outputs (then `true`), its
    /// dead-letter record, or nothing (filtered or skipped), starting from
    /// the plugin's `first` answer if there is one, after `attempts` calls.
    fn decide(
        &mut self,
        record: &Arc<SourceRecord>,
        first: Option<Answer>,
        attempts: u32,
    ) -> Step<(RoutedOutputs, bool)> {
        let route = self.slot.route.clone();
        let (result, attempts) = self.attempt(record, first, attempts)?;
        let failure = match result {
            Ok(routed) => {
                self.started
                    .meters
                    .routed(&self.started.instance, routed.len());
                return Ok((routed, true));
            }
            Err(failure) => failure,
        };
        self.started
            .meters
            .failed(&self.started.instance, failure.kind);
        self.shared.failures.failed(&RecordFailure {
            route: route.name(),
            record,
            failure: &failure,
            attempts,
            policy: route.policy(),
        });
        match route.policy() {
            FailurePolicy::DeadLetter(topic) => {
                let dead = dead_letter(
                    topic,
                    record,
                    &failure,
                    attempts,
                    self.instance(),
                    route.config.limits.max_output_bytes,
                );
                Ok((smallvec::smallvec![dead], false))
            }
            FailurePolicy::Skip => Ok((RoutedOutputs::new(), false)),
            FailurePolicy::Stop => Err(self.hold(record, &failure)),
        }
    }

    /// How many of `call`'s first records may go to the plugin: their
    /// framed parts match their schemas (all of them on a route that reads
    /// none by schema). When the first record's schema is being fetched,
    /// the partition waits for it there: it keeps its order. The first
    /// record that fails its check comes back with why (after the ones
    /// before it).
    fn schema_checked(
        &mut self,
        call: &[Arc<SourceRecord>],
    ) -> Step<(usize, Option<RouteFailure>)> {
        let route = self.slot.route.clone();
        let Some(schemas) = route.schemas() else {
            return Ok((call.len(), None));
        };
        let mut ready = 0;
        while let Some(record) = call.get(ready) {
            match schemas.check(record) {
                Check::Ok => ready += 1,
                Check::Failed(reason) => {
                    return Ok((ready, Some(RouteFailure::new(FailureKind::Schema, reason))));
                }
                Check::Pending { .. } if ready > 0 => return Ok((ready, None)),
                Check::Pending { id, why } => {
                    // While requests for it fail, the partition is held
                    // there (`/ready` and `/routes` say why); nothing is
                    // failed for an outage.
                    let halted = why.is_some()
                        || matches!(self.lane.resume, Some(Resume::Schema { halted: true, .. }));
                    if let Some(why) = why {
                        self.lane.set_halted(
                            Some(record.offset),
                            Some(format!("waiting for schema {id}: {why}")),
                        );
                    }
                    self.lane.resume = Some(Resume::Schema {
                        id,
                        at: Instant::now() + SCHEMA_RECHECK,
                        halted,
                    });
                    return Err(Yield::Wait);
                }
            }
        }
        Ok((ready, None))
    }

    /// The first record waited for schema `id`: goes on once it is fetched
    /// (or failed for good), else waits on (`halted`: the partition was
    /// marked held for it).
    fn schema_arrived(&mut self, record: &SourceRecord, id: u32, halted: bool) -> Step {
        let route = self.slot.route.clone();
        let pending = route
            .schemas()
            .is_some_and(|schemas| matches!(schemas.store().lookup(id), Lookup::Pending(_)));
        if pending {
            // `schema_checked` says why, and when to look again.
            return Ok(());
        }
        self.lane.resume = None;
        if halted {
            self.lane.set_halted(None, None);
            tracing::info!(
                route = route.name(),
                topic = %record.topic,
                partition = record.partition,
                schema_id = id,
                "schema fetched: routing again"
            );
        }
        Ok(())
    }

    /// Holds the partition at `record`, which failed (`on_failure =
    /// "stop"`), until a new plugin version is swapped in; then it is
    /// routed again.
    fn hold(&mut self, record: &SourceRecord, failure: &RouteFailure) -> Yield {
        let route = &self.slot.route;
        tracing::error!(
            route = route.name(),
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            "partition held at a failed record (on_failure = \"stop\"): nothing past it is routed or committed until a new plugin version is swapped in"
        );
        self.lane.resume = Some(Resume::Held {
            version: VersionId::of(self.instance().plugin()),
        });
        self.lane
            .set_halted(Some(record.offset), Some(failure.to_string()));
        Yield::Wait
    }

    /// Routes `record`, after `attempts` calls already made; `first` is
    /// the answer of a call already made. After a `retry` answer the
    /// record waits as the route's backoff says ([`Yield::Wait`]). Gives
    /// the result and the number of calls made for the plugin version
    /// routing now.
    fn attempt(
        &mut self,
        record: &Arc<SourceRecord>,
        first: Option<Answer>,
        attempts: u32,
    ) -> Step<(Answer, u32)> {
        let attempts = attempts + 1;
        let result = match first {
            Some(result) => result,
            None => {
                self.follow_swaps(record.offset)?;
                if let (0, Some(failure)) = self.schema_checked(std::slice::from_ref(record))? {
                    Err(failure)
                } else {
                    // A route without a plugin makes no call to time.
                    let timed = self.instance().plugin().is_some();
                    let started = Instant::now();
                    let result = self.call(|instance| instance.route(record))?;
                    if timed {
                        self.started.meters.called(started.elapsed(), 1);
                    }
                    self.observe(record, &result);
                    result
                }
            }
        };
        self.lane.stop.check()?;
        let failure = match result {
            Ok(routed) => return Ok((Ok(routed), attempts)),
            Err(failure) => failure,
        };
        let route = self.slot.route.clone();
        let retry = &route.config.retry;
        if failure.kind != FailureKind::Retry || attempts >= retry.max_attempts {
            return Ok((Err(failure), attempts));
        }
        self.started.meters.retried(&self.started.instance);
        let wait = retry.backoff().delay(attempts);
        tracing::debug!(
            route = route.name(),
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            attempt = attempts,
            wait_ms = wait.as_millis(),
            reason = %failure.message,
            "plugin asked to retry"
        );
        self.lane.resume = Some(Resume::Retry {
            attempts,
            version: VersionId::of(self.instance().plugin()),
            at: Instant::now() + wait,
        });
        Err(Yield::Wait)
    }

    /// Hands `routed`, what was decided for `record`, to the producer, and
    /// registers the record for in-order acknowledgement. Stops waiting for
    /// room in librdkafka's queue when the worker must stop (the record then
    /// stays unfinished).
    fn produce(&mut self, record: &SourceRecord, routed: RoutedOutputs, routed_normally: bool) {
        let Self {
            shared: parts,
            lane,
            started,
            sender,
            ..
        } = self;
        let (offsets, stop) = (&lane.offsets, &lane.stop);
        let _held = parts.gate.as_ref().map(|gate| {
            gate.read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        });
        if routed.is_empty() {
            // Filtered or skipped: finished at once.
            offsets.begin(record.offset, 0);
            return;
        }
        // Exactly-once: a record refused in an aborted transaction's batch
        // is produced alone, to tell whether it is the one at fault.
        let alone = parts.gate.is_some() && parts.refused.produce_alone(record);
        if alone {
            let _ = parts.producer.flush(ALONE_WAIT);
        }
        // Acknowledged outputs count as produced (dead-letter records not).
        let produced = routed_normally.then(|| started.meters.stats(&started.instance).clone());
        let delivery = Delivery::new(offsets, record.offset, routed, produced);
        let stopping = || stop.raised();
        for index in 0..delivery.outputs().len() {
            match sender.send(&delivery, index, &stopping) {
                Ok(()) => {}
                // librdkafka refused it for what it is: settled like a
                // refusal by the broker (already alone), and the other
                // outputs go on. Exactly-once: the transaction must not
                // commit without it; replayed, the record fails as refused.
                Err(error) if refuses_the_record(&error) && parts.gate.is_some() => {
                    parts
                        .refused
                        .refused(record, refusal_reason(&delivery, index, &error));
                    delivery.fail(index, &error);
                }
                Err(error) if refuses_the_record(&error) => offsets.refuse(Refusal {
                    delivery: delivery.clone(),
                    index: Some(index),
                    error,
                    alone: true,
                }),
                Err(e) => {
                    // Stopping while librdkafka's queue is full: the record
                    // is not finished, so the partition's next owner routes
                    // it again.
                    if !stopping() {
                        delivery.fail(index, &e);
                    }
                    break;
                }
            }
        }
        if alone {
            drop(delivery);
            let _ = parts.producer.flush(ALONE_WAIT);
            match offsets.take_refused_of(record.offset).first() {
                Some(refusal) => parts.refused.refused(record, refusal.reason()),
                None => parts.refused.cleared(record),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_take_a_full_batch_unless_the_plugin_is_slow_for_the_time_limit() {
        let limit = Duration::from_secs(1);
        let mut size = CallSize::FULL;
        // 2 µs per record: a full batch is far below a quarter second.
        size.took(128, Duration::from_micros(256), limit);
        assert_eq!(size, CallSize::FULL);
        // 20 ms per record: 12 records fit a quarter of a second.
        size.took(128, Duration::from_millis(2560), limit);
        assert_eq!(size, CallSize(12));
        // Faster again: back to a full batch.
        size.took(12, Duration::from_micros(24), limit);
        assert_eq!(size, CallSize::FULL);
        // Slower than the limit per record: one record per call.
        size.took(1, Duration::from_secs(2), limit);
        assert_eq!(size, CallSize(1));
    }

    #[test]
    fn a_call_past_the_time_limit_makes_the_next_ones_smaller() {
        let mut size = CallSize::FULL;
        size.timed_out(128);
        assert_eq!(size, CallSize(32));
        size.timed_out(2);
        assert_eq!(size, CallSize(1));
    }
}
