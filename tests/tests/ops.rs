//! What an operator sees while the router works on the real broker:
//! `/ready`, `/health` and `/metrics` scraped during end-to-end runs, the
//! metrics parsed by Prometheus's own parser.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard::config::RouterConfig;
use switchyard::pipeline::LogFailures;
use switchyard::plugin::PluginEngine;
use switchyard::router::{self, RouterHandle};
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{
    Exposition, OwnBroker, TestRecord, committed, consume, create_topics, create_topics_on,
    http_get, http_post, parse_metrics, produce, random_topic, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn start(config: &RouterConfig) -> (RouterHandle, SocketAddr) {
    let router = router::start(
        config,
        &PluginEngine::new().unwrap(),
        Arc::new(LogFailures::default()),
    )
    .unwrap();
    let addr = router
        .http_addr()
        .expect("the HTTP endpoint is on by default");
    (router, addr)
}

fn scrape(addr: SocketAddr) -> Exposition {
    let (code, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(code, 200, "{text}");
    parse_metrics(&text).unwrap()
}

/// Scrapes `/metrics` until the lag of `topic`'s partitions 0, 1, ... is
/// `lags`; gives that scrape.
fn wait_for_lag(addr: SocketAddr, topic: &str, lags: &[f64]) -> Exposition {
    let lag = |m: &Exposition, p: usize| {
        m.value(
            "switchyard_consumer_lag_records",
            &[("topic", topic), ("partition", &p.to_string())],
        )
    };
    let mut last = Exposition::default();
    wait_until(TIMEOUT, || {
        last = scrape(addr);
        lags.iter()
            .enumerate()
            .all(|(p, &want)| lag(&last, p) == Some(want))
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", last.samples));
    last
}

/// `/ready`: the status code and the problems listed.
fn ready(addr: SocketAddr) -> (u16, Vec<String>) {
    let (code, body) = http_get(addr, "/ready").unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let problems = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    (code, problems)
}

#[test]
fn metrics_count_the_records_and_readiness_follows_the_assignment() {
    let (src, dst) = (random_topic("ops-in"), random_topic("ops-out"));
    // The source topic appears only after the router started: until then
    // it cannot have partitions.
    create_topics(&[(&dst, 6)]).unwrap();
    let config = switchyard_tests::router_config(
        &random_topic("group"),
        &format!(
            r#"
[[routes]]
name = "orders"
source_topics = ["{src}"]
plugin = "{}"
default_target = "{dst}"
on_failure = "skip"
"#,
            fixtures::tenant_partitioner().display()
        ),
    )
    .unwrap();
    let mut config = config;
    // Notice the new topic quickly.
    config.kafka.consumer.insert(
        "topic.metadata.refresh.interval.ms".to_owned(),
        switchyard::config::Property::Integer(500),
    );
    let (router, addr) = start(&config);
    let version = router.routes()[0].plugin().unwrap().version().to_owned();

    let (code, problems) = ready(addr);
    assert_eq!(code, 503);
    assert!(
        problems.iter().any(|p| p == "no partitions assigned (yet)"),
        "{problems:?}"
    );
    let (code, body) = http_get(addr, "/health").unwrap();
    assert_eq!((code, body.as_str()), (200, r#"{"ok":true,"problems":[]}"#));

    create_topics(&[(&src, 3)]).unwrap();
    wait_until(TIMEOUT, || ready(addr).0 == 200).unwrap();
    let before = scrape(addr);
    let labels = [("route", "orders"), ("plugin_version", version.as_str())];
    assert_eq!(
        before.value("switchyard_partitions_assigned", &[]),
        Some(3.0)
    );
    assert_eq!(before.value("switchyard_broker_up", &[]), Some(1.0));
    assert!(
        before
            .value("switchyard_records_consumed_total", &labels)
            .is_none_or(|n| n == 0.0)
    );

    const RECORDS: usize = 3000;
    let tenants = ["acme", "globex", "initech", "umbrella", "hooli"];
    let input: Vec<TestRecord> = (0..RECORDS)
        .map(|i| {
            TestRecord::new(&format!("k{i}"), &format!("v{i}"))
                .header("tenant-id", tenants[i % tenants.len()])
                .on_partition(i32::try_from(i % 3).unwrap())
        })
        .collect();
    produce(&src, &input).unwrap();
    consume(&dst, RECORDS, TIMEOUT).unwrap();

    // Counts match what was sent, lag drains to zero on every partition.
    let n = RECORDS as f64;
    let mut last = Exposition::default();
    wait_until(TIMEOUT, || {
        last = scrape(addr);
        last.value("switchyard_records_produced_total", &labels) == Some(n)
            && (0..3).all(|p| {
                last.value(
                    "switchyard_consumer_lag_records",
                    &[("topic", &src), ("partition", &p.to_string())],
                ) == Some(0.0)
            })
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", last.samples));
    let m = last;
    assert_eq!(
        m.value("switchyard_records_consumed_total", &labels),
        Some(n)
    );
    assert_eq!(
        m.value("switchyard_records_filtered_total", &labels),
        Some(0.0)
    );
    assert_eq!(
        m.value("switchyard_records_dead_lettered_total", &labels),
        Some(0.0)
    );
    // Records cross in batches: as many calls as batches, whose records
    // add up to every record.
    let calls = m
        .value(
            "switchyard_plugin_call_duration_seconds_count",
            &[("route", "orders")],
        )
        .unwrap();
    assert!(calls >= 1.0 && calls <= n, "{calls} calls for {n} records");
    assert_eq!(
        m.value(
            "switchyard_plugin_call_duration_seconds_bucket",
            &[("route", "orders"), ("le", "+Inf")]
        ),
        Some(calls)
    );
    assert_eq!(
        m.value(
            "switchyard_plugin_call_records_count",
            &[("route", "orders")]
        ),
        Some(calls)
    );
    assert_eq!(
        m.value("switchyard_plugin_call_records_sum", &[("route", "orders")]),
        Some(n)
    );
    assert_eq!(
        m.value(
            "switchyard_plugin_info",
            &[
                ("route", "orders"),
                ("plugin", "tenant_partitioner"),
                ("plugin_version", &version)
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("switchyard_producer_queue_messages", &[]),
        Some(0.0)
    );
    assert_eq!(
        m.value("switchyard_plugin_reloads_total", &[("result", "swapped")]),
        Some(0.0)
    );
    assert_eq!(
        m.value("switchyard_partitions_held", &[("route", "orders")]),
        Some(0.0)
    );
    for (family, kind) in [
        ("switchyard_records_consumed", "counter"),
        ("switchyard_plugin_call_duration_seconds", "histogram"),
        ("switchyard_consumer_lag_records", "gauge"),
    ] {
        assert_eq!(m.families.get(family).map(String::as_str), Some(kind));
    }

    router.shutdown();
    assert!(ready(addr).1.contains(&"the router is stopping".to_owned()));
    router.join();
}

#[test]
fn a_record_that_traps_alone_costs_one_call() {
    let (src, dst) = (random_topic("alone-in"), random_topic("alone-out"));
    create_topics(&[(&src, 1), (&dst, 1)]).unwrap();
    let config = switchyard_tests::router_config(
        &random_topic("group"),
        &format!(
            "[[routes]]\nname = \"r\"\nsource_topics = [\"{src}\"]\nplugin = \"{}\"\ndefault_target = \"{dst}\"\non_failure = \"skip\"\n",
            fixtures::misbehave().display()
        ),
    )
    .unwrap();
    let (router, addr) = start(&config);
    produce(&src, &[TestRecord::new("k", "trap")]).unwrap();
    wait_until(TIMEOUT, || router.routes()[0].stats.snapshot().skipped == 1).unwrap();
    // A call of one record that traps is that record's answer: the plugin
    // is not called again for it.
    let m = scrape(addr);
    let route = [("route", "r")];
    assert_eq!(
        m.value("switchyard_plugin_call_records_count", &route),
        Some(1.0)
    );
    assert_eq!(
        m.value("switchyard_plugin_call_records_sum", &route),
        Some(1.0)
    );
    assert_eq!(
        router.routes()[0].stats.snapshot().failures,
        [("trap", 1)].into()
    );
}

#[test]
fn a_held_partition_shows_as_lag_and_makes_the_router_not_ready_until_fixed() {
    let (src, dst) = (random_topic("held-in"), random_topic("held-out"));
    create_topics(&[(&src, 2), (&dst, 2)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("rules.wasm");
    std::fs::copy(fixtures::hostile(), &plugin).unwrap();
    let config = switchyard_tests::router_config(
        &random_topic("group"),
        &format!(
            "[[routes]]\nname = \"audit\"\nsource_topics = [\"{src}\"]\nplugin = \"{}\"\ndefault_target = \"{dst}\"\non_failure = \"stop\"\n",
            plugin.display()
        ),
    )
    .unwrap();
    let (router, addr) = start(&config);
    let version = router.routes()[0].plugin().unwrap().version().to_owned();
    let on = |p: i32, v: &str| TestRecord::new("k", v).on_partition(p);
    let mut input = vec![on(0, "a"), on(0, "trap")];
    input.extend((0..9).map(|i| on(0, &format!("after-{i}"))));
    input.extend((0..50).map(|i| on(1, &format!("p1-{i}"))));
    produce(&src, &input).unwrap();

    // Partition 0 waits at offset 1 with 10 records to go; partition 1 is
    // drained; the router says what is wrong.
    let last = wait_for_lag(addr, &src, &[10.0, 0.0]);
    assert_eq!(
        last.value("switchyard_partitions_held", &[("route", "audit")]),
        Some(1.0)
    );
    assert_eq!(
        last.value(
            "switchyard_record_failures_total",
            &[
                ("route", "audit"),
                ("plugin_version", &version),
                ("kind", "trap")
            ]
        ),
        Some(1.0)
    );
    let (code, problems) = ready(addr);
    assert_eq!(code, 503);
    assert_eq!(
        problems,
        [format!(
            "route 'audit': partition {src}[0] held at offset 1: trap: wasm trap: wasm `unreachable` instruction executed"
        )]
    );
    assert_eq!(
        http_get(addr, "/health").unwrap().0,
        200,
        "held is not dead"
    );

    // A fixed plugin: the partition drains, the router is ready again.
    std::fs::copy(fixtures::hello(), dir.path().join("next")).unwrap();
    std::fs::rename(dir.path().join("next"), &plugin).unwrap();
    wait_for_lag(addr, &src, &[0.0]);
    wait_until(TIMEOUT, || ready(addr).0 == 200).unwrap();
    let m = scrape(addr);
    assert_eq!(
        m.value("switchyard_plugin_reloads_total", &[("result", "swapped")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("switchyard_plugin_info", &[("route", "audit")])
            .map(|_| ()),
        Some(()),
        "exactly one version is current"
    );
    router.shutdown();
    router.join();
}

#[test]
fn readiness_fails_while_the_broker_is_gone_and_returns_with_it() {
    let mut broker = OwnBroker::start().unwrap();
    let (src, dst) = (random_topic("gone-in"), random_topic("gone-out"));
    create_topics_on(broker.addr(), &[(&src, 1), (&dst, 1)]).unwrap();
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "{}"
group_id = "{}"
[kafka.consumer]
"fetch.wait.max.ms" = 10
[[routes]]
name = "r"
source_topics = ["{src}"]
default_target = "{dst}"
on_failure = "skip"
[http]
listen = "127.0.0.1:0"
"#,
        broker.addr(),
        random_topic("group")
    );
    let config = RouterConfig::parse(std::path::Path::new("gone.toml"), &text).unwrap();
    let (router, addr) = start(&config);
    wait_until(TIMEOUT, || ready(addr).0 == 200).unwrap();

    broker.stop();
    let mut problems = Vec::new();
    wait_until(TIMEOUT, || {
        let (code, listed) = ready(addr);
        problems = listed;
        code == 503
    })
    .unwrap();
    assert!(
        problems.contains(&"no broker reachable: no connection to any broker is up".to_owned()),
        "{problems:?}"
    );
    assert_eq!(scrape(addr).value("switchyard_broker_up", &[]), Some(0.0));
    assert_eq!(
        http_get(addr, "/health").unwrap().0,
        200,
        "waiting is not dead"
    );

    broker.resume().unwrap();
    wait_until(TIMEOUT, || {
        scrape(addr).value("switchyard_broker_up", &[]) == Some(1.0)
    })
    .unwrap();
    router.shutdown();
    router.join();
}

#[test]
fn a_paused_route_keeps_its_offsets_and_goes_on_in_order_when_resumed() {
    const TOKEN: &str = "test-control-token-0123456789";
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("control-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (src, dst) = (random_topic("pause-in"), random_topic("pause-out"));
    create_topics(&[(&src, 2), (&dst, 1)]).unwrap();
    let group = random_topic("group");
    let config = switchyard_tests::router_config(
        &group,
        &format!(
            "[[routes]]\nname = \"orders\"\nsource_topics = [\"{src}\"]\nplugin = \"{}\"\ndefault_target = \"{dst}\"\non_failure = \"skip\"\n[http]\nlisten = \"127.0.0.1:0\"\ncontrol_token_file = \"{}\"\n",
            fixtures::tenant_partitioner().display(),
            token_file.display()
        ),
    )
    .unwrap();
    let (router, addr) = start(&config);
    let on = |p: i32, v: String| TestRecord::new("k", &v).on_partition(p);
    let first: Vec<TestRecord> = (0..100)
        .map(|i| on(i % 2, format!("{}:{i:03}", i % 2)))
        .collect();
    produce(&src, &first).unwrap();
    assert_eq!(consume(&dst, 100, TIMEOUT).unwrap().len(), 100);
    wait_until(TIMEOUT, || {
        committed(&group, &src, 2)
            .is_ok_and(|c| c == std::collections::HashMap::from([(0, 50), (1, 50)]))
    })
    .unwrap();

    // Without the token, nothing changes.
    let path = "/routes/orders/pause";
    assert_eq!(http_post(addr, path, None).unwrap().0, 401);
    assert_eq!(
        http_post(addr, path, Some("wrong-token-0123456789"))
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        http_post(addr, "/routes/nope/pause", Some(TOKEN))
            .unwrap()
            .0,
        404
    );
    assert!(!router.routes()[0].is_paused());

    let (code, body) = http_post(addr, path, Some(TOKEN)).unwrap();
    assert_eq!(
        (code, body.contains("\"paused\":true")),
        (200, true),
        "{body}"
    );
    let (code, problems) = ready(addr);
    assert_eq!(code, 503);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("route 'orders': paused by an operator")),
        "{problems:?}"
    );
    let (_, routes) = http_get(addr, "/routes").unwrap();
    assert!(routes.contains("\"paused\":true"), "{routes}");

    // Records produced while paused are not routed: the lag shows them
    // fetched-for and waiting, and nothing more is committed.
    let second: Vec<TestRecord> = (100..200)
        .map(|i| on(i % 2, format!("{}:{i:03}", i % 2)))
        .collect();
    produce(&src, &second).unwrap();
    wait_for_lag(addr, &src, &[50.0, 50.0]);
    let routed = router.routes()[0].stats.snapshot().consumed;
    assert_eq!(routed, 100, "nothing routed while paused");
    assert_eq!(
        committed(&group, &src, 2).unwrap(),
        std::collections::HashMap::from([(0, 50), (1, 50)])
    );

    // Resumed: the rest comes, each partition in order, once.
    let (code, _) = http_post(addr, "/routes/orders/resume", Some(TOKEN)).unwrap();
    assert_eq!(code, 200);
    let all = consume(&dst, 200, TIMEOUT).unwrap();
    assert_eq!(all.len(), 200);
    for p in 0..2 {
        let values: Vec<String> = all
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
            .filter(|v| v.starts_with(&format!("{p}:")))
            .collect();
        let mut sorted = values.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(values, sorted, "partition {p}: in order, once");
        assert_eq!(values.len(), 100);
    }
    wait_until(TIMEOUT, || {
        committed(&group, &src, 2)
            .is_ok_and(|c| c == std::collections::HashMap::from([(0, 100), (1, 100)]))
    })
    .unwrap();
    wait_until(TIMEOUT, || ready(addr).0 == 200).unwrap();
    router.shutdown();
    router.join();
}
