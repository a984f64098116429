//! The Kubernetes manifests (`deploy/kubernetes/`): valid against the
//! Kubernetes API's schemas, offline (kubernetes-validate bundles them),
//! and in agreement with the router's configuration and image: ports,
//! probe endpoints, mounted paths, the shutdown timeout, the user, the
//! consumer group and topics the lag scaler watches.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use switchyard::config::RouterConfig;

/// Kubernetes versions the Deployment must validate against: the oldest
/// still commonly run, and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap()
}

/// The documents of the YAML file `name`, as JSON (PyYAML reads them).
fn documents(name: &str) -> Vec<Value> {
    let out = Command::new(switchyard_tests::kubernetes_python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(dir().join(name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn only(name: &str) -> Value {
    let mut docs = documents(name);
    assert_eq!(docs.len(), 1, "{name}: one document");
    docs.remove(0)
}

fn config() -> RouterConfig {
    RouterConfig::load(&dir().join("router.toml")).unwrap()
}

/// The container named `name` of the Deployment.
fn container(deployment: &Value, name: &str) -> Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container '{name}'"))
        .clone()
}

#[test]
fn the_deployment_validates_against_the_kubernetes_api_schemas() {
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(switchyard_tests::kubernetes_python())
            .args([
                "-m",
                "kubernetes_validate",
                "--strict",
                "--no-warn",
                "-k",
                version,
            ])
            .arg(dir().join("deployment.yaml"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("passed"),
            "Kubernetes {version}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_validator_refuses_a_manifest_with_a_mistake() {
    // What makes the test above able to fail: a misspelt field.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad.path(),
        read("deployment.yaml").replace("readOnlyRootFilesystem", "readOnlyRootFilesytem"),
    )
    .unwrap();
    let out = Command::new(switchyard_tests::kubernetes_python())
        .args(["-m", "kubernetes_validate", "--strict", "--no-warn"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("readOnlyRootFilesytem"));
}

#[test]
fn the_sidecar_agrees_with_the_router_s_configuration_and_image() {
    let config = config();
    let deployment = only("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let router = container(&deployment, "switchyard");

    // The port the router listens on, named for the probes.
    let port = config.http.listen.rsplit_once(':').unwrap().1;
    assert!(
        config.http.listen.starts_with("0.0.0.0:"),
        "reachable by the kubelet"
    );
    assert_eq!(router["ports"][0]["name"], "http");
    assert_eq!(router["ports"][0]["containerPort"].to_string(), port);
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], port);
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    for (probe, path) in [
        ("startupProbe", "/health"),
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
    ] {
        assert_eq!(router[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(router[probe]["httpGet"]["port"], "http", "{probe}");
    }

    // Stopping: the grace period covers the drain and leaving the group.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace * 1000 > config.shutdown.timeout_ms + 5000,
        "terminationGracePeriodSeconds {grace} s is not above shutdown.timeout_ms + 5 s"
    );

    // The configuration file where the router is told to read it, from
    // the ConfigMap the kustomization generates from router.toml.
    let args: Vec<&str> = router["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run", "--config", "/etc/switchyard/router.toml"]);
    let mount = |name: &str| {
        router["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no mount '{name}'"))
            .clone()
    };
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume '{name}'"))
            .clone()
    };
    assert_eq!(mount("config")["mountPath"], "/etc/switchyard");
    let kustomization = only("kustomization.yaml");
    let generated = &kustomization["configMapGenerator"][0];
    assert_eq!(volume("config")["configMap"]["name"], generated["name"]);
    assert_eq!(generated["files"][0], "router.toml");
    assert_eq!(
        kustomization["generatorOptions"]["disableNameSuffixHash"], true,
        "updated in place, not rolled out"
    );
    for resource in kustomization["resources"].as_array().unwrap() {
        assert!(
            dir().join(resource.as_str().unwrap()).is_file(),
            "{resource}"
        );
    }

    // Every plugin from the mounted plugins folder (a folder, never a
    // subPath mount: the kubelet does not update those).
    let plugins = mount("plugins");
    assert_eq!(plugins["mountPath"], "/plugins");
    assert!(plugins.get("subPath").is_none());
    assert_eq!(volume("plugins")["configMap"]["name"], "switchyard-plugins");
    for route in &config.routes {
        let plugin = route.plugin.as_ref().unwrap();
        assert!(plugin.starts_with("/plugins"), "{}", plugin.display());
    }

    // The compiled-plugin cache: a folder the router makes inside the
    // emptyDir (which everyone may write, so it is not used itself).
    let env = |name: &str| {
        router["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let cache = mount("compiled")["mountPath"].as_str().unwrap().to_owned();
    assert!(volume("compiled").get("emptyDir").is_some());
    let cache_dir = env("SWITCHYARD_CACHE_DIR");
    assert!(
        cache_dir.starts_with(&format!("{cache}/")),
        "{cache_dir} is not a folder inside {cache}"
    );

    // Unprivileged, as the image's user, on a read-only root.
    let dockerfile = std::fs::read_to_string(dir().join("../../Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("--uid {} ", pod["securityContext"]["runAsUser"])));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(router["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(router["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(router["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(router["resources"]["requests"]["memory"].is_string());
    assert!(router["resources"]["limits"]["memory"].is_string());
}

#[test]
fn the_lag_scaler_watches_the_router_s_group_and_every_source_topic() {
    let config = config();
    let deployment = only("deployment.yaml");
    let scaled = only("keda-scaledobject.yaml");
    assert_eq!(scaled["kind"], "ScaledObject");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    let triggers = scaled["spec"]["triggers"].as_array().unwrap();
    let mut watched: Vec<String> = Vec::new();
    for trigger in triggers {
        let metadata = &trigger["metadata"];
        assert_eq!(trigger["type"], "kafka");
        assert_eq!(metadata["consumerGroup"], config.kafka.group_id.as_str());
        assert_eq!(
            metadata["bootstrapServers"],
            config.kafka.bootstrap_servers.as_str()
        );
        assert_eq!(metadata["allowIdleConsumers"], "false");
        watched.push(metadata["topic"].as_str().unwrap().to_owned());
    }
    let mut sources: Vec<String> = config
        .routes
        .iter()
        .flat_map(|r| r.source_topics.clone())
        .collect();
    sources.sort();
    watched.sort();
    assert_eq!(watched, sources);
    assert!(scaled["spec"]["maxReplicaCount"].as_u64().unwrap() >= 1);
}
