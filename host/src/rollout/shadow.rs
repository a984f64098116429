//! A shadow candidate: it sees the records the live version routes, in
//! the same batches, on a thread of its own with its own instance (the
//! route's limits apply to it as to the live version's). What each record
//! was decided by both is compared; nothing the candidate decides is
//! produced, but a sample of the differences to the route's
//! `shadow_topic`.
//!
//! The live path only hands each batch over, with the live decisions, to
//! a bounded queue ([`Shadow::offer`], which never waits): a candidate
//! slower than the live version, trapping or running out its time limit
//! costs the live path nothing but that hand-over, and the batches it has
//! no room for are counted as skipped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::producer::BaseRecord;
use serde_json::{Value, json};

use crate::plugin::{FailureKind, Interrupt, LogBudget, Plugin};
use crate::record::{Output, SourceRecord};
use crate::route::{Route, RouteInstance, Routed, RoutedOutputs};

/// Batches waiting for the candidate, at most.
const QUEUE: usize = 64;

/// Differing records kept for `/routes/{name}/shadow`, the latest.
const KEPT_SAMPLES: usize = 20;

/// Differing records written to the shadow topic per second, at most.
const TOPIC_SAMPLES_PER_SECOND: u64 = 100;

/// Bytes of a key or value shown in a sample, at most.
const SHOWN_BYTES: usize = 256;

/// How a record's two decisions differ.
pub const DIFFERENCES: [&str; 8] = [
    "outputs",
    "topic",
    "partition",
    "key",
    "value",
    "headers",
    "timestamp",
    "failure",
];

/// What the live version decided for a record.
#[derive(Debug, Clone)]
pub enum LiveAnswer {
    /// Routed to these outputs (none: filtered).
    Routed(RoutedOutputs),
    /// Failed with this kind (its first answer: a `retry` is one).
    Failed(FailureKind),
}

/// A batch the live version routed, for the candidate.
#[derive(Debug, Default)]
pub struct ShadowBatch {
    /// The records, of one partition, in order.
    pub records: Vec<Arc<SourceRecord>>,
    /// What the live version decided for each.
    pub live: Vec<LiveAnswer>,
}

impl ShadowBatch {
    /// Adds `record`, for which the live version decided `answer`.
    pub fn push(&mut self, record: &Arc<SourceRecord>, answer: LiveAnswer) {
        self.records.push(record.clone());
        self.live.push(answer);
    }
}

/// A shadow candidate's thread: dropping it ends the thread at once (a
/// call in progress is interrupted, the batches queued are dropped).
pub(crate) struct Shadow {
    feed: SyncSender<ShadowBatch>,
    /// What it found.
    pub(crate) counts: Arc<ShadowCounts>,
    ended: Arc<AtomicBool>,
    interrupt: Interrupt,
}

impl Drop for Shadow {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::Release);
        self.interrupt.raise();
    }
}

/// What every shadow candidate of a route found, for `/metrics`
/// (counters that never go down, whatever candidates come and go).
#[derive(Debug, Default)]
pub struct ShadowTotals {
    /// Records decided alike.
    pub agreed: AtomicU64,
    /// Records decided differently.
    pub differed: AtomicU64,
    /// Records not compared: the candidate's queue was full.
    pub skipped: AtomicU64,
}

impl Shadow {
    /// Starts `candidate`'s thread for `route`.
    pub(crate) fn start(route: &Arc<Route>, candidate: Arc<Plugin>) -> Self {
        let (feed, batches) = sync_channel(QUEUE);
        let counts = Arc::new(ShadowCounts {
            totals: route.rollouts.shadow.clone(),
            ..ShadowCounts::default()
        });
        let ended = Arc::new(AtomicBool::new(false));
        let interrupt = Interrupt::new();
        let thread = Candidate {
            route: route.clone(),
            candidate,
            counts: counts.clone(),
            instance: None,
            start: StartBackoff::default(),
            interrupt: interrupt.clone(),
            ended: ended.clone(),
            log_budget: Arc::new(LogBudget::new(route.config.limits.log_lines_per_second)),
            topic_window: (Instant::now(), 0),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("shadow-{}", route.name()))
            .spawn(move || thread.run(&batches));
        if let Err(e) = spawned {
            tracing::error!(route = route.name(), error = %e, "cannot start the shadow candidate's thread: nothing is compared");
        }
        Self {
            feed,
            counts,
            ended,
            interrupt,
        }
    }

