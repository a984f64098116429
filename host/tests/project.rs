//! `switchyard new` and `switchyard build`, as a user runs them: a project
//! in each language written to an empty folder outside any repository and
//! to one inside this repository (where cargo would otherwise take it for
//! a member of the workspace), then its own test command, `switchyard
//! build`, `switchyard check` and `switchyard route` on what it built.
//!
//! Nothing reaches the network: cargo runs offline on the registry cache
//! the router's own build filled, npm installs offline from the cache
//! `scripts/setup` filled, and componentize-py is the one it installed.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code: a failure should stop the test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LANGS: [&str; 3] = ["rust", "python", "typescript"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn switchyard(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command` in `dir`; panics with its output if it fails.
fn must(dir: &Path, what: &str, command: &mut Command) -> Output {
    let out = command
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed in {} ({}):\n{}\n{}",
        dir.display(),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// The Python that has pytest (the one `scripts/setup` installs beside
/// componentize-py), unless `SWITCHYARD_TEST_PLUGIN_PYTHON` names another.
fn plugin_python() -> PathBuf {
    if let Some(python) = std::env::var_os("SWITCHYARD_TEST_PLUGIN_PYTHON") {
        return python.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache"))
        .join("switchyard");
    let mut venvs: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("venv-componentize-py-")
        })
        .collect();
    venvs.sort();
    venvs
        .pop()
        .expect("scripts/setup installs componentize-py and pytest")
        .join("bin/python")
}

/// Writes a project with `switchyard new` in `parent`, runs its tests,
/// builds it, and checks and routes the component.
fn new_build_and_route(lang: &str, parent: &Path) {
    let name = format!("hello-{lang}");
    let out = switchyard(parent, &["new", &name, "--lang", lang]);
    assert!(
        out.status.success(),
        "switchyard new: {}",
        text(&out.stderr)
    );
    let dir = parent.join(&name);
    for file in ["README.md", "sample.jsonl", ".gitignore"] {
        assert!(dir.join(file).is_file(), "{lang}: no {file}");
    }
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(
        readme.lines().count() <= 6,
        "{lang}: the README is five lines and a title"
    );

    match lang {
        "rust" => {
            must(
                &dir,
                "cargo test",
                Command::new("cargo")
                    .arg("test")
                    .env("CARGO_NET_OFFLINE", "true")
                    .env("CARGO_TARGET_DIR", repo().join("target/new-projects")),
            );
        }
        "python" => {
            let tested = must(
                &dir,
                "pytest",
                Command::new(plugin_python()).args([
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                ]),
            );
            assert!(
                text(&tested.stdout).contains("2 passed"),
                "{}",
                text(&tested.stdout)
            );
        }
        _ => {
            must(
                &dir,
                "npm install",
                Command::new("npm").args([
                    "install",
                    "--offline",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                ]),
            );
            let tested = must(
                &dir,
                "npm test",
                Command::new("npm").args(["test", "--silent"]),
            );
            assert!(
                text(&tested.stdout).contains("# pass 2"),
                "{}",
                text(&tested.stdout)
            );
        }
    }

    let mut build = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    build.arg("build").env("CARGO_NET_OFFLINE", "true");
    if lang == "rust" {
        build.env("CARGO_TARGET_DIR", repo().join("target/new-projects"));
    }
    let built = must(&dir, "switchyard build", &mut build);
    let stdout = text(&built.stdout);
    let component = PathBuf::from(stdout.lines().last().unwrap_or_default());
    assert!(
        component.is_file(),
        "{lang}: the last line of switchyard build is not the component: {stdout}"
    );

    let path = component.to_str().unwrap();
    let checked = switchyard(&dir, &["check", path]);
    assert!(
        checked.status.success(),
        "{lang}: switchyard check: {}",
        text(&checked.stderr)
    );
    let routed = switchyard(&dir, &["route", path, "--input", "sample.jsonl"]);
    assert!(
        routed.status.success(),
        "{lang}: switchyard route: {}",
        text(&routed.stderr)
    );
    let lines: Vec<serde_json::Value> = text(&routed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lang}: {}", text(&routed.stdout));
    assert_eq!(lines[0]["outputs"][0]["key"], "order-1", "{lang}");
    assert_eq!(lines[1]["outputs"][0]["key"], "order-2", "{lang}");
    assert_eq!(
        lines[2]["outputs"],
        serde_json::json!([]),
        "{lang}: the tombstone is dropped"
    );
}

fn outside_any_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        !dir.path()
            .ancestors()
            .any(|d| d.join("Cargo.toml").is_file()),
        "the temporary folder is inside a cargo project"
    );
    dir
}

fn inside_this_repository() -> tempfile::TempDir {
    let target = repo().join("target");
    std::fs::create_dir_all(&target).unwrap();
    tempfile::tempdir_in(target).unwrap()
}

#[test]
fn a_new_rust_project_builds_and_routes_from_an_empty_folder() {
    new_build_and_route("rust", outside_any_repository().path());
}

#[test]
fn a_new_rust_project_builds_and_routes_inside_this_repository() {
    new_build_and_route("rust", inside_this_repository().path());
}

