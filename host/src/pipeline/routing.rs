//! What a worker does with the records it took from its partition: routes
//! them with as few plugin calls as their answers allow, settles each
//! record that is not routed (retried, dead-lettered, skipped or held), and
//! hands what was decided to the producer, registering every record for
//! in-order acknowledgement ([`super::offsets`]).
//!
//! Every step that can wait (a plugin call, a backoff, a hold, a full
//! producer queue) ends when the worker must stop, with [`Stopped`], which
//! `?` carries out to the worker's loop: the record it was at stays
//! unfinished, for the partition's next owner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::delivery::{Delivery, Refusal, Sender, refusal_reason};
use super::failures::{RecordFailure, dead_letter};
use super::meters::Meters;
use super::offsets::PartitionOffsets;
use super::refusals::ALONE_WAIT;
use super::worker::{BATCH, Step, StopFlag, WorkerParts, until_started};
use crate::config::FailurePolicy;
use crate::kafka::refuses_the_record;
use crate::plugin::{FailureKind, RouteFailure};
use crate::record::SourceRecord;
use crate::route::{Halt, Route, RouteInstance, RoutedOutputs};
use crate::schema::check::{Check, RecordSchemas};
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
    const FULL: Self = Self(BATCH);

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

/// A held partition looks at its stop flag at least this often (it is also
/// woken at once by a swap or a stop).
const HALT_RECHECK: Duration = Duration::from_secs(1);

/// A partition waiting for a schema looks at its stop flag this often.
const SCHEMA_RECHECK: Duration = Duration::from_millis(100);

/// A plugin's answer for one record: its outputs, or why not.
type Answer = Result<RoutedOutputs, RouteFailure>;

/// A worker routing its partition: what it routes with, and the state it
/// keeps from one batch to the next.
pub(super) struct Routing {
    pub(super) parts: WorkerParts,
    pub(super) stop: StopFlag,
    /// The partition's instance of the route's plugin.
    pub(super) instance: RouteInstance,
    pub(super) meters: Meters,
    /// Hands outputs to the shared producer.
    pub(super) sender: Sender,
    size: CallSize,
    /// Sends refused outputs again alone (made when first needed).
    pub(super) alone: Option<Sender>,
}

impl Routing {
    /// A worker routing with `instance`.
    pub(super) fn new(parts: WorkerParts, stop: StopFlag, instance: RouteInstance) -> Self {
        Self {
            meters: Meters::new(&parts.route, &parts.metrics, &instance),
            sender: Sender::new(parts.producer.clone()),
            parts,
            stop,
            instance,
            size: CallSize::FULL,
            alone: None,
        }
    }

    /// The partition's offset tracking.
    pub(super) fn offsets(&self) -> &Arc<PartitionOffsets> {
        &self.parts.offsets
    }

    /// Whether the route runs in exactly-once mode (its outputs go into
    /// transactions).
    pub(super) fn exactly_once(&self) -> bool {
        self.parts.gate.is_some()
    }

