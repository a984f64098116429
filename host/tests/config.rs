//! Bad configuration files next to the one error each must produce, and
//! `switchyard run` refusing them with that one message.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::path::Path;
use std::process::Command;

use switchyard::config::RouterConfig;

#[test]
fn every_bad_config_gives_its_expected_error() {
    let mut checked = 0;
    for entry in std::fs::read_dir("tests/bad-config").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let relative = Path::new("tests/bad-config").join(path.file_name().unwrap());
        let expected = std::fs::read_to_string(path.with_extension("err")).unwrap();
        let error = RouterConfig::load(&relative).expect_err(&relative.display().to_string());
        assert_eq!(
            error.to_string(),
            expected.trim_end(),
            "{}",
            relative.display()
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} bad configs found");
}

fn run(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn run_refuses_a_bad_config_with_one_precise_line() {
    let (code, stderr) = run(Path::new("tests/bad-config/unknown-field.toml"));
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: tests/bad-config/unknown-field.toml: "),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `plugn`"), "{stderr}");
}

#[test]
fn run_refuses_a_missing_config_file() {
    let (code, stderr) = run(Path::new("tests/bad-config/nope.toml"));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim_end(),
        "error: cannot read config 'tests/bad-config/nope.toml': No such file or directory (os error 2)"
    );
}

fn write_config(dir: &Path, bootstrap: &str, plugin: &str) -> std::path::PathBuf {
    let path = dir.join("router.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\n[[routes]]\nname = \"orders\"\nsource_topics = [\"orders\"]\nplugin = \"{plugin}\"\ndefault_target = \"out\"\non_failure = \"skip\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn run_names_an_unreadable_plugin_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "127.0.0.1:9", "plugins/missing.wasm");
    let (code, stderr) = run(&config);
    assert_eq!(code, 1);
    let plugin = dir.path().join("plugins/missing.wasm");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: route 'orders': cannot read plugin '{}': No such file or directory (os error 2)",
            plugin.display()
        )
    );
}

#[test]
fn run_says_which_broker_it_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plugin = switchyard_plugin_fixtures::hello();
    let config = write_config(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        plugin.to_str().unwrap(),
    );
    let (code, stderr) = run(&config);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach Kafka at '127.0.0.1:{port}': "
        )),
        "{stderr}"
    );
}

#[test]
fn the_documented_example_config_is_valid() {
    let config = RouterConfig::load(Path::new("../docs/router.example.toml")).unwrap();
    assert_eq!(config.routes.len(), 3);
    assert_eq!(config.http.listen, "127.0.0.1:9180");
}
