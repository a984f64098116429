//! `switchyard check` and `switchyard route` through the real binary, with
//! the example plugins built from `plugins/`.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard_plugin_fixtures as fixtures;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn switchyard(args: &[&str], stdin: impl AsRef<[u8]>) -> Run {
    run_switchyard(args, &[], stdin)
}

fn switchyard_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_switchyard(args, env, "")
}

fn run_switchyard(args: &[&str], env: &[(&str, &str)], stdin: impl AsRef<[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_ref())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The first 12 hex digits of the file's SHA-256 (a plugin's version),
/// computed here independently of the router.
fn sha256_prefix(path: &Path) -> String {
    let sha: String = Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sha[..12].to_owned()
}

fn check(plugin: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["check", plugin.to_str().unwrap()];
    args.extend_from_slice(extra);
    switchyard(&args, "")
}

/// Routes `input` lines and returns the parsed output lines.
fn route(plugin: &Path, extra: &[&str], input: &[Value]) -> Vec<Value> {
    let mut args = vec!["route", plugin.to_str().unwrap()];
    args.extend_from_slice(extra);
    let stdin: String = input.iter().map(|v| format!("{v}\n")).collect();
    let run = switchyard(&args, &stdin);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    lines(&run.stdout)
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[test]
fn check_accepts_every_example_plugin_and_prints_its_version() {
    let cases: [(&Path, &[&str]); 6] = [
        (&fixtures::hello(), &[]),
        (&fixtures::tenant_partitioner(), &[]),
        (
            &fixtures::envelope_router(),
            &["--config", "order.created=orders"],
        ),
        (&fixtures::redact(), &["--config", "fields=password"]),
        (&fixtures::fan_out(), &["--config", "topics=a,b"]),
        (
            &fixtures::filter(),
            &["-c", "field=status", "-c", "equals=paid"],
        ),
    ];
    for (plugin, config) in cases {
        let run = check(plugin, config);
        assert_eq!(run.code, 0, "{}: {}", plugin.display(), run.stderr);
        assert!(
            run.stdout
                .contains(&format!("version:  {}\n", sha256_prefix(plugin))),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("exports:  init(), route()"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("switchyard:plugin/types@0.3.1"),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn check_rejects_a_file_that_is_not_wasm() {
    let run = check(Path::new(env!("CARGO_MANIFEST_PATH")), &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("is not a WebAssembly file"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_rejects_a_missing_file_naming_it() {
    let run = check(Path::new("no/such/plugin.wasm"), &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("cannot read plugin 'no/such/plugin.wasm': No such file"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_refuses_a_device_a_fifo_or_a_folder_without_reading_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("plugin.wasm");
    // Nobody ever writes to it: reading it would wait forever.
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for (path, kind) in [
        (Path::new("/dev/zero"), "a character device"),
        (fifo.as_path(), "a FIFO"),
        (dir.path(), "a folder"),
    ] {
        let run = check(path, &[]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "'{}' is not a regular file ({kind}): a plugin is a .wasm file",
                path.display()
            )),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn check_refuses_a_file_over_the_size_limit_and_says_how_to_raise_it() {
    let run = switchyard_with_env(
        &["check", fixtures::large().to_str().unwrap()],
        &[("SWITCHYARD_MAX_PLUGIN_MIB", "1")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("is larger than 1048576 bytes, the most a plugin file may have (SWITCHYARD_MAX_PLUGIN_MIB raises it)"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_rejects_a_truncated_component() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.wasm");
    let bytes = std::fs::read(fixtures::hello()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let run = check(&truncated, &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("truncated.wasm' is not a valid component: "),
        "{}",
        run.stderr
    );
}

#[test]
fn check_rejects_a_core_module_and_says_how_to_build_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    // The smallest valid core module: magic and version 1.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let run = check(&core, &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("is a core WebAssembly module, not a component"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("wasm32-wasip2"), "{}", run.stderr);
}

#[test]
fn check_rejects_a_component_of_another_world() {
    let run = check(&fixtures::not_a_router(), &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("is not a Switchyard router plugin: "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("no export `init`"), "{}", run.stderr);
    assert!(
        run.stderr.contains("it exports: wasi:cli/run"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_reports_the_reason_of_a_plugin_that_refuses_its_config() {
    let run = check(&fixtures::misbehave(), &["--config", "refuse=no thanks"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("refused its configuration: no thanks"),
        "{}",
        run.stderr
    );

    let run = check(&fixtures::tenant_partitioner(), &["--config", "heder=x"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("unknown config key 'heder'"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_refuses_config_that_is_not_key_value() {
    let run = check(&fixtures::hello(), &["--config", "oops"]);
    assert_eq!(run.code, 2, "usage errors exit 2");
    assert!(
        run.stderr.contains("expected KEY=VALUE, got 'oops'"),
        "{}",
        run.stderr
    );
}

#[test]
fn tenant_partitioner_puts_each_tenant_where_fnv1a_says() {
    let tenants = [
        "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell",
    ];
    let input: Vec<Value> = tenants
        .iter()
        .map(|t| json!({"key": "order", "value": "{}", "headers": [["tenant-id", t]]}))
        .collect();
    let out = route(
        &fixtures::tenant_partitioner(),
        &["--partitions", "output=6"],
        &input,
    );
    assert_eq!(out.len(), tenants.len());
    for (line, tenant) in out.iter().zip(tenants) {
        let expected = fnv1a_32(tenant.as_bytes()) % 6;
        assert_eq!(
            line["outputs"][0]["partition"],
            json!(expected),
            "tenant {tenant}"
        );
        assert_eq!(
            line["outputs"][0]["headers"],
            json!([["tenant-id", tenant]])
        );
        assert_eq!(line["outputs"][0]["key"], json!("order"));
    }
    // Known vector, computed independently: FNV-1a-32("acme") = 0x45fd71af.
    assert_eq!(fnv1a_32(b"acme"), 0x45fd_71af);
    assert_eq!(out[0]["outputs"][0]["partition"], json!(1));
}

#[test]
fn tenant_partitioner_treats_an_empty_tenant_as_missing_and_a_missing_key_as_empty() {
    // What a producer balancing by tenant does: the tenant header unless it
    // is missing or empty, else the key, else the empty string.
    let input = [
        json!({"key": "acme", "value": "x"}),
        json!({"value": "x"}),
        json!({"key": "acme", "value": "x", "headers": [["org", "globex"]]}),
        json!({"key": "acme", "value": "x", "headers": [["org", ""]]}),
        json!({"value": "x", "headers": [["org", ""]]}),
    ];
    let args = ["-p", "output=6", "-p", "other=3", "-c", "header=org"];
    let out = route(&fixtures::tenant_partitioner(), &args, &input);
    let partition = |line: &Value| line["outputs"][0]["partition"].clone();
    assert_eq!(partition(&out[0]), json!(fnv1a_32(b"acme") % 6));
    assert_eq!(partition(&out[1]), json!(fnv1a_32(b"") % 6));
    assert_eq!(partition(&out[2]), json!(fnv1a_32(b"globex") % 6));
    assert_eq!(partition(&out[3]), json!(fnv1a_32(b"acme") % 6));
    assert_eq!(partition(&out[4]), json!(fnv1a_32(b"") % 6));
    // FNV-1a-32 of nothing is its offset basis.
    assert_eq!(fnv1a_32(b""), 0x811c_9dc5);

    let rejecting = route(
        &fixtures::tenant_partitioner(),
        &[&args[..], &["-c", "keyless=reject"]].concat(),
        &input,
    );
    assert_eq!(partition(&rejecting[0]), json!(fnv1a_32(b"acme") % 6));
    for line in [&rejecting[1], &rejecting[4]] {
        assert_eq!(
            line["error"],
            json!({"kind": "reject", "message": "record has no 'org' header and no key"})
        );
    }
}

#[test]
fn tenant_partitioner_without_a_partition_count_asks_for_a_retry() {
    let out = route(
        &fixtures::tenant_partitioner(),
        &["--target", "orders"],
        &[json!({"key": "k"})],
    );
    assert_eq!(
        out[0]["error"],
        json!({"kind": "retry", "message": "partition count of 'orders' is unknown"})
    );
}

#[test]
fn envelope_router_sends_each_type_to_its_topic_and_rejects_the_rest() {
    let envelope = |kind: &str| {
        json!({"type": kind, "version": 1, "timestamp": "2026-11-28T00:00:00Z", "payload": {"id": 1}})
            .to_string()
    };
    let input = [
        json!({"value": envelope("order.created")}),
        json!({"value": envelope("order.paid")}),
        json!({"value": envelope("order.lost")}),
        json!({"value": "{\"type\": \"order.paid\""}),
        json!({"value": ""}),
        json!({}),
    ];
    let out = route(
        &fixtures::envelope_router(),
        &[
            "-c",
            "order.created=orders.created",
            "-c",
            "order.paid=orders.paid",
            "--target",
            "orders.created",
            "--allow",
            "orders.*",
        ],
        &input,
    );
    assert_eq!(out[0]["outputs"][0]["topic"], json!("orders.created"));
    assert_eq!(
        out[0]["outputs"][0]["value"],
        json!(envelope("order.created"))
    );
    assert_eq!(out[1]["outputs"][0]["topic"], json!("orders.paid"));
    assert_eq!(
        out[2]["error"],
        json!({"kind": "reject", "message": "unknown envelope type 'order.lost'"})
    );
    let malformed = out[3]["error"]["message"].as_str().unwrap();
    assert!(
        malformed.starts_with("value is not valid JSON: EOF while parsing"),
        "{malformed}"
    );
    assert_eq!(out[4]["error"]["kind"], json!("reject"));
    assert_eq!(
        out[5]["error"],
        json!({"kind": "reject", "message": "value is null, expected JSON"})
    );
}

#[test]
fn redact_masks_configured_fields_and_counts_them_in_a_header() {
    let input = [
        json!({"value": r#"{"user":"ann","password":"hunter2","card":{"number":"4111","exp":"12/30"}}"#,
               "headers": [["source", "web"]]}),
        json!({"value": r#"{"user":"bob"}"#}),
        json!({"value": "not json"}),
    ];
    let out = route(
        &fixtures::redact(),
        &["-c", "fields=password,card.number"],
        &input,
    );
    assert_eq!(
        out[0]["outputs"][0]["value"],
        json!(r#"{"user":"ann","password":"***","card":{"number":"***","exp":"12/30"}}"#)
    );
    assert_eq!(
        out[0]["outputs"][0]["headers"],
        json!([["source", "web"], ["redacted-count", "2"]])
    );
    assert_eq!(out[1]["outputs"][0]["value"], json!(r#"{"user":"bob"}"#));
    assert_eq!(
        out[1]["outputs"][0]["headers"],
        json!([["redacted-count", "0"]])
    );
    assert_eq!(out[2]["error"]["kind"], json!("reject"));
}

#[test]
fn fan_out_copies_every_record_to_each_topic() {
    let input = [json!({"key": "k", "value": "v", "headers": [["h", "1"]]})];
    let out = route(
        &fixtures::fan_out(),
        &[
            "-c",
            "topics=audit,analytics,archive",
            "--allow",
            "output",
            "--allow",
            "a*",
        ],
        &input,
    );
    let outputs = out[0]["outputs"].as_array().unwrap();
    let topics: Vec<&str> = outputs
        .iter()
        .map(|o| o["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["audit", "analytics", "archive"]);
    for o in outputs {
        assert_eq!(
            (&o["key"], &o["value"], &o["headers"]),
            (&json!("k"), &json!("v"), &json!([["h", "1"]]))
        );
    }
}

#[test]
fn filter_keeps_matching_records_and_drops_the_others() {
    let input = [
        json!({"value": r#"{"status":"paid"}"#}),
        json!({"value": r#"{"status":"open"}"#}),
        json!({"value": r#"{"id":1}"#}),
        json!({"value": "paid"}),
    ];
    let out = route(
        &fixtures::filter(),
        &["-c", "field=status", "-c", "equals=paid"],
        &input,
    );
    assert_eq!(out[0]["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(out[1]["outputs"], json!([]));
    assert_eq!(out[2]["outputs"], json!([]));
    assert_eq!(out[3]["error"]["kind"], json!("reject"));
}

#[test]
fn a_trapping_plugin_gives_a_trap_line_and_routing_goes_on() {
    let input = [
        json!({"value": "a"}),
        json!({"value": "panic"}),
        json!({"value": "trap"}),
        json!({"value": "b"}),
    ];
    let out = route(&fixtures::misbehave(), &[], &input);
    assert_eq!(out.len(), 4);
    assert_eq!(out[0]["outputs"][0]["value"], json!("a"));
    assert_eq!(out[1]["offset"], json!(2));
    assert_eq!(out[1]["error"]["kind"], json!("trap"));
    let message = out[1]["error"]["message"].as_str().unwrap();
    assert!(message.contains("asked to panic at offset 2"), "{message}");
    assert_eq!(out[2]["error"]["kind"], json!("trap"));
    assert!(
        out[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
    assert_eq!(out[3]["outputs"][0]["value"], json!("b"));
}

#[test]
fn an_output_partition_out_of_range_is_reported_as_invalid() {
    let out = route(
        &fixtures::misbehave(),
        &["-p", "output=6"],
        &[json!({"value": "bad-partition"})],
    );
    assert_eq!(
        out[0]["error"],
        json!({"kind": "invalid-output", "message": "output 0: partition 9999 is out of range for topic 'output' (6 partitions)"})
    );
}

#[test]
fn a_malformed_line_is_reported_with_its_number_and_the_rest_is_routed() {
    let stdin = "{\"value\":\"a\"}\nnot json\n\n{\"value\":\"b\",\"vlaue\":1}\n{\"value\":\"c\"}\n";
    let run = switchyard(&["route", fixtures::hello().to_str().unwrap()], stdin);
    assert_eq!(run.code, 1, "malformed input makes the run fail at the end");
    let out = lines(&run.stdout);
    assert_eq!(out.len(), 4);
    assert_eq!(out[0]["outputs"][0]["value"], json!("a"));
    assert_eq!(out[1]["line"], json!(2));
    assert!(
        out[1]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 2: expected")
    );
    assert_eq!(out[2]["line"], json!(4));
    assert!(
        out[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `vlaue`")
    );
    assert_eq!(
        out[3]["offset"],
        json!(5),
        "offset defaults to the line number"
    );
    assert!(
        run.stderr
            .contains("2 input line(s) were not valid records"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_line_that_is_not_utf8_is_an_input_error_and_the_rest_is_routed() {
    let mut stdin = b"{\"value\":\"a\"}\n{\"value\":\"".to_vec();
    stdin.extend_from_slice(&[0xff, 0xfe]);
    stdin.extend_from_slice(b"\"}\n{\"value\":\"b\"}\n");
    let run = switchyard(&["route", fixtures::hello().to_str().unwrap()], stdin);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let out = lines(&run.stdout);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["outputs"][0]["value"], json!("a"));
    assert_eq!(out[1]["line"], json!(2));
    assert_eq!(out[1]["error"]["kind"], json!("input"));
    let message = out[1]["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("line 2 is not UTF-8"), "{message}");
    assert_eq!(out[2]["outputs"][0]["value"], json!("b"));
}

#[test]
fn route_refuses_the_outputs_run_refuses_with_the_same_reasons() {
    // The same cases, and the same reasons, as the hostile end-to-end test
    // asserts of `switchyard run` (tests/tests/hostile.rs).
    let input = [
        json!({"value": "exact-limit"}),
        json!({"value": "bad-topic"}),
        json!({"value": "bad-partition"}),
        json!({"value": "empty-headers:170000"}),
        json!({"value": "fine"}),
    ];
    let out = route(&fixtures::hostile(), &["-p", "output=3"], &input);
    let refused = |i: usize, reason: &str| {
        assert_eq!(
            out[i]["error"]["kind"],
            json!("invalid-output"),
            "{}",
            out[i]
        );
        let message = out[i]["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{message}");
    };
    refused(
        0,
        "output 0: 1000036 bytes with its headers and framing: the route's limit (limits.max_output_bytes) is 1000000",
    );
    refused(
        1,
        "output 0: topic 'forbidden' is not an allowed target of route 'offline'",
    );
    refused(
        2,
        "output 0: partition 9999 is out of range for topic 'output' (3 partitions)",
    );
    refused(
        3,
        "output 0: 170000 headers: consumers built on librdkafka (Switchyard among them) read no headers of a record with more than 100000",
    );
    assert_eq!(out[4]["outputs"][0]["value"], json!("fine"));
}

#[test]
fn binary_keys_values_and_headers_round_trip_as_base64() {
    let input = [
        json!({"key_b64": "AP8=", "value_b64": "gA==", "headers": [["bin", {"b64": "/w=="}]],
                        "topic": "in", "partition": 3, "offset": 77, "timestamp_ms": 1700000000000_i64}),
    ];
    let out = route(&fixtures::hello(), &[], &input);
    let o = &out[0]["outputs"][0];
    assert_eq!(out[0]["offset"], json!(77));
    assert_eq!(
        (&o["key_b64"], &o["value_b64"]),
        (&json!("AP8="), &json!("gA=="))
    );
    assert_eq!(o["headers"], json!([["bin", {"b64": "/w=="}]]));
    assert_eq!(o["timestamp_ms"], json!(1700000000000_i64));
}

#[test]
fn plugin_logs_and_output_reach_the_router_log_tagged_with_the_plugin() {
    let run = switchyard(
        &["route", fixtures::misbehave().to_str().unwrap()],
        "{\"value\":\"log\"}\n",
    );
    assert_eq!(run.code, 0);
    for line in [
        "log line from the plugin",
        "stdout line from the plugin",
        "stderr line from the plugin",
    ] {
        let logged = run
            .stderr
            .lines()
            .find(|l| l.contains(line))
            .unwrap_or_else(|| panic!("{line} not in {}", run.stderr));
        assert!(logged.contains("plugin=\"misbehave\""), "{logged}");
        assert!(logged.contains("route=\"offline\""), "{logged}");
    }
}

#[test]
fn json_logs_are_one_object_per_line_and_plugin_lines_carry_route_and_version() {
    let plugin = fixtures::misbehave();
    let version = sha256_prefix(&plugin);
    let run = switchyard(
        &["--log-format", "json", "route", plugin.to_str().unwrap()],
        "{\"value\":\"log\"}\n",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let logged = lines
        .iter()
        .find(|l| l["message"] == "log line from the plugin")
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert_eq!(logged["level"], "WARN");
    assert_eq!(logged["route"], "offline");
    assert_eq!(logged["plugin"], "misbehave");
    assert_eq!(logged["version"], version);
    assert!(lines.iter().any(|l| l["message"] == "route finished"));
}

#[test]
fn the_demo_routes_its_workload_swaps_a_plugin_and_accounts_for_every_record() {
    let run = switchyard(&["demo", "--plugins-dir", fixtures::DIR], "");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains("Hot swap of route 'orders' (no restart, nothing lost):"),
        "{out}"
    );
    assert!(out.contains("routed orders 0..1500"), "{out}");
    assert!(
        out.contains("(a new build of the same plugin) routed orders 1500..3000"),
        "{out}"
    );
    assert_eq!(
        out.matches("(all orders on one partition)").count(),
        5,
        "{out}"
    );
    assert!(!out.contains("SPLIT"), "{out}");
    assert!(
        out.contains("150 x reject: unknown envelope type 'order.refunded'"),
        "{out}"
    );
    assert!(out.contains("    dlq-original-topic: events\n"), "{out}");
    assert!(out.contains("    dlq-error-kind: reject\n"), "{out}");
    assert!(out.contains("Routed 3450 records"), "{out}");
}

#[test]
fn health_says_which_router_it_cannot_reach() {
    // Port 1 on loopback: nothing listens there.
    let run = switchyard(&["health", "--addr", "127.0.0.1:1"], "");
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .starts_with("error: cannot reach the router at 127.0.0.1:1: "),
        "{}",
        run.stderr
    );
}

#[test]
fn a_plugin_built_for_contract_0_3_0_loads_and_routes_unchanged() {
    // The tenant partitioner as built by the SDK of contract 0.3.0, before
    // 0.3.1 added the schema functions.
    let old = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/old-contract/tenant-partitioner-0.3.0.wasm");
    let run = check(&old, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("switchyard:plugin/types@0.3.0"),
        "{}",
        run.stdout
    );
    let input = json!({"key": "order", "value": "{}", "headers": [["tenant-id", "acme"]]});
    let out = route(&old, &["--partitions", "output=6"], &[input]);
    assert_eq!(out[0]["outputs"][0]["partition"], json!(1), "{out:?}");
}

#[test]
fn a_plugin_built_for_an_older_contract_is_refused_with_both_versions() {
    // The hello example as built by the SDK of contract 0.1.0.
    let old = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/old-contract/hello-0.1.0.wasm");
    let run = check(&old, &[]);
    assert_eq!(run.code, 1, "stdout: {}", run.stdout);
    assert!(
        run.stderr.contains("hello-0.1.0.wasm")
            && run.stderr.contains(
                "it was built for contract 0.1.0 and this router speaks 0.3.1: rebuild it with this release's switchyard-sdk"
            ),
        "{}",
        run.stderr
    );
}

#[test]
fn ctl_sends_the_action_with_the_token_and_says_what_the_router_answered() {
    use std::io::{BufRead as _, BufReader};
    // A stand-in for the router's endpoint: answers one request, and hands
    // back what it was asked.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let mut stream = reader.into_inner();
        let body = r#"{"route":"orders","paused":true,"changed":true}"#;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        head
    });
    let run = switchyard_with_env(
        &["ctl", "--addr", &addr, "pause", "orders"],
        &[("SWITCHYARD_CONTROL_TOKEN", "a-token-of-sixteen-bytes")],
    );
    let head = server.join().unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(head[0], "POST /routes/orders/pause HTTP/1.1");
    assert!(
        head.contains(&"Authorization: Bearer a-token-of-sixteen-bytes".to_owned()),
        "{head:?}"
    );
    assert_eq!(
        run.stdout.trim(),
        r#"{"route":"orders","paused":true,"changed":true}"#
    );
}

#[test]
fn ctl_says_which_token_is_missing_and_which_router_it_cannot_reach() {
    let run = switchyard_with_env(
        &[
            "ctl",
            "--token-env",
            "SWITCHYARD_TEST_NO_SUCH_TOKEN",
            "resume",
            "orders",
        ],
        &[],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("the environment variable 'SWITCHYARD_TEST_NO_SUCH_TOKEN' (the router's control token) is not set"),
        "{}",
        run.stderr
    );
    // A port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let run = switchyard_with_env(
        &["ctl", "--addr", &addr, "resume", "orders"],
        &[("SWITCHYARD_CONTROL_TOKEN", "a-token-of-sixteen-bytes")],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains(&format!("cannot reach the router at {addr}")),
        "{}",
        run.stderr
    );
}
