//! What the end-to-end tests share: the test broker (nisshi, a Kafka-API
//! broker on loopback), topics with random names, and small Kafka clients
//! to feed inputs and read outputs.
//!
//! The broker is the one `scripts/test` started (its address is in
//! `SWITCHYARD_TEST_BROKER`); without it, the first test starts one for the
//! whole test binary, which stops when the binary exits.

#![allow(
    clippy::panic,
    reason = "test support: a missing broker fails the test loudly"
)]

pub mod registry;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header as KafkaHeader, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The broker's `host:port`.
pub fn broker() -> &'static str {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER.get_or_init(|| match std::env::var("SWITCHYARD_TEST_BROKER") {
        Ok(addr) if !addr.is_empty() => addr,
        _ => start_broker().unwrap_or_else(|e| panic!("cannot start the test broker: {e:#}")),
    })
}

/// Keeps the broker's supervisor alive; when the test binary exits its
/// stdin closes and the supervisor stops the broker.
static SUPERVISOR: Mutex<Option<(Child, ChildStdin)>> = Mutex::new(None);

fn nisshi() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("SWITCHYARD_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/switchyard")))
        .context("HOME is not set")?;
    let bin = dir.join("nisshi-0.8.1/bin/nisshi");
    if !bin.is_file() {
        bail!(
            "{} not found: run scripts/setup (it builds the test broker)",
            bin.display()
        );
    }
    Ok(bin)
}

fn start_broker() -> anyhow::Result<String> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("switchyard-broker-{}", std::process::id()));
    let (child, stdin) = spawn_broker(port, "memory://nisshi/", &dir)?;
    *SUPERVISOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((child, stdin));
    let addr = format!("127.0.0.1:{port}");
    wait_for_broker(&addr, &dir)?;
    Ok(addr)
}

/// Starts nisshi on `port` with `storage`, logging into `dir`, under a
/// shell that kills it when its stdin closes (so it cannot outlive the
/// test process).
fn spawn_broker(
    port: u16,
    storage: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(Child, ChildStdin)> {
    let bin = nisshi()?;
    std::fs::create_dir_all(dir)?;
    let url = format!("tcp://127.0.0.1:{port}");
    let script = format!(
        "'{}' broker --listener-url {url} --advertised-listener-url {url} --storage-engine {storage} >>broker.log 2>&1 & b=$!; cat >/dev/null; kill $b; wait $b",
        bin.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take().context("no stdin")?;
    Ok((child, stdin))
}

fn wait_for_broker(addr: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(30), || TcpStream::connect(addr).is_ok()).with_context(|| {
        format!(
            "broker did not listen on {addr}; see {}",
            dir.join("broker.log").display()
        )
    })
}

/// A broker of a test's own, for tests that stop it: the shared one must
/// stay up for the others. Stopped when dropped.
#[derive(Debug)]
pub struct OwnBroker {
    addr: String,
    port: u16,
    storage: String,
    dir: PathBuf,
    running: Option<(Child, ChildStdin)>,
}

impl OwnBroker {
    /// Starts a broker keeping its data in memory.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with("memory://nisshi/")
    }

    /// Starts a broker keeping its data in a SQLite file of its own, so
    /// that it survives the broker's restart.
    pub fn start_durable() -> anyhow::Result<Self> {
        Self::start_with("sqlite://broker.db")
    }

    fn start_with(storage: &str) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!(
            "switchyard-own-broker-{}-{port}",
            std::process::id()
        ));
        let mut broker = Self {
            addr: format!("127.0.0.1:{port}"),
            port,
            storage: storage.to_owned(),
            dir,
            running: None,
        };
        broker.resume()?;
        Ok(broker)
    }

    /// Its `host:port`.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops it and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.running.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if self.running.is_none() {
            self.running = Some(spawn_broker(self.port, &self.storage, &self.dir)?);
            wait_for_broker(&self.addr, &self.dir)?;
        }
        Ok(())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops a broker this process started (for tests that need it gone).
