//! The conformance suite: every language's version of each example plugin
//! (Rust, Python, TypeScript) routes the cases of
//! `tests/conformance/<plugin>.jsonl` through `switchyard route`, and all
//! must answer exactly what the case expects, so they answer identically.
//!
//! A case is one JSON line: `case` (its name), `config` (the plugin's
//! configuration), `args` (more `switchyard route` arguments: partition
//! counts, target, allowed targets), `input` (one record, as `switchyard
//! route` reads it) and `expect`: the line `switchyard route` prints for
//! it without its `offset` (`{"outputs": [...]}` or `{"error": {"kind",
//! "message"}}`; `message_prefix` instead of `message` where the words
//! are the language's own, as a JSON parser's), or `{"refused": "..."}`
//! for a configuration the plugin refuses (the message must be in the
//! error `switchyard route` exits with).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value};
use switchyard_plugin_fixtures as fixtures;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    case: String,
    #[serde(default)]
    config: Map<String, Value>,
    #[serde(default)]
    args: Vec<String>,
    input: Option<Value>,
    expect: Value,
}

fn cases(plugin: &str) -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/conformance")
        .join(format!("{plugin}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap();
    let cases: Vec<Case> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect();
    assert!(cases.len() >= 10, "{}: too few cases", path.display());
    cases
}

/// `switchyard route` for the cases that share a configuration: their
/// inputs in, one line per input out, or the refusal on stderr.
fn route(component: &Path, cases: &[&Case]) -> Result<Vec<Value>, String> {
    let first = cases[0];
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command.arg("route").arg(component);
    for (key, value) in &first.config {
        command
            .arg("--config")
            .arg(format!("{key}={}", value.as_str().unwrap()));
    }
    command.args(&first.args);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for case in cases {
        if let Some(input) = &case.input {
            writeln!(stdin, "{input}").unwrap();
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut report: Value = serde_json::from_str(line).unwrap();
            report.as_object_mut().unwrap().remove("offset");
            report
        })
        .collect())
}

/// Whether `actual` is what `expect` says: equal, except that an error's
/// `message_prefix` only has to start its message.
fn matches(expect: &Value, actual: &Value) -> bool {
    let (Some(want), Some(got)) = (expect.get("error"), actual.get("error")) else {
        return expect == actual;
    };
    if want.get("kind") != got.get("kind") {
        return false;
    }
    match (
        want.get("message_prefix"),
        got.get("message").and_then(Value::as_str),
    ) {
        (Some(prefix), Some(message)) => message.starts_with(prefix.as_str().unwrap()),
        _ => want == got,
    }
}

/// Runs every case of `plugin` through `component`; panics listing every
/// case that answered otherwise.
fn conform(plugin: &str, lang: &str, component: PathBuf) {
    assert!(
        component.is_file(),
        "{lang} {plugin}: no component at {}",
        component.display()
    );
    let cases = cases(plugin);
    let mut failures = Vec::new();
    // Consecutive cases with the same configuration share one run.
    let mut groups: Vec<Vec<&Case>> = Vec::new();
    for case in &cases {
        match groups.last_mut() {
            Some(group)
                if case.input.is_some()
                    && group[0].input.is_some()
                    && group[0].config == case.config
                    && group[0].args == case.args =>
            {
                group.push(case);
            }
            _ => groups.push(vec![case]),
        }
    }
    for group in groups {
        let result = route(&component, &group);
        for (i, case) in group.iter().enumerate() {
            let verdict = match (&result, case.expect.get("refused")) {
                (Err(stderr), Some(refused)) if stderr.contains(refused.as_str().unwrap()) => {
                    Ok(())
                }
                (Err(stderr), _) => Err(format!("switchyard route failed: {stderr}")),
                (Ok(_), Some(refused)) => {
                    Err(format!("expected the configuration refused with {refused}"))
                }
                (Ok(lines), None) => match lines.get(i) {
                    Some(line) if matches(&case.expect, line) => Ok(()),
                    Some(line) => Err(format!("expected {}\n     got {line}", case.expect)),
                    None => Err("no output line".to_owned()),
                },
            };
            if let Err(why) = verdict {
                failures.push(format!("  {}: {why}", case.case));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{lang} {plugin} fails {} of {} conformance cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn rust_tenant_partitioner_conforms() {
    conform("tenant-partitioner", "rust", fixtures::tenant_partitioner());
}

#[test]
fn python_tenant_partitioner_conforms() {
    conform(
        "tenant-partitioner",
        "python",
        fixtures::python("tenant-partitioner"),
    );
}

#[test]
fn typescript_tenant_partitioner_conforms() {
    conform(
        "tenant-partitioner",
        "typescript",
        fixtures::typescript("tenant-partitioner"),
    );
}

#[test]
fn rust_envelope_router_conforms() {
    conform("envelope-router", "rust", fixtures::envelope_router());
}

#[test]
fn python_envelope_router_conforms() {
    conform(
        "envelope-router",
        "python",
        fixtures::python("envelope-router"),
    );
}

#[test]
fn typescript_envelope_router_conforms() {
    conform(
        "envelope-router",
        "typescript",
        fixtures::typescript("envelope-router"),
    );
}
