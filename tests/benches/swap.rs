//! How long a plugin swap takes, from the new file written to the new
//! version routing (debounce, read, hash, compile, instantiate + `init`
//! check, swap), for a small plugin, one with more code, a 4 MiB one, and
//! the tenant-partitioner written in Python and in TypeScript (a whole
//! interpreter in the component); against a baseline measured in the same
//! run: compiling the same bytes alone.
//!
//! Run: `cargo bench -p switchyard-tests --bench swap` (no broker needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use switchyard::config::RouterConfig;
use switchyard::plugin::PluginEngine;
use switchyard::route::{Route, Topics};
use switchyard_plugin_fixtures as fixtures;

const SWAPS: u64 = 20;
/// The interpreted components take seconds to compile: fewer swaps.
const INTERPRETED_SWAPS: u64 = 5;

struct AnyTopic;

impl Topics for AnyTopic {
    fn partition_count(&self, _: &str) -> Option<u32> {
        Some(6)
    }

    fn refreshed_partition_count(&self, _: &str) -> Option<u32> {
        Some(6)
    }
}

/// `wasm` with a custom section carrying `n`: same code, new content hash.
fn variant(wasm: &[u8], n: u64) -> Vec<u8> {
    let mut out = wasm.to_vec();
    let name = b"bench";
    out.push(0); // custom section
    out.push((1 + name.len() + 8) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&n.to_le_bytes());
    out
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn median_and_worst(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let engine = PluginEngine::new()?;
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cases: [(&str, PathBuf, &str, u64); 5] = [
        ("small (versioned)", fixtures::versioned(), "", SWAPS),
        (
            "code (envelope-router)",
            fixtures::envelope_router(),
            r#"plugin_config = { "a" = "b" }"#,
            SWAPS,
        ),
        ("large (4 MiB table)", fixtures::large(), "", SWAPS),
        (
            "python tenant-partitioner",
            fixtures::python("tenant-partitioner"),
            "",
            INTERPRETED_SWAPS,
        ),
        (
            "typescript tenant-part.",
            fixtures::typescript("tenant-partitioner"),
            "",
            INTERPRETED_SWAPS,
        ),
    ];
    println!(
        "{SWAPS} swaps each ({INTERPRETED_SWAPS} for interpreted plugins); \
         time from the new file written to the new version routing"
    );
    println!(
        "{:<26} {:>8} {:>14} {:>14} {:>16}",
        "plugin", "size", "swap median", "swap worst", "compile median"
    );
    for (name, base, plugin_config, swaps_wanted) in cases {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let wasm = std::fs::read(&base)?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("plugin.wasm");
        std::fs::write(&path, &wasm)?;
        let config = RouterConfig::parse(
            Path::new("swap.toml"),
            &format!(
                "[kafka]\nbootstrap_servers = \"127.0.0.1:9\"\n[[routes]]\nname = \"r\"\nsource_topics = [\"in\"]\nplugin = \"{}\"\ndefault_target = \"out\"\non_failure = \"skip\"\n{plugin_config}\n",
                path.display()
            ),
        )?;
        let route = Arc::new(Route::new(
            config.routes[0].clone(),
            Some(engine.load(&path)?),
            Arc::new(AnyTopic),
        ));
        let watcher = switchyard::reload::watch(std::slice::from_ref(&route), &engine)?;

        let mut swaps = Vec::new();
        let mut compiles = Vec::new();
        for n in 1..=swaps_wanted {
            let bytes = variant(&wasm, n);
            let expected = sha256(&bytes);
            let start = Instant::now();
            std::fs::write(&path, &bytes)?;
            while route.plugin().is_none_or(|p| p.sha256() != expected) {
                anyhow::ensure!(
                    start.elapsed() < Duration::from_secs(120),
                    "swap {n} not seen"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            swaps.push(start.elapsed());
            // Baseline: compiling the same kind of bytes, alone.
            let other = variant(&wasm, 1_000 + n);
            let start = Instant::now();
            engine.load_bytes(&path, &other)?;
            compiles.push(start.elapsed());
        }
        drop(watcher);
        let (median, worst) = median_and_worst(swaps);
        let (compile, _) = median_and_worst(compiles);
        println!(
            "{name:<26} {:>7}KB {:>13.1?} {:>14.1?} {:>16.1?}   swap = compile + {:.1?}",
            wasm.len() / 1024,
            median,
            worst,
            compile,
            median.saturating_sub(compile)
        );
    }
    Ok(())
}
