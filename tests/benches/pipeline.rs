//! Records through a router, end to end, side by side: Switchyard (no
//! plugin, identity, tenant-partitioner, envelope-router, each plugin in
//! Rust, Python and TypeScript; and the field router on the envelopes as
//! Avro records, read by schema) against the routers teams write by hand (a
//! native Rust rdkafka loop, a Python confluent-kafka loop and a node
//! kafkajs loop, all with the tenant partitioner's logic) and against the
//! broker alone, all measured in the same run on the same
//! brokers: nisshi (the test broker) and librdkafka's mock cluster hosted by
//! a process of its own.
//!
//! Each row gets a fresh broker, fresh topics of 6 partitions and its
//! router as a process of its own (so its CPU time and peak RSS are its
//! own). The driver writes the records with at most a window of them not
//! yet seen on the target (the mock keeps only ~5 MiB per partition) and
//! reads the target back (with `--preload`, nisshi only, it writes them
//! all before the router starts: the catch-up case of a new group, or of a
//! router back after an outage):
//! - throughput: from the first output read to the last, every record
//!   checked present (duplicates counted);
//! - CPU: the router process's user + system time over the same span,
//!   and how it splits over its threads by role (librdkafka's own threads,
//!   Switchyard's consumer thread, its partition workers, the thread
//!   serving delivery reports, and the rest: the hand-written loops' main
//!   thread);
//! - records per plugin call: Switchyard's mean over the run, from its
//!   metrics (an interpreted plugin pays a fixed cost per call);
//! - latency: afterwards, records written at a steady rate, each stamped
//!   with its send time, measured when read back from the target;
//! - peak RSS: the router process's `VmHWM` at the end; threads: the most
//!   the router process had, sampled every 1,000 records;
//! - first output: from the router's start to the first output read back
//!   (with `--preload`: startup, joining the group, routing).
//!
//! `--source-partitions N` gives the source topic N partitions (6 by
//! default; the target keeps 6): the cost of scale, the same records
//! spread over more partitions of one instance. `SWITCHYARD_BENCH_CONSUMER`
//! and `SWITCHYARD_BENCH_PRODUCER` (`key=value,key=value`) add librdkafka
//! properties to Switchyard's `[kafka.consumer]` and `[kafka.producer]`
//! (what a setting changes, say a bound on what is fetched ahead).
//! Run: `scripts/bench` (installs and builds what this needs), or
//! `cargo bench -p switchyard-tests --bench pipeline -- [--records N]
//! [--sizes 100,1024] [--brokers nisshi,mock] [--rounds N] [--only NAME]
//! [--preload] [--source-partitions N]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{OwnBroker, create_topics_on, random_topic};

/// Partitions of the target topic, and of the source by default.
const PARTITIONS: i32 = 6;
/// Tenants the records are spread over (the `tenant-id` header).
const TENANTS: usize = 64;
/// Consumer properties every client gets: nisshi holds each fetch for the
/// whole wait, so the default 500 ms would measure the wait.
const CONSUMER_PROPERTIES: [(&str, &str); 1] = [("fetch.wait.max.ms", "10")];
/// Records written but not yet read back, at most: the mock broker drops
/// a partition's oldest records past ~5 MiB.
const WINDOW_BYTES: usize = 12 << 20;
const MAX_WINDOW: usize = 30_000;
/// A run fails if nothing new arrives for this long.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BrokerKind {
    Nisshi,
    Mock,
}

impl BrokerKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Nisshi => "nisshi 0.8.1, memory storage (the test broker)",
            Self::Mock => "librdkafka 2.12.1 mock cluster, in a process of its own",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RouterKind {
    /// No router: the driver reads back what it wrote.
    Ceiling,
    Passthrough,
    Identity,
    Tenant,
    /// The tenant partitioner with a shadow candidate beside it (the cost
    /// of shadowing on the live path).
    TenantShadowed,
    Envelope,
    /// The envelope as Avro (a schema registry's wire format), routed by
    /// its `type` read by schema.
    AvroField,
    PythonIdentity,
    PythonTenant,
    PythonEnvelope,
    TypescriptIdentity,
    TypescriptTenant,
    TypescriptEnvelope,
    Native,
    /// The native loop keeping Switchyard's at-least-once rule: a source
    /// offset is stored only once its output is acknowledged.
    NativeStored,
    Python,
    Kafkajs,
}

