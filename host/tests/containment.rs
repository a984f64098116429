//! Containment, as an operator sees it: `switchyard run` with hostile
//! plugins on the real broker. Whatever a plugin does (sleeps inside the
//! host, floods or forges the log, leaks handles, writes outputs the
//! producer would refuse), it costs its own route its own budgets: the
//! record ends somewhere defined, the records around it and other routes
//! flow on, the log stays bounded and honest, and SIGTERM ends the process
//! within the shutdown timeout.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{
    TestRecord, broker, committed, consume, create_topics, produce, random_topic, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(120);
/// `[shutdown] timeout_ms` of these routers.
const SHUTDOWN: Duration = Duration::from_secs(5);

/// A `switchyard run` process, its log in a file (a pipe nobody reads could
/// fill and block it).
struct Router {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Router {
    fn start(group: &str, routes: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("router.toml");
        let http = if routes.contains("[http]") {
            ""
        } else {
            "[http]\nlisten = \"127.0.0.1:0\"\n"
        };
        std::fs::write(
            &config,
            format!(
                r#"[kafka]
bootstrap_servers = "{}"
group_id = "{group}"
[kafka.consumer]
"fetch.wait.max.ms" = 10
"auto.commit.interval.ms" = 100

[shutdown]
timeout_ms = {}

{routes}
{http}"#,
                broker(),
                SHUTDOWN.as_millis()
            ),
        )
        .unwrap();
        let log = dir.path().join("router.log");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("SWITCHYARD_CACHE_DIR", dir.path().join("cache"))
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, text: &str) {
        wait_until(TIMEOUT, || self.log().contains(text))
            .unwrap_or_else(|_| panic!("'{text}' never logged:\n{}", self.log()));
    }

    /// Sends SIGTERM and waits for the exit; also how long it took.
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let asked = Instant::now();
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        self.wait(asked)
    }

    fn wait(&mut self, since: Instant) -> (ExitStatus, Duration) {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, since.elapsed());
            }
            assert!(
                since.elapsed() < TIMEOUT,
                "router still running after {TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU time the router process used so far (user + system), in
    /// seconds (at the usual 100 clock ticks a second).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    /// Peak resident memory of the router process, in MiB.
    fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap();
        kib >> 10
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on(partition: i32, value: &str) -> TestRecord {
    TestRecord::new("k", value).on_partition(partition)
}

fn values(records: &[TestRecord]) -> Vec<&str> {
    records.iter().map(TestRecord::value_str).collect()
}

fn header<'a>(record: &'a TestRecord, key: &str) -> &'a str {
    record
        .header_str(key)
        .unwrap_or_else(|| panic!("no header '{key}' on {record:?}"))
}

fn route(name: &str, src: &str, dst: &str, plugin: &Path, extra: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
source_topics = ["{src}"]
plugin = "{}"
default_target = "{dst}"
{extra}
"#,
        plugin.display()
    )
}

