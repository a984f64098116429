//! Safe rollout on the real broker: a shadow candidate compared and not
//! produced, a trapping canary rolled back by the policy, a clean canary
//! widened and promoted by it, and the operator's controls.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code"
)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchyard::pipeline::LogFailures;
use switchyard::plugin::PluginEngine;
use switchyard::router::{self, RouterHandle};
use switchyard_tests::{
    TestRecord, consume, create_topics, http_get_authorized, http_post, produce, random_topic,
    wait_until,
};

const TOKEN: &str = "rollout-test-token-0123456789";
const WAIT: Duration = Duration::from_secs(60);

/// A folder with the control token in an owner-only file.
fn folder() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let token = switchyard_tests::control_token_file(dir.path(), TOKEN);
    (dir, token)
}

/// The live plugin (the versioned fixture, tag `v00000001`) and
/// `candidate` written to `dir`: their paths.
fn plugins(dir: &Path, candidate: &[u8]) -> (std::path::PathBuf, std::path::PathBuf) {
    let live = dir.join("live.wasm");
    std::fs::write(&live, versioned("v00000001")).unwrap();
    let file = dir.join("candidate.wasm");
    std::fs::write(&file, candidate).unwrap();
    (live, file)
}

fn versioned(tag: &str) -> Vec<u8> {
    switchyard_tests::versioned_plugin(tag)
}

/// Route `r` from `src` to `dst` with plugin `live`, `failure` (its
/// failure policy line), and `candidate` rolled out as `rollout` (more
/// `[routes.rollout]` lines) says.
fn rollout_route(
    src: &str,
    dst: &str,
    live: &Path,
    failure: &str,
    candidate: &Path,
    rollout: &str,
) -> String {
    format!(
        "[[routes]]\nname = \"r\"\nsource_topics = [\"{src}\"]\nplugin = \"{}\"\ndefault_target = \"{dst}\"\n{failure}\n[routes.rollout]\ncandidate = \"{}\"\n{rollout}",
        live.display(),
        candidate.display()
    )
}

fn start(group: &str, route: &str, token: &Path) -> RouterHandle {
    let config = switchyard_tests::router_config(
        group,
        &format!(
            "{route}\n[http]\nlisten = \"127.0.0.1:0\"\ncontrol_token_file = \"{}\"\n",
            token.display()
        ),
    )
    .unwrap();
    let engine = PluginEngine::new().unwrap();
    router::start(&config, &engine, Arc::new(LogFailures::default())).unwrap()
}

/// `/routes`' entry of the router's only route.
fn route_json(router: &RouterHandle) -> Value {
    let (code, body) = switchyard_tests::http_get(router.http_addr().unwrap(), "/routes").unwrap();
    assert_eq!(code, 200, "{body}");
    let mut all: Value = serde_json::from_str(&body).unwrap();
    all["routes"][0].take()
}

