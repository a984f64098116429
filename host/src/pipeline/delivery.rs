//! What a delivery report means for its record: the pipeline's side of
//! producing. A record's outputs travel as one [`Delivery`]; each report
//! acknowledges one output, and the last lets the record finish in its
//! partition's order ([`super::offsets`]). An output the broker refuses
//! for what it is becomes a [`Refusal`] for the record's worker to settle
//! (`super::refusals`); any other failure stops the partition at the
//! record (nothing past it is committed).

use std::sync::Arc;

use rdkafka::error::KafkaError;

use super::offsets::{PartitionOffsets, RecordAck};
use crate::kafka::{self, Outgoing, Report, Role};
use crate::route::{Routed, RoutedOutputs};
use crate::stats::VersionStats;

/// The router's producer: its reports go to [`Delivery`].
pub(crate) type Producer = kafka::OutputProducer<Delivery>;

/// A worker's way into [`Producer`].
pub(super) type Sender = kafka::Sender<Delivery>;

/// One record's outputs on their way to Kafka, shared by their delivery
/// reports: each acknowledges one output, and the last one lets go of the
/// outputs, and with them of the values librdkafka was handed without a
/// copy (a forwarded value is held by its source record).
#[derive(Debug)]
pub(crate) struct Delivery {
    ack: Ack,
    offsets: Arc<PartitionOffsets>,
    /// Counts each output once acknowledged (none for dead-letter records).
    produced: Option<Arc<VersionStats>>,
    outputs: RoutedOutputs,
}

/// What an acknowledgement of a [`Delivery`] settles.
#[derive(Debug)]
enum Ack {
    /// An output of its own record.
    Record(RecordAck),
    /// The output of another delivery that the broker refused, which this
    /// one (its record's dead-letter record) stands for.
    StandsFor(Arc<Delivery>),
}

/// An output the broker (or librdkafka) refused, for the record's worker to
/// settle: `delivery` holds the reference that stood for it.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The refused output's delivery.
    pub(crate) delivery: Arc<Delivery>,
    /// Which of its outputs; `None` if the report could not tell.
    pub(crate) index: Option<usize>,
    /// What the broker said.
    pub(crate) error: KafkaError,
    /// Refused even when sent alone: for good (else it may have shared a
    /// batch with the output at fault, and is sent again alone first).
    pub(crate) alone: bool,
}

impl Refusal {
    /// The refused output's index and output, if the report named one.
    #[must_use]
    pub(crate) fn output(&self) -> Option<(usize, &Routed)> {
        let index = self.index.unwrap_or(0);
        self.delivery
            .outputs()
            .get(index)
            .map(|routed| (index, routed))
    }

    /// Why, as a failure's message says it.
    #[must_use]
    pub(crate) fn reason(&self) -> String {
        refusal_reason(&self.delivery, self.index.unwrap_or(0), &self.error)
    }
}

/// Why output `index` of `delivery` failed for good, as a failure's message
/// (and a dead-letter record's `dlq-error`) says it.
#[must_use]
pub(crate) fn refusal_reason(delivery: &Delivery, index: usize, error: &KafkaError) -> String {
    let topic = delivery
        .outputs()
        .get(index)
        .map_or("?", |routed| &routed.topic);
    format!("output {index} to '{topic}' refused by the broker: {error}")
}