#[test]
fn a_hostile_plugin_costs_its_route_only_its_budgets() {
    let t = |p: &str| random_topic(&format!("contain-{p}"));
    let (hostile_in, hostile_out, dlq) = (t("h-in"), t("h-out"), t("h-dlq"));
    let (noisy_in, noisy_out) = (t("n-in"), t("n-out"));
    let (sleepy_in, sleepy_out) = (t("z-in"), t("z-out"));
    let (tight_in, tight_out, tight_dlq) = (t("t-in"), t("t-out"), t("t-dlq"));
    let (steady_in, steady_out) = (t("s-in"), t("s-out"));
    create_topics(&[
        (&hostile_in, 2),
        (&hostile_out, 2),
        (&dlq, 1),
        (&noisy_in, 1),
        (&noisy_out, 1),
        (&sleepy_in, 1),
        (&sleepy_out, 1),
        (&tight_in, 1),
        (&tight_out, 1),
        (&tight_dlq, 1),
        (&steady_in, 2),
        (&steady_out, 2),
    ])
    .unwrap();
    let group = random_topic("contain-group");
    let hostile = fixtures::hostile();
    let routes = [
        // Short calls: a sleeping or leaking plugin runs out of time.
        route(
            "hostile",
            &hostile_in,
            &hostile_out,
            &hostile,
            &format!(
                // Room for the 600,000-header answer to be lifted in a debug
                // build on a loaded machine; the spinning case waits it out.
                "dead_letter_topic = \"{dlq}\"\n[routes.limits]\nroute_timeout_ms = 5000\nmemory_mib = 128"
            ),
        ),
        // Long calls, so that the log cases run to their end.
        route(
            "noisy",
            &noisy_in,
            &noisy_out,
            &hostile,
            "on_failure = \"skip\"\n[routes.limits]\nroute_timeout_ms = 60000\nmemory_mib = 256\nlog_lines_per_second = 20",
        ),
        // Little memory: the host must not make a plugin more than it
        // could hold.
        route(
            "tight",
            &tight_in,
            &tight_out,
            &hostile,
            &format!("dead_letter_topic = \"{tight_dlq}\"\n[routes.limits]\nmemory_mib = 16"),
        ),
        // A sleep that outlasts the shutdown timeout.
        route(
            "sleepy",
            &sleepy_in,
            &sleepy_out,
            &hostile,
            "on_failure = \"skip\"\n[routes.limits]\nroute_timeout_ms = 60000",
        ),
        route(
            "steady",
            &steady_in,
            &steady_out,
            &fixtures::hello(),
            "on_failure = \"stop\"",
        ),
    ]
    .concat();
    let mut router = Router::start(&group, &routes);

    // Each bad record between two good ones on partition 0; partition 1
    // and the steady route flow meanwhile.
    let bad = [
        "sleep",
        "leak-stdio",
        "exact-limit",
        "empty-headers:600000",
        "empty-headers:100001",
    ];
    let mut hostile_records = vec![on(0, "good-0")];
    for (i, value) in bad.iter().enumerate() {
        hostile_records.push(on(0, value));
        hostile_records.push(on(0, &format!("good-{}", i + 1)));
    }
    hostile_records.push(on(0, "empty-headers:100000"));
    let flowing: Vec<TestRecord> = (0..300).map(|i| on(1, &format!("f{i}"))).collect();
    let steady: Vec<TestRecord> = (0..300).map(|i| on(i % 2, &format!("s{i}"))).collect();
    let noisy: Vec<TestRecord> = ["log-huge", "print-huge", "forge", "log-flood"]
        .iter()
        .map(|v| on(0, v))
        .collect();
    produce(&hostile_in, &hostile_records).unwrap();
    produce(&hostile_in, &flowing).unwrap();
    produce(&steady_in, &steady).unwrap();
    produce(&noisy_in, &noisy).unwrap();

    // The steady route and the hostile route's other partition flow.
    assert_eq!(
        consume(&steady_out, steady.len(), TIMEOUT).unwrap().len(),
        300
    );
    let out = consume(&hostile_out, bad.len() + 2 + flowing.len(), TIMEOUT).unwrap();
    let from_0: Vec<&str> = out
        .iter()
        .filter(|r| !r.value_str().starts_with('f'))
        .map(TestRecord::value_str)
        .collect();
    assert_eq!(
        from_0,
        [
            "good-0",
            "good-1",
            "good-2",
            "good-3",
            "good-4",
            "good-5",
            "empty-headers:100000"
        ],
        "partition 0's good records, in order"
    );
    let headers = out
        .iter()
        .find(|r| r.value_str() == "empty-headers:100000")
        .unwrap();
    assert_eq!(
        headers.headers.len(),
        100_000,
        "as many headers as consumers read"
    );

    // Each bad record in the dead-letter topic with its reason.
    let dead = consume(&dlq, bad.len(), TIMEOUT).unwrap();
    assert_eq!(values(&dead), bad);
    let reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|r| (header(r, "dlq-error-kind"), header(r, "dlq-error")))
        .collect();
    assert_eq!(reasons[0], ("timeout", "plugin ran past its time limit"));
    assert_eq!(
        reasons[1],
        (
            "memory",
            "plugin holds 4096 host handles (streams, pollables) without closing them, the most an instance may"
        )
    );
    assert_eq!(
        reasons[2],
        (
            "invalid-output",
            "output 0: 1000037 bytes with its headers and framing: the route's limit (limits.max_output_bytes) is 1000000"
        )
    );
    assert_eq!(
        reasons[3],
        (
            "invalid-output",
            "output 0: 600000 headers: consumers built on librdkafka (Switchyard among them) read no headers of a record with more than 100000"
        )
    );
    assert_eq!(
        reasons[4],
        (
            "invalid-output",
            "output 0: 100001 headers: consumers built on librdkafka (Switchyard among them) read no headers of a record with more than 100000"
        )
    );

    // Random bytes from the host: a few are fine; more than the plugin's
    // memory are refused before the host makes them.
    produce(
        &tight_in,
        &[
            on(0, "random:1000"),
            on(0, "random:50000000"),
            on(0, "after"),
        ],
    )
    .unwrap();
    let tight = consume(&tight_out, 2, TIMEOUT).unwrap();
    assert_eq!(values(&tight), ["random:1000", "after"]);
    assert_eq!(tight[0].header_str("random-bytes"), Some("1000"));
    let refused = consume(&tight_dlq, 1, TIMEOUT).unwrap();
    assert_eq!(header(&refused[0], "dlq-error-kind"), "trap");
    assert!(
        header(&refused[0], "dlq-error").contains("requested len 50000000 exceeds limit 16777216"),
        "{}",
        header(&refused[0], "dlq-error")
    );

    // The noisy route's records all arrive, its log stays bounded, and no
    // plugin text starts a line of its own.
    let noisy_out = consume(&noisy_out, noisy.len(), TIMEOUT).unwrap();
    assert_eq!(values(&noisy_out), values(&noisy));
    // The next line the budget admits says how many were dropped.
    wait_until(TIMEOUT, || {
        produce(&noisy_in, &[on(0, "log:tick")]).unwrap();
        router.log().contains("plugin log lines dropped")
    })
    .unwrap();
    let log = router.log();
    // Reported as they go: each admitted line after drops says how many.
    let dropped: u64 = log
        .lines()
        .filter(|l| l.contains("plugin log lines dropped"))
        .filter_map(|l| l.split("dropped=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(
        dropped > 990_000,
        "only {dropped} of the flood's lines dropped"
    );
    assert!(
        log.len() < 2 << 20,
        "the router's log grew to {} bytes",
        log.len()
    );
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a plugin forged a log line"
    );
    assert!(
        log.contains("harmless\\n2026-01-01T00:00:00Z ERROR switchyard: forged by a plugin"),
        "the forged text is logged escaped, on the plugin's own line"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 8 << 10, "a log line of {longest} bytes");
    assert!(
        log.contains("more bytes cut]"),
        "the 60 MiB lines say they were cut"
    );

    // A sleep that outlasts the shutdown timeout: SIGTERM ends the call, the
    // router stops in time, and the record is left for the next owner.
    produce(&sleepy_in, &[on(0, "good")]).unwrap();
    assert_eq!(values(&consume(&sleepy_out, 1, TIMEOUT).unwrap()), ["good"]);
    produce(&sleepy_in, &[on(0, "sleep")]).unwrap();
    router.wait_for_log("offset 1 sleeps an hour");
    let peak = router.peak_rss_mib();
    let cpu = router.cpu_seconds();
    let (status, took) = router.terminate();
    let log = router.log();
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(
        took < SHUTDOWN + Duration::from_secs(5),
        "SIGTERM took {took:?}"
    );
    let offsets = committed(&group, &sleepy_in, 1).unwrap();
    assert_eq!(
        offsets.get(&0),
        Some(&1),
        "the slept record is not committed"
    );
    eprintln!(
        "router: peak RSS {peak} MiB, {cpu:.1} s of CPU for the whole case; SIGTERM during a sleeping call took {took:?}"
    );
    assert!(peak < 1024, "router peak RSS {peak} MiB");
}