impl RouterKind {
    const ALL: [Self; 17] = [
        Self::Ceiling,
        Self::Passthrough,
        Self::Identity,
        Self::Tenant,
        Self::TenantShadowed,
        Self::Envelope,
        Self::AvroField,
        Self::PythonIdentity,
        Self::PythonTenant,
        Self::PythonEnvelope,
        Self::TypescriptIdentity,
        Self::TypescriptTenant,
        Self::TypescriptEnvelope,
        Self::Native,
        Self::NativeStored,
        Self::Python,
        Self::Kafkajs,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Ceiling => "broker ceiling (no router)",
            Self::Passthrough => "switchyard, no plugin",
            Self::Identity => "switchyard, identity",
            Self::Tenant => "switchyard, tenant-partitioner",
            Self::TenantShadowed => "switchyard, shadowed tenant-partitioner",
            Self::Envelope => "switchyard, envelope-router",
            Self::AvroField => "switchyard, field-router (Avro)",
            Self::PythonIdentity => "switchyard, python identity",
            Self::PythonTenant => "switchyard, python tenant-partitioner",
            Self::PythonEnvelope => "switchyard, python envelope-router",
            Self::TypescriptIdentity => "switchyard, ts identity",
            Self::TypescriptTenant => "switchyard, ts tenant-partitioner",
            Self::TypescriptEnvelope => "switchyard, ts envelope-router",
            Self::Native => "native rust loop (rdkafka)",
            Self::NativeStored => "native rust loop, store after delivery",
            Self::Python => "python loop (confluent-kafka)",
            Self::Kafkajs => "node loop (kafkajs)",
        }
    }

    /// The plugin a Switchyard row runs and its configuration; `None` for
    /// the other rows and the one without a plugin.
    fn plugin(self, target: &str) -> Option<(PathBuf, String)> {
        let envelope = format!("plugin_config = {{ \"order.created\" = \"{target}\" }}\n");
        Some(match self {
            Self::Identity => (fixtures::hello(), String::new()),
            Self::Tenant => (fixtures::tenant_partitioner(), String::new()),
            // A candidate that differs for one tenant, compared on every
            // record.
            Self::TenantShadowed => (
                fixtures::tenant_partitioner(),
                format!(
                    "[routes.rollout]\ncandidate = \"{}\"\nmode = \"shadow\"\n",
                    fixtures::tenant_moved().display()
                ),
            ),
            Self::Envelope => (fixtures::envelope_router(), envelope),
            // Reads `type` as the envelope router does; `only` names no
            // type, so every record goes to the default target as the
            // envelope router sends it to its one configured topic.
            Self::AvroField => (
                fixtures::field_router(),
                "value_format = \"schema-registry\"\n\
                 plugin_config = { field = \"type\", only = \"-\" }\n"
                    .to_owned(),
            ),
            Self::PythonIdentity => (fixtures::python("hello"), String::new()),
            Self::PythonTenant => (fixtures::python("tenant-partitioner"), String::new()),
            Self::PythonEnvelope => (fixtures::python("envelope-router"), envelope),
            Self::TypescriptIdentity => (fixtures::typescript("hello"), String::new()),
            Self::TypescriptTenant => (fixtures::typescript("tenant-partitioner"), String::new()),
            Self::TypescriptEnvelope => (fixtures::typescript("envelope-router"), envelope),
            _ => return None,
        })
    }
}

