//! Compiled plugins kept on disk, so that loading a plugin the machine has
//! seen before skips compilation.
//!
//! An artifact is named by the SHA-256 of the `.wasm` file and a hash of the
//! engine's compilation settings (an artifact from another wasmtime version
//! or configuration is never used). Artifacts are written to a temporary
//! file and renamed into place, so a reader never sees half of one.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A folder of compiled plugins.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
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

    fn path(&self, engine: &Engine, sha256: &str) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{sha256}-{:016x}.cwasm", hasher.finish()))
    }

    /// The compiled form of the file with this SHA-256, if cached.
    pub(super) fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(engine, sha256);
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file was written by `store` below, from wasmtime's own
        // `precompile_component` output, into a folder of the user running
        // the router; its name pins the wasm's hash and the engine settings,
        // and wasmtime checks the artifact's header against this engine.
        #[allow(unsafe_code, reason = "loading our own precompiled artifact")]
        let component = unsafe { Component::deserialize_file(engine, &path) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled plugin");
                None
            }
        }
    }

    /// Compiles `wasm` and keeps the result; a cache that cannot be written
    /// only costs the next load a compilation.
    pub(super) fn compile(
        &self,
        engine: &Engine,
        sha256: &str,
        wasm: &[u8],
    ) -> wasmtime::Result<Component> {
        let compiled = engine.precompile_component(wasm)?;
        if let Err(e) = self.write(&self.path(engine, sha256), &compiled) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "compiled plugin not cached");
        }
        // SAFETY: `compiled` is what `precompile_component` just produced
        // with this engine.
        #[allow(unsafe_code, reason = "loading an artifact this engine just produced")]
        unsafe {
            Component::deserialize(engine, &compiled)
        }
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}
