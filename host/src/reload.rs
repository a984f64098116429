//! Hot swap: route plugin files are watched; a changed file is compiled,
//! checked (instantiated and `init`-ed with the route's configuration) and
//! only then swapped in. Anything that fails leaves the previous version
//! routing and is reported.
//!
//! The watch is on each plugin's folder, not on the file: editors and
//! deployment tools replace files by renaming (a watch on the old inode goes
//! deaf) and Kubernetes swaps a symlink to a new folder. Any event in the
//! folder makes every plugin in it be read again and compared by content
//! hash, after the folder has been quiet for a moment (a burst of writes is
//! one change).
//!
//! Each route's file is checked on a thread of its own, one check at a time
//! per route: a file that is slow to compile or whose `init` runs out its
//! time delays only its own route's swap, never another's. Reading,
//! compiling and `init` are each bounded (see [`PluginEngine::read`] and
//! the route's `limits.init_timeout_ms`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use crate::plugin::PluginEngine;
use crate::route::Route;

/// How long a folder must be quiet before its plugins are read again.
const QUIET: Duration = Duration::from_millis(100);
/// Longest wait for quiet before plugins are read anyway.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);
/// How often the watcher thread checks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// Counts of what the watcher did, for logs and metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Plugins swapped in.
    pub swaps: AtomicU64,
    /// Changed plugin files that were refused (the previous version stayed).
    pub failures: AtomicU64,
    /// Times a plugin file was found missing or unreadable (the loaded
    /// version stayed).
    pub unreadable: AtomicU64,
}

/// A running watcher; dropping it stops it.
#[derive(Debug)]
pub struct PluginWatcher {
    _watcher: RecommendedWatcher,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// What it did so far.
    pub stats: Arc<ReloadStats>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Watches the plugin files of `routes` (those with a plugin).
pub fn watch(routes: &[Arc<Route>], engine: &PluginEngine) -> Result<PluginWatcher, notify::Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(ReloadStats::default());
    let watched = |route: &Arc<Route>, candidate: bool| {
        Arc::new(Watched {
            route: route.clone(),
            candidate,
            engine: engine.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            state: Mutex::default(),
        })
    };
    let mut files: Vec<Arc<Watched>> = Vec::new();
    for route in routes.iter().filter(|r| r.config.plugin.is_some()) {
        files.push(watched(route, false));
        if route.config.rollout.is_some() {
            let candidate = watched(route, true);
            // The candidate in place when the router starts is tried from
            // its first record.
            candidate.check();
            files.push(candidate);
        }
    }
    let watched = files;
    let folders: BTreeSet<PathBuf> = watched
        .iter()
        .filter_map(|w| w.path().map(folder_of))
        .collect();
    let (tx, rx) = channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })?;
    for folder in &folders {
        watcher.watch(folder, RecursiveMode::NonRecursive)?;
    }
    let thread = std::thread::Builder::new()
        .name("switchyard-reload".to_owned())
        .spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Acquire) {
                    match rx.recv_timeout(STOP_CHECK) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                        Ok(Err(e)) => tracing::warn!(error = %e, "plugin file watch error"),
                        Ok(Ok(_)) => {
                            // Debounce: wait until the folders have been quiet
                            // for a moment (but not forever, if something else
                            // in them never stops changing).
                            let give_up = Instant::now() + MAX_DEBOUNCE;
                            loop {
                                match rx.recv_timeout(QUIET) {
                                    Ok(_) if Instant::now() < give_up => {}
                                    Ok(_) | Err(RecvTimeoutError::Timeout) => break,
                                    Err(RecvTimeoutError::Disconnected) => return,
                                }
                            }
                            for route in &watched {
                                Watched::check_soon(route);
                            }
                        }
                    }
                }
            }
        })?;
    Ok(PluginWatcher {
        _watcher: watcher,
        stop,
        thread: Some(thread),
        stats,
    })
}

