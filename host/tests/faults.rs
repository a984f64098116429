//! Delivery under faults, on the real broker, with `switchyard run`
//! processes: a producer writes a known sequence (key + sequence number per
//! key), the routers are killed, stopped, added, or the broker goes away,
//! and a checker reads the target afterwards: nothing missing, duplicates
//! counted and reported, per key the first occurrences in order.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use switchyard_tests::{
    OwnBroker, TestRecord, broker, consume_on, create_topics_on, end_offsets_on, produce_on,
    random_topic, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(180);

/// The fault tests run one at a time: each runs several routers and a
/// checker on two cores, and their timing should not depend on the others.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sequence: `count` records over `keys` keys, `k{key}` → `{key}:{seq}`.
fn sequence(count: usize, keys: usize) -> Vec<TestRecord> {
    let mut next = vec![0_usize; keys];
    (0..count)
        .map(|i| {
            let key = i % keys;
            let seq = next[key];
            next[key] += 1;
            TestRecord::new(&format!("k{key}"), &format!("{key}:{seq}"))
        })
        .collect()
}

/// What the checker found.
#[derive(Debug)]
#[allow(dead_code, reason = "fields are printed with the report")]
struct Report {
    read: usize,
    missing: usize,
    duplicates: usize,
}

/// Reads everything on `topic` and checks it against the sequence of
/// `count` records over `keys` keys.
fn check(bootstrap: &str, topic: &str, count: usize, keys: usize) -> Report {
    let total: i64 = end_offsets_on(bootstrap, topic).unwrap().iter().sum();
    let records = consume_on(bootstrap, topic, usize::try_from(total).unwrap(), TIMEOUT).unwrap();
    // Per key, in the order read (a key lives on one partition).
    let mut seen: HashMap<usize, Vec<usize>> = HashMap::new();
    for record in &records {
        let (key, seq) = record.value_str().split_once(':').unwrap();
        seen.entry(key.parse().unwrap())
            .or_default()
            .push(seq.parse().unwrap());
    }
    let mut distinct = 0;
    for key in 0..keys {
        let expected = count / keys + usize::from(key < count % keys);
        let seqs = seen.get(&key).map_or(&[][..], Vec::as_slice);
        // First occurrences, in the order they were read, must be 0, 1, 2...
        let mut first = Vec::new();
        let mut known = vec![false; expected];
        for &seq in seqs {
            assert!(seq < expected, "key {key}: unknown seq {seq}");
            if !known[seq] {
                known[seq] = true;
                first.push(seq);
            }
        }
        assert!(
            first.iter().enumerate().all(|(i, &seq)| i == seq),
            "key {key}: first occurrences out of order: {:?}",
            &first[..first.len().min(50)]
        );
        distinct += first.len();
    }
    Report {
        read: records.len(),
        missing: count - distinct,
        duplicates: records.len() - distinct,
    }
}

/// A `switchyard run` process.
struct Router {
    child: Child,
    log: PathBuf,
}