#[test]
fn a_plugin_whose_init_sleeps_is_refused_at_start_within_its_init_time() {
    let (src, dst) = (random_topic("init-in"), random_topic("init-out"));
    create_topics(&[(&src, 1), (&dst, 1)]).unwrap();
    let routes = route(
        "sleepy",
        &src,
        &dst,
        &fixtures::hostile(),
        "on_failure = \"skip\"\nplugin_config = { init = \"sleep\" }\n[routes.limits]\ninit_timeout_ms = 1000",
    );
    let mut router = Router::start(&random_topic("init-group"), &routes);
    let (status, took) = router.wait(Instant::now());
    let log = router.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "plugin ran past its time limit: init did not return within limits.init_timeout_ms (1000 ms)"
        ),
        "{log}"
    );
    assert!(took < Duration::from_secs(30), "refused after {took:?}");
}

/// Descriptors the process `pid` holds open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn five_thousand_idle_http_connections_cost_neither_routing_nor_descriptors() {
    let (src, dst) = (random_topic("idle-in"), random_topic("idle-out"));
    create_topics(&[(&src, 2), (&dst, 2)]).unwrap();
    let routes = format!(
        "{}\n[http]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = 1000\n",
        route(
            "copy",
            &src,
            &dst,
            &fixtures::hello(),
            "on_failure = \"skip\""
        )
    );
    let router = Router::start(&random_topic("idle-group"), &routes);
    router.wait_for_log("HTTP endpoint listening");
    let addr: std::net::SocketAddr = router
        .log()
        .lines()
        .find(|l| l.contains("HTTP endpoint listening"))
        .and_then(|l| l.split("addr=").nth(1))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    produce(&src, &[on(0, "before")]).unwrap();
    consume(&dst, 1, TIMEOUT).unwrap();
    let baseline = open_fds(router.child.id());

    // Connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..5000 {
        if let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            idle.push(stream);
        }
    }
    assert!(idle.len() > 4000, "only {} connections opened", idle.len());
    let held = open_fds(router.child.id());
    // The cap, and a few the Kafka clients may open meanwhile: far from
    // the 5,000 asked for.
    assert!(
        held <= baseline + 64 + 32,
        "the router holds {held} descriptors (baseline {baseline}, http.max_connections 64)"
    );

    // Routing goes on meanwhile.
    let records: Vec<TestRecord> = (0..200).map(|i| on(i % 2, &format!("r{i}"))).collect();
    produce(&src, &records).unwrap();
    assert_eq!(
        consume(&dst, 1 + records.len(), TIMEOUT).unwrap().len(),
        201
    );

    // The idle ones time out (http.header_timeout_ms), and the endpoint
    // answers again, with the flood's sockets still open on this side.
    wait_until(TIMEOUT, || {
        switchyard_tests::http_get(addr, "/health").is_ok_and(|(code, _)| code == 200)
    })
    .unwrap();
    drop(idle);
}

