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

/// The cache's artifact files, by the plugin they compile.
fn artifact_of(dir: &Path, sha256: &str) -> std::path::PathBuf {
    cached_files(dir)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(sha256))
        .unwrap()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Puts fan-out's compiled artifact where hello's belongs, with `mode`,
/// and says whether loading hello then ran fan-out's code (whose `init`
/// refuses an empty configuration).
fn planted_artifact_runs(mode: u32, link: bool) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let engine = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()));
    let hello = engine.load(&fixtures::hello()).unwrap();
    let fan_out = engine.load(&fixtures::fan_out()).unwrap();
    let target = artifact_of(dir.path(), hello.sha256());
    let planted = artifact_of(dir.path(), fan_out.sha256());
    std::fs::remove_file(&target).unwrap();
    if link {
        std::os::unix::fs::symlink(&planted, &target).unwrap();
    } else {
        std::fs::copy(&planted, &target).unwrap();
        set_mode(&target, mode);
    }
    let loaded = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()))
        .load(&fixtures::hello())
        .unwrap();
    let context = switchyard::plugin::RouteContext::new(
        "r",
        "output",
        std::sync::Arc::new(std::collections::HashMap::<String, u32>::new()),
    );
    loaded
        .instantiate(&[], context, switchyard::plugin::Limits::default())
        .is_err()
}

#[test]
fn a_planted_artifact_others_may_write_or_behind_a_link_is_never_loaded() {
    // The control: an artifact of the router's own user, writable by it
    // alone, is trusted (this is how the cache works at all).
    assert!(
        planted_artifact_runs(0o600, false),
        "the control did not load"
    );
    assert!(
        !planted_artifact_runs(0o666, false),
        "a world-writable artifact ran"
    );
    assert!(
        !planted_artifact_runs(0o620, false),
        "a group-writable artifact ran"
    );
    assert!(
        !planted_artifact_runs(0o600, true),
        "an artifact behind a link ran"
    );
}

#[test]
fn a_cache_folder_others_may_write_is_not_used_and_plugins_still_load() {
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o777);
    let engine = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()));
    let plugin = engine.load(&fixtures::hello()).unwrap();
    assert_eq!(plugin.exports(), ["init()", "route()"]);
    assert!(
        cached_files(dir.path()).is_empty(),
        "written to a shared folder"
    );
}

#[test]
fn a_cache_folder_made_inside_a_volume_everyone_may_write_is_used() {
    // A Kubernetes emptyDir is mode 777: SWITCHYARD_CACHE_DIR names a
    // folder inside it, which the router makes its own.
    use std::os::unix::fs::PermissionsExt;
    let volume = tempfile::tempdir().unwrap();
    set_mode(volume.path(), 0o777);
    let cache = volume.path().join("compiled");
    let engine = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(&cache));
    engine.load(&fixtures::hello()).unwrap();
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(cached_files(&cache).len(), 1);
}

#[test]
fn a_new_cache_folder_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("a/b/compiled");
    PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(&cache))
        .load(&fixtures::hello())
        .unwrap();
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(cached_files(&cache).len(), 1);
}

#[test]
fn a_file_that_is_not_a_router_plugin_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()));
    assert!(engine.load(&fixtures::not_a_router()).is_err());
    assert!(cached_files(dir.path()).is_empty());
}

#[test]
fn a_compilation_past_its_time_is_refused_and_nothing_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let impatient = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()))
        .with_compile_timeout(std::time::Duration::ZERO);
    let error = impatient.load(&fixtures::hello()).unwrap_err().to_string();
    assert!(
        error.ends_with("did not compile within 0 s (SWITCHYARD_COMPILE_TIMEOUT_S raises it)"),
        "{error}"
    );
    assert!(cached_files(dir.path()).is_empty());
    // With time to finish, the same file loads.
    let patient = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()));
    assert_eq!(
        patient.load(&fixtures::hello()).unwrap().exports(),
        ["init()", "route()"]
    );
}

/// Sets `path`'s modification time to `age` ago.
fn age(path: &Path, age: std::time::Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

#[test]
fn a_full_cache_drops_its_least_recently_used_artifacts_and_keeps_the_new_one() {
    // The size of filter's artifact, from a cache of its own.
    let scratch = tempfile::tempdir().unwrap();
    PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(scratch.path()))
        .load(&fixtures::filter())
        .unwrap();
    let filter_len = std::fs::metadata(cached_files(scratch.path()).remove(0))
        .unwrap()
        .len();

    let dir = tempfile::tempdir().unwrap();
    let roomy = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()));
    let hello = roomy.load(&fixtures::hello()).unwrap();
    let fan_out = roomy.load(&fixtures::fan_out()).unwrap();
    let (hello_file, fan_out_file) = (
        artifact_of(dir.path(), hello.sha256()),
        artifact_of(dir.path(), fan_out.sha256()),
    );
    // hello was written first, fan-out after it; then hello is used again.
    age(&hello_file, std::time::Duration::from_secs(7200));
    age(&fan_out_file, std::time::Duration::from_secs(3600));
    roomy.load(&fixtures::hello()).unwrap();
    // A leftover of a write that never finished, hours old.
    let leftover = dir.path().join(".artifact-interrupted");
    std::fs::write(&leftover, b"half an artifact").unwrap();
    age(&leftover, std::time::Duration::from_secs(7200));

    // Room for filter and one more: fan-out, the least recently used, goes.
    let hello_len = std::fs::metadata(&hello_file).unwrap().len();
    let tight = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()).with_max_bytes(hello_len + filter_len));
    let filter = tight.load(&fixtures::filter()).unwrap();
    let mut left = cached_files(dir.path());
    left.sort();
    let mut expected = vec![hello_file, artifact_of(dir.path(), filter.sha256())];
    expected.sort();
    assert_eq!(left, expected);

    // A cache too small for anything keeps the artifact it just wrote.
    let tiny = PluginEngine::new()
        .unwrap()
        .with_cache(ArtifactCache::new(dir.path()).with_max_bytes(1));
    let again = tiny.load(&fixtures::fan_out()).unwrap();
    assert_eq!(
        cached_files(dir.path()),
        [artifact_of(dir.path(), again.sha256())]
    );
    assert_eq!(again.exports(), ["init()", "route()"]);
}
