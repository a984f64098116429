//! Compiling and type-checking plugins.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Engine};

use super::bindings::{Router, RouterPre};
use super::cache::ArtifactCache;
use super::error::PluginError;
use super::interrupt::Interrupt;
use super::state::HostState;

/// How often the epoch advances: plugin code yields to its call's deadline
/// (and its worker's stop) this often.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// One per process: compiles plugins, links their imports, and bounds the
/// time of every call into them.
#[derive(Clone)]
pub struct PluginEngine {
    pub(super) engine: Engine,
    pub(super) linker: Arc<Linker<HostState>>,
    cache: Option<ArtifactCache>,
    /// Largest plugin file accepted, in bytes.
    max_file_bytes: u64,
    /// Longest wait for a compilation.
    compile_timeout: Duration,
    /// Drives the timers of plugin calls: their deadlines, and the clocks
    /// and polls a plugin waits on through WASI.
    timers: Arc<Timers>,
}

/// The runtime of the plugin timers; dropped without waiting, so that the
/// last engine may go anywhere (even on a thread of another runtime).
struct Timers(Option<tokio::runtime::Runtime>);

impl Drop for Timers {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}

/// The version of `wit/switchyard.wit` this router implements.
const CONTRACT_VERSION: &str = "0.3.1";

impl PluginEngine {
    /// An engine with epoch interruption (advanced by a background thread
    /// that ends with the engine) and the host's imports linked.
    ///
    /// A plugin can spend a call's time in two places: running its own
    /// code, and waiting inside a host import (WASI's clocks and polls: a
    /// `sleep`). Both are bounded in one place, [`PluginEngine::bounded`]:
    /// every call runs as a future under a deadline, WASI is linked in its
    /// async form (a wait is a future too), and plugin code yields at every
    /// epoch tick. When the time is up, the call is abandoned wherever it
    /// is and its instance discarded.
    pub fn new() -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| {
                Router::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
                    &mut linker,
                    |state| state,
                )
            })
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;

        spawn_epoch_ticker(&engine)?;
        // One thread serves every plugin's timers; the calls themselves run
        // on the threads that make them.
        let timers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("switchyard-plugin-timers")
            .enable_time()
            .build()
            .map_err(|e| {
                PluginError::Engine(format!("cannot start the plugin timer thread: {e}"))
            })?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache: None,
            max_file_bytes: env_limit("SWITCHYARD_MAX_PLUGIN_MIB", DEFAULT_MAX_PLUGIN_MIB) << 20,
            compile_timeout: Duration::from_secs(env_limit(
                "SWITCHYARD_COMPILE_TIMEOUT_S",
                DEFAULT_COMPILE_TIMEOUT_S,
            )),
            timers: Arc::new(Timers(Some(timers))),
        })
    }

    /// Runs `call` (a plugin call, on this thread) for at most `limit`, or
    /// until `interrupt` is raised, whichever comes first; the call is then
    /// abandoned wherever it is (its store must not be entered again).
    /// Must not be called from inside an async runtime.
    ///
    /// This is the one place that bounds what a call may cost in time: a
    /// plugin running its own code yields to it every epoch tick (see
    /// `instance.rs`), and one waiting in a host import waits in a future
    /// it drops.
    pub(super) fn bounded<F: Future>(
        &self,
        limit: Duration,
        interrupt: Option<&Interrupt>,
        call: F,
    ) -> Bounded<F::Output> {
        if interrupt.is_some_and(Interrupt::is_raised) {
            return Bounded::Interrupted;
        }
        let Some(timers) = &self.timers.0 else {
            return Bounded::Interrupted;
        };
        timers.block_on(async {
            let stop = async {
                match interrupt {
                    Some(interrupt) => interrupt.raised().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                done = tokio::time::timeout(limit, call) => match done {
                    Ok(output) => Bounded::Done(output),
                    Err(_) => Bounded::TimedOut,
                },
                () = stop => Bounded::Interrupted,
            }
        })
    }

    /// Waits at most `timeout` for a compilation (the default is
    /// `SWITCHYARD_COMPILE_TIMEOUT_S`, else 60 s).
    #[must_use]
    pub fn with_compile_timeout(mut self, timeout: Duration) -> Self {
        self.compile_timeout = timeout;
        self
    }

    /// Keeps compiled plugins in `cache`, so that a plugin seen before loads
    /// without compiling.
    #[must_use]
    pub fn with_cache(mut self, cache: ArtifactCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The version of the Switchyard contract `component` imports, if any.
    fn contract_of(&self, component: &Component) -> Option<String> {
        component
            .component_type()
            .imports(&self.engine)
            .find_map(|(name, _)| {
                let rest = name.strip_prefix("switchyard:plugin/")?;
                Some(rest.split_once('@')?.1.to_owned())
            })
    }

    /// Reads, compiles and type-checks the plugin at `path`.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginError> {
        let bytes = self.read(path)?;
        self.load_bytes(path, &bytes)
    }

    /// The bytes of the plugin file at `path`, if it is a regular file (a
    /// link to one is fine: Kubernetes mounts ConfigMaps that way) of at
    /// most the size limit. A FIFO or a device is refused without waiting
    /// on it; a file that grows while being read is cut at the limit and
    /// refused.
    pub fn read(&self, path: &Path) -> Result<Vec<u8>, PluginError> {
        let read_error = |error| PluginError::Read {
            path: path.to_owned(),
            error,
        };
        let regular = |meta: std::fs::Metadata| {
            if meta.is_file() {
                Ok(meta)
            } else {
                Err(PluginError::NotAFile {
                    path: path.to_owned(),
                    kind: file_kind(&meta),
                })
            }
        };
        // Looked at before it is opened (a device is not even opened), and
        // again once open (it may have been replaced in between); opened
        // non-blocking, so that a FIFO cannot make it wait for a writer.
        regular(std::fs::metadata(path).map_err(read_error)?)?;
        let file = std::fs::File::options()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)
            .map_err(read_error)?;
        let meta = regular(file.metadata().map_err(read_error)?)?;
        let too_large = || PluginError::TooLarge {
            path: path.to_owned(),
            max: self.max_file_bytes,
        };
        if meta.len() > self.max_file_bytes {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(self.max_file_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > self.max_file_bytes {
            return Err(too_large());
        }
        Ok(bytes)
    }

    /// Compiles `bytes` on a thread of its own, waiting at most the compile
    /// timeout (a compilation past it goes on in the background, and its
    /// result is dropped).
    fn compile(&self, path: &Path, bytes: &[u8]) -> Result<Vec<u8>, PluginError> {
        let (done, result) = std::sync::mpsc::channel();
        let engine = self.engine.clone();
        let wasm = bytes.to_vec();
        std::thread::Builder::new()
            .name("switchyard-compile".to_owned())
            .spawn(move || {
                let _ = done.send(engine.precompile_component(&wasm));
            })
            .map_err(|e| PluginError::Engine(format!("cannot start a compilation: {e}")))?;
        match result.recv_timeout(self.compile_timeout) {
            Ok(Ok(compiled)) => Ok(compiled),
            Ok(Err(e)) => Err(PluginError::Invalid {
                path: path.to_owned(),
                reason: one_line(&e),
            }),
            Err(_) => Err(PluginError::CompileTimeout {
                path: path.to_owned(),
                seconds: self.compile_timeout.as_secs(),
            }),
        }
    }

    /// Compiles and type-checks `bytes`, which came from `path`.
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let path = path.to_owned();
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
                return Err(PluginError::CoreModule { path });
            }
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(PluginError::NotWasm { path }),
        }
        let sha256 = hex(&Sha256::digest(bytes));
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&self.engine, &sha256));
        // A fresh compilation is cached only once the component proved to
        // be a router plugin (below).
        let (component, compiled) = match cached {
            Some(component) => (component, None),
            None => {
                let compiled = self.compile(&path, bytes)?;
                // SAFETY: `compiled` is what `precompile_component` just
                // produced with this engine.
                #[allow(unsafe_code, reason = "loading an artifact this engine just produced")]
                let component = unsafe { Component::deserialize(&self.engine, &compiled) }
                    .map_err(|e| PluginError::Invalid {
                        path: path.clone(),
                        reason: one_line(&e),
                    })?;
                (component, Some(compiled))
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::WrongWorld {
                path: path.clone(),
                reason: match self.contract_of(&component) {
                    Some(version) if version != CONTRACT_VERSION => format!(
                        "it was built for contract {version} and this router speaks {CONTRACT_VERSION}: \
                         rebuild it with this release's switchyard-sdk ({})",
                        one_line(&e)
                    ),
                    _ => one_line(&e),
                },
            })?;
        let pre = RouterPre::new(pre).map_err(|e| {
            let exports: Vec<String> = component
                .component_type()
                .exports(&self.engine)
                .map(|(name, _)| name.to_owned())
                .collect();
            PluginError::WrongWorld {
                path: path.clone(),
                reason: format!(
                    "{} (it exports: {}; a plugin exports `init` and `route` of world \
                     switchyard:plugin/router)",
                    one_line(&e),
                    if exports.is_empty() {
                        "nothing".to_owned()
                    } else {
                        exports.join(", ")
                    }
                ),
            }
        })?;
        prepare_memory_image(&component).map_err(|e| PluginError::Instantiate {
            path: path.clone(),
            reason: format!("cannot prepare its initial memory: {}", one_line(&e)),
        })?;
        if let (Some(cache), Some(compiled)) = (&self.cache, compiled) {
            cache.store(&self.engine, &sha256, &compiled);
        }
        let name = path
            .file_stem()
            .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
        Ok(Plugin {
            name: name.into(),
            path,
            version: sha256[..12].to_owned(),
            sha256,
            size: bytes.len(),
            loaded_at: std::time::SystemTime::now(),
            component,
            pre,
            engine: self.clone(),
        })
    }
}

