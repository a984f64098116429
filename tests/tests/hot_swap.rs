//! Hot swap on the real broker: the plugin file is replaced in every way
//! files really change while records flow; nothing is lost, duplicated or
//! reordered, and versions change only at record boundaries, in file order.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code"
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use switchyard::pipeline::LogFailures;
use switchyard::plugin::PluginEngine;
use switchyard::router::{self, RouterHandle};
use switchyard_tests::{TestRecord, consume, create_topics, produce, random_topic, wait_until};

const PARTITIONS: i32 = 4;
const MIN_RECORDS: usize = 50_000;
const ROUNDS: usize = 10;

/// The versioned fixture with `tag` (9 bytes) patched into its data.
fn version(tag: &str) -> Vec<u8> {
    switchyard_tests::versioned_plugin(tag)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn current_sha(router: &RouterHandle) -> String {
    router.routes()[0].plugin().unwrap().sha256().to_owned()
}

/// How a new version reaches the plugin's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    Overwrite,
    RenameIntoPlace,
    DeleteThenCreate,
    Burst,
    HalfWritten,
    SymlinkSwap,
    ConfigMapUpdate,
}

const METHODS: [Method; 8] = [
    Method::Overwrite,
    Method::RenameIntoPlace,
    Method::DeleteThenCreate,
    Method::Burst,
    Method::HalfWritten,
    Method::SymlinkSwap,
    // Twice: the first after another method links the name into `..data`
    // again; the second is the kubelet's usual update, `..data` alone.
    Method::ConfigMapUpdate,
    Method::ConfigMapUpdate,
];

