//! Compiled plugins kept on disk, so that loading a plugin the machine has
//! seen before skips compilation.
//!
//! An artifact is named by the SHA-256 of the `.wasm` file and a hash of the
//! engine's compilation settings (an artifact from another wasmtime version
//! or configuration is never used).
//!
//! # A trust boundary
//!
//! An artifact is native code the router runs with its own credentials, so
//! whoever can write the cache folder can run code as the router. The cache
//! is used only when nobody else can:
//!
//! - the folder is created private (`0700`); an existing one must be a
//!   folder owned by the router's user and not writable by its group or by
//!   others, else the cache is not used at all (every plugin is compiled,
//!   and the log says why, once);
//! - an artifact is loaded only if it is a regular file (not a link) owned
//!   by the router's user and writable by nobody else, and it is read into
//!   memory before use, so it cannot change under the router;
//! - artifacts are written to a new file with an unpredictable name
//!   (created exclusively, `0600`, never through a link) and renamed into
//!   place, so a reader never sees half of one.
//!
//! # Bounded
//!
//! Every plugin version ever loaded would otherwise stay (an interpreted
//! plugin's artifact is ~40 MB): after each write, the least recently
//! used artifacts (by modification time, which a load renews) are removed
//! until the folder holds at most `SWITCHYARD_CACHE_MAX_MIB` (default
//! 1024), the one just written always kept. A removed artifact only costs
//! its plugin a compilation the next time it is loaded.

use std::fs::{File, Metadata};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::env_limit;

/// A folder of compiled plugins.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// Whether the folder may be used, decided once (`Err`: why not).
    usable: Arc<OnceLock<Result<(), String>>>,
    /// The most the artifacts may hold together, in bytes.
    max_bytes: u64,
}

/// `SWITCHYARD_CACHE_MAX_MIB` when unset: room for ~25 versions of an
/// interpreted plugin, or thousands of Rust ones.
const DEFAULT_MAX_MIB: u64 = 1024;

/// A write that never finished (the router died during it) leaves its
/// temporary file; one older than this is removed.
const STALE_WRITE: Duration = Duration::from_secs(3600);

impl ArtifactCache {
    /// A cache in `dir` (created, private, when first needed), holding at
    /// most `SWITCHYARD_CACHE_MAX_MIB` (default 1024).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let max_mib = env_limit("SWITCHYARD_CACHE_MAX_MIB", DEFAULT_MAX_MIB);
        Self {
            dir: dir.into(),
            usable: Arc::new(OnceLock::new()),
            max_bytes: max_mib.saturating_mul(1 << 20),
        }
    }

    /// The same cache, holding at most `max_bytes` of artifacts.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// `$SWITCHYARD_CACHE_DIR`, else `$XDG_CACHE_HOME/switchyard/compiled`,
    /// else `~/.cache/switchyard/compiled`.
    #[must_use]
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("SWITCHYARD_CACHE_DIR") {
            return Some(dir.into());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("switchyard/compiled"))
    }

    /// Whether the folder can be trusted, deciding (and saying why not)
    /// the first time.
    fn usable(&self) -> bool {
        let verdict = self.usable.get_or_init(|| {
            let verdict = prepare_dir(&self.dir);
            if let Err(why) = &verdict {
                tracing::warn!(
                    dir = %self.dir.display(),
                    reason = %why,
                    "compiled-plugin cache not used: plugins are compiled on every load"
                );
            }
            verdict
        });
        verdict.is_ok()
    }

    fn path(&self, engine: &Engine, sha256: &str) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{sha256}-{:016x}.cwasm", hasher.finish()))
    }

    /// The compiled form of the file with this SHA-256, if cached and
    /// trustworthy.
    pub(super) fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        if !self.usable() {
            return None;
        }
        let path = self.path(engine, sha256);
        let bytes = match read_private(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(why) => {
                tracing::warn!(path = %path.display(), reason = %why, "ignoring a compiled plugin");
                return None;
            }
        };
        // SAFETY: the bytes come from a regular file that only the router's
        // user can write, in a folder only it can write (checked above), so
        // they were written by `store` below from wasmtime's own
        // `precompile_component` output; its name pins the wasm's hash and
        // the engine settings, and wasmtime checks the artifact's header
        // against this engine. They are in memory, so they cannot change
        // while in use.
        #[allow(unsafe_code, reason = "loading our own precompiled artifact")]
        let component = unsafe { Component::deserialize(engine, &bytes) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled plugin");
                None
            }
        }
    }

    /// Keeps `compiled`, the artifact of the file with this SHA-256; a
    /// cache that cannot be written only costs the next load a compilation.
    pub(super) fn store(&self, engine: &Engine, sha256: &str, compiled: &[u8]) {
        if !self.usable() {
            return;
        }
        let path = self.path(engine, sha256);
        if let Err(e) = self.write(&path, compiled) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "compiled plugin not cached");
        }
        self.prune(&path);
    }

    /// Removes the least recently used artifacts until the folder holds at
    /// most `max_bytes` of them (`keep` stays whatever its size), and the
    /// leftovers of writes that never finished.
    fn prune(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut artifacts = Vec::new();
        for entry in entries.flatten() {
            let (path, name) = (entry.path(), entry.file_name());
            let Some(name) = name.to_str() else { continue };
            // Not followed: a link is nobody's artifact.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(".artifact-") {
                if modified.elapsed().is_ok_and(|age| age > STALE_WRITE) {
                    remove(&path, "an unfinished write");
                }
            } else if name.ends_with(".cwasm") {
                artifacts.push((path == keep, modified, meta.len(), path));
            }
        }
        // The one just written first, then the most recently used.
        artifacts.sort_by_key(|a| std::cmp::Reverse((a.0, a.1)));
        let mut held = 0_u64;
        for (kept, _, len, path) in artifacts {
            if kept || held.saturating_add(len) <= self.max_bytes {
                held = held.saturating_add(len);
            } else {
                remove(&path, "least recently used");
            }
        }
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        // Exclusive creation with a random name, 0600: never through a
        // link, never a file someone prepared.
        // (tempfile's own default mode is 0600.)
        let mut tmp = tempfile::Builder::new()
            .prefix(".artifact-")
            .tempfile_in(&self.dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_data()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Removes a file of the cache, saying why at debug level.
fn remove(path: &Path, why: &str) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::debug!(path = %path.display(), why, "compiled plugin removed from the cache")
        }
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot remove a compiled plugin from the cache")
        }
    }
}

/// Creates `dir` private if missing; checks an existing one is a folder of
/// the router's user that nobody else can write.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(format!("cannot create it: {e}"));
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_dir() {
        return Err("it is not a folder".to_owned());
    }
    owned_and_private(&meta)
}

/// Reads the artifact at `path`: `None` if there is none, `Err` if there
/// is one that must not be trusted.
fn read_private(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let file = match File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it (a link?): {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".to_owned());
    }
    owned_and_private(&meta)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    (&file)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    // Used now: the last to be removed when the cache is full. (Its owner
    // may set its times whatever the descriptor's mode.)
    if let Err(e) = file.set_modified(SystemTime::now()) {
        tracing::debug!(path = %path.display(), error = %e, "cannot mark a compiled plugin used");
    }
    Ok(Some(bytes))
}

/// Owned by the router's user, writable by nobody else.
fn owned_and_private(meta: &Metadata) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "it is owned by user {}, not by the router's user {me}",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "its group or other users may write it (mode {:o}): chmod go-w it",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}