#[test]
fn a_rebalance_does_not_wait_for_a_plugin_sleeping_in_a_call() {
    let (src, dst) = (random_topic("rebal-in"), random_topic("rebal-out"));
    create_topics(&[(&src, 2), (&dst, 2)]).unwrap();
    let group = random_topic("rebal-group");
    // A call may take a minute: a rebalance that waited for it would too.
    let routes = route(
        "sleepy",
        &src,
        &dst,
        &fixtures::hostile(),
        "on_failure = \"skip\"\n[routes.limits]\nroute_timeout_ms = 60000",
    );
    let first = Router::start(&group, &routes);
    // The good record first: in one call with the sleeper it would wait
    // for the call's time limit.
    produce(&src, &[on(0, "good"), on(1, "other")]).unwrap();
    assert_eq!(consume(&dst, 2, TIMEOUT).unwrap().len(), 2);
    produce(&src, &[on(0, "sleep")]).unwrap();
    first.wait_for_log("offset 1 sleeps an hour");

    // A second router joins the group: the first gives up a partition
    // (ending the sleeping call if that is the one), both go on.
    let joined = Instant::now();
    let second = Router::start(&group, &routes);
    second.wait_for_log("partitions assigned");
    let took = joined.elapsed();
    eprintln!("a router joining while a call sleeps was assigned partitions after {took:?}");
    assert!(
        took < Duration::from_secs(30),
        "the rebalance took {took:?}:\n{}",
        first.log()
    );
    produce(&src, &[on(1, "after")]).unwrap();
    let out = consume(&dst, 3, TIMEOUT).unwrap();
    assert!(values(&out).contains(&"after"), "{:?}", values(&out));
}