impl Delivery {
    /// Registers the record at `offset` with `offsets` for its `outputs`,
    /// about to be sent ([`kafka::Sender::send`]).
    #[must_use]
    pub(crate) fn new(
        offsets: &Arc<PartitionOffsets>,
        offset: i64,
        outputs: RoutedOutputs,
        produced: Option<Arc<VersionStats>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            ack: Ack::Record(offsets.begin(offset, outputs.len())),
            offsets: offsets.clone(),
            produced,
            outputs,
        })
    }

    /// The dead-letter record `dead` of a record whose output the broker
    /// refused (`refused`): its acknowledgement settles that output.
    #[must_use]
    pub(crate) fn standing_for(refused: Arc<Delivery>, dead: Routed) -> Arc<Self> {
        Arc::new(Self {
            offsets: refused.offsets.clone(),
            ack: Ack::StandsFor(refused),
            produced: None,
            outputs: smallvec::smallvec![dead],
        })
    }

    /// The outputs, in order they are sent.
    #[must_use]
    pub(crate) fn outputs(&self) -> &[Routed] {
        &self.outputs
    }

    /// The record these outputs belong to (the refused record's, for a
    /// dead-letter record standing for one).
    fn record_ack(&self) -> &RecordAck {
        match &self.ack {
            Ack::Record(ack) => ack,
            Ack::StandsFor(refused) => refused.record_ack(),
        }
    }

    /// The source offset of the record these outputs belong to.
    #[must_use]
    pub(crate) fn offset(&self) -> i64 {
        self.record_ack().offset()
    }

    /// Whether this is a dead-letter record standing for a refused output.
    #[must_use]
    pub(crate) fn is_stand_in(&self) -> bool {
        matches!(self.ack, Ack::StandsFor(_))
    }

    /// Output `index` could not be handed to librdkafka, or was refused
    /// and cannot be settled otherwise: the record's partition stops there
    /// (nothing past it is committed).
    pub(crate) fn fail(&self, index: usize, error: &KafkaError) {
        let topic = self.outputs.get(index).map_or("?", |out| &out.topic);
        self.offsets.fail(
            self.record_ack(),
            format!("cannot produce to '{topic}': {error}"),
        );
    }

    /// One output was acknowledged by the broker.
    fn acknowledged(self: Arc<Self>) {
        if let Some(produced) = &self.produced {
            produced.produced();
        }
        self.settle();
    }

    /// One output is settled (acknowledged, or its refusal settled by the
    /// route's policy): the last one finishes the record.
    pub(crate) fn settle(self: Arc<Self>) {
        match Arc::try_unwrap(self) {
            // The last reference: the worker frees the outputs.
            Ok(Delivery {
                ack: Ack::Record(ack),
                offsets,
                outputs,
                ..
            }) => offsets.acknowledge_last(&ack, outputs),
            Ok(Delivery {
                ack: Ack::StandsFor(refused),
                offsets,
                outputs,
                ..
            }) => {
                offsets.retire(outputs);
                refused.settle();
            }
            Err(shared) => match &shared.ack {
                Ack::Record(ack) => shared.offsets.acknowledge(ack),
                // Its one output is settled, though someone still holds it
                // (the worker that just sent it): so is the refused one.
                Ack::StandsFor(refused) => refused.clone().settle(),
            },
        }
    }
}

impl Outgoing for Delivery {
    fn outputs(&self) -> &[Routed] {
        &self.outputs
    }

    fn reported(self: Arc<Self>, report: Report<'_>) {
        match report {
            Report::Acknowledged => self.acknowledged(),
            Report::Refused { index, error, role } => {
                if role == Role::Transactional {
                    // The transaction must abort; the record is remembered
                    // (the worker's refusals) and settled when replayed.
                    self.fail(index.unwrap_or(0), error);
                }
                let offsets = self.offsets.clone();
                offsets.refuse(Refusal {
                    delivery: self,
                    index,
                    error: error.clone(),
                    alone: role == Role::Alone,
                });
            }
            Report::Failed(error) => self.offsets.fail(self.record_ack(), error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use std::time::Instant;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    use std::collections::HashMap;
    use std::time::Duration;

    use bytes::Bytes;
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;
    use crate::config::KafkaConfig;
    use crate::record::{Data, Header, Output, SourceRecord};

    const PARTITIONS: i32 = 6;

    fn config(bootstrap: &str) -> ClientConfig {
        let kafka: KafkaConfig =
            toml::from_str(&format!("bootstrap_servers = \"{bootstrap}\"")).unwrap();
        kafka::producer_config(&kafka)
    }

    fn source(offset: i64) -> Arc<SourceRecord> {
        Arc::new(SourceRecord {
            topic: "in".into(),
            partition: 0,
            offset,
            timestamp_ms: Some(1_700_000_000_000 + offset),
            key: Some(Bytes::from(format!("key-{offset}"))),
            value: Some(Bytes::from(vec![u8::try_from(offset).unwrap(); 1024])),
            headers: vec![
                Header {
                    key: "tenant-id".into(),
                    value: Bytes::from(format!("tenant-{offset}")),
                },
                Header {
                    key: "empty".into(),
                    value: Bytes::new(),
                },
            ],
            wire_headers: Default::default(),
        })
    }

    /// `output`, the one output of its record, to topic "out".
    fn out(output: Output) -> RoutedOutputs {
        smallvec::smallvec![Routed {
            topic: "out".into(),
            output,
        }]
    }

    /// Waits (bounded) until `done` holds.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every record of `topic`, as (partition, key, value, headers, timestamp).
    type Read = (i32, Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>, Option<i64>);

    fn read_all(bootstrap: &str, topic: &str, count: usize) -> Vec<Read> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "read")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut read = Vec::new();
        while read.len() < count {
            assert!(Instant::now() < deadline, "read {} of {count}", read.len());
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.unwrap();
            let headers = message.headers().map_or_else(Vec::new, |h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            });
            read.push((
                message.partition(),
                message.key().unwrap_or_default().to_vec(),
                message.payload().unwrap_or_default().to_vec(),
                headers,
                message.timestamp().to_millis(),
            ));
        }
        read
    }

