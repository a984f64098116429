//! `switchyard validate` through the real binary: a good configuration
//! passes, and each kind of problem is one precise line, all of them
//! reported in one run. (With `--broker`, against the test broker: the
//! end-to-end suite.)
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::path::Path;
use std::process::Command;

use switchyard_plugin_fixtures as fixtures;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn validate(config: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["validate", "--config"])
        .arg(config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A configuration file of `routes` (TOML) in a fresh folder. The broker
/// named is never contacted: nothing listens on port 1.
fn config(routes: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.toml");
    std::fs::write(
        &path,
        format!("[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n{routes}"),
    )
    .unwrap();
    (dir, path)
}

fn route(name: &str, plugin: &Path, plugin_config: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\nsource_topics = [\"{name}-in\"]\nplugin = \"{}\"\ndefault_target = \"{name}-out\"\non_failure = \"skip\"\nplugin_config = {plugin_config}\n",
        plugin.display()
    )
}

#[test]
fn a_good_configuration_is_valid_without_a_broker() {
    let (_dir, path) = config(&format!(
        "{}{}{}",
        route(
            "orders",
            &fixtures::tenant_partitioner(),
            "{ header = \"tenant-id\" }"
        ),
        route(
            "events",
            &fixtures::envelope_router(),
            "{ \"order.created\" = \"events-out\" }"
        ),
        // The same plugin file twice: compiled once, init-ed per route.
        route("more", &fixtures::tenant_partitioner(), "{}"),
    ));
    let run = validate(&path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    assert!(run.stdout.contains("3 routes"), "{}", run.stdout);
    for name in ["orders", "events", "more"] {
        assert!(
            run.stdout.contains(&format!("route '{name}': plugin "))
                && run.stdout.contains("init ok"),
            "{name}: {}",
            run.stdout
        );
    }
    assert_eq!(run.stdout.lines().last(), Some("valid"));
}

#[test]
fn every_plugin_problem_is_reported_in_one_run_naming_route_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "not a plugin").unwrap();
    let missing = dir.path().join("gone.wasm");
    let (_config_dir, path) = config(&format!(
        "{}{}{}{}{}",
        route("good", &fixtures::hello(), "{}"),
        route("missing", &missing, "{}"),
        route("not-wasm", &not_wasm, "{}"),
        route("other-world", &fixtures::not_a_router(), "{}"),
        route(
            "refused",
            &fixtures::json_bridge(),
            "{ direction = \"sideways\" }"
        ),
    ));
    let run = validate(&path);
    assert_eq!(run.code, 1);
    let problems: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(problems.len(), 5, "{}", run.stderr);
    let shown = path.display().to_string();
    for (line, (route, says)) in problems.iter().zip([
        ("missing", missing.display().to_string()),
        ("not-wasm", "not a WebAssembly".to_owned()),
        ("other-world", "router".to_owned()),
        ("refused", "'direction' is 'sideways'".to_owned()),
    ]) {
        assert!(
            line.starts_with(&format!("{shown}: route '{route}': ")) && line.contains(&says),
            "{route}: {line}"
        );
    }
    assert_eq!(problems[4], "4 problems");
    assert!(run.stdout.contains("route 'good'"), "{}", run.stdout);
    assert!(!run.stdout.contains("valid"), "{}", run.stdout);
}

#[test]
fn a_configuration_that_does_not_validate_is_one_line_naming_the_field() {
    let (_dir, path) = config(&format!(
        "{}default_target_typo = 1\n",
        route("orders", &fixtures::hello(), "{}")
    ));
    let run = validate(&path);
    assert_eq!(run.code, 1);
    let problems: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(problems.len(), 2, "{}", run.stderr);
    assert!(
        problems[0].starts_with(&path.display().to_string())
            && problems[0].contains("unknown field `default_target_typo`"),
        "{}",
        problems[0]
    );
    assert_eq!(problems[1], "1 problem");

    let run = validate(&path.with_file_name("absent.toml"));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("absent.toml"), "{}", run.stderr);
}

#[test]
fn the_shipped_configurations_are_valid_with_the_shipped_plugins() {
    // The container and Kubernetes configurations name /plugins/X.wasm:
    // here, the same plugins where the tests build them.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for shipped in ["deploy/router.toml", "deploy/kubernetes/router.toml"] {
        let text = std::fs::read_to_string(root.join(shipped)).unwrap();
        let plugins = fixtures::hello();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.toml");
        std::fs::write(
            &path,
            text.replace(
                "\"/plugins/",
                &format!("\"{}/", plugins.parent().unwrap().display()),
            ),
        )
        .unwrap();
        let run = validate(&path);
        assert_eq!(run.code, 0, "{shipped}: {}", run.stderr);
        assert_eq!(run.stdout.lines().last(), Some("valid"), "{shipped}");
    }
}

#[test]
fn a_rollout_candidate_is_checked_like_the_plugin_when_its_file_is_there() {
    let (dir, path) = config(&format!(
        "{}[routes.rollout]\ncandidate = \"next.wasm\"\n",
        route("orders", &fixtures::hello(), "{}")
    ));
    let run = validate(&path);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("rollout candidate") && run.stdout.contains("not there"),
        "{}",
        run.stdout
    );
    std::fs::write(dir.path().join("next.wasm"), b"not a component").unwrap();
    let run = validate(&path);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("route 'orders': rollout candidate: ")
            && run.stderr.contains("next.wasm"),
        "{}",
        run.stderr
    );
    std::fs::copy(fixtures::tenant_partitioner(), dir.path().join("next.wasm")).unwrap();
    let run = validate(&path);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("rollout candidate") && run.stdout.contains("init ok"),
        "{}",
        run.stdout
    );
}