impl Watched {
    /// Reads the rollout's candidate file: a new version (checked as a
    /// swap is) starts a rollout; a missing file ends the one running.
    fn check_candidate(&self) {
        let route = &self.route;
        let Some(path) = self.path() else {
            return;
        };
        let bytes = match self.engine.read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if !std::mem::replace(&mut self.state().missing, true) {
                    tracing::info!(
                        route = route.name(),
                        file = %path.display(),
                        error = %e,
                        "no rollout candidate: the live version routes everything"
                    );
                }
                route.withdraw_candidate(&format!(
                    "its file '{}' is gone or unreadable: {e}",
                    path.display()
                ));
                return;
            }
        };
        self.state().missing = false;
        let sha256 = sha256_hex(&bytes);
        route.rollouts.candidate_file_is(&sha256);
        let unchanged = route
            .rollout()
            .is_some_and(|r| r.candidate.sha256() == sha256)
            || route.plugin().is_some_and(|p| p.sha256() == sha256);
        if unchanged
            || self.state().refused.as_ref() == Some(&sha256)
            || route.rollouts.is_rejected(&sha256)
            || route.skips_file_version(&sha256)
        {
            return;
        }
        let Some(checked) = self.load_checked(path, &bytes) else {
            return;
        };
        match checked {
            Ok(candidate) => {
                route.start_rollout(candidate);
                self.state().refused = None;
            }
            Err(e) => {
                tracing::error!(
                    route = route.name(),
                    file = %path.display(),
                    error = %e,
                    "rollout candidate refused: the live version routes everything"
                );
                self.state().refused = Some(sha256);
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                route.withdraw_candidate(&format!(
                    "its file '{}' was replaced by one refused",
                    path.display()
                ));
            }
        }
    }
}

/// The SHA-256 of `bytes`, in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// One route's plugin file (or its rollout's candidate), and the checks of
/// it.
struct Watched {
    route: Arc<Route>,
    /// The file is the route's `rollout.candidate`.
    candidate: bool,
    engine: PluginEngine,
    stats: Arc<ReloadStats>,
    stop: Arc<AtomicBool>,
    state: Mutex<CheckState>,
}

#[derive(Default)]
struct CheckState {
    /// A check is running on its thread.
    running: bool,
    /// Something changed while it ran: check again when it ends.
    again: bool,
    /// Content hash of the last file refused, so that one bad file is
    /// reported once, not on every event in its folder.
    refused: Option<String>,
    /// The file is missing or unreadable (reported once).
    missing: bool,
}

impl Watched {
    fn state(&self) -> std::sync::MutexGuard<'_, CheckState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks the route's file on a thread of its own, now or, if a check
    /// is running, right after it.
    fn check_soon(this: &Arc<Self>) {
        {
            let mut state = this.state();
            if state.running {
                state.again = true;
                return;
            }
            state.running = true;
        }
        let watched = this.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("reload-{}", this.route.name()))
            .spawn(move || {
                loop {
                    if !watched.stop.load(Ordering::Acquire) {
                        watched.check();
                    }
                    let mut state = watched.state();
                    if !std::mem::take(&mut state.again) {
                        state.running = false;
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(route = this.route.name(), error = %e, "cannot check the plugin file");
            this.state().running = false;
        }
    }

    /// `bytes`, read from `path`, compiled and started with the route's
    /// configuration (`init` run); `None` if the watcher stopped meanwhile.
    fn load_checked(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Option<Result<crate::plugin::Plugin, crate::plugin::PluginError>> {
        let checked = self
            .engine
            .load_bytes(path, bytes)
            .and_then(|plugin| self.route.instantiate(&plugin).map(|_| plugin));
        (!self.stop.load(Ordering::Acquire)).then_some(checked)
    }

    /// The file watched.
    fn path(&self) -> Option<&Path> {
        if self.candidate {
            self.route
                .config
                .rollout
                .as_ref()
                .map(|r| r.candidate.as_path())
        } else {
            self.route.config.plugin.as_deref()
        }
    }

    fn check(&self) {
        if self.candidate {
            self.check_candidate();
            return;
        }
        let route = &self.route;
        let Some(path) = route.config.plugin.as_deref() else {
            return;
        };
        let Some(current) = route.plugin() else {
            return;
        };
        let started = Instant::now();
        let bytes = match self.engine.read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut self.state().missing, true) {
                    tracing::warn!(
                        route = route.name(),
                        file = %path.display(),
                        version = current.version(),
                        error = %e,
                        "plugin file unreadable: still routing with the loaded version"
                    );
                }
                return;
            }
        };
        self.state().missing = false;
        let sha256 = sha256_hex(&bytes);
        if sha256 == current.sha256()
            || self.state().refused.as_ref() == Some(&sha256)
            || route.skips_file_version(&sha256)
        {
            return;
        }
        let Some(checked) = self.load_checked(path, &bytes) else {
            return;
        };
        match checked {
            Ok(plugin) => {
                let load_ms = started.elapsed().as_secs_f64() * 1000.0;
                tracing::info!(
                    route = route.name(),
                    file = %path.display(),
                    from = current.version(),
                    to = plugin.version(),
                    load_ms = format!("{load_ms:.1}"),
                    "plugin swapped"
                );
                route.swap_plugin(plugin);
                self.state().refused = None;
                self.stats.swaps.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(
                    route = route.name(),
                    file = %path.display(),
                    version = current.version(),
                    error = %e,
                    "new plugin file refused: still routing with the loaded version"
                );
                self.state().refused = Some(sha256);
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