    #[test]
    fn outputs_arrive_as_given_and_their_values_are_held_until_their_reports_then_handed_back() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("out", PARTITIONS, 1).unwrap();
        cluster.create_topic("by-name", PARTITIONS, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let producer = Arc::new(Producer::new(&config(&bootstrap)).unwrap());
        let mut sender = Sender::new(producer.clone());
        let offsets = Arc::new(PartitionOffsets::new("in", 0));
        let sources: Vec<_> = (0..20).map(source).collect();
        // Odd records get a value of the plugin's own.
        let own: Vec<Option<Bytes>> = sources
            .iter()
            .map(|s| (s.offset % 2 == 1).then(|| Bytes::from(format!("own value {}", s.offset))))
            .collect();
        for (source, own) in sources.iter().zip(&own) {
            let mut output = Output::forward(source.clone());
            // One explicit partition; the rest partitioned by key.
            output.partition = (source.offset == 7).then_some(5);
            if let Some(own) = own {
                output.value = Data::Bytes(own.clone());
            }
            // Ours is dropped as soon as it is sent, long before its report
            // (librdkafka lingers 5 ms before sending).
            sender
                .send(
                    &Delivery::new(&offsets, source.offset, out(output), None),
                    0,
                    &|| false,
                )
                .unwrap();
        }
        // Every report acknowledged, and each record's last one handed its
        // outputs back for the worker to free: they still hold the values.
        wait_for("the delivery reports", || offsets.stored() == Some(20));
        assert!(offsets.failure().is_none());
        let mut retired = offsets.take_retired();
        assert_eq!(retired.len(), sources.len());
        assert!(sources.iter().all(|source| Arc::strong_count(source) == 2));
        // Freed, every value is let go.
        retired.clear();
        for (source, own) in sources.iter().zip(&own) {
            assert_eq!(Arc::strong_count(source), 1, "record {}", source.offset);
            assert!(source.value.as_ref().unwrap().is_unique());
            if let Some(own) = own {
                assert!(own.is_unique(), "record {}", source.offset);
            }
        }

        // The same keys produced by name, as rdkafka does it: the topic
        // handles must partition by key the same way (the client's
        // partitioner, not librdkafka's default).
        let by_name: BaseProducer = config(&bootstrap).create().unwrap();
        for source in &sources {
            let key = source.key.as_deref().unwrap();
            by_name
                .send(
                    BaseRecord::<[u8], [u8]>::to("by-name")
                        .key(key)
                        .payload(b""),
                )
                .unwrap();
        }
        by_name.flush(Duration::from_secs(20)).unwrap();
        let expected: HashMap<Vec<u8>, i32> = read_all(&bootstrap, "by-name", sources.len())
            .into_iter()
            .map(|(partition, key, ..)| (key, partition))
            .collect();

        let mut read = read_all(&bootstrap, "out", sources.len());
        read.sort_by_key(|(_, _, _, _, ts)| *ts);
        for ((source, own), (partition, key, value, headers, ts)) in
            sources.iter().zip(&own).zip(read)
        {
            assert_eq!(key, source.key.as_deref().unwrap());
            let want_value = own.as_deref().or(source.value.as_deref()).unwrap();
            assert_eq!(value, want_value, "record {}", source.offset);
            let want: Vec<(String, Vec<u8>)> = source
                .headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.to_vec()))
                .collect();
            assert_eq!(headers, want);
            assert_eq!(ts, source.timestamp_ms);
            let want_partition = if source.offset == 7 {
                5
            } else {
                expected[&key]
            };
            assert_eq!(partition, want_partition, "record {}", source.offset);
        }
    }

    #[test]
    fn outputs_that_keep_their_records_headers_send_them_as_read_null_values_too() {
        use rdkafka::message::{Header as Wire, OwnedHeaders};

        use rdkafka::consumer::DefaultConsumerContext;

        use crate::kafka::{FetchQueue, HeaderNames};
        use crate::record::OutputHeaders;

        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("in", 1, 1).unwrap();
        cluster.create_topic("out", PARTITIONS, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let plain: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let headers = OwnedHeaders::new()
            .insert(Wire {
                key: "tenant-id",
                value: Some("acme"),
            })
            .insert(Wire {
                key: "null",
                value: None::<&[u8]>,
            })
            .insert(Wire {
                key: "empty",
                value: Some(""),
            });
        plain
            .send(
                BaseRecord::to("in")
                    .partition(0)
                    .key("k")
                    .payload("v")
                    .headers(headers),
            )
            .unwrap();
        plain.flush(Duration::from_secs(20)).unwrap();

        // Read as the router reads it.
        let (_consumer, queue) =
            FetchQueue::<DefaultConsumerContext>::reading(&bootstrap, "router", "in", 0);
        let mut fetched = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while fetched.is_empty() {
            assert!(Instant::now() < deadline, "the record was not fetched");
            queue.take(Duration::from_millis(100), 1, &mut fetched);
        }
        let record = Arc::new(fetched[0].record("in".into(), &mut HeaderNames::default()));
        drop(fetched);

        // Two outputs keep the headers; one adds one of its own.
        let to = |partition, headers| Routed {
            topic: "out".into(),
            output: Output {
                partition: Some(partition),
                headers,
                ..Output::forward(record.clone())
            },
        };
        let added = Header {
            key: "added".into(),
            value: Bytes::from_static(b"x"),
        };
        let outputs = smallvec::smallvec![
            to(0, OutputHeaders::Original),
            to(1, OutputHeaders::Append(vec![added])),
            to(2, OutputHeaders::Original),
        ];
        let producer = Arc::new(Producer::new(&config(&bootstrap)).unwrap());
        let mut sender = Sender::new(producer);
        let offsets = Arc::new(PartitionOffsets::new("in", 0));
        let delivery = Delivery::new(&offsets, record.offset, outputs, None);
        for index in 0..3 {
            sender.send(&delivery, index, &|| false).unwrap();
        }
        drop(delivery);
        assert!(
            record.wire_headers.take().is_none(),
            "the last output that keeps them took librdkafka's list"
        );
        wait_for("the delivery reports", || offsets.stored() == Some(1));

        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "read")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for p in 0..3 {
            assignment
                .add_partition_offset("out", p, Offset::Beginning)
                .unwrap();
        }
        reader.assign(&assignment).unwrap();
        let mut read = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while read.len() < 3 {
            assert!(Instant::now() < deadline, "read {} of 3", read.len());
            let Some(message) = reader.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.unwrap();
            let headers: Vec<(String, Option<Vec<u8>>)> =
                message.headers().map_or_else(Vec::new, |h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                });
            read.insert(message.partition(), headers);
        }
        let header = |key: &str, value: Option<&[u8]>| (key.to_owned(), value.map(<[u8]>::to_vec));
        let as_read = vec![
            header("tenant-id", Some(b"acme")),
            header("null", None),
            header("empty", Some(b"")),
        ];
        assert_eq!(read[&0], as_read, "a copy of the list");
        assert_eq!(read[&2], as_read, "the list itself");
        // Built from the router's headers, which have bytes: null is empty.
        assert_eq!(
            read[&1],
            vec![
                header("tenant-id", Some(b"acme")),
                header("null", Some(b"")),
                header("empty", Some(b"")),
                header("added", Some(b"x")),
            ]
        );
    }

    #[test]
    fn a_dead_letter_record_settles_the_refused_output_it_stands_for() {
        let offsets = Arc::new(PartitionOffsets::new("in", 0));
        let delivery = Delivery::new(&offsets, 7, out(Output::forward(source(7))), None);
        let dead = Routed {
            topic: "dlq".into(),
            output: Output::forward(source(7)),
        };
        let stand_in = Delivery::standing_for(delivery.clone(), dead);
        assert_eq!(stand_in.offset(), 7);
        assert!(stand_in.is_stand_in());
        // The worker that sent it may still hold it when its report comes.
        let held = stand_in.clone();
        assert_eq!(offsets.stored(), None);
        stand_in.settle();
        assert_eq!(offsets.stored(), Some(8), "the refused record finished");
        drop(held);
        drop(delivery);
        assert_eq!(offsets.in_flight(), 0);
    }

    #[test]
    fn an_output_librdkafka_refuses_gives_its_token_back() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("out", PARTITIONS, 1).unwrap();
        let producer = Arc::new(Producer::new(&config(&cluster.bootstrap_servers())).unwrap());
        let mut sender = Sender::new(producer.clone());
        let offsets = Arc::new(PartitionOffsets::new("in", 0));
        // A first output teaches the client the topic's partitions.
        let first = Delivery::new(&offsets, 0, out(Output::forward(source(0))), None);
        sender.send(&first, 0, &|| false).unwrap();
        wait_for("the first report", || offsets.stored() == Some(1));

        let refused = source(1);
        let mut output = Output::forward(refused.clone());
        output.partition = Some(PARTITIONS + 10);
        let delivery = Delivery::new(&offsets, 1, out(output), None);
        let err = sender.send(&delivery, 0, &|| false).unwrap_err();
        assert_eq!(
            err,
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition)
        );
        // librdkafka's reference came back and was dropped: only ours
        // holds the output.
        assert_eq!(Arc::strong_count(&delivery), 1);
        drop(delivery);
        assert_eq!(Arc::strong_count(&refused), 1);
        assert!(refused.value.as_ref().unwrap().is_unique());
    }

    #[test]
    fn a_full_queue_waits_until_told_to_give_up_and_gives_the_token_back() {
        // Nothing listens there: outputs stay queued (loopback, a port
        // nothing binds).
        let mut config = config("127.0.0.1:1");
        config.set("queue.buffering.max.messages", "1");
        let producer = Arc::new(Producer::new(&config).unwrap());
        let offsets = Arc::new(PartitionOffsets::new("in", 0));
        let (first, waiting) = (source(0), source(1));
        // On a thread of its own, so that a send that never gives up fails
        // the test instead of hanging it.
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn({
            let (offsets, first, waiting) = (offsets.clone(), first.clone(), waiting.clone());
            move || {
                let mut sender = Sender::new(producer);
                let delivery = |source: Arc<SourceRecord>| {
                    let offset = source.offset;
                    let mut output = Output::forward(source);
                    output.partition = Some(0);
                    Delivery::new(&offsets, offset, out(output), None)
                };
                sender.send(&delivery(first), 0, &|| false).unwrap();
                // The queue holds one output: the next waits, asking
                // whether to give up between its tries, until told to.
                let asked = std::cell::Cell::new(0);
                let sent = sender.send(&delivery(waiting), 0, &|| {
                    asked.set(asked.get() + 1);
                    asked.get() == 3
                });
                done.send((sent, asked.get())).unwrap();
            }
        });
        let (sent, asked) = result
            .recv_timeout(Duration::from_secs(60))
            .expect("the send gave up");
        assert_eq!(
            sent,
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
        );
        assert_eq!(asked, 3, "asked once per try");
        // The thread's output is gone with it; the token came back.
        wait_for("the sender's thread to end", || {
            Arc::strong_count(&waiting) == 1
        });
        assert_eq!(offsets.stored(), None);
    }
}