fn install(dir: &Path, path: &Path, method: Method, wasm: &[u8], n: usize) {
    let tmp = dir.join(format!(".tmp-{n}"));
    match method {
        Method::Overwrite => std::fs::write(path, wasm).unwrap(),
        Method::RenameIntoPlace => {
            std::fs::write(&tmp, wasm).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        Method::DeleteThenCreate => {
            std::fs::remove_file(path).unwrap();
            std::fs::write(path, wasm).unwrap();
        }
        Method::Burst => {
            for _ in 0..3 {
                std::fs::write(path, wasm).unwrap();
            }
        }
        Method::HalfWritten => {
            use std::io::Write;
            let mut file = std::fs::File::create(path).unwrap();
            file.write_all(&wasm[..wasm.len() / 2]).unwrap();
            file.flush().unwrap();
            file.write_all(&wasm[wasm.len() / 2..]).unwrap();
        }
        Method::SymlinkSwap => {
            // Like a Kubernetes ConfigMap: the path is a symlink, replaced
            // atomically by a new symlink to a new file.
            let target = dir.join(format!("versions/v{n}.wasm"));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, wasm).unwrap();
            std::os::unix::fs::symlink(&target, &tmp).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        Method::ConfigMapUpdate => {
            // What the kubelet does to a ConfigMap volume: the files live
            // in a timestamped folder that `..data` links to, and each name
            // links into `..data`. An update writes a new folder, points
            // `..data_tmp` at it, renames that over `..data`, then removes
            // the old folder (relative links, as the kubelet makes them).
            use std::os::unix::fs::symlink;
            let name = path.file_name().unwrap();
            let folder = format!("..2026_12_03_10_00_00.{n:09}");
            std::fs::create_dir(dir.join(&folder)).unwrap();
            std::fs::write(dir.join(&folder).join(name), wasm).unwrap();
            let data = dir.join("..data");
            let old = std::fs::read_link(&data).ok();
            symlink(&folder, dir.join("..data_tmp")).unwrap();
            std::fs::rename(dir.join("..data_tmp"), &data).unwrap();
            let visible = Path::new("..data").join(name);
            if std::fs::read_link(path).ok().as_deref() != Some(visible.as_path()) {
                symlink(&visible, &tmp).unwrap();
                std::fs::rename(&tmp, path).unwrap();
            }
            if let Some(old) = old {
                std::fs::remove_dir_all(dir.join(old)).unwrap();
            }
        }
    }
}

#[test]
fn plugin_swaps_by_every_method_lose_and_reorder_nothing() {
    let (src, dst) = (random_topic("swap-src"), random_topic("swap-dst"));
    create_topics(&[(&src, PARTITIONS), (&dst, PARTITIONS)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("router.wasm");
    std::fs::write(&plugin, version("v00000000")).unwrap();
    let config = switchyard_tests::router_config(
        &random_topic("group"),
        &format!(
            "[[routes]]\nname = \"swap\"\nsource_topics = [\"{src}\"]\nplugin = \"{}\"\ndefault_target = \"{dst}\"\non_failure = \"skip\"\n",
            plugin.display()
        ),
    )
    .unwrap();
    let engine = PluginEngine::new().unwrap();
    let router = router::start(&config, &engine, Arc::new(LogFailures::default())).unwrap();

    // Records flow the whole time: batches until the swaps are done and at
    // least MIN_RECORDS were written. The key pins each source partition's
    // records to one output partition, so their order is observable.
    let swapping = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicUsize::new(0));
    let producer = std::thread::spawn({
        let (swapping, written, src) = (swapping.clone(), written.clone(), src.clone());
        move || {
            let mut n = 0usize;
            while swapping.load(Ordering::Acquire) || n < MIN_RECORDS {
                let batch: Vec<TestRecord> = (n..n + 500)
                    .map(|i| {
                        let p = (i % PARTITIONS as usize) as i32;
                        TestRecord::new(&format!("p{p}"), &i.to_string())
                            .header("seq", &format!("{p}:{:08}", i))
                            .on_partition(p)
                    })
                    .collect();
                produce(&src, &batch).unwrap();
                n += batch.len();
                written.store(n, Ordering::Release);
            }
            n
        }
    });

    let mut order = vec!["v00000000".to_owned()];
    let mut latencies = Vec::new();
    let stats = || router.reload_stats().unwrap();
    for round in 0..ROUNDS {
        for (m, method) in METHODS.iter().enumerate() {
            let n = round * METHODS.len() + m + 1;
            let tag = format!("v{n:08}");
            let wasm = version(&tag);
            let expected = sha256(&wasm);
            let start = Instant::now();
            install(dir.path(), &plugin, *method, &wasm, n);
            wait_until(Duration::from_secs(60), || current_sha(&router) == expected)
                .unwrap_or_else(|_| panic!("{method:?} to {tag} was not picked up"));
            latencies.push((start.elapsed(), *method));
            order.push(tag);
        }
        // A corrupt file and a plugin whose init fails are refused; the
        // last good version keeps routing.
        let before = current_sha(&router);
        for (bad, what) in [
            (b"\0asm\x0d\0\x01\0garbage".to_vec(), "corrupt"),
            (version("initfail1"), "init fails"),
        ] {
            let failures = stats().failures.load(Ordering::Acquire);
            install(
                dir.path(),
                &plugin,
                Method::RenameIntoPlace,
                &bad,
                10_000 + round,
            );
            wait_until(Duration::from_secs(60), || {
                stats().failures.load(Ordering::Acquire) > failures
            })
            .unwrap_or_else(|_| panic!("{what} file was not refused"));
            assert_eq!(current_sha(&router), before, "{what} file swapped in");
        }
        // Deleting the file keeps the last good version too.
        if round == 0 {
            let unreadable = stats().unreadable.load(Ordering::Acquire);
            std::fs::remove_file(&plugin).unwrap();
            wait_until(Duration::from_secs(60), || {
                stats().unreadable.load(Ordering::Acquire) > unreadable
            })
            .unwrap();
            assert_eq!(
                current_sha(&router),
                before,
                "deleting the file unloaded the plugin"
            );
            std::fs::write(&plugin, version(order.last().unwrap())).unwrap();
        }
    }
    swapping.store(false, Ordering::Release);
    let total = producer.join().unwrap();
    let outputs = consume(&dst, total, Duration::from_secs(180)).unwrap();
    drop(router);

    assert_eq!(outputs.len(), total, "every record exactly once");
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut last: HashMap<String, (String, usize)> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for out in &outputs {
        let seq = out.header_str("seq").unwrap().to_owned();
        assert!(seen.insert(seq.clone()), "duplicate {seq}");
        let tag = out.header_str("plugin-tag").unwrap();
        let r = *rank
            .get(tag)
            .unwrap_or_else(|| panic!("record {seq} routed by unknown version {tag}"));
        let (partition, _) = seq.split_once(':').unwrap();
        if let Some((prev_seq, prev_rank)) = last.get(partition) {
            assert!(*prev_seq < seq, "{seq} after {prev_seq}: reordered");
            assert!(
                *prev_rank <= r,
                "{seq}: version {tag} after a later version"
            );
        }
        last.insert(partition.to_owned(), (seq, r));
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2].0;
    let worst = latencies.last().unwrap();
    println!(
        "{} swaps, {} records: file written -> new version routing: median {median:?}, worst {:?} ({:?})",
        latencies.len(),
        total,
        worst.0,
        worst.1
    );
}

/// `GET path` on `addr`; the response body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = switchyard_tests::http_get(addr, path).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_routes_endpoint_shows_the_plugin_version_routing_now() {
    let (src, dst) = (random_topic("ep-src"), random_topic("ep-dst"));
    create_topics(&[(&src, 1), (&dst, 1)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("router.wasm");
    let first = version("v00000000");
    std::fs::write(&plugin, &first).unwrap();
    let config = switchyard_tests::router_config(
        &random_topic("group"),
        &format!(
            "[[routes]]\nname = \"ep\"\nsource_topics = [\"{src}\"]\nplugin = \"{}\"\ndefault_target = \"{dst}\"\non_failure = \"skip\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
            plugin.display()
        ),
    )
    .unwrap();
    let engine = PluginEngine::new().unwrap();
    let router = router::start(&config, &engine, Arc::new(LogFailures::default())).unwrap();
    let addr = router.http_addr().unwrap();

    let shown = http_get(addr, "/routes");
    let route = &shown["routes"][0];
    assert_eq!(route["name"], "ep");
    assert_eq!(route["source_topics"], serde_json::json!([src]));
    assert_eq!(route["plugin"]["sha256"], sha256(&first));
    assert_eq!(route["plugin"]["version"], sha256(&first)[..12]);
    assert_eq!(route["plugin"]["file"], plugin.display().to_string());
    assert_eq!(shown["reload"]["swaps"], 0);

    let second = version("v00000001");
    std::fs::write(dir.path().join("next"), &second).unwrap();
    std::fs::rename(dir.path().join("next"), &plugin).unwrap();
    wait_until(Duration::from_secs(60), || {
        http_get(addr, "/routes")["routes"][0]["plugin"]["sha256"] == sha256(&second)
    })
    .unwrap();
    let shown = http_get(addr, "/routes");
    assert_eq!(shown["reload"]["swaps"], 1);
    assert!(
        shown["routes"][0]["plugin"]["loaded_at_ms"]
            .as_u64()
            .unwrap()
            > 1_700_000_000_000
    );
}

#[test]
fn a_plugin_file_that_hangs_or_is_not_a_file_delays_no_other_routes_swap() {
    let t = |p: &str| random_topic(&format!("hang-{p}"));
    let (a_src, a_dst, b_src, b_dst) = (t("a-src"), t("a-dst"), t("b-src"), t("b-dst"));
    create_topics(&[(&a_src, 1), (&a_dst, 1), (&b_src, 1), (&b_dst, 1)]).unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (plugin_a, plugin_b) = (dir_a.path().join("a.wasm"), dir_b.path().join("b.wasm"));
    std::fs::write(&plugin_a, version("v00000000")).unwrap();
    std::fs::write(&plugin_b, version("v00000000")).unwrap();
    let route = |name: &str, src: &str, dst: &str, plugin: &Path, extra: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\nsource_topics = [\"{src}\"]\nplugin = \"{}\"\ndefault_target = \"{dst}\"\non_failure = \"skip\"\n{extra}\n",
            plugin.display()
        )
    };
    let config = switchyard_tests::router_config(
        &random_topic("group"),
        &[
            route(
                "a",
                &a_src,
                &a_dst,
                &plugin_a,
                "[routes.limits]\ninit_timeout_ms = 10000",
            ),
            route("b", &b_src, &b_dst, &plugin_b, ""),
        ]
        .concat(),
    )
    .unwrap();
    let engine = PluginEngine::new().unwrap();
    let router = router::start(&config, &engine, Arc::new(LogFailures::default())).unwrap();
    let stats = router.reload_stats().unwrap();
    let sha_of = |name: &str| {
        let route = router.routes().iter().find(|r| r.name() == name).unwrap();
        route.plugin().unwrap().sha256().to_owned()
    };
    let first = sha_of("a");

    // A FIFO nobody writes to, then a device, at route a's path: refused
    // without reading from them; the loaded version stays.
    for (n, make) in ["fifo", "device"].iter().enumerate() {
        let unreadable = stats.unreadable.load(Ordering::Acquire);
        std::fs::remove_file(&plugin_a).unwrap();
        if *make == "fifo" {
            let made = std::process::Command::new("mkfifo")
                .arg(&plugin_a)
                .status()
                .unwrap();
            assert!(made.success());
        } else {
            std::os::unix::fs::symlink("/dev/zero", &plugin_a).unwrap();
        }
        wait_until(Duration::from_secs(60), || {
            stats.unreadable.load(Ordering::Acquire) > unreadable
        })
        .unwrap_or_else(|_| panic!("case {n}: a {make} at the plugin path was not refused"));
        assert_eq!(sha_of("a"), first, "a {make} replaced the plugin");
    }

    // A version of a whose init sleeps holds a's check for its init time;
    // b's new version swaps in meanwhile.
    let failures = stats.failures.load(Ordering::Acquire);
    std::fs::remove_file(&plugin_a).unwrap();
    install(
        dir_a.path(),
        &plugin_a,
        Method::RenameIntoPlace,
        &version("initsleep"),
        1,
    );
    let next = version("v00000001");
    install(dir_b.path(), &plugin_b, Method::RenameIntoPlace, &next, 2);
    wait_until(Duration::from_secs(60), || sha_of("b") == sha256(&next)).unwrap();
    assert_eq!(
        stats.failures.load(Ordering::Acquire),
        failures,
        "b swapped only after a's check ended"
    );
    wait_until(Duration::from_secs(60), || {
        stats.failures.load(Ordering::Acquire) > failures
    })
    .expect("the sleeping init was not refused");
    assert_eq!(sha_of("a"), first, "the sleeping version swapped in");
}

#[test]
fn an_operator_rolls_back_to_an_earlier_version_without_touching_the_file() {
    const TOKEN: &str = "rollback-test-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let token_file = switchyard_tests::control_token_file(dir.path(), TOKEN);
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let plugin = plugins.join("rules.wasm");
    let (v1, v2, v3) = (
        version("v00000001"),
        version("v00000002"),
        version("v00000003"),
    );
    std::fs::write(&plugin, &v1).unwrap();
    let (src, dst) = (random_topic("rollback-in"), random_topic("rollback-out"));
    create_topics(&[(&src, 1), (&dst, 1)]).unwrap();
    let config = switchyard_tests::router_config(
        &random_topic("group"),
        &format!(
            "[[routes]]\nname = \"r\"\nsource_topics = [\"{src}\"]\nplugin = \"{}\"\ndefault_target = \"{dst}\"\non_failure = \"skip\"\n[http]\nlisten = \"127.0.0.1:0\"\ncontrol_token_file = \"{}\"\n",
            plugin.display(),
            token_file.display()
        ),
    )
    .unwrap();
    let engine = PluginEngine::new().unwrap();
    let router = router::start(&config, &engine, Arc::new(LogFailures::default())).unwrap();
    let addr = router.http_addr().unwrap();
    let post = |path: &str| switchyard_tests::http_post(addr, path, Some(TOKEN)).unwrap();
    let short = |bytes: &[u8]| sha256(bytes)[..12].to_owned();

    // Nothing to return to yet.
    assert_eq!(post("/routes/r/rollback").0, 409);

    let next = plugins.join(".next");
    std::fs::write(&next, &v2).unwrap();
    std::fs::rename(&next, &plugin).unwrap();
    wait_until(Duration::from_secs(60), || {
        current_sha(&router) == sha256(&v2)
    })
    .unwrap();

    // Back to v1, from memory: the file still holds v2.
    let (code, body) = post("/routes/r/rollback");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&format!("\"to\":\"{}\"", short(&v1))),
        "{body}"
    );
    assert_eq!(current_sha(&router), sha256(&v1));
    assert_eq!(router.routes()[0].rolled_back_from(), Some(sha256(&v2)));
    produce(&src, &[TestRecord::new("k", "after the rollback")]).unwrap();
    let out = consume(&dst, 1, Duration::from_secs(60)).unwrap();
    assert_eq!(out[0].header_str("plugin-tag"), Some("v00000001"));

    // A version it never ran is refused, naming what it kept.
    let (code, body) = post("/routes/r/rollback/0123456789ab");
    assert_eq!(code, 409);
    assert!(
        body.contains("no earlier version '0123456789ab' kept"),
        "{body}"
    );
    // By name: v2 routed before v1 came back.
    let (code, body) = post(&format!("/routes/r/rollback/{}", short(&v2)));
    assert_eq!(code, 200, "{body}");
    assert_eq!(current_sha(&router), sha256(&v2));

    // A new file is swapped in as always.
    std::fs::write(&next, &v3).unwrap();
    std::fs::rename(&next, &plugin).unwrap();
    wait_until(Duration::from_secs(60), || {
        current_sha(&router) == sha256(&v3)
    })
    .unwrap();
    assert_eq!(router.routes()[0].rolled_back_from(), None);
    assert_eq!(
        router.routes()[0].earlier_versions(),
        [short(&v1), short(&v2)]
    );
    router.shutdown();
    router.join();
}
