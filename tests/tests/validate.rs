//! `switchyard validate --broker` against the test broker: the topics each
//! route reads and writes are looked up on the cluster, each missing one a
//! problem of its own naming the route and the field.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use switchyard::plugin::PluginEngine;
use switchyard::validate::{Report, validate};
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::{broker, create_topics, random_topic};

fn validate_with_broker(config: &str) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.toml");
    std::fs::write(&path, config).unwrap();
    validate(&path, &PluginEngine::new().unwrap(), true)
}

#[test]
fn the_routes_topics_are_checked_on_the_cluster() {
    let (source, target, dead, allowed) = (
        random_topic("v-in"),
        random_topic("v-out"),
        random_topic("v-dlq"),
        random_topic("v-allowed"),
    );
    create_topics(&[(&source, 3), (&target, 2), (&dead, 1)]).unwrap();
    let route = |name: &str, source: &str, allowed: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\nsource_topics = [\"{source}\"]\nplugin = \"{}\"\ndefault_target = \"{target}\"\nallowed_targets = [\"{target}\", \"{allowed}\", \"{target}-*\"]\ndead_letter_topic = \"{dead}\"\n",
            fixtures::hello().display()
        )
    };
    let head = format!("[kafka]\nbootstrap_servers = \"{}\"\n", broker());

    // Every topic there (the wildcard pattern is not looked up).
    create_topics(&[(&allowed, 1)]).unwrap();
    let report = validate_with_broker(&format!("{head}{}", route("good", &source, &allowed)));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let checked = report.checked.join("\n");
    assert!(
        checked.contains(&format!("{source} (3)"))
            && checked.contains(&format!("{target} (2)"))
            && checked.contains(&format!("{dead} (1)")),
        "{checked}"
    );

    // A missing source and a missing allowed target: one problem each.
    let (missing_source, missing_allowed) = (random_topic("v-nope"), random_topic("v-gone"));
    let report = validate_with_broker(&format!(
        "{head}{}",
        route("bad", &missing_source, &missing_allowed)
    ));
    let problems = &report.problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains(&format!(
            "route 'bad': source_topics '{missing_source}' does not exist on the cluster"
        )),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].contains(&format!(
            "route 'bad': allowed_targets '{missing_allowed}' does not exist on the cluster"
        )),
        "{}",
        problems[1]
    );
}

#[test]
fn a_cluster_that_cannot_be_reached_is_one_problem_naming_the_setting() {
    // Bound, then closed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let report = validate_with_broker(&format!(
        "[kafka]\nbootstrap_servers = \"127.0.0.1:{port}\"\n[[routes]]\nname = \"r\"\nsource_topics = [\"a\"]\ndefault_target = \"b\"\non_failure = \"skip\"\n"
    ));
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].contains(&format!(
            "cannot reach Kafka at '127.0.0.1:{port}' (kafka.bootstrap_servers)"
        )),
        "{}",
        report.problems[0]
    );
}