impl Router {
    fn start(config: &Path, log: PathBuf) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,librdkafka=off")
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status (the router must stop by itself).
    fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 60 s after SIGTERM; log: {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's topics, config and routers.
struct Setup {
    dir: tempfile::TempDir,
    bootstrap: String,
    src: String,
    dst: String,
    config: PathBuf,
    started: usize,
}

impl Setup {
    fn new(bootstrap: &str, partitions: i32) -> Self {
        let (src, dst) = (random_topic("fault-in"), random_topic("fault-out"));
        create_topics_on(bootstrap, &[(&src, partitions), (&dst, partitions)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("router.toml");
        std::fs::write(
            &config,
            format!(
                r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
[kafka.consumer]
"fetch.wait.max.ms" = 10
"auto.commit.interval.ms" = 1000
# A killed member's partitions move on after this long.
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000

[[routes]]
name = "copy"
source_topics = ["{src}"]
plugin = "{plugin}"
default_target = "{dst}"
on_failure = "stop"

[http]
listen = "127.0.0.1:0"
"#,
                group = random_topic("group"),
                plugin = switchyard_plugin_fixtures::hello().display()
            ),
        )
        .unwrap();
        Self {
            dir,
            bootstrap: bootstrap.to_owned(),
            src,
            dst,
            config,
            started: 0,
        }
    }

    fn router(&mut self) -> Router {
        self.started += 1;
        let log = self.dir.path().join(format!("router-{}.log", self.started));
        Router::start(&self.config, log)
    }

    fn produce(&self, records: &[TestRecord]) {
        produce_on(&self.bootstrap, &self.src, records).unwrap();
        let written: i64 = end_offsets_on(&self.bootstrap, &self.src)
            .unwrap()
            .iter()
            .sum();
        assert_eq!(written, records.len() as i64, "the input is all there");
    }

    /// Records on the target so far (duplicates included).
    fn routed(&self) -> i64 {
        end_offsets_on(&self.bootstrap, &self.dst)
            .map(|ends| ends.iter().sum())
            .unwrap_or(0)
    }

    fn wait_routed(&self, at_least: i64) {
        wait_until(TIMEOUT, || self.routed() >= at_least)
            .unwrap_or_else(|e| panic!("{e}: {} of {at_least} routed", self.routed()));
    }

    /// Waits until every record of the sequence is on the target (a
    /// checker pass finds none missing), then returns the report.
    fn wait_complete(&self, count: usize, keys: usize) -> Report {
        self.wait_routed(count as i64);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let before = self.routed();
            let report = check(&self.bootstrap, &self.dst, count, keys);
            if report.missing == 0 || Instant::now() > deadline {
                return report;
            }
            // Something is missing: wait for more output, then look again.
            wait_until(TIMEOUT, || self.routed() > before)
                .unwrap_or_else(|e| panic!("{e}: no more output; {report:?}"));
        }
    }
}

/// A small deterministic generator; the seed is printed to reproduce a run.
struct Random(u64);

impl Random {
    fn seeded() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        eprintln!("random seed {seed}");
        Self(u64::from(seed) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigterm_then_restart_loses_nothing_and_repeats_nothing() {
    let _serial = one_at_a_time();
    const COUNT: usize = 30_000;
    let mut setup = Setup::new(broker(), 6);
    setup.produce(&sequence(COUNT, 60));
    let router = setup.router();
    setup.wait_routed(5_000);
    let status = router.terminate();
    assert!(status.success(), "exit status {status}");
    let stopped_at = setup.routed();
    let router = setup.router();
    let report = setup.wait_complete(COUNT, 60);
    assert!(router.terminate().success());
    eprintln!("SIGTERM at {stopped_at} of {COUNT} routed, then restart: {report:?}");
    assert_eq!((report.missing, report.duplicates), (0, 0), "{report:?}");
}

#[test]
fn kill_9_twenty_times_during_200_000_records_loses_nothing() {
    let _serial = one_at_a_time();
    const COUNT: usize = 200_000;
    const KEYS: usize = 600;
    let mut random = Random::seeded();
    let mut setup = Setup::new(broker(), 6);
    setup.produce(&sequence(COUNT, KEYS));
    let mut kills = Vec::new();
    for _ in 0..20 {
        let router = setup.router();
        // Killed at a random moment: after 0 to 8,000 more outputs.
        let target = setup.routed() + i64::try_from(random.below(8_000)).unwrap();
        setup.wait_routed(target.min(COUNT as i64));
        router.kill9();
        kills.push(setup.routed());
    }
    let router = setup.router();
    let report = setup.wait_complete(COUNT, KEYS);
    assert!(router.terminate().success());
    eprintln!("killed with SIGKILL at outputs {kills:?}; then: {report:?}");
    assert_eq!(report.missing, 0, "{report:?}");
}

#[test]
fn three_instances_one_killed_one_added_lose_nothing() {
    let _serial = one_at_a_time();
    const COUNT: usize = 100_000;
    const KEYS: usize = 300;
    let mut setup = Setup::new(broker(), 6);
    setup.produce(&sequence(COUNT, KEYS));
    let mut routers: Vec<Router> = (0..3).map(|_| setup.router()).collect();
    setup.wait_routed(20_000);
    routers.remove(0).kill9();
    let killed_at = setup.routed();
    routers.push(setup.router());
    let report = setup.wait_complete(COUNT, KEYS);
    for router in routers {
        assert!(router.terminate().success());
    }
    eprintln!("one of three killed at {killed_at}, one added: {report:?}");
    assert_eq!(report.missing, 0, "{report:?}");
}

#[test]
fn a_broker_stopped_for_10_s_mid_stream_loses_nothing() {
    let _serial = one_at_a_time();
    const COUNT: usize = 20_000;
    const KEYS: usize = 60;
    let mut broker = OwnBroker::start_durable().unwrap();
    let mut setup = Setup::new(broker.addr(), 3);
    setup.produce(&sequence(COUNT, KEYS));
    let router = setup.router();
    setup.wait_routed(3_000);
    let stopped_at = setup.routed();
    broker.stop();
    // The outage itself is the scenario: ten seconds without a broker.
    std::thread::sleep(Duration::from_secs(10));
    broker.resume().unwrap();
    let report = setup.wait_complete(COUNT, KEYS);
    assert!(router.terminate().success());
    eprintln!("broker down 10 s after ~{stopped_at} routed: {report:?}");
    assert_eq!(report.missing, 0, "{report:?}");
}

#[test]
fn a_stop_that_cannot_finish_ends_at_the_deadline_and_says_so() {
    let _serial = one_at_a_time();
    const COUNT: usize = 5_000;
    let mut broker = OwnBroker::start().unwrap();
    let mut setup = Setup::new(broker.addr(), 1);
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        format!("{text}\n[shutdown]\ntimeout_ms = 1000\n"),
    )
    .unwrap();
    setup.produce(&sequence(COUNT, 10));
    let router = setup.router();
    setup.wait_routed(1);
    // No broker to flush to, commit to or leave the group with.
    broker.stop();
    let log = router.log.clone();
    let stopping = Instant::now();
    let status = router.terminate();
    let took = stopping.elapsed();
    let log = std::fs::read_to_string(log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("the router did not stop in time (shutdown.timeout_ms)"),
        "{log}"
    );
    // 1 s for the outputs, 5 s more for the rest: well under the 60 s the
    // helper allows.
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