/// Builds the copy-on-write image every instance of `component` starts
/// its memory from, now rather than at the first instantiation, so that a
/// plugin that loads also starts.
///
/// On Linux the image lives in a sealed memfd, and the kernel refuses the
/// seal (EBUSY) while anything else still holds a reference to one of its
/// freshly written pages; that clears by itself, so a failure is retried a
/// few times (each try writes a new memfd) before it is reported.
fn prepare_memory_image(component: &Component) -> wasmtime::Result<()> {
    const TRIES: u32 = 5;
    let mut pause = Duration::from_millis(20);
    let mut tries = 1;
    loop {
        match component.initialize_copy_on_write_image() {
            Ok(()) => return Ok(()),
            Err(e) if tries < TRIES => {
                tracing::debug!(error = %one_line(&e), tries, "memory image not ready; trying again");
                std::thread::sleep(pause);
                pause *= 2;
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How a bounded call ended.
#[derive(Debug)]
pub(super) enum Bounded<T> {
    /// It returned.
    Done(T),
    /// It ran out of time.
    TimedOut,
    /// Its interrupt was raised.
    Interrupted,
}

/// A compiled plugin whose imports and exports match the `router` world.
#[derive(Clone)]
pub struct Plugin {
    pub(super) name: Arc<str>,
    pub(super) path: PathBuf,
    pub(super) version: String,
    pub(super) sha256: String,
    pub(super) size: usize,
    pub(super) loaded_at: std::time::SystemTime,
    pub(super) component: Component,
    pub(super) pre: RouterPre<HostState>,
    pub(super) engine: PluginEngine,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Name used in logs: the file name without extension.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was loaded from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The plugin's version: the first 12 hex digits of the SHA-256 of the
    /// file (what `sha256sum` prints), so two files with the same bytes have
    /// the same version and any change makes a new one.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The full SHA-256 of the file, in hex.
    #[must_use]
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Size of the file in bytes.
    #[must_use]
    pub fn size(&self) -> usize {
        self.size
    }

    /// When it was loaded, in ms since the Unix epoch.
    #[must_use]
    pub fn loaded_at_ms(&self) -> u64 {
        self.loaded_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Names of the interfaces the component imports from the host.
    #[must_use]
    pub fn imports(&self) -> Vec<String> {
        let ty = self.component.component_type();
        ty.imports(&self.engine.engine)
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    /// Names of the component's exports; functions are followed by `()`.
    #[must_use]
    pub fn exports(&self) -> Vec<String> {
        let ty = self.component.component_type();
        ty.exports(&self.engine.engine)
            .map(|(name, item)| match item.ty {
                ComponentItem::ComponentFunc(_) => format!("{name}()"),
                _ => name.to_owned(),
            })
            .collect()
    }
}

/// Largest plugin file accepted by default, in MiB: interpreted plugins
/// (Python, JavaScript) are 12-20 MiB.
const DEFAULT_MAX_PLUGIN_MIB: u64 = 64;

/// Longest wait for a compilation by default, in seconds: the largest
/// interpreted plugins compile in a few seconds here.
const DEFAULT_COMPILE_TIMEOUT_S: u64 = 60;

/// A positive whole number from the environment variable `name`, else
/// `default`.
pub(super) fn env_limit(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// What a file that is not a regular file is, in words.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ty = meta.file_type();
    if ty.is_dir() {
        "a folder"
    } else if ty.is_fifo() {
        "a FIFO"
    } else if ty.is_char_device() {
        "a character device"
    } else if ty.is_block_device() {
        "a block device"
    } else if ty.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is
/// dropped (the thread holds only a weak handle).
fn spawn_epoch_ticker(engine: &Engine) -> Result<(), PluginError> {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("switchyard-epoch".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| PluginError::Engine(format!("cannot start the epoch thread: {e}")))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// An error and its causes on one line, outermost first.
pub(super) fn one_line(e: &wasmtime::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text.replace('\n', " "));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_sdk_carries_the_same_contract_as_the_router() {
        let router = include_str!("../../../wit/switchyard.wit");
        for (copy, text) in [
            (
                "plugin-sdk/wit/switchyard.wit",
                include_str!("../../../plugin-sdk/wit/switchyard.wit"),
            ),
            (
                "plugin-sdk/python/switchyard/wit/switchyard.wit",
                include_str!("../../../plugin-sdk/python/switchyard/wit/switchyard.wit"),
            ),
        ] {
            assert!(
                router == text,
                "{copy} differs from wit/switchyard.wit: copy it over"
            );
        }
    }

    #[test]
    fn the_contract_version_is_the_wit_packages() {
        let wit = include_str!("../../../wit/switchyard.wit");
        assert!(
            wit.contains(&format!(
                "package switchyard:plugin@{};",
                super::CONTRACT_VERSION
            )),
            "wit/switchyard.wit and CONTRACT_VERSION disagree"
        );
    }
}