    /// Routes `records` (one partition's, in order) with as few plugin
    /// calls as their answers and the call size allow, and hands what was
    /// decided to the producer record by record.
    ///
    /// A record that is not routed is settled on its own (retried,
    /// dead-lettered, skipped or held), and the records after it are routed
    /// again afterwards, by the plugin version routing then. A call that
    /// fails as a whole (a trap, say) tells nothing about which record is
    /// at fault, so its records are then routed one at a time, which names
    /// that record exactly.
    pub(super) fn route_batch(&mut self, records: &[Arc<SourceRecord>]) -> Step {
        let limit = self.parts.route.config.limits.limits().route_timeout;
        let mut rest = records;
        while !rest.is_empty() {
            self.stop.check()?;
            let mut call = &rest[..rest.len().min(self.size.0)];
            // Exactly-once: a record the broker refused in an aborted
            // transaction fails as such, without its outputs.
            if let Some(at) = call.iter().position(|r| self.parts.refused.is_refused(r)) {
                if at == 0 {
                    let reason = self.parts.refused.settle(&call[0]).unwrap_or_default();
                    let failure = RouteFailure::new(FailureKind::BrokerRefused, reason);
                    self.handle(&call[0], Some(Err(failure)))?;
                    rest = &rest[1..];
                    continue;
                }
                call = &call[..at];
            }
            // Schema-framed records go to the plugin once their schemas are
            // here and their bytes match them.
            match self.schema_checked(call)? {
                (0, Some(failure)) => {
                    self.handle(&call[0], Some(Err(failure)))?;
                    rest = &rest[1..];
                    continue;
                }
                (ready, _) => call = &call[..ready.max(1)],
            }
            self.follow_swaps(call[0].offset)?;
            // A route without a plugin makes no call to time.
            let started = self.instance.plugin().is_some().then(Instant::now);
            let answers = self.instance.route_batch(call);
            if let Some(started) = started {
                let took = started.elapsed();
                self.meters.called(took, call.len());
                if answers.is_ok() {
                    self.size.took(call.len(), took, limit);
                }
            }
            let answers = match answers {
                // A call of one record that failed is that record's answer.
                Err(failure) if call.len() == 1 => vec![Err(failure)],
                Ok(answers) => answers,
                Err(failure) => {
                    tracing::debug!(
                        route = self.parts.route.name(),
                        records = call.len(),
                        reason = %failure,
                        "a plugin call failed as a whole: routing its records one at a time"
                    );
                    if failure.kind == FailureKind::Timeout {
                        self.size.timed_out(call.len());
                    }
                    for record in call {
                        self.stop.check()?;
                        self.handle(record, None)?;
                    }
                    rest = &rest[call.len()..];
                    continue;
                }
            };
            let mut settled = 0;
            for (record, answer) in call.iter().zip(answers) {
                // Routed but not produced: consumed again by whoever owns
                // the partition next.
                self.stop.check()?;
                settled += 1;
                match answer {
                    Ok(routed) => {
                        self.meters.routed(&self.instance, routed.len());
                        self.produce(record, routed, true);
                    }
                    Err(failure) => {
                        self.handle(record, Some(Err(failure)))?;
                        break;
                    }
                }
            }
            rest = &rest[settled..];
        }
        Ok(())
    }

    /// Settles `record` on its own, starting from the plugin's `first`
    /// answer if there is one, and hands what was decided to the producer.
    fn handle(&mut self, record: &Arc<SourceRecord>, first: Option<Answer>) -> Step {
        let (routed, routed_normally) = self.decide(record, first)?;
        self.produce(record, routed, routed_normally);
        Ok(())
    }

    /// Brings the instance to the version routing now before a call that
    /// starts at `offset` (see [`until_started`]).
    fn follow_swaps(&mut self, offset: i64) -> Step {
        let Self {
            parts,
            stop,
            instance,
            ..
        } = self;
        until_started(&parts.route, &parts.offsets, Some(offset), stop, || {
            instance.follow_swaps()
        })
    }