/// The actions of the rollout decisions so far, with who took them.
fn decisions(router: &RouterHandle) -> Vec<(String, String)> {
    router.routes()[0]
        .rollouts
        .decisions()
        .into_iter()
        .map(|d| (d.action.to_owned(), d.by.to_owned()))
        .collect()
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[test]
fn a_shadow_candidate_that_moves_one_tenant_shows_exactly_that_tenant_and_produces_nothing() {
    let (dir, token) = folder();
    let candidate = dir.path().join("candidate.wasm");
    std::fs::copy(switchyard_plugin_fixtures::tenant_moved(), &candidate).unwrap();
    let (src, dst, shadow) = (
        random_topic("shadow-in"),
        random_topic("shadow-out"),
        random_topic("shadow-diff"),
    );
    create_topics(&[(&src, 3), (&dst, 6), (&shadow, 1)]).unwrap();
    let group = random_topic("group");
    let router = start(
        &group,
        &rollout_route(
            &src,
            &dst,
            &switchyard_plugin_fixtures::tenant_partitioner(),
            r#"on_failure = "skip""#,
            &candidate,
            &format!(
                r#"mode = "shadow"
shadow_topic = "{shadow}"
"#
            ),
        ),
        &token,
    );
    let tenants = ["acme", "globex", "initech", "moved", "umbrella"];
    let records: Vec<TestRecord> = (0..300)
        .map(|i| {
            let tenant = tenants[i % tenants.len()];
            TestRecord::new(&format!("k{i}"), &format!("record {i}")).header("tenant-id", tenant)
        })
        .collect();
    produce(&src, &records).unwrap();

    // Every record routed once, by the live version: each tenant on its
    // partition, "moved" included; nothing else written.
    wait_until(WAIT, || {
        switchyard_tests::committed(&group, &src, 3)
            .unwrap()
            .values()
            .sum::<i64>()
            == 300
    })
    .unwrap();
    let written: i64 = switchyard_tests::end_offsets_on(switchyard_tests::broker(), &dst)
        .unwrap()
        .iter()
        .sum();
    assert_eq!(written, 300, "the candidate produced nothing");
    let out = consume(&dst, records.len(), WAIT).unwrap();
    for record in &out {
        let tenant = record.header_str("tenant-id").unwrap();
        assert_eq!(
            record.partition,
            Some((fnv1a_32(tenant.as_bytes()) % 6) as i32),
            "{tenant} routed by the live version"
        );
    }

    // The candidate saw them all and differs for "moved" alone.
    let route = router.routes()[0].clone();
    let counts = || {
        route
            .rollout()
            .and_then(|r| r.shadow_counts())
            .expect("a shadow candidate")
    };
    wait_until(WAIT, || counts().compared == 300).unwrap();
    let counts = counts();
    assert_eq!((counts.agreed, counts.differed), (240, 60), "{counts:?}");
    assert_eq!(counts.differences, BTreeMap::from([("partition", 60)]));
    assert_eq!((counts.candidate_failed, counts.live_failed), (0, 0));
    let shown = route_json(&router);
    assert_eq!(shown["rollout"]["candidate"]["mode"], "shadow", "{shown}");
    assert_eq!(shown["rollout"]["candidate"]["shadow"]["differed"], 60);

    // The samples: on the endpoint (the latest 20) and in the shadow topic.
    let addr = router.http_addr().unwrap();
    assert_eq!(
        switchyard_tests::http_get(addr, "/routes/r/shadow")
            .unwrap()
            .0,
        401,
        "record data needs the token"
    );
    let (code, body) = http_get_authorized(addr, "/routes/r/shadow", TOKEN).unwrap();
    assert_eq!(code, 200, "{body}");
    let samples: Value = serde_json::from_str(&body).unwrap();
    let samples = samples["samples"].as_array().unwrap().clone();
    assert_eq!(samples.len(), 20);
    let written = consume(&shadow, 60, WAIT).unwrap();
    assert_eq!(written.len(), 60);
    let written: Vec<Value> = written
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap())
        .chain(samples)
        .collect();
    let moved = (fnv1a_32(b"moved") % 6) as i64;
    for sample in &written {
        assert_eq!(
            sample["differs"],
            serde_json::json!(["partition"]),
            "{sample}"
        );
        let (live, candidate) = (
            &sample["live"]["outputs"][0],
            &sample["candidate"]["outputs"][0],
        );
        assert_eq!(live["headers"][0]["value"], "moved", "{sample}");
        assert_eq!(live["partition"], moved, "{sample}");
        assert_eq!(candidate["partition"], (moved + 1) % 6, "{sample}");
        assert_eq!(live["value"], candidate["value"], "{sample}");
    }

    // Promoted by the operator: the candidate routes from then on.
    let (code, body) = http_post(addr, "/routes/r/promote", Some(TOKEN)).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(route.rollout().is_none());
    assert_eq!(
        http_get_authorized(addr, "/routes/r/shadow", TOKEN)
            .unwrap()
            .0,
        409
    );
    produce(
        &src,
        &[TestRecord::new("k", "after").header("tenant-id", "moved")],
    )
    .unwrap();
    let out = consume(&dst, records.len() + 1, WAIT).unwrap();
    let last = out.iter().find(|r| r.value_str() == "after").unwrap();
    assert_eq!(last.partition, Some(((moved + 1) % 6) as i32));
    assert_eq!(
        decisions(&router),
        [
            ("started".to_owned(), "file".to_owned()),
            ("promoted".to_owned(), "operator".to_owned())
        ]
    );
    router.shutdown();
    router.join();
}