#[test]
fn a_new_python_project_builds_and_routes_from_an_empty_folder() {
    new_build_and_route("python", outside_any_repository().path());
}

#[test]
fn a_new_python_project_builds_and_routes_inside_this_repository() {
    new_build_and_route("python", inside_this_repository().path());
}

#[test]
fn a_new_typescript_project_builds_and_routes_from_an_empty_folder() {
    new_build_and_route("typescript", outside_any_repository().path());
}

#[test]
fn a_new_typescript_project_builds_and_routes_inside_this_repository() {
    new_build_and_route("typescript", inside_this_repository().path());
}

#[test]
fn new_refuses_a_bad_name_and_a_folder_in_use() {
    let parent = tempfile::tempdir().unwrap();
    let bad = switchyard(parent.path(), &["new", "Bad Name", "--lang", "rust"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("cannot name a plugin project"),
        "{}",
        text(&bad.stderr)
    );
    std::fs::create_dir(parent.path().join("taken")).unwrap();
    std::fs::write(parent.path().join("taken/file"), "mine").unwrap();
    let taken = switchyard(parent.path(), &["new", "taken", "--lang", "python"]);
    assert!(!taken.status.success());
    assert!(
        text(&taken.stderr).contains("already exists and is not empty"),
        "{}",
        text(&taken.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(parent.path().join("taken/file")).unwrap(),
        "mine"
    );
}

#[test]
fn build_says_what_is_missing() {
    let parent = tempfile::tempdir().unwrap();
    // Not a project at all.
    let none = switchyard(parent.path(), &["build"]);
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("is not a plugin project"),
        "{}",
        text(&none.stderr)
    );
    // A TypeScript project before `npm install`.
    assert!(
        switchyard(parent.path(), &["new", "fresh", "--lang", "typescript"])
            .status
            .success()
    );
    let fresh = switchyard(&parent.path().join("fresh"), &["build"]);
    assert!(!fresh.status.success());
    let stderr = text(&fresh.stderr);
    assert!(stderr.contains("run `npm install`"), "{stderr}");
    assert!(
        fresh.stdout.is_empty(),
        "nothing on stdout when nothing was built"
    );
    // A Python project whose componentize-py cannot be found.
    assert!(
        switchyard(parent.path(), &["new", "nopy", "--lang", "python"])
            .status
            .success()
    );
    let nopy = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(parent.path().join("nopy"))
        .arg("build")
        .env(
            "SWITCHYARD_COMPONENTIZE_PY",
            parent.path().join("no-such-tool"),
        )
        .output()
        .unwrap();
    assert!(!nopy.status.success());
    assert!(
        text(&nopy.stderr).contains("componentize-py"),
        "{}",
        text(&nopy.stderr)
    );
}

#[test]
fn the_typescript_template_pins_the_tools_scripts_setup_installs() {
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let template = read(&repo().join("host/templates/typescript/package.json"));
    let installed = read(&repo().join("plugins/typescript/package.json"));
    assert_eq!(template["devDependencies"], installed["devDependencies"]);
    for lang in LANGS {
        assert!(
            repo()
                .join("host/templates")
                .join(lang)
                .join("README.md")
                .is_file()
        );
    }
}

/// The fenced blocks of the plugin guide's Rust "Hello world" that start
/// with a `hello/...` path comment: (path, text).
fn guide_hello_world() -> Vec<(String, String)> {
    let guide = std::fs::read_to_string(repo().join("docs/plugin-guide.md")).unwrap();
    let start = guide
        .find("### Hello world")
        .expect("the guide has a Rust hello world");
    let section = &guide[start..];
    // Up to the next heading (no line of the blocks starts with "## ").
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|h| section[4..].find(h))
        .min()
        .map_or(section.len(), |end| end + 4);
    let section = &section[..end];
    let mut files = Vec::new();
    for block in section.split("```").skip(1).step_by(2) {
        let body = block.split_once('\n').map_or("", |(_, body)| body);
        let first = body.lines().next().unwrap_or_default();
        if let Some(path) = first
            .strip_prefix("# hello/")
            .or_else(|| first.strip_prefix("// hello/"))
        {
            files.push((path.trim().to_owned(), body.to_owned()));
        }
    }
    files
}

#[test]
fn the_guide_s_rust_hello_world_builds_as_printed() {
    let files = guide_hello_world();
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["Cargo.toml", "rust-toolchain.toml", "src/lib.rs"]);
    // As the guide says: a folder `hello` beside a checkout named
    // `switchyard`.
    let parent = outside_any_repository();
    std::os::unix::fs::symlink(repo(), parent.path().join("switchyard")).unwrap();
    let dir = parent.path().join("hello");
    for (path, text) in &files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    must(
        &dir,
        "the guide's cargo build",
        Command::new("cargo")
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_NET_OFFLINE", "true")
            .env("CARGO_TARGET_DIR", dir.join("target")),
    );
    let component = dir.join("target/wasm32-wasip2/release/hello.wasm");
    let checked = switchyard(&dir, &["check", component.to_str().unwrap()]);
    assert!(
        checked.status.success(),
        "switchyard check: {}",
        text(&checked.stderr)
    );
}