struct Options {
    records: usize,
    sizes: Vec<usize>,
    brokers: Vec<BrokerKind>,
    rounds: usize,
    only: Vec<String>,
    latency_records: usize,
    latency_rate: u32,
    /// Write every record before the router starts (the catch-up case: a
    /// new group, or a router back after an outage), instead of streaming
    /// them in while it runs.
    preload: bool,
    /// Partitions of the source topic.
    source_partitions: i32,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        records: 1_000_000,
        sizes: vec![100, 1024],
        brokers: vec![BrokerKind::Nisshi, BrokerKind::Mock],
        rounds: 1,
        only: Vec::new(),
        latency_records: 5_000,
        latency_rate: 2_000,
        preload: false,
        source_partitions: PARTITIONS,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--records" => options.records = value()?.parse()?,
            "--rounds" => options.rounds = value()?.parse()?,
            "--latency-records" => options.latency_records = value()?.parse()?,
            "--latency-rate" => options.latency_rate = value()?.parse()?,
            "--sizes" => {
                options.sizes = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--brokers" => {
                options.brokers = value()?
                    .split(',')
                    .map(|b| match b {
                        "nisshi" => Ok(BrokerKind::Nisshi),
                        "mock" => Ok(BrokerKind::Mock),
                        other => Err(anyhow::anyhow!("unknown broker '{other}'")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--only" => options.only.push(value()?),
            "--preload" => options.preload = true,
            "--source-partitions" => options.source_partitions = value()?.parse()?,
            other => bail!("unknown argument '{other}'"),
        }
    }
    anyhow::ensure!(
        options.records >= 2 && options.rounds >= 1,
        "nothing to measure"
    );
    anyhow::ensure!(
        !options.preload || !options.brokers.contains(&BrokerKind::Mock),
        "--preload needs --brokers nisshi: the mock cluster keeps only ~5 MiB a partition"
    );
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    let tools = Tools::find()?;
    let routers: Vec<RouterKind> = RouterKind::ALL
        .into_iter()
        .filter(|r| {
            options.only.is_empty() || options.only.iter().any(|o| r.name().contains(o.as_str()))
        })
        .collect();
    let mut results: HashMap<(BrokerKind, usize, RouterKind), Vec<Measurement>> = HashMap::new();
    for round in 1..=options.rounds {
        for &broker in &options.brokers {
            for &size in &options.sizes {
                for &router in &routers {
                    let m = run(&tools, broker, router, size, &options).with_context(|| {
                        format!("{} on {broker:?}, {size} B records", router.name())
                    })?;
                    eprintln!(
                        "round {round}: {broker:?} {size} B {:<38} {:>9.0} records/s",
                        router.name(),
                        m.rate
                    );
                    results.entry((broker, size, router)).or_default().push(m);
                }
            }
        }
    }
    report(&options, &routers, &results);
    Ok(())
}

/// Thread roles the router's CPU time is split over, by thread name.
const ROLES: [&str; 5] = [
    "librdkafka",
    "consumer",
    "workers",
    "deliveries",
    "main/other",
];

/// The role of a router thread named `name` (Linux keeps 15 bytes of it):
/// librdkafka names its threads `rdk:...`, Switchyard's consumer thread is
/// `switchyard-consumer`, its workers `switchyard-worker-N`, and rdkafka's
/// threaded producer serves delivery reports on `producer polling thread`.
fn role(name: &str) -> usize {
    if name.starts_with("rdk:") {
        0
    } else if name.starts_with("switchyard-cons") {
        1
    } else if name.starts_with("switchyard-work") {
        2
    } else if name.starts_with("producer pollin") {
        3
    } else {
        4
    }
}

/// The CPU split of one size's rows, per million records.
fn print_roles(
    size: usize,
    routers: &[RouterKind],
    summary: &dyn Fn(RouterKind) -> Option<Measurement>,
) {
    let rows: Vec<_> = routers
        .iter()
        .filter_map(|&r| Some((r, summary(r)?.cpu_by_role?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    print!("{:<6}   CPU s/1M by thread: {:<38}", size_name(size), "");
    for role in ROLES {
        print!(" {role:>10}");
    }
    println!();
    for (router, roles) in rows {
        print!("{:<6}   {:<58}", size_name(size), router.name());
        for cpu in roles {
            print!(" {cpu:>10.2}");
        }
        println!();
    }
}

/// The command name and user + system clock ticks of a `/proc/.../stat`
/// line (the name, in parentheses, may hold spaces).
fn stat_cpu(stat: &str) -> anyhow::Result<(&str, f64)> {
    let (head, rest) = stat.rsplit_once(')').context("odd /proc stat")?;
    let name = head.split_once('(').context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok((
        name,
        fields[11].parse::<f64>()? + fields[12].parse::<f64>()?,
    ))
}

/// What a row measured.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    /// Records per second through the router.
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Router CPU seconds per million records.
    cpu_per_million: Option<f64>,
    /// The same, by thread role ([`ROLES`]).
    cpu_by_role: Option<[f64; ROLES.len()]>,
    peak_rss_mib: Option<f64>,
    /// The most threads the router process had.
    threads: Option<f64>,
    /// Seconds from the router's start to the first output read back.
    first_output_s: Option<f64>,
    /// Switchyard's records per plugin call, on average.
    records_per_call: Option<f64>,
    duplicates: u64,
}

fn report(
    options: &Options,
    routers: &[RouterKind],
    results: &HashMap<(BrokerKind, usize, RouterKind), Vec<Measurement>>,
) {
    let median = |values: &mut Vec<f64>| -> Option<f64> {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    };
    let summary = |key| -> Option<Measurement> {
        let runs: &Vec<Measurement> = results.get(&key)?;
        let pick = |f: &dyn Fn(&Measurement) -> Option<f64>| {
            median(&mut runs.iter().filter_map(f).collect())
        };
        Some(Measurement {
            rate: pick(&|m| Some(m.rate))?,
            p50_ms: pick(&|m| Some(m.p50_ms))?,
            p99_ms: pick(&|m| Some(m.p99_ms))?,
            cpu_per_million: pick(&|m| m.cpu_per_million),
            cpu_by_role: runs.iter().all(|m| m.cpu_by_role.is_some()).then(|| {
                std::array::from_fn(|i| {
                    median(
                        &mut runs
                            .iter()
                            .filter_map(|m| Some(m.cpu_by_role?[i]))
                            .collect(),
                    )
                    .unwrap_or(0.0)
                })
            }),
            peak_rss_mib: pick(&|m| m.peak_rss_mib),
            threads: pick(&|m| m.threads),
            first_output_s: pick(&|m| m.first_output_s),
            records_per_call: pick(&|m| m.records_per_call),
            duplicates: runs.iter().map(|m| m.duplicates).sum(),
        })
    };
    println!(
        "\n{} records per row, {}, {} source and {PARTITIONS} target partitions, median of {} \
         round(s); latency: {} records at {}/s after the throughput run",
        options.records,
        if options.preload {
            "written before the router starts"
        } else {
            "streamed in while it runs"
        },
        options.source_partitions,
        options.rounds,
        options.latency_records,
        options.latency_rate
    );
    for &broker in &options.brokers {
        println!("\nbroker: {}", broker.describe());
        println!(
            "{:<6} {:<38} {:>10} {:>7} {:>7} {:>7} {:>9} {:>8} {:>8} {:>9} {:>9}",
            "value",
            "router",
            "records/s",
            "MB/s",
            "p50 ms",
            "p99 ms",
            "CPU s/1M",
            "RSS MiB",
            "threads",
            "1st out s",
            "rec/call"
        );
        for &size in &options.sizes {
            for &router in routers {
                let Some(m) = summary((broker, size, router)) else {
                    continue;
                };
                let opt = |v: Option<f64>, digits: usize| {
                    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
                };
                println!(
                    "{:<6} {:<38} {:>10.0} {:>7.1} {:>7.1} {:>7.1} {:>9} {:>8} {:>8} {:>9} {:>9}{}",
                    size_name(size),
                    router.name(),
                    m.rate,
                    m.rate * size as f64 / 1e6,
                    m.p50_ms,
                    m.p99_ms,
                    opt(m.cpu_per_million, 2),
                    opt(m.peak_rss_mib, 0),
                    opt(m.threads, 0),
                    opt(m.first_output_s, 2),
                    opt(m.records_per_call, 1),
                    if m.duplicates > 0 {
                        format!("  ({} duplicates)", m.duplicates)
                    } else {
                        String::new()
                    }
                );
            }
            print_roles(size, routers, &|r| summary((broker, size, r)));
            let rate = |r| summary((broker, size, r)).map(|m| m.rate);
            let cpu = |r| summary((broker, size, r)).and_then(|m| m.cpu_per_million);
            let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
            use RouterKind::{
                AvroField, Envelope, Identity, Kafkajs, Native, NativeStored, Passthrough, Python,
                PythonTenant, Tenant, TypescriptTenant,
            };
            let targets = [
                (
                    "tenant-partitioner / native loop, records/s",
                    ratio(rate(Tenant), rate(Native)),
                    ">=",
                    1.0,
                ),
                (
                    "tenant-partitioner / native loop, CPU per record",
                    ratio(cpu(Tenant), cpu(Native)),
                    "<=",
                    1.1,
                ),
                (
                    "tenant-partitioner / native loop storing after delivery, CPU per record",
                    ratio(cpu(Tenant), cpu(NativeStored)),
                    "<=",
                    1.0,
                ),
                (
                    "identity / no plugin, records/s",
                    ratio(rate(Identity), rate(Passthrough)),
                    ">=",
                    0.95,
                ),
                (
                    "tenant-partitioner / python loop, records/s",
                    ratio(rate(Tenant), rate(Python)),
                    ">=",
                    1.5,
                ),
                (
                    "python tenant-partitioner / python loop, records/s",
                    ratio(rate(PythonTenant), rate(Python)),
                    ">=",
                    1.0,
                ),
                (
                    "ts tenant-partitioner / kafkajs loop, records/s",
                    ratio(rate(TypescriptTenant), rate(Kafkajs)),
                    ">=",
                    1.0,
                ),
                (
                    "field-router (Avro) / envelope-router (JSON), records/s",
                    ratio(rate(AvroField), rate(Envelope)),
                    ">=",
                    0.9,
                ),
            ];
            for (name, value, op, target) in targets {
                let Some(value) = value else { continue };
                let met = if op == ">=" {
                    value >= target
                } else {
                    value <= target
                };
                println!(
                    "{:<6}   {name:<50} {value:>5.2}x  target {op} {target:.2}x: {}",
                    size_name(size),
                    if met { "met" } else { "MISSED" }
                );
            }
        }
    }
}

/// Where the programs this benchmark runs are.
struct Tools {
    switchyard: PathBuf,
    native_router: PathBuf,
    mock_broker: PathBuf,
    python: PathBuf,
    python_router: PathBuf,
    node_path: PathBuf,
    kafkajs_router: PathBuf,
    clock_ticks: f64,
}

impl Tools {
    fn find() -> anyhow::Result<Self> {
        let switchyard = match std::env::var_os("SWITCHYARD_BIN") {
            Some(path) => PathBuf::from(path),
            // target/release/deps/pipeline-HASH -> target/release/switchyard
            None => std::env::current_exe()?
                .parent()
                .and_then(Path::parent)
                .context("no target directory")?
                .join("switchyard"),
        };
        let python = match std::env::var_os("SWITCHYARD_BENCH_PYTHON") {
            Some(path) => PathBuf::from(path),
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".cache/switchyard/venv-confluent-kafka-2.12.1/bin/python"),
        };
        let node_path = match std::env::var_os("SWITCHYARD_BENCH_NODE_PATH") {
            Some(path) => PathBuf::from(path),
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".cache/switchyard/node-kafkajs-2.2.4/node_modules"),
        };
        let kafkajs = node_path.join("kafkajs-lz4/package.json");
        for (path, what) in [
            (&switchyard, "the release binary"),
            (&python, "confluent-kafka's Python"),
            (&kafkajs, "kafkajs and kafkajs-lz4"),
        ] {
            anyhow::ensure!(
                path.is_file(),
                "{what} is not at {}: run scripts/bench, which builds and installs it",
                path.display()
            );
        }
        let ticks = Command::new("getconf").arg("CLK_TCK").output()?;
        Ok(Self {
            switchyard,
            native_router: PathBuf::from(env!("CARGO_BIN_EXE_native-router")),
            mock_broker: PathBuf::from(env!("CARGO_BIN_EXE_mock-broker")),
            python,
            python_router: Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_router.py"),
            node_path,
            kafkajs_router: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("benches/kafkajs_router.cjs"),
            clock_ticks: String::from_utf8(ticks.stdout)?.trim().parse()?,
        })
    }
}

/// A broker of one row's own.
enum Broker {
    Nisshi(OwnBroker),
    Mock {
        addr: String,
        child: Child,
        stdin: Option<ChildStdin>,
    },
}

impl Broker {
    /// A broker with `topics`, (name, partitions) each.
    fn start(tools: &Tools, kind: BrokerKind, topics: &[(&str, i32)]) -> anyhow::Result<Self> {
        match kind {
            BrokerKind::Nisshi => {
                let broker = OwnBroker::start()?;
                create_topics_on(broker.addr(), topics)?;
                Ok(Self::Nisshi(broker))
            }
            BrokerKind::Mock => {
                let mut child = Command::new(&tools.mock_broker)
                    .args(topics.iter().map(|(t, p)| format!("{t}:{p}")))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("cannot start the mock broker")?;
                let stdin = child.stdin.take();
                let mut line = String::new();
                std::io::BufRead::read_line(
                    &mut std::io::BufReader::new(child.stdout.take().context("no stdout")?),
                    &mut line,
                )?;
                anyhow::ensure!(
                    !line.trim().is_empty(),
                    "the mock broker printed no address"
                );
                Ok(Self::Mock {
                    addr: line.trim().to_owned(),
                    child,
                    stdin,
                })
            }
        }
    }

    fn addr(&self) -> &str {
        match self {
            Self::Nisshi(broker) => broker.addr(),
            Self::Mock { addr, .. } => addr,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Self::Mock { child, stdin, .. } = self {
            drop(stdin.take());
            let _ = child.wait();
        }
    }
}

/// A router under test, as a process; killed when dropped.
struct RouterProcess {
    child: Child,
    log: PathBuf,
    /// Switchyard's HTTP endpoint.
    http: Option<String>,
}

impl RouterProcess {
    fn spawn(
        tools: &Tools,
        kind: RouterKind,
        bootstrap: &str,
        source: &str,
        target: &str,
        dir: &Path,
    ) -> anyhow::Result<Option<Self>> {
        let group = random_topic("bench-group");
        let properties: Vec<String> = CONSUMER_PROPERTIES
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut http = None;
        let mut command = match kind {
            RouterKind::Ceiling => return Ok(None),
            RouterKind::Native | RouterKind::NativeStored => {
                let mut c = Command::new(&tools.native_router);
                if kind == RouterKind::NativeStored {
                    c.arg("--store-after-delivery");
                }
                c.args([bootstrap, &group, source, target])
                    .args(&properties);
                c
            }
            RouterKind::Python => {
                let mut c = Command::new(&tools.python);
                c.arg(&tools.python_router)
                    .args([bootstrap, &group, source, target])
                    .args(&properties);
                c
            }
            RouterKind::Kafkajs => {
                let mut c = Command::new("node");
                c.arg(&tools.kafkajs_router)
                    .args([bootstrap, &group, source, target])
                    .env("NODE_PATH", &tools.node_path);
                c
            }
            _ => {
                let plugin = kind
                    .plugin(target)
                    .map_or_else(String::new, |(path, config)| {
                        format!("plugin = \"{}\"\n{config}", path.display())
                    });
                let extra = |var: &str| -> String {
                    std::env::var(var)
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| format!("\"{}\" = \"{}\"\n", k.trim(), v.trim()))
                        .collect()
                };
                let consumer: String = CONSUMER_PROPERTIES
                    .iter()
                    .map(|(k, v)| format!("\"{k}\" = \"{v}\"\n"))
                    .chain(std::iter::once(extra("SWITCHYARD_BENCH_CONSUMER")))
                    .collect();
                let producer = extra("SWITCHYARD_BENCH_PRODUCER");
                // A free port now; taken again by the router a moment later.
                let listen = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .to_string();
                let schemas = if kind == RouterKind::AvroField {
                    let schemas = dir.join("schemas");
                    std::fs::create_dir_all(&schemas)?;
                    std::fs::write(schemas.join(format!("{ENVELOPE_ID}.avsc")), ENVELOPE_AVSC)?;
                    format!("[schemas]\ndir = \"{}\"\n\n", schemas.display())
                } else {
                    String::new()
                };
                let config = dir.join("router.toml");
                std::fs::write(
                    &config,
                    format!(
                        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n\
                         [kafka.consumer]\n{consumer}\n[kafka.producer]\n{producer}\n[http]\nlisten = \"{listen}\"\n\n{schemas}\
                         [[routes]]\nname = \"bench\"\nsource_topics = [\"{source}\"]\n\
                         default_target = \"{target}\"\non_failure = \"skip\"\n{plugin}"
                    ),
                )?;
                http = Some(listen);
                let mut c = Command::new(&tools.switchyard);
                c.arg("run")
                    .arg("--config")
                    .arg(&config)
                    .env("RUST_LOG", "warn");
                c
            }
        };
        let log = dir.join("router.log");
        let out = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", kind.name()))?;
        Ok(Some(Self { child, log, http }))
    }

    /// A page of Switchyard's HTTP endpoint (`None` for the other routers).
    fn page(&self, path: &str) -> anyhow::Result<Option<String>> {
        use std::io::{Read as _, Write as _};
        let Some(http) = &self.http else {
            return Ok(None);
        };
        let mut stream = std::net::TcpStream::connect(http)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
        let mut page = String::new();
        stream.read_to_string(&mut page)?;
        Ok(Some(page))
    }

    /// The last lines of the router's log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// What the router can tell of a stall: the end of its log, and
    /// Switchyard's partitions and lag.
    fn diagnosis(&self) -> String {
        let mut text = format!("last lines of the router's log:\n{}", self.log_tail());
        if let Ok(Some(routes)) = self.page("/routes") {
            text.push_str(&format!("\nGET /routes:\n{routes}"));
        }
        if let Ok(Some(metrics)) = self.page("/metrics") {
            let lines: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("switchyard_") && !l.contains("_bucket{"))
                .collect();
            text.push_str(&format!(
                "\nGET /metrics (no histogram buckets):\n{}",
                lines.join("\n")
            ));
        }
        text
    }

    /// Switchyard's records per plugin call so far, on average, from its
    /// metrics; `None` for the other routers and without a plugin call.
    fn records_per_call(&self) -> anyhow::Result<Option<f64>> {
        let Some(page) = self.page("/metrics")? else {
            return Ok(None);
        };
        let value = |name: &str| {
            page.lines()
                .find_map(|l| l.strip_prefix(name)?.split_whitespace().last())
                .map(str::parse::<f64>)
                .transpose()
        };
        let (sum, count) = (
            value("switchyard_plugin_call_records_sum{")?,
            value("switchyard_plugin_call_records_count{")?,
        );
        // A shadow candidate compares what it was handed, unless its queue
        // was full: say how much of the load it carried.
        let shadow = |result: &str| {
            page.lines()
                .find(|l| {
                    l.starts_with("switchyard_shadow_records_total{")
                        && l.contains(&format!("result=\"{result}\""))
                })
                .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        };
        if let (Some(agreed), Some(differed), Some(skipped)) =
            (shadow("agreed"), shadow("differed"), shadow("skipped"))
        {
            eprintln!(
                "  shadow candidate: compared {} records ({differed} differed), skipped {skipped}",
                agreed + differed
            );
        }
        Ok(match (sum, count) {
            (Some(sum), Some(count)) if count > 0.0 => Some(sum / count),
            _ => None,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds of the process so far.
    fn cpu_seconds(&self, tools: &Tools) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        Ok(stat_cpu(&stat)?.1 / tools.clock_ticks)
    }

    /// User + system CPU seconds of the process's live threads so far, by
    /// role ([`role`]).
    fn cpu_by_role(&self, tools: &Tools) -> anyhow::Result<[f64; ROLES.len()]> {
        let mut roles = [0.0; ROLES.len()];
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            // A thread may end between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
                continue;
            };
            let (name, ticks) = stat_cpu(&stat)?;
            roles[role(name)] += ticks / tools.clock_ticks;
        }
        Ok(roles)
    }

    /// How many threads the process has now.
    fn threads(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        Ok(status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .context("no Threads")?
            .trim()
            .parse()?)
    }

    fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .context("no VmHWM")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib / 1024.0)
    }

    /// Fails with the end of its log if it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the router exited ({status}); last lines of its log:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many records the consumer has read back; the producer waits on it.
