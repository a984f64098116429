//! The container files agree with the project: the image builds with the
//! project's own build script, ships the plugins its configuration uses,
//! runs unprivileged with a health check, and the compose file creates
//! every topic the configuration needs. (No container engine runs here:
//! what can be checked without one is checked.)
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard::config::RouterConfig;
use switchyard::plugin::{Limits, PluginEngine, RouteContext};
use switchyard_plugin_fixtures as fixtures;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

/// The `.wasm` names `scripts/lib.sh` ships in `dist/plugins`.
fn shipped_plugins() -> Vec<String> {
    let lib = read("scripts/lib.sh");
    let line = lib
        .lines()
        .find_map(|l| l.strip_prefix("EXAMPLE_PLUGINS=("))
        .unwrap();
    line.trim_end_matches(')')
        .split_whitespace()
        .map(ToOwned::to_owned)
        .collect()
}

#[test]
fn the_image_builds_with_the_project_script_and_runs_unprivileged_with_a_health_check() {
    let dockerfile = read("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let has = |wanted: &str| lines.iter().any(|l| l.trim() == wanted);
    assert!(has("RUN scripts/build-release"), "build step");
    assert!(has(
        "COPY --from=build /src/dist/switchyard /usr/local/bin/switchyard"
    ));
    assert!(has("COPY --from=build /src/dist/plugins/ /plugins/"));
    assert!(has("COPY deploy/router.toml /etc/switchyard/router.toml"));
    assert!(has("USER switchyard"), "runs as a non-root user");
    assert!(
        has(r#"ENTRYPOINT ["switchyard"]"#),
        "exec form: SIGTERM reaches it"
    );
    assert!(has(
        r#"CMD ["run", "--config", "/etc/switchyard/router.toml"]"#
    ));
    assert!(
        has(r#"CMD ["switchyard", "health", "--addr", "127.0.0.1:9180"]"#),
        "health check"
    );
    assert!(root().join("scripts/build-release").is_file());
}

#[test]
fn the_container_config_is_valid_and_its_plugins_are_shipped_and_accept_their_config() {
    let config = RouterConfig::load(&root().join("deploy/router.toml")).unwrap();
    assert_eq!(config.http.listen, "0.0.0.0:9180", "reachable from outside");
    let shipped = shipped_plugins();
    let engine = PluginEngine::new().unwrap();
    for route in &config.routes {
        let path = route.plugin.as_ref().unwrap();
        let name = path
            .strip_prefix("/plugins")
            .unwrap_or_else(|_| panic!("{}: not in /plugins", path.display()))
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap();
        assert!(shipped.iter().any(|s| s == name), "{name} is not shipped");
        // The same plugin, built from the same sources, takes the config.
        let plugin = engine.load(&fixtures::path(name)).unwrap();
        let context = RouteContext::new(
            route.name.clone(),
            route.default_target.clone(),
            Arc::new(std::collections::HashMap::<String, u32>::new()),
        );
        plugin
            .instantiate(&route.plugin_config_pairs(), context, Limits::default())
            .unwrap_or_else(|e| panic!("route '{}': {e}", route.name));
    }
}

#[test]
fn the_compose_file_creates_every_topic_the_container_config_uses() {
    let config = RouterConfig::load(&root().join("deploy/router.toml")).unwrap();
    let compose = read("deploy/docker-compose.yml");
    let created: Vec<&str> = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("for t in "))
        .unwrap()
        .trim_end_matches("; do")
        .split_whitespace()
        .map(|t| t.split(':').next().unwrap())
        .collect();
    for route in &config.routes {
        let mut topics: Vec<&String> = route.source_topics.iter().collect();
        topics.push(&route.default_target);
        topics.extend(&route.dead_letter_topic);
        topics.extend(route.plugin_config.values().filter_map(|v| match v {
            switchyard::config::Property::Text(t) => Some(t).filter(|t| route.allows(t)),
            _ => None,
        }));
        for topic in topics {
            assert!(
                created.contains(&topic.as_str()),
                "route '{}': topic '{topic}' is not created",
                route.name
            );
        }
    }
}