pub fn stop_own_broker() {
    if let Some((mut child, mut stdin)) = SUPERVISOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        let _ = stdin.flush();
        drop(stdin);
        let _ = child.wait();
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A router configuration for the test broker: consumer group `group`,
/// settings the test broker needs, and `routes` (TOML `[[routes]]` tables,
/// maybe an `[http]` table; without one the HTTP endpoint listens on a free
/// loopback port).
pub fn router_config(
    group: &str,
    routes: &str,
) -> anyhow::Result<switchyard::config::RouterConfig> {
    let http = if routes.contains("[http]") {
        ""
    } else {
        "[http]\nlisten = \"127.0.0.1:0\"\n"
    };
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "{}"
group_id = "{group}"
[kafka.consumer]
# The test broker holds a fetch for its whole wait time.
"fetch.wait.max.ms" = 10
"auto.commit.interval.ms" = 100

{routes}
{http}"#,
        broker()
    );
    Ok(switchyard::config::RouterConfig::parse(
        std::path::Path::new("test.toml"),
        &text,
    )?)
}

/// A topic name no other test uses.
#[must_use]
pub fn random_topic(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates topics (name, partitions) and waits until the broker reports
/// them.
pub fn create_topics(topics: &[(&str, i32)]) -> anyhow::Result<()> {
    create_topics_on(broker(), topics)
}

/// [`create_topics`] on the broker at `bootstrap`.
pub fn create_topics_on(bootstrap: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    create_topics_with(bootstrap, topics, &[])
}

/// Creates topics (name, partitions) with topic `configs` (such as
/// `max.message.bytes`) on the test broker, and waits until it reports them.
pub fn create_topics_configured(
    topics: &[(&str, i32)],
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    create_topics_with(broker(), topics, configs)
}

fn create_topics_with(
    bootstrap: &str,
    topics: &[(&str, i32)],
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            configs.iter().fold(
                NewTopic::new(name, *partitions, TopicReplication::Fixed(1)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(admin.create_topics(&new, &AdminOptions::new()))?;
    for result in results {
        result.map_err(|(topic, e)| anyhow::anyhow!("cannot create topic '{topic}': {e}"))?;
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    wait_until(Duration::from_secs(15), || {
        topics.iter().all(|(name, partitions)| {
            consumer
                .fetch_metadata(Some(name), Duration::from_secs(2))
                .ok()
                .and_then(|m| {
                    m.topics().first().map(|t| {
                        t.error().is_none() && t.partitions().len() == *partitions as usize
                    })
                })
                .unwrap_or(false)
        })
    })
}

/// A record as the tests write and read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestRecord {
    /// Partition (when read; when written, `None` lets the producer choose).
    pub partition: Option<i32>,
    /// Offset (when read).
    pub offset: Option<i64>,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl TestRecord {
    /// A record with a key and a value.
    #[must_use]
    pub fn new(key: &str, value: &str) -> Self {
        Self {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            ..Self::default()
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, key: &str, value: &str) -> Self {
        self.headers
            .push((key.to_owned(), value.as_bytes().to_vec()));
        self
    }

    /// Sets the partition to write to.
    #[must_use]
    pub fn on_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The value as text.
    #[must_use]
    pub fn value_str(&self) -> &str {
        std::str::from_utf8(self.value.as_deref().unwrap_or_default()).unwrap_or("<binary>")
    }

    /// The first header named `key`, as text.
    #[must_use]
    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Checks a dead-letter record of the misbehaving fixtures: the consumed
/// record kept (its value, and its `case` header equal to it), the failure
/// `kind`, `error` among the words of its reason, and the `attempts` made.
/// `what` names the case in failure messages.
pub fn assert_dead_letter(
    record: &TestRecord,
    value: &str,
    kind: &str,
    error: &str,
    attempts: u32,
    what: &str,
) {
    let header = |key: &str| {
        record
            .header_str(key)
            .unwrap_or_else(|| panic!("{what}: no header '{key}' on {record:?}"))
            .to_owned()
    };
    assert_eq!(record.value_str(), value, "{what}: value kept");
    assert_eq!(header("case"), value, "{what}: headers kept");
    assert_eq!(header("dlq-error-kind"), kind, "{what}");
    let reason = header("dlq-error");
    assert!(reason.contains(error), "{what}: dlq-error is '{reason}'");
    assert_eq!(header("dlq-attempts"), attempts.to_string(), "{what}");
}

/// Writes `records` to `topic` and waits until all are acknowledged.
pub fn produce(topic: &str, records: &[TestRecord]) -> anyhow::Result<()> {
    produce_on(broker(), topic, records)
}

/// [`produce`] to the broker at `bootstrap`.
pub fn produce_on(bootstrap: &str, topic: &str, records: &[TestRecord]) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        // Records near the broker's own limit (1 MiB), past the client's
        // default.
        .set("message.max.bytes", "1048000")
        .create()?;
    for r in records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(KafkaHeader {
                key: k,
                value: Some(v),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
        if let Some(key) = &r.key {
            record = record.key(key);
        }
        if let Some(value) = &r.value {
            record = record.payload(value);
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Reads `topic` from the beginning until `count` records arrived (fails
/// after `timeout`), then checks for 300 ms that no more arrive.
pub fn consume(topic: &str, count: usize, timeout: Duration) -> anyhow::Result<Vec<TestRecord>> {
    consume_on(broker(), topic, count, timeout)
}

/// The end offset (high watermark) of every partition of `topic`, in
/// partition order, on the broker at `bootstrap`.
pub fn end_offsets_on(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    (0..partitions)
        .map(|p| {
            let (_, high) = consumer.fetch_watermarks(topic, p as i32, Duration::from_secs(5))?;
            Ok(high)
        })
        .collect()
}

/// [`consume`] from the broker at `bootstrap`.
pub fn consume_on(
    bootstrap: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<TestRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", random_topic("reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut records = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut quiet_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if records.len() >= count {
            let until = *quiet_until.get_or_insert(now + Duration::from_millis(300));
            if now > until {
                return Ok(records);
            }
        } else if now > deadline {
            bail!(
                "read {} of {count} records from '{topic}' within {timeout:?}",
                records.len()
            );
        }
        let Some(message) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let message = message?;
        records.push(TestRecord {
            partition: Some(message.partition()),
            offset: Some(message.offset()),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
}

/// Committed offsets of `group` on `topic`, by partition.
pub fn committed(group: &str, topic: &str, partitions: i32) -> anyhow::Result<HashMap<i32, i64>> {
    committed_on(broker(), group, topic, partitions)
}

/// [`committed`] on the broker at `bootstrap`.
pub fn committed_on(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<HashMap<i32, i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// The Python of the test tools (kafka-python, Prometheus's client),
/// installed by `scripts/setup`.
#[must_use]
pub fn test_python() -> PathBuf {
    if let Some(python) = std::env::var_os("SWITCHYARD_TEST_PYTHON") {
        return python.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    let python = PathBuf::from(home).join(".cache/switchyard/venv-kafka-python-2.3.3/bin/python");
    if !python.is_file() {
        panic!("{} not found: run scripts/setup", python.display());
    }
    python
}

/// The Python of the schema tests' independent encoders (confluent-kafka's
/// schema-registry serializers, fastavro), installed by `scripts/setup`.
#[must_use]
pub fn schema_python() -> PathBuf {
    if let Some(python) = std::env::var_os("SWITCHYARD_SCHEMA_PYTHON") {
        return python.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    let python = PathBuf::from(home).join(".cache/switchyard/venv-schemas-2.16.1/bin/python");
    if !python.is_file() {
        panic!("{} not found: run scripts/setup", python.display());
    }
    python
}

/// The Python with kubernetes-validate and PyYAML (the Kubernetes
/// manifests' checks), installed by `scripts/setup`.
#[must_use]
pub fn kubernetes_python() -> PathBuf {
    if let Some(python) = std::env::var_os("SWITCHYARD_KUBERNETES_PYTHON") {
        return python.into();
    }
    let tools = std::env::var_os("SWITCHYARD_TOOLS_DIR").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/switchyard"),
        PathBuf::from,
    );
    let python = tools.join("venv-kubernetes-validate-1.37.0/bin/python");
    if !python.is_file() {
        panic!("{} not found: run scripts/setup", python.display());
    }
    python
}

/// A record written by an encoder that is not Switchyard's
/// (`tests/schemas/independent.py`: confluent-kafka's schema-registry
/// serializers and fastavro).
#[derive(Debug, Clone)]
pub struct IndependentRecord {
    /// The case's name (`avro 0`, `protobuf nested 0`, `json 1`...).
    pub case: String,
    /// What it is: `orders` (Avro), `shipments` and `parcels` (Protobuf),
    /// `events` (JSON Schema).
    pub kind: String,
    /// The framed bytes.
    pub bytes: Vec<u8>,
    /// The value it holds, as JSON (Avro bytes as code points up to
    /// U+00FF).
    pub value: serde_json::Value,
}

/// The JSON lines a script printed, if it succeeded (else its stderr).
fn json_lines(output: std::process::Output) -> anyhow::Result<Vec<serde_json::Value>> {
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr));
    }
    String::from_utf8(output.stdout)?
        .lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

const INDEPENDENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/independent.py");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The independent encoders' records; their schemas are written to
/// `dir/schemas` as a schema directory.
///
/// # Errors
/// When the encoders fail.
pub fn independent_records(dir: &std::path::Path) -> anyhow::Result<Vec<IndependentRecord>> {
    let output = Command::new(schema_python())
        .arg(INDEPENDENT)
        .arg("encode")
        .arg(dir)
        .output()?;
    json_lines(output)?
        .into_iter()
        .map(|line| {
            let text = |key: &str| -> anyhow::Result<String> {
                Ok(line[key].as_str().context("a string")?.to_owned())
            };
            let hex = text("bytes")?;
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                .collect::<Result<_, _>>()?;
            Ok(IndependentRecord {
                case: text("case")?,
                kind: text("topic")?,
                bytes,
                value: line["value"].clone(),
            })
        })
        .collect()
}

/// What the independent decoders make of `records` (case, kind, framed
/// bytes): each case with the value it decoded.
///
/// # Errors
/// When a decoder fails (bytes it cannot read).
pub fn decoded_independently(
    records: &[(String, String, Vec<u8>)],
) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let mut child = Command::new(schema_python())
        .arg(INDEPENDENT)
        .arg("decode")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = String::new();
    for (case, kind, bytes) in records {
        input.push_str(
            &serde_json::json!({"case": case, "topic": kind, "bytes": hex(bytes)}).to_string(),
        );
        input.push('\n');
    }
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    json_lines(child.wait_with_output()?)?
        .into_iter()
        .map(|line| {
            Ok((
                line["case"].as_str().context("a case")?.to_owned(),
                line["value"].clone(),
            ))
        })
        .collect()
}

/// One sample of a metrics exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`..._total`, `..._bucket`, ...).
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed metrics exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Family name → type.
    pub families: HashMap<String, String>,
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample `name` whose labels include `labels`, if
    /// exactly one matches.
    #[must_use]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matching = self.samples.iter().filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        });
        let first = matching.next()?;
        matching.next().is_none().then_some(first.value)
    }
}

/// Parses OpenMetrics text with Prometheus's own parser (a malformed
/// exposition is an error).
pub fn parse_metrics(text: &str) -> anyhow::Result<Exposition> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/parse_metrics.py");
    let mut child = Command::new(test_python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the metrics do not parse: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut exposition = Exposition::default();
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if let Some(family) = v["family"].as_str() {
            exposition.families.insert(
                family.to_owned(),
                v["type"].as_str().unwrap_or_default().to_owned(),
            );
            continue;
        }
        exposition.samples.push(Sample {
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            labels: serde_json::from_value(v["labels"].clone())?,
            value: v["value"].as_f64().context("sample without a number")?,
        });
    }
    Ok(exposition)
}

/// `GET path` on `addr`: status code and body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(addr, "GET", path, None)
}

/// `GET path` on `addr` with `token` as a bearer token: status code and
/// body.
pub fn http_get_authorized(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
) -> anyhow::Result<(u16, String)> {
    http_request(addr, "GET", path, Some(token))
}

/// `POST path` on `addr`, with `token` as a bearer token if given: status
/// code and body.
pub fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    http_request(addr, "POST", path, token)
}

fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    use std::io::Read as _;
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let authorization =
        token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("short chunk")?;
    }
}

/// The `versioned` fixture with `tag` (9 bytes) patched into its data: a
/// distinct version of the same plugin, whose outputs carry the tag in a
/// `plugin-tag` header.
#[must_use]
pub fn versioned_plugin(tag: &str) -> Vec<u8> {
    assert_eq!(tag.len(), 9, "a tag is 9 bytes");
    let mut wasm = std::fs::read(switchyard_plugin_fixtures::versioned())
        .unwrap_or_else(|e| panic!("the versioned fixture: {e}"));
    let marker = b"switchyard-tag:v00000000";
    let at = wasm
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap_or_else(|| panic!("no tag marker in the versioned fixture"));
    wasm[at + 15..at + 24].copy_from_slice(tag.as_bytes());
    wasm
}

/// Writes `token` to `dir/control-token`, readable by its owner only (as a
/// router's `http.control_token_file` must be), and gives its path.
pub fn control_token_file(dir: &std::path::Path, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let file = dir.join("control-token");
    std::fs::write(&file, token).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    file
}