    /// What to produce for `record`: its outputs (then `true`), its
    /// dead-letter record, or nothing (filtered or skipped), starting from
    /// the plugin's `first` answer if there is one.
    fn decide(
        &mut self,
        record: &Arc<SourceRecord>,
        mut first: Option<Answer>,
    ) -> Step<(RoutedOutputs, bool)> {
        let route = self.parts.route.clone();
        loop {
            let (result, attempts) = self.attempt(record, first.take())?;
            let failure = match result {
                Ok(routed) => {
                    self.meters.routed(&self.instance, routed.len());
                    return Ok((routed, true));
                }
                Err(failure) => failure,
            };
            self.meters.failed(&self.instance, failure.kind);
            self.parts.failures.failed(&RecordFailure {
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
                        &self.instance,
                        route.config.limits.max_output_bytes,
                    );
                    return Ok((smallvec::smallvec![dead], false));
                }
                FailurePolicy::Skip => return Ok((RoutedOutputs::new(), false)),
                FailurePolicy::Stop => self.hold(&route, record, &failure)?,
            }
        }
    }

    /// How many of `call`'s first records may go to the plugin: their
    /// framed parts match their schemas (all of them on a route that reads
    /// none by schema). When the first record's schema is being fetched,
    /// waits for it: the partition keeps its order. The first record that
    /// fails its check comes back with why (after the ones before it).
    fn schema_checked(
        &mut self,
        call: &[Arc<SourceRecord>],
    ) -> Step<(usize, Option<RouteFailure>)> {
        let route = self.parts.route.clone();
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
                    self.wait_for_schema(&route, schemas, record, id, why)?
                }
            }
        }
        Ok((ready, None))
    }

    /// Waits at `record` until schema `id` is fetched. While requests for
    /// it fail, the partition is held there (`/ready` and `/routes` say
    /// why); nothing is failed for an outage.
    fn wait_for_schema(
        &self,
        route: &Route,
        schemas: &RecordSchemas,
        record: &SourceRecord,
        id: u32,
        mut why: Option<Arc<str>>,
    ) -> Step {
        let mut held = false;
        loop {
            self.stop.check()?;
            if let Some(why) = &why {
                route.set_halted(
                    &record.topic,
                    record.partition,
                    Some(Halt {
                        offset: Some(record.offset),
                        reason: format!("waiting for schema {id}: {why}"),
                    }),
                );
                held = true;
            }
            // Nothing is routed meanwhile: free what was in flight.
            self.parts.offsets.free_retired();
            schemas.wait(id, SCHEMA_RECHECK);
            match schemas.store().lookup(id) {
                Lookup::Pending(now) => why = now,
                Lookup::Ready(_) | Lookup::Failed(_) => break,
            }
        }
        if held {
            route.set_halted(&record.topic, record.partition, None);
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
    fn hold(&self, route: &Route, record: &SourceRecord, failure: &RouteFailure) -> Step {
        let generation = route.generation();
        tracing::error!(
            route = route.name(),
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            "partition held at a failed record (on_failure = \"stop\"): nothing past it is routed or committed until a new plugin version is swapped in"
        );
        route.set_halted(
            &record.topic,
            record.partition,
            Some(Halt {
                offset: Some(record.offset),
                reason: failure.to_string(),
            }),
        );
        while !self.stop.raised() && route.generation() == generation {
            // Nothing is routed meanwhile: free what was in flight.
            self.parts.offsets.free_retired();
            route.wait(generation, HALT_RECHECK, || self.stop.raised());
        }
        self.stop.check()?;
        route.set_halted(&record.topic, record.partition, None);
        tracing::info!(
            route = route.name(),
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            "plugin swapped: routing the held record again"
        );
        Ok(())
    }

    /// Routes `record`, calling the plugin again after `retry` answers as
    /// the route's backoff says; `first` is the answer of a call already
    /// made. Gives the result and the number of calls made for the plugin
    /// version routing now.
    fn attempt(
        &mut self,
        record: &Arc<SourceRecord>,
        mut first: Option<Answer>,
    ) -> Step<(Answer, u32)> {
        let route = self.parts.route.clone();
        let retry = &route.config.retry;
        let backoff = retry.backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match first.take() {
                Some(result) => result,
                None => {
                    self.follow_swaps(record.offset)?;
                    if let (0, Some(failure)) = self.schema_checked(std::slice::from_ref(record))? {
                        Err(failure)
                    } else {
                        // A route without a plugin makes no call to time.
                        let started = self.instance.plugin().is_some().then(Instant::now);
                        let result = self.instance.route(record);
                        if let Some(started) = started {
                            self.meters.called(started.elapsed(), 1);
                        }
                        result
                    }
                }
            };
            // A call ended because the worker must stop says nothing of the
            // record: it is routed again by the partition's next owner.
            self.stop.check()?;
            let failure = match result {
                Ok(routed) => return Ok((Ok(routed), attempts)),
                Err(failure) => failure,
            };
            if failure.kind != FailureKind::Retry || attempts >= retry.max_attempts {
                return Ok((Err(failure), attempts));
            }
            self.meters.retried(&self.instance);
            let wait = backoff.delay(attempts);
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
            let generation = route.generation();
            route.wait(generation, wait, || self.stop.raised());
            self.stop.check()?;
            if route.generation() != generation {
                // A new plugin version gets a fresh set of attempts.
                attempts = 0;
            }
        }
    }

    /// Hands `routed`, what was decided for `record`, to the producer, and
    /// registers the record for in-order acknowledgement. Stops waiting for
    /// room in librdkafka's queue when the worker must stop (the record then
    /// stays unfinished).
    fn produce(&mut self, record: &SourceRecord, routed: RoutedOutputs, routed_normally: bool) {
        let Self {
            parts,
            stop,
            instance,
            meters,
            sender,
            ..
        } = self;
        let offsets = &parts.offsets;
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
        let produced = routed_normally.then(|| meters.stats(instance).clone());
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
