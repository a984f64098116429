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

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
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
    let routes: Vec<Arc<Route>> = routes
        .iter()
        .filter(|r| r.config.plugin.is_some())
        .cloned()
        .collect();
    let folders: BTreeSet<PathBuf> = routes
        .iter()
        .filter_map(|r| r.config.plugin.as_deref().map(folder_of))
        .collect();
    let (tx, rx) = channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })?;
    for folder in &folders {
        watcher.watch(folder, RecursiveMode::NonRecursive)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(ReloadStats::default());
    let mut reloader = Reloader {
        routes,
        engine: engine.clone(),
        refused: HashMap::new(),
        missing: HashMap::new(),
        stats: stats.clone(),
    };
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
                            reloader.check_all();
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

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

struct Reloader {
    routes: Vec<Arc<Route>>,
    engine: PluginEngine,
    /// Content hash of the last file refused per route, so that one bad
    /// file is reported once, not on every event in its folder.
    refused: HashMap<String, String>,
    /// Routes whose file is currently missing (reported once).
    missing: HashMap<String, ()>,
    stats: Arc<ReloadStats>,
}

impl Reloader {
    fn check_all(&mut self) {
        for route in self.routes.clone() {
            self.check(&route);
        }
    }

    fn check(&mut self, route: &Route) {
        let Some(path) = route.config.plugin.as_deref() else {
            return;
        };
        let Some(current) = route.plugin() else {
            return;
        };
        let started = Instant::now();
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
                if self.missing.insert(route.name().to_owned(), ()).is_none() {
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
        self.missing.remove(route.name());
        let sha256: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if sha256 == current.sha256() || self.refused.get(route.name()) == Some(&sha256) {
            return;
        }
        let checked = self
            .engine
            .load_bytes(path, &bytes)
            .and_then(|plugin| route.instantiate(&plugin).map(|_| plugin));
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
                self.refused.remove(route.name());
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
                self.refused.insert(route.name().to_owned(), sha256);
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
