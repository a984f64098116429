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

use std::fs::{File, Metadata};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A folder of compiled plugins.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// Whether the folder may be used, decided once (`Err`: why not).
    usable: Arc<OnceLock<Result<(), String>>>,
}

impl ArtifactCache {
    /// A cache in `dir` (created, private, when first needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            usable: Arc::new(OnceLock::new()),
        }
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
        if let Err(e) = self.write(&self.path(engine, sha256), compiled) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "compiled plugin not cached");
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
