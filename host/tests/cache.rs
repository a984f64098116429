//! Compiled plugins cached on disk.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::path::Path;

use switchyard::plugin::{ArtifactCache, PluginEngine};
use switchyard_plugin_fixtures as fixtures;

fn cached_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_loaded_plugin_is_cached_by_content_hash_and_loads_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()));
    let first = engine.load(&fixtures::hello()).unwrap();
    let files = cached_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with(first.sha256()), "{name}");
    assert!(name.ends_with(".cwasm"), "{name}");

    // A second load finds the artifact (nothing new is written) and works.
    let second = engine.load(&fixtures::hello()).unwrap();
    assert_eq!(second.version(), first.version());
    assert_eq!(cached_files(dir.path()), files);
    assert_eq!(second.exports(), ["init()", "route()"]);
}

#[test]
fn a_corrupt_cached_artifact_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()));
    engine.load(&fixtures::hello()).unwrap();
    let artifact = cached_files(dir.path()).remove(0);
    std::fs::write(&artifact, b"not a compiled plugin").unwrap();
    let plugin = engine.load(&fixtures::hello()).unwrap();
    assert_eq!(plugin.exports(), ["init()", "route()"]);
}

#[test]
fn different_files_get_different_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()));
    engine.load(&fixtures::hello()).unwrap();
    engine.load(&fixtures::fan_out()).unwrap();
    assert_eq!(cached_files(dir.path()).len(), 2);
}