#[derive(Default)]
struct Progress {
    received: Mutex<usize>,
    changed: Condvar,
}

impl Progress {
    fn advance(&self, received: usize) {
        *self
            .received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = received;
        self.changed.notify_all();
    }

    /// Waits until fewer than `window` of the first `sent` records are
    /// unread.
    fn wait_window(&self, sent: usize, window: usize) {
        let mut received = self
            .received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while sent.saturating_sub(*received) >= window {
            received = self
                .changed
                .wait_timeout(received, Duration::from_millis(100))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

fn run(
    tools: &Tools,
    broker_kind: BrokerKind,
    router_kind: RouterKind,
    size: usize,
    options: &Options,
) -> anyhow::Result<Measurement> {
    let source = random_topic("bench-src");
    let target = if router_kind == RouterKind::Ceiling {
        source.clone()
    } else {
        random_topic("bench-dst")
    };
    let topics: Vec<(&str, i32)> = if source == target {
        vec![(&source, PARTITIONS)]
    } else {
        vec![(&source, options.source_partitions), (&target, PARTITIONS)]
    };
    let broker = Broker::start(tools, broker_kind, &topics)?;
    let dir = tempfile::tempdir()?;
    let mut spawned_at = Instant::now();
    let spawn_router = || {
        RouterProcess::spawn(
            tools,
            router_kind,
            broker.addr(),
            &source,
            &target,
            dir.path(),
        )
    };
    let mut router = if options.preload {
        None
    } else {
        spawn_router()?
    };

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let producer = Arc::new(producer);
    let mut consumer_config = ClientConfig::new();
    consumer_config
        .set("bootstrap.servers", broker.addr())
        .set("group.id", random_topic("bench-reader"))
        .set("enable.auto.commit", "false");
    for (k, v) in CONSUMER_PROPERTIES {
        consumer_config.set(k, v);
    }
    let consumer: BaseConsumer = consumer_config.create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(&target, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;

    // Throughput: every record once, at most a window of them unread.
    let n = options.records;
    let values = if router_kind == RouterKind::AvroField {
        avro_values(size)?
    } else {
        values(size)
    };
    let values = Arc::new(values);
    let progress = Arc::new(Progress::default());
    let window = if options.preload {
        n
    } else {
        (WINDOW_BYTES / size.max(1)).clamp(1_000, MAX_WINDOW)
    };
    let mut writer = Some(std::thread::spawn({
        let (producer, values, progress, source) = (
            producer.clone(),
            values.clone(),
            progress.clone(),
            source.clone(),
        );
        move || -> anyhow::Result<()> {
            for i in 0..n {
                progress.wait_window(i, window);
                let key = format!("t{i}");
                let tenant = format!("tenant-{:02}", i % TENANTS);
                send(
                    &producer,
                    &source,
                    &key,
                    &values[i % values.len()],
                    &tenant,
                    None,
                )?;
            }
            Ok(())
        }
    }));
    let join = |writer: std::thread::JoinHandle<anyhow::Result<()>>| {
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))?
    };
    if options.preload {
        join(writer.take().context("no writer")?)?;
        producer.flush(Duration::from_secs(60))?;
        spawned_at = Instant::now();
        router = spawn_router()?;
    }
    let mut threads: Option<f64> = None;
    let mut seen = vec![false; n];
    let (mut unique, mut duplicates) = (0_usize, 0_u64);
    type Cpu = Option<(f64, [f64; ROLES.len()])>;
    let mut first: Option<(Instant, Cpu)> = None;
    let mut last: (Instant, Cpu) = (Instant::now(), None);
    let mut records_per_call = None;
    while unique < n {
        let message = next_record(&consumer, &mut router, || {
            format!("{unique} of {n} records")
        })?;
        let i = record_index(&message, b't')?;
        if std::mem::replace(&mut seen[i], true) {
            duplicates += 1;
            continue;
        }
        unique += 1;
        let cpu = || -> anyhow::Result<Cpu> {
            router
                .as_ref()
                .map(|r| Ok((r.cpu_seconds(tools)?, r.cpu_by_role(tools)?)))
                .transpose()
        };
        if first.is_none() {
            first = Some((Instant::now(), cpu()?));
        }
        if (unique % 1_000 == 1 || unique == n)
            && let Some(r) = &router
        {
            let now = r.threads()?;
            threads = Some(threads.map_or(now, |most: f64| most.max(now)));
        }
        if unique == n {
            last = (Instant::now(), cpu()?);
            records_per_call = router
                .as_ref()
                .map(RouterProcess::records_per_call)
                .transpose()?
                .flatten();
        }
        if unique % 1_000 == 0 || unique == n {
            progress.advance(unique);
        }
    }
    if let Some(writer) = writer.take() {
        join(writer)?;
    }
    let (started, cpu_start) = first.context("nothing read back")?;
    let first_output_s = router
        .as_ref()
        .map(|_| started.duration_since(spawned_at).as_secs_f64());
    let span = last.0.duration_since(started).as_secs_f64();
    let rate = (n - 1) as f64 / span;
    let per_million = |cpu: f64| cpu / (n - 1) as f64 * 1e6;
    let (cpu_per_million, cpu_by_role) = match (cpu_start, last.1) {
        (Some((a, a_roles)), Some((b, b_roles))) => (
            Some(per_million(b - a)),
            Some(std::array::from_fn(|i| {
                per_million(b_roles[i] - a_roles[i])
            })),
        ),
        _ => (None, None),
    };

    // Latency: a steady rate well below every router's throughput.
    let latencies = measure_latency(&producer, &consumer, &source, &values, options, &mut router)?;
    let peak_rss_mib = router
        .as_ref()
        .map(RouterProcess::peak_rss_mib)
        .transpose()?;
    drop(router);
    drop(broker);
    Ok(Measurement {
        rate,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        cpu_per_million,
        cpu_by_role,
        peak_rss_mib,
        threads,
        first_output_s,
        records_per_call,
        duplicates,
    })
}

/// Writes the latency records at the configured rate, each with its send
/// time, and returns how long each took to come back, in ms.
fn measure_latency(
    producer: &Arc<ThreadedProducer<DefaultProducerContext>>,
    consumer: &BaseConsumer,
    source: &str,
    values: &Arc<Vec<Vec<u8>>>,
    options: &Options,
    router: &mut Option<RouterProcess>,
) -> anyhow::Result<Vec<f64>> {
    let count = options.latency_records;
    let interval = Duration::from_secs(1) / options.latency_rate.max(1);
    let writer = std::thread::spawn({
        let (producer, values, source) = (producer.clone(), values.clone(), source.to_owned());
        move || -> anyhow::Result<()> {
            let start = Instant::now();
            for j in 0..count {
                // Pacing: each record leaves at its slot of the schedule.
                let slot = start + interval * u32::try_from(j)?;
                if let Some(wait) = slot.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let tenant = format!("tenant-{:02}", j % TENANTS);
                send(
                    &producer,
                    &source,
                    &format!("l{j}"),
                    &values[j % values.len()],
                    &tenant,
                    Some(now_ns()),
                )?;
            }
            Ok(())
        }
    });
    let mut latencies = Vec::with_capacity(count);
    let mut seen = vec![false; count];
    while latencies.len() < count {
        let done = latencies.len();
        let message = next_record(consumer, router, || {
            format!("{done} of {count} latency records")
        })?;
        let received = now_ns();
        if message.key().is_some_and(|k| k.starts_with(b"t")) {
            continue; // a late duplicate of the throughput run
        }
        let j = record_index(&message, b'l')?;
        if std::mem::replace(&mut seen[j], true) {
            continue;
        }
        let sent: u128 = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "sent-ns"))
            .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
            .context("a latency record came back without its sent-ns header")?;
        latencies.push(received.saturating_sub(sent) as f64 / 1e6);
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the latency writer panicked"))??;
    Ok(latencies)
}

/// The next record read back. Fails if the router process died, or if
/// nothing arrived for [`STALL`] (`read` says how far the run got).
fn next_record<'c>(
    consumer: &'c BaseConsumer,
    router: &mut Option<RouterProcess>,
    read: impl Fn() -> String,
) -> anyhow::Result<BorrowedMessage<'c>> {
    let waiting = Instant::now();
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            return Ok(message?);
        }
        // Idle: is the router still there? (Not per record: the driver
        // shares the cores with it.)
        if let Some(r) = router.as_mut() {
            r.check_alive()?;
        }
        if waiting.elapsed() > STALL {
            bail!(
                "stalled: {} read back, nothing new for {} s\n{}",
                read(),
                STALL.as_secs(),
                router
                    .as_ref()
                    .map(RouterProcess::diagnosis)
                    .unwrap_or_default()
            );
        }
    }
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    value: &[u8],
    tenant: &str,
    sent_ns: Option<u128>,
) -> anyhow::Result<()> {
    let sent = sent_ns.map(|ns| ns.to_string());
    let mut headers = OwnedHeaders::new().insert(Header {
        key: "tenant-id",
        value: Some(tenant),
    });
    if let Some(sent) = &sent {
        headers = headers.insert(Header {
            key: "sent-ns",
            value: Some(sent.as_str()),
        });
    }
    let mut record = BaseRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(headers);
    // The queue (100,000 messages by default) holds more than a window; it
    // fills when every record is written up front (`--preload`), and
    // empties as the broker acknowledges them.
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// The number in a record's key `{prefix}{n}`.
fn record_index(message: &impl Message, prefix: u8) -> anyhow::Result<usize> {
    let key = message
        .key()
        .context("a record came back without its key")?;
    match key.split_first() {
        Some((p, digits)) if *p == prefix => Ok(std::str::from_utf8(digits)?.parse()?),
        _ => bail!("unexpected record key {:?}", String::from_utf8_lossy(key)),
    }
}

/// 1,024 different JSON envelopes of exactly `size` bytes (at least the
/// envelope's own), their padding random letters so that compression sees
/// something like real data.
fn values(size: usize) -> Vec<Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut letter = || {
        // xorshift64: deterministic, good enough to defeat compression.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(state % 62) as usize]
    };
    (0..1024)
        .map(|i| {
            let head = format!(r#"{{"type":"order.created","id":{i},"payload":{{"pad":""#);
            let tail = r#""}}"#;
            let pad = size.saturating_sub(head.len() + tail.len());
            let mut value = head.into_bytes();
            value.extend((0..pad).map(|_| letter()));
            value.extend_from_slice(tail.as_bytes());
            value
        })
        .collect()
}

/// The envelopes' Avro schema: [`values`]' fields, in their order.
const ENVELOPE_AVSC: &str = r#"{"type": "record", "name": "Envelope", "fields": [
    {"name": "type", "type": "string"},
    {"name": "id", "type": "long"},
    {"name": "payload", "type": {"type": "record", "name": "Payload", "fields": [{"name": "pad", "type": "string"}]}}
]}"#;
const ENVELOPE_ID: u32 = 1;

/// [`values`] as Avro records of [`ENVELOPE_AVSC`] in the wire format: the
/// same content (a few bytes shorter: Avro does not repeat field names).
fn avro_values(size: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    use switchyard::schema::{Compiled, Format, Resolved, SchemaText};
    let schema = Compiled::compile(
        ENVELOPE_ID,
        &Resolved {
            schema: SchemaText {
                format: Format::Avro,
                text: ENVELOPE_AVSC.to_owned(),
                references: Vec::new(),
            },
            references: Vec::new(),
        },
    )
    .map_err(anyhow::Error::msg)?;
    values(size)
        .iter()
        .map(|json| {
            let value: serde_json::Value = serde_json::from_slice(json)?;
            schema.encode(&value, None).map_err(anyhow::Error::msg)
        })
        .collect()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}
