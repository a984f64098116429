//! `switchyard run` as an operator runs it: started with a config file,
//! stopped with SIGTERM, against the test broker.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_tests::{
    TestRecord, broker, committed, consume, create_topics, produce, random_topic, wait_until,
};

#[test]
fn sigterm_finishes_the_work_commits_and_exits_zero() {
    let (src, dst, group) = (
        random_topic("sig-src"),
        random_topic("sig-dst"),
        random_topic("sig-group"),
    );
    create_topics(&[(&src, 2), (&dst, 2)]).unwrap();
    let records: Vec<TestRecord> = (0..1000)
        .map(|i| TestRecord::new(&format!("k{i}"), &i.to_string()))
        .collect();
    produce(&src, &records).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.toml");
    std::fs::write(
        &config,
        format!(
            r#"[kafka]
bootstrap_servers = "{}"
group_id = "{group}"
[kafka.consumer]
"fetch.wait.max.ms" = 10
# Longer than the test: only the commit on shutdown can store the offsets.
"auto.commit.interval.ms" = 600000

[[routes]]
name = "copy"
source_topics = ["{src}"]
plugin = "{}"
default_target = "{dst}"
on_failure = "skip"

[http]
listen = "127.0.0.1:0"
"#,
            broker(),
            switchyard_plugin_fixtures::hello().display()
        ),
    )
    .unwrap();
    // The log goes to a file: a pipe nobody reads could fill and block it.
    let log_path = dir.path().join("router.log");
    let mut router = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    consume(&dst, records.len(), Duration::from_secs(120)).unwrap();

    // `switchyard health` (the container health check) asks the running
    // router; the log says where it listens.
    let mut addr = String::new();
    wait_until(Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        addr = log
            .lines()
            .find(|l| l.contains("HTTP endpoint listening"))
            .and_then(|l| l.split("addr=").nth(1))
            .unwrap_or_default()
            .trim()
            .to_owned();
        !addr.is_empty()
    })
    .unwrap();
    let health = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["health", "--addr", &addr])
            .args(extra)
            .env("RUST_LOG", "off")
            .output()
            .unwrap()
    };
    let alive = health(&[]);
    assert!(alive.status.success(), "{alive:?}");
    assert_eq!(
        String::from_utf8_lossy(&alive.stdout).trim(),
        r#"{"ok":true,"problems":[]}"#
    );
    wait_until(Duration::from_secs(30), || {
        health(&["--ready"]).status.success()
    })
    .unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &router.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = router.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "router still running 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("router stopped"), "{log}");
    let offsets = committed(&group, &src, 2).unwrap();
    assert_eq!(offsets.values().sum::<i64>(), 1000, "{offsets:?}");
}