#[test]
fn a_canary_that_starts_trapping_is_rolled_back_and_every_record_lands_once_in_order() {
    let (dir, token) = folder();
    let (live, candidate) = plugins(
        dir.path(),
        &std::fs::read(switchyard_plugin_fixtures::misbehave()).unwrap(),
    );
    let (src, dst, dlq) = (
        random_topic("canary-in"),
        random_topic("canary-out"),
        random_topic("canary-dlq"),
    );
    create_topics(&[(&src, 6), (&dst, 6), (&dlq, 1)]).unwrap();
    let router = start(
        &random_topic("group"),
        &rollout_route(
            &src,
            &dst,
            &live,
            &format!(r#"dead_letter_topic = "{dlq}""#),
            &candidate,
            r#"canary_partitions = 2
min_records = 20
max_failure_rate_increase = 0.05
"#,
        ),
        &token,
    );
    let route = router.routes()[0].clone();
    let candidate_version = route.rollout().unwrap().candidate.version().to_owned();
    // Each record says its partition and place; each partition's records
    // share a key, so they stay together (and in order) in the target.
    let batch = |from: usize, to: usize, value: &str| -> Vec<TestRecord> {
        (0..6)
            .flat_map(|p| {
                (from..to).map(move |seq| {
                    TestRecord::new(&format!("p{p}"), value)
                        .header("case", value)
                        .header("seq", &format!("{p}:{seq}"))
                        .on_partition(p)
                })
            })
            .collect()
    };
    // Clean first: the canary routes partitions 0 and 1.
    produce(&src, &batch(0, 30, "ok")).unwrap();
    wait_until(WAIT, || route.stats.snapshot().routed == 180).unwrap();
    let figures = route.rollout().unwrap().figures(&route);
    assert_eq!((figures.candidate_records, figures.live_records), (60, 120));
    // Then it traps on every record: rolled back by the policy.
    produce(&src, &batch(30, 60, "trap")).unwrap();
    wait_until(WAIT, || route.rollout().is_none()).unwrap();
    assert_eq!(
        decisions(&router),
        [
            ("started".to_owned(), "file".to_owned()),
            ("rolled-back".to_owned(), "policy".to_owned())
        ]
    );
    assert!(route.rollouts.is_rejected(&sha256_of(&candidate)));
    // The live version routes everything after it.
    produce(&src, &batch(60, 70, "trap")).unwrap();

    let total = 6 * 70;
    wait_until(WAIT, || route.stats.snapshot().consumed == total as u64).unwrap();
    let dead_lettered = route.stats.snapshot().dead_lettered as usize;
    let out = consume(&dst, total - dead_lettered, WAIT).unwrap();
    let dead = consume(&dlq, dead_lettered, WAIT).unwrap();
    assert_eq!(out.len() + dead.len(), total, "every record once");
    assert!(!dead.is_empty(), "the canary's traps were dead-lettered");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for record in out.iter().chain(&dead) {
        *seen
            .entry(record.header_str("seq").unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), total, "no record lost");
    assert!(seen.values().all(|&n| n == 1), "no record twice");
    for record in &dead {
        let seq = record.header_str("seq").unwrap();
        let (p, n) = seq.split_once(':').unwrap();
        let n: usize = n.parse().unwrap();
        assert!(p == "0" || p == "1", "only the canary's partitions: {seq}");
        assert!((30..60).contains(&n), "only while it was tried: {seq}");
        assert_eq!(record.header_str("dlq-error-kind"), Some("trap"));
        assert_eq!(
            record.header_str("dlq-plugin-version"),
            Some(candidate_version.as_str())
        );
    }
    // Each partition's records in order in the target.
    let mut last: HashMap<String, usize> = HashMap::new();
    for record in &out {
        let seq = record.header_str("seq").unwrap();
        let (p, n) = seq.split_once(':').unwrap();
        let n: usize = n.parse().unwrap();
        if let Some(before) = last.insert(p.to_owned(), n) {
            assert!(before < n, "partition {p}: {before} then {n}");
        }
        // After the rollback only the live version (which tags) routes.
        if n >= 60 {
            assert_eq!(record.header_str("plugin-tag"), Some("v00000001"));
        }
    }
    router.shutdown();
    router.join();
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_clean_canary_is_widened_then_promoted_by_the_policy() {
    let (dir, token) = folder();
    let (live, candidate) = plugins(dir.path(), &versioned("v00000002"));
    let (src, dst) = (random_topic("promote-in"), random_topic("promote-out"));
    create_topics(&[(&src, 3), (&dst, 3)]).unwrap();
    let batch = |phase: &str| -> Vec<TestRecord> {
        (0..3)
            .flat_map(|p| {
                (0..40).map(move |i| {
                    TestRecord::new(&format!("p{p}"), &format!("{phase}{p}:{i}")).on_partition(p)
                })
            })
            .collect()
    };
    produce(&src, &batch("a")).unwrap();
    let router = start(
        &random_topic("group"),
        &rollout_route(
            &src,
            &dst,
            &live,
            r#"on_failure = "skip""#,
            &candidate,
            r#"canary_partitions = 1
step_partitions = 1
step_seconds = 1
promote_after_records = 150
min_records = 20
"#,
        ),
        &token,
    );
    let route = router.routes()[0].clone();
    let out = consume(&dst, 120, WAIT).unwrap();
    // Partition 0 was the canary's from the start.
    for record in out.iter().filter(|r| r.value_str().starts_with("a0:")) {
        assert_eq!(record.header_str("plugin-tag"), Some("v00000002"));
    }
    // Healthy: widened a partition a second, up to all three. It cannot
    // have taken 150 records yet (at most the 120 there are).
    wait_until(WAIT, || {
        route.rollout().and_then(|r| r.canary_partitions()) == Some(3)
    })
    .unwrap();
    // Every record from now on is the candidate's: promoted at 150.
    produce(&src, &batch("b")).unwrap();
    wait_until(WAIT, || route.rollout().is_none()).unwrap();
    let policy = |action: &str| (action.to_owned(), "policy".to_owned());
    assert_eq!(
        decisions(&router),
        [
            ("started".to_owned(), "file".to_owned()),
            policy("widened"),
            policy("widened"),
            policy("promoted")
        ]
    );
    assert_eq!(
        route.plugin().unwrap().sha256(),
        sha256_of(&candidate),
        "the candidate is the route's version"
    );
    let promoted = route.rollouts.decisions().last().unwrap().clone();
    assert!(promoted.figures.candidate_records >= 150, "{promoted:?}");
    assert_eq!(promoted.figures.candidate_failures, 0);
    let out = consume(&dst, 240, WAIT).unwrap();
    for record in out.iter().filter(|r| r.value_str().starts_with('b')) {
        assert_eq!(record.header_str("plugin-tag"), Some("v00000002"));
    }
    // The version it replaced can come back.
    assert_eq!(route.earlier_versions().len(), 1);
    let shown = route_json(&router);
    assert_eq!(shown["rollout"]["candidate"], Value::Null, "{shown}");
    assert_eq!(shown["rollout"]["decisions"].as_array().unwrap().len(), 4);
    router.shutdown();
    router.join();
}

#[test]
fn a_partition_the_candidate_held_is_released_to_the_live_version_when_the_canary_narrows() {
    let (dir, token) = folder();
    let (live, candidate) = plugins(
        dir.path(),
        &std::fs::read(switchyard_plugin_fixtures::misbehave()).unwrap(),
    );
    let (src, dst) = (random_topic("narrow-in"), random_topic("narrow-out"));
    create_topics(&[(&src, 2), (&dst, 1)]).unwrap();
    let router = start(
        &random_topic("group"),
        &rollout_route(
            &src,
            &dst,
            &live,
            r#"on_failure = "stop""#,
            &candidate,
            r#"canary_partitions = 2
auto_rollback = false
"#,
        ),
        &token,
    );
    let route = router.routes()[0].clone();
    // The candidate rejects it: partition 1 is held there.
    produce(&src, &[TestRecord::new("k", "reject").on_partition(1)]).unwrap();
    wait_until(WAIT, || !route.halted().is_empty()).unwrap();
    let held: Vec<(String, i32)> = route.halted().into_keys().collect();
    assert_eq!(held, [(src.clone(), 1)]);
    // Narrowed to partition 0: the live version routes the held record.
    let (code, body) = http_post(
        router.http_addr().unwrap(),
        "/routes/r/canary/1",
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let out = consume(&dst, 1, WAIT).unwrap();
    assert_eq!(out[0].value_str(), "reject");
    assert_eq!(out[0].header_str("plugin-tag"), Some("v00000001"));
    wait_until(WAIT, || route.halted().is_empty()).unwrap();
    router.shutdown();
    router.join();
}

#[test]
fn an_operator_widens_and_rolls_back_a_canary_and_a_rolled_back_candidate_waits_for_a_new_file() {
    let (dir, token) = folder();
    let (live, candidate) = plugins(dir.path(), &versioned("v00000002"));
    let (src, dst) = (random_topic("ctl-in"), random_topic("ctl-out"));
    create_topics(&[(&src, 4), (&dst, 4)]).unwrap();
    let router = start(
        &random_topic("group"),
        &rollout_route(&src, &dst, &live, r#"on_failure = "skip""#, &candidate, ""),
        &token,
    );
    let addr = router.http_addr().unwrap();
    let post = |path: &str| http_post(addr, path, Some(TOKEN)).unwrap();
    let route = router.routes()[0].clone();
    assert_eq!(route.rollout().unwrap().canary_partitions(), Some(1));
    assert_eq!(post("/routes/r/canary/x").0, 400);
    assert_eq!(post("/routes/r/canary/0").0, 409);
    let (code, body) = post("/routes/r/canary/3");
    assert_eq!(code, 200, "{body}");
    assert_eq!(route.rollout().unwrap().canary_partitions(), Some(3));
    // Partitions 0-2 are the candidate's, 3 the live version's.
    let records: Vec<TestRecord> = (0..4)
        .map(|p| {
            TestRecord::new("k", "first")
                .header("from", &p.to_string())
                .on_partition(p)
        })
        .collect();
    produce(&src, &records).unwrap();
    let out = consume(&dst, 4, WAIT).unwrap();
    let mut by_source: Vec<(String, String)> = out
        .iter()
        .map(|r| {
            (
                r.header_str("from").unwrap().to_owned(),
                r.header_str("plugin-tag").unwrap().to_owned(),
            )
        })
        .collect();
    by_source.sort();
    assert_eq!(
        by_source,
        [
            ("0".to_owned(), "v00000002".to_owned()),
            ("1".to_owned(), "v00000002".to_owned()),
            ("2".to_owned(), "v00000002".to_owned()),
            ("3".to_owned(), "v00000001".to_owned()),
        ]
    );
    // Rolled back: the live version takes every partition again.
    let (code, body) = post("/routes/r/rollback");
    assert_eq!(code, 200, "{body}");
    assert!(route.rollout().is_none());
    let records: Vec<TestRecord> = (0..4)
        .map(|p| {
            TestRecord::new("k", "second")
                .header("from", &p.to_string())
                .on_partition(p)
        })
        .collect();
    produce(&src, &records).unwrap();
    let out = consume(&dst, 8, WAIT).unwrap();
    for record in out.iter().filter(|r| r.value_str() == "second") {
        assert_eq!(record.header_str("plugin-tag"), Some("v00000001"));
    }
    // A new candidate file starts a new rollout.
    let next = dir.path().join(".next");
    std::fs::write(&next, versioned("v00000003")).unwrap();
    std::fs::rename(&next, &candidate).unwrap();
    wait_until(WAIT, || route.rollout().is_some()).unwrap();
    assert_eq!(
        route.rollout().unwrap().candidate.sha256(),
        sha256_of(&candidate)
    );
    // Its file removed: the rollout is withdrawn.
    std::fs::remove_file(&candidate).unwrap();
    wait_until(WAIT, || route.rollout().is_none()).unwrap();
    let actions: Vec<String> = decisions(&router).into_iter().map(|d| d.0).collect();
    assert_eq!(
        actions,
        ["started", "widened", "rolled-back", "started", "withdrawn"]
    );
    router.shutdown();
    router.join();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `count` records per partition of `topic`, valued `{phase}{partition}:{i}`.
fn phase(topic: &str, name: &str, count: usize) -> Vec<TestRecord> {
    let records: Vec<TestRecord> = (0..2)
        .flat_map(|p| {
            (0..count).map(move |i| {
                TestRecord::new(&format!("p{p}"), &format!("{name}{p}:{i}")).on_partition(p)
            })
        })
        .collect();
    produce(topic, &records).unwrap();
    records
}

#[test]
fn a_replay_from_a_timestamp_routes_exactly_the_records_after_it_into_its_topic_while_the_route_goes_on()
 {
    let (dir, token) = folder();
    let live = dir.path().join("live.wasm");
    std::fs::write(&live, versioned("v00000001")).unwrap();
    let (src, dst, replayed, again) = (
        random_topic("replay-in"),
        random_topic("replay-out"),
        random_topic("replayed"),
        random_topic("replayed-again"),
    );
    create_topics(&[(&src, 2), (&dst, 2), (&replayed, 2), (&again, 1)]).unwrap();
    let group = random_topic("group");
    let router = start(
        &group,
        &format!(
            r#"[[routes]]
name = "r"
source_topics = ["{src}"]
plugin = "{}"
default_target = "{dst}"
on_failure = "skip"
"#,
            live.display()
        ),
        &token,
    );
    let addr = router.http_addr().unwrap();
    let post = |path: &str| http_post(addr, path, Some(TOKEN)).unwrap();

    phase(&src, "a", 10);
    consume(&dst, 20, WAIT).unwrap();
    let at = now_ms();
    // Every record of the next phase is stamped after `at`.
    wait_until(WAIT, || now_ms() > at).unwrap();
    phase(&src, "b", 15);
    consume(&dst, 50, WAIT).unwrap();

    // Asked wrong: said why.
    let (code, body) = post(&format!("/routes/r/replay?to={replayed}"));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("from_offset=N or from_timestamp_ms=MS"),
        "{body}"
    );
    let (code, body) = post(&format!("/routes/r/replay?to={src}&from_offset=0"));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("is a source of route 'r'"), "{body}");
    assert_eq!(
        http_post(
            addr,
            &format!("/routes/r/replay?to={replayed}&from_offset=0"),
            None
        )
        .unwrap()
        .0,
        401
    );

    let (code, body) = post(&format!(
        "/routes/r/replay?to={replayed}&from_timestamp_ms={at}"
    ));
    assert_eq!(code, 200, "{body}");
    let replay = router.replays()[0].clone();
    // Once its end is set, the live route goes on meanwhile.
    wait_until(WAIT, || {
        replay.to_json()["partitions"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            || !replay.running()
    })
    .unwrap();
    phase(&src, "c", 5);
    wait_until(WAIT, || !replay.running()).unwrap();
    assert_eq!(
        replay.state(),
        switchyard::replay::State::Done,
        "{}",
        replay.to_json()
    );
    let out = consume(&replayed, 30, WAIT).unwrap();
    assert_eq!(out.len(), 30, "exactly the records after the timestamp");
    let mut next: HashMap<i32, usize> = HashMap::new();
    for record in &out {
        let value = record.value_str();
        let (p, i) = value
            .strip_prefix('b')
            .unwrap_or_else(|| panic!("{value} is not of phase b"))
            .split_once(':')
            .unwrap();
        let (p, i): (i32, usize) = (p.parse().unwrap(), i.parse().unwrap());
        let expected = next.entry(p).or_default();
        assert_eq!(i, *expected, "partition {p} in order");
        *expected += 1;
        assert_eq!(record.header_str("plugin-tag"), Some("v00000001"));
    }
    assert_eq!(next, HashMap::from([(0, 15), (1, 15)]));
    let shown: Value =
        serde_json::from_str(&switchyard_tests::http_get(addr, "/replays").unwrap().1).unwrap();
    let shown = &shown["replays"][0];
    assert_eq!(shown["status"]["state"], "done", "{shown}");
    assert_eq!(
        (shown["records"].as_u64(), shown["acknowledged"].as_u64()),
        (Some(30), Some(30))
    );

    // The live route routed everything, and its group's offsets are its
    // own: the replay committed nothing.
    consume(&dst, 60, WAIT).unwrap();
    wait_until(WAIT, || {
        switchyard_tests::committed(&group, &src, 2).unwrap() == HashMap::from([(0, 30), (1, 30)])
    })
    .unwrap();
    let replay_group = format!("{group}.replay-{}-{}", replay.id, std::process::id());
    assert!(
        switchyard_tests::committed(&replay_group, &src, 2)
            .unwrap()
            .is_empty()
    );

    // From an offset, one partition: offsets 12 to its end then (30).
    let (code, body) = post(&format!(
        "/routes/r/replay?to={again}&from_offset=12&partition=1"
    ));
    assert_eq!(code, 200, "{body}");
    let replay = router.replays()[1].clone();
    wait_until(WAIT, || !replay.running()).unwrap();
    assert_eq!(replay.state(), switchyard::replay::State::Done);
    let out = consume(&again, 18, WAIT).unwrap();
    let values: Vec<&str> = out.iter().map(TestRecord::value_str).collect();
    // Partition 1 holds a1:0-9 at offsets 0-9, b1:0-14 at 10-24, c1:0-4.
    let expected: Vec<String> = (2..15)
        .map(|i| format!("b1:{i}"))
        .chain((0..5).map(|i| format!("c1:{i}")))
        .collect();
    assert_eq!(values, expected);

    // Twice the start, or a negative one: refused before anything runs.
    for query in [
        format!("to={again}&from_offset=1&from_timestamp_ms=1"),
        format!("to={again}&from_offset=-1"),
    ] {
        let (code, body) = post(&format!("/routes/r/replay?{query}"));
        assert_eq!(code, 400, "{query}: {body}");
    }
    assert_eq!(router.replays().len(), 2);
    router.shutdown();
    router.join();
}

#[test]
fn a_cancelled_replay_stops_at_once_even_inside_a_plugin_call() {
    let (_dir, token) = folder();
    let (src, dst, replayed) = (
        random_topic("cancel-in"),
        random_topic("cancel-out"),
        random_topic("cancel-replayed"),
    );
    create_topics(&[(&src, 1), (&dst, 1), (&replayed, 1)]).unwrap();
    let router = start(
        &random_topic("group"),
        &format!(
            r#"[[routes]]
name = "r"
source_topics = ["{src}"]
plugin = "{}"
default_target = "{dst}"
on_failure = "skip"
[routes.limits]
route_timeout_ms = 600000
"#,
            switchyard_plugin_fixtures::misbehave().display()
        ),
        &token,
    );
    let addr = router.http_addr().unwrap();
    // The live route forwards the first record; the second never returns.
    produce(&src, &[TestRecord::new("k", "fine")]).unwrap();
    consume(&dst, 1, WAIT).unwrap();
    produce(&src, &[TestRecord::new("k", "loop")]).unwrap();
    let (code, body) = http_post(
        addr,
        &format!("/routes/r/replay?to={replayed}&from_offset=0"),
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let replay = router.replays()[0].clone();
    // In the call that never returns.
    wait_until(WAIT, || replay.to_json()["records"] == 2).unwrap();
    assert!(replay.running());
    let (code, body) =
        http_post(addr, &format!("/replays/{}/cancel", replay.id), Some(TOKEN)).unwrap();
    assert_eq!(code, 200, "{body}");
    wait_until(WAIT, || !replay.running()).unwrap();
    assert_eq!(replay.state(), switchyard::replay::State::Cancelled);
    assert_eq!(
        http_post(addr, &format!("/replays/{}/cancel", replay.id), Some(TOKEN))
            .unwrap()
            .0,
        409
    );
    router.shutdown();
    router.join();
}