    /// Hands `batch` to the candidate, unless its queue is full (then the
    /// batch is counted as skipped). Never waits.
    pub fn offer(&self, batch: ShadowBatch) {
        match self.feed.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => {
                let n = batch.records.len() as u64;
                self.counts.skipped.fetch_add(n, Ordering::Relaxed);
                self.counts.totals.skipped.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// What a shadow candidate found.
#[derive(Debug, Default)]
pub struct ShadowCounts {
    compared: AtomicU64,
    agreed: AtomicU64,
    differed: AtomicU64,
    skipped: AtomicU64,
    candidate_failed: AtomicU64,
    live_failed: AtomicU64,
    by_kind: [AtomicU64; DIFFERENCES.len()],
    samples: Mutex<VecDeque<Value>>,
    /// The route's, across candidates.
    totals: Arc<ShadowTotals>,
}

/// What a shadow candidate found, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShadowSnapshot {
    /// Records both versions decided.
    pub compared: u64,
    /// Of these, the ones decided alike.
    pub agreed: u64,
    /// The ones decided differently.
    pub differed: u64,
    /// Records the candidate did not see: its queue was full.
    pub skipped: u64,
    /// Records the candidate failed (a `retry` answer not included).
    pub candidate_failed: u64,
    /// Records the live version failed (a `retry` answer not included).
    pub live_failed: u64,
    /// Differing records by what differs (a record may count in several).
    pub differences: std::collections::BTreeMap<&'static str, u64>,
}

impl ShadowCounts {
    /// The counts now.
    #[must_use]
    pub fn snapshot(&self) -> ShadowSnapshot {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        ShadowSnapshot {
            compared: get(&self.compared),
            agreed: get(&self.agreed),
            differed: get(&self.differed),
            skipped: get(&self.skipped),
            candidate_failed: get(&self.candidate_failed),
            live_failed: get(&self.live_failed),
            differences: DIFFERENCES
                .iter()
                .zip(&self.by_kind)
                .map(|(kind, n)| (*kind, get(n)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// The latest differing records, oldest first.
    #[must_use]
    pub fn samples(&self) -> Vec<Value> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// When a candidate that could not start is tried again.
#[derive(Debug, Default)]
struct StartBackoff {
    next: Option<Instant>,
    wait: Duration,
}

/// A candidate that cannot start is tried again after this, doubling up
/// to [`START_RETRY_MAX`]; its records count as failed meanwhile.
const START_RETRY_MIN: Duration = Duration::from_millis(500);
const START_RETRY_MAX: Duration = Duration::from_secs(30);

/// The candidate's side: its instance, on its thread.
struct Candidate {
    route: Arc<Route>,
    candidate: Arc<Plugin>,
    counts: Arc<ShadowCounts>,
    instance: Option<RouteInstance>,
    start: StartBackoff,
    /// Raised when the shadow ends: a call in progress ends at once.
    interrupt: Interrupt,
    ended: Arc<AtomicBool>,
    /// Its own: a chatty candidate does not silence the live version.
    log_budget: Arc<LogBudget>,
    /// The shadow topic's current second and what was written in it.
    topic_window: (Instant, u64),
}

/// The candidate's answer for one record.
type Answer = Result<RoutedOutputs, FailureKind>;

impl Candidate {
    fn run(mut self, batches: &Receiver<ShadowBatch>) {
        while let Ok(batch) = batches.recv() {
            if self.ended.load(Ordering::Acquire) {
                break;
            }
            let answers = self.answers(&batch.records);
            if self.ended.load(Ordering::Acquire) {
                // Interrupted: says nothing of the candidate.
                break;
            }
            for ((record, live), answer) in batch.records.iter().zip(&batch.live).zip(answers) {
                self.compare(record, live, &answer);
            }
        }
    }

    /// The candidate's answers for `records`: one call, or one per record
    /// when the call fails as a whole (as the live path does).
    fn answers(&mut self, records: &[Arc<SourceRecord>]) -> Vec<Answer> {
        let cannot_start = || records.iter().map(|_| Err(FailureKind::Trap)).collect();
        if self.instance.is_none() {
            if self.start.next.is_some_and(|next| Instant::now() < next) {
                return cannot_start();
            }
            match self.route.pinned_instance(
                &self.candidate,
                self.interrupt.clone(),
                self.log_budget.clone(),
            ) {
                Ok(instance) => {
                    self.instance = Some(instance);
                    self.start = StartBackoff::default();
                }
                Err(e) => {
                    let wait = (self.start.wait * 2).clamp(START_RETRY_MIN, START_RETRY_MAX);
                    self.start = StartBackoff {
                        next: Some(Instant::now() + wait),
                        wait,
                    };
                    tracing::warn!(route = self.route.name(), candidate = self.candidate.version(), error = %e, retry_ms = wait.as_millis(), "the shadow candidate cannot start: its records count as failed until it does");
                    return cannot_start();
                }
            }
        }
        let Some(instance) = self.instance.as_mut() else {
            return Vec::new();
        };
        match instance.route_batch(records) {
            Ok(answers) => answers.into_iter().map(|a| a.map_err(|f| f.kind)).collect(),
            Err(failure) if records.len() == 1 => vec![Err(failure.kind)],
            Err(_) => records
                .iter()
                .map(|record| instance.route(record).map_err(|f| f.kind))
                .collect(),
        }
    }

    fn compare(&mut self, record: &SourceRecord, live: &LiveAnswer, candidate: &Answer) {
        let counts = self.counts.clone();
        counts.compared.fetch_add(1, Ordering::Relaxed);
        if matches!(live, LiveAnswer::Failed(kind) if *kind != FailureKind::Retry) {
            counts.live_failed.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(candidate, Err(kind) if *kind != FailureKind::Retry) {
            counts.candidate_failed.fetch_add(1, Ordering::Relaxed);
        }
        let differs = differences(live, candidate);
        if differs.is_empty() {
            counts.agreed.fetch_add(1, Ordering::Relaxed);
            counts.totals.agreed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counts.differed.fetch_add(1, Ordering::Relaxed);
        counts.totals.differed.fetch_add(1, Ordering::Relaxed);
        for kind in &differs {
            if let Some(i) = DIFFERENCES.iter().position(|k| k == kind) {
                counts.by_kind[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        let sample = json!({
            "route": self.route.name(),
            "topic": &*record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "differs": differs,
            "live": describe_live(live),
            "candidate": describe(candidate),
            "candidate_version": self.candidate.version(),
            "live_version": self.route.plugin().map(|p| p.version().to_owned()),
        });
        self.write(record, &sample);
        let mut samples = counts
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        samples.push_back(sample);
        while samples.len() > KEPT_SAMPLES {
            samples.pop_front();
        }
    }

    /// Writes `sample` to the route's shadow topic, if it has one and this
    /// second's share is not used up.
    fn write(&mut self, record: &SourceRecord, sample: &Value) {
        let Some((topic, producer)) = self.route.shadow_topic() else {
            return;
        };
        let (second, written) = &mut self.topic_window;
        if second.elapsed() >= Duration::from_secs(1) {
            *second = Instant::now();
            *written = 0;
        }
        if *written >= TOPIC_SAMPLES_PER_SECOND {
            return;
        }
        *written += 1;
        let value = sample.to_string();
        let mut out = BaseRecord::<[u8], str>::to(topic).payload(&value);
        if let Some(key) = record.key.as_deref() {
            out = out.key(key);
        }
        if let Err((e, _)) = producer.send(out) {
            tracing::debug!(route = self.route.name(), topic, error = %e, "a shadow sample was not written");
        }
        producer.poll(Duration::ZERO);
    }
}

/// What differs between the two decisions of a record (nothing: alike).
#[must_use]
pub fn differences(live: &LiveAnswer, candidate: &Answer) -> Vec<&'static str> {
    let (live, candidate) = match (live, candidate) {
        (LiveAnswer::Failed(a), Err(b)) if a == b => return Vec::new(),
        (LiveAnswer::Routed(live), Ok(candidate)) => (live, candidate),
        _ => return vec!["failure"],
    };
    let mut differs = Vec::new();
    if live.len() != candidate.len() {
        differs.push("outputs");
    }
    let mut mark = |kind: &'static str, same: bool| {
        if !same && !differs.contains(&kind) {
            differs.push(kind);
        }
    };
    for (a, b) in live.iter().zip(candidate.iter()) {
        mark("topic", a.topic == b.topic);
        mark("partition", a.output.partition == b.output.partition);
        mark("key", a.output.key() == b.output.key());
        mark("value", a.output.value() == b.output.value());
        mark("headers", a.output.headers().eq(b.output.headers()));
        mark(
            "timestamp",
            a.output.timestamp_ms() == b.output.timestamp_ms(),
        );
    }
    differs
}

fn describe_live(live: &LiveAnswer) -> Value {
    match live {
        LiveAnswer::Routed(outputs) => describe_outputs(outputs),
        LiveAnswer::Failed(kind) => json!({ "failure": kind.as_str() }),
    }
}

fn describe(answer: &Answer) -> Value {
    match answer {
        Ok(outputs) => describe_outputs(outputs),
        Err(kind) => json!({ "failure": kind.as_str() }),
    }
}

fn describe_outputs(outputs: &[Routed]) -> Value {
    let outputs: Vec<Value> = outputs.iter().map(describe_output).collect();
    json!({ "outputs": outputs })
}

fn describe_output(routed: &Routed) -> Value {
    let output: &Output = &routed.output;
    let headers: Vec<Value> = output
        .headers()
        .map(|h| json!({ "key": &*h.key, "value": shown(Some(&h.value)) }))
        .collect();
    json!({
        "topic": &*routed.topic,
        "partition": output.partition,
        "key": shown(output.key()),
        "value": shown(output.value()),
        "headers": headers,
        "timestamp_ms": output.timestamp_ms(),
    })
}

/// Bytes as text when they are UTF-8, else as `base64:...`; cut to
/// [`SHOWN_BYTES`].
fn shown(bytes: Option<&[u8]>) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    let more = if bytes.len() > SHOWN_BYTES {
        format!("... ({} bytes)", bytes.len())
    } else {
        String::new()
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut end = text.len().min(SHOWN_BYTES);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(format!("{}{more}", &text[..end]))
        }
        Err(_) => Value::String(format!(
            "base64:{}{more}",
            base64::engine::general_purpose::STANDARD
                .encode(&bytes[..bytes.len().min(SHOWN_BYTES)])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Data, Header, OutputHeaders};

    fn record() -> Arc<SourceRecord> {
        Arc::new(SourceRecord {
            topic: "in".into(),
            partition: 0,
            offset: 7,
            timestamp_ms: Some(1),
            key: Some(bytes::Bytes::from_static(b"k")),
            value: Some(bytes::Bytes::from_static(b"v")),
            headers: vec![Header {
                key: "tenant-id".into(),
                value: bytes::Bytes::from_static(b"acme"),
            }],
            wire_headers: Default::default(),
        })
    }

    fn routed(topic: &str, change: impl FnOnce(&mut Output)) -> Routed {
        let mut output = Output::forward(record());
        change(&mut output);
        Routed {
            topic: topic.into(),
            output,
        }
    }

    #[test]
    fn decisions_are_alike_only_when_every_output_matches() {
        let one = |r: Routed| -> RoutedOutputs { smallvec::smallvec![r] };
        let live = LiveAnswer::Routed(one(routed("out", |_| {})));
        assert!(differences(&live, &Ok(one(routed("out", |_| {})))).is_empty());
        assert_eq!(
            differences(&live, &Ok(one(routed("out", |o| o.partition = Some(2))))),
            ["partition"]
        );
        assert_eq!(
            differences(&live, &Ok(one(routed("other", |o| o.value = Data::Null)))),
            ["topic", "value"]
        );
        assert_eq!(
            differences(
                &live,
                &Ok(one(
                    routed("out", |o| o.headers = OutputHeaders::Replace(Vec::new()))
                ))
            ),
            ["headers"]
        );
        // The same bytes said another way are alike.
        assert!(
            differences(
                &live,
                &Ok(one(routed("out", |o| o.key =
                    Data::Bytes(bytes::Bytes::from_static(b"k")))))
            )
            .is_empty()
        );
        let two: RoutedOutputs = smallvec::smallvec![routed("out", |_| {}), routed("out", |_| {})];
        assert_eq!(differences(&live, &Ok(two)), ["outputs"]);
        assert_eq!(differences(&live, &Err(FailureKind::Trap)), ["failure"]);
        let failed = LiveAnswer::Failed(FailureKind::Reject);
        assert!(differences(&failed, &Err(FailureKind::Reject)).is_empty());
        assert_eq!(differences(&failed, &Err(FailureKind::Trap)), ["failure"]);
    }

    #[test]
    fn samples_show_text_as_text_and_the_rest_as_base64_cut_short() {
        assert_eq!(shown(Some(b"plain")), "plain");
        assert_eq!(shown(Some(&[0xff, 0x00])), "base64:/wA=");
        let long = "é".repeat(200);
        let Value::String(cut) = shown(Some(long.as_bytes())) else {
            panic!("text");
        };
        assert!(cut.ends_with("... (400 bytes)"), "{cut}");
        assert_eq!(cut.chars().filter(|c| *c == 'é').count(), 128);
        assert_eq!(shown(None), Value::Null);
    }
}
