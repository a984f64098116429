//! `switchyard build`: a plugin project turned into a component by its
//! language's tools.

use std::ffi::OsStr;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::{Lang, Sdks};

/// The contract the SDKs build for; the TypeScript entry imports its host
/// interface by this version.
const CONTRACT: &str = "switchyard:plugin@0.3.1";

/// What `switchyard build` was asked for.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Where to write the component; default: the language's usual place
    /// in the project (`target/`).
    pub out: Option<PathBuf>,
}

/// Builds the plugin project in `dir` and returns the component's path.
/// The tools' own output goes to standard error.
pub fn build(dir: &Path, options: &BuildOptions) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot open the project folder {}", dir.display()))?;
    let out = match &options.out {
        Some(out) => Some(std::path::absolute(out)?),
        None => None,
    };
    match Lang::of(&dir)? {
        Lang::Rust => build_rust(&dir, out),
        Lang::Python => build_python(&dir, out),
        Lang::Typescript => build_typescript(&dir, out),
    }
}

fn build_rust(dir: &Path, out: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    const TARGET: &str = "wasm32-wasip2";
    // rustup answers for the toolchain this project pins, if it pins one.
    if let Ok(listed) = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "list", "--installed"])
        .output()
    {
        if !listed.status.success() {
            bail!(
                "rustup cannot give the toolchain of {}: {}\
                 (install that toolchain with rustup, with the {TARGET} target)",
                dir.display(),
                String::from_utf8_lossy(&listed.stderr)
            );
        }
        if !String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|t| t.trim() == TARGET)
        {
            bail!(
                "the {TARGET} target is not installed for the toolchain {} builds with: \
                 run `rustup target add {TARGET}` there",
                dir.display()
            );
        }
    }
    let manifest = dir.join("Cargo.toml");
    let mut child = Command::new("cargo")
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| missing_tool("cargo", &e, "install Rust from https://rustup.rs"))?;
    let mut component = None;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(path) = wasm_artifact(&line, &manifest) {
                component = Some(path);
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo build failed in {} ({status})", dir.display());
    }
    let component = component.with_context(|| {
        format!(
            "cargo built no component in {}: the package needs \
             `crate-type = [\"cdylib\"]` under [lib]",
            dir.display()
        )
    })?;
    match out {
        Some(out) => {
            create_parent(&out)?;
            std::fs::copy(&component, &out)
                .with_context(|| format!("cannot copy the component to {}", out.display()))?;
            Ok(out)
        }
        None => Ok(component),
    }
}

/// The `.wasm` file of a cargo `compiler-artifact` message for the package
/// of `manifest`, if `line` is one.
fn wasm_artifact(line: &str, manifest: &Path) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact"
        || Path::new(message.get("manifest_path")?.as_str()?) != manifest
    {
        return None;
    }
    message
        .get("filenames")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}

/// `[tool.switchyard]` and `[project]` of a Python project's pyproject.toml.
#[derive(Debug, Default, serde::Deserialize)]
struct PyProject {
    #[serde(default)]
    project: PyProjectTable,
    #[serde(default)]
    tool: PyTools,
}

#[derive(Debug, Default, serde::Deserialize)]
struct PyProjectTable {
    name: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct PyTools {
    #[serde(default)]
    switchyard: PySwitchyard,
}

#[derive(Debug, Default, serde::Deserialize)]
struct PySwitchyard {
    module: Option<String>,
    sdk: Option<PathBuf>,
}

fn build_python(dir: &Path, out: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let pyproject_path = dir.join("pyproject.toml");
    let pyproject: PyProject = if pyproject_path.is_file() {
        let text = std::fs::read_to_string(&pyproject_path)
            .with_context(|| format!("cannot read {}", pyproject_path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not valid", pyproject_path.display()))?
    } else {
        PyProject::default()
    };
    let module = pyproject
        .tool
        .switchyard
        .module
        .unwrap_or_else(|| "app".to_owned());
    if !dir.join(format!("{module}.py")).is_file()
        && !dir.join(&module).join("__init__.py").is_file()
    {
        bail!(
            "{} has no module '{module}' ({module}.py): the plugin's module is `app` unless \
             [tool.switchyard] module in pyproject.toml names another",
            dir.display()
        );
    }
    let sdk = match pyproject.tool.switchyard.sdk {
        Some(sdk) => dir.join(sdk),
        None => Sdks::locate()?.of(Lang::Python),
    };
    let wit = sdk.join("switchyard/wit");
    if !wit.is_dir() {
        bail!(
            "{} is not the Switchyard Python SDK (no switchyard/wit): check [tool.switchyard] \
             sdk in {}",
            sdk.display(),
            pyproject_path.display()
        );
    }
    let name = pyproject.project.name.unwrap_or_else(|| folder_name(dir));
    let out = out.unwrap_or_else(|| dir.join("target").join(format!("{name}.wasm")));
    create_parent(&out)?;
    let tool = componentize_py(dir)?;
    run(
        Command::new(&tool)
            .current_dir(dir)
            .arg("-d")
            .arg(&wit)
            .args(["-w", "router", "componentize", &module, "-p"])
            .arg(dir)
            .arg("-p")
            .arg(&sdk)
            .arg("-o")
            .arg(&out),
        "componentize-py",
    )?;
    Ok(out)
}

/// componentize-py: `SWITCHYARD_COMPONENTIZE_PY`, the project's `.venv`,
/// `PATH`, or the one Switchyard's `scripts/setup` installs.
fn componentize_py(dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(tool) = std::env::var_os("SWITCHYARD_COMPONENTIZE_PY") {
        let tool = PathBuf::from(tool);
        if !tool.is_file() {
            bail!(
                "SWITCHYARD_COMPONENTIZE_PY names {}, which is not a file: point it at \
                 componentize-py (`pip install componentize-py==0.25.1` installs it)",
                tool.display()
            );
        }
        return Ok(tool);
    }
    let mut candidates = vec![dir.join(".venv/bin/componentize-py")];
    candidates.extend(on_path("componentize-py"));
    if let Some(cache) = setup_cache() {
        let mut venvs: Vec<_> = std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(OsStr::to_str)
                    .is_some_and(|n| n.starts_with("venv-componentize-py-"))
            })
            .collect();
        venvs.sort();
        candidates.extend(
            venvs
                .into_iter()
                .rev()
                .map(|v| v.join("bin/componentize-py")),
        );
    }
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .with_context(|| {
            "componentize-py is not installed: `pip install componentize-py==0.25.1` (in a \
         virtualenv, e.g. the project's .venv), or set SWITCHYARD_COMPONENTIZE_PY to it"
        })
}

fn build_typescript(dir: &Path, out: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let manifest_path = dir.join("package.json");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{} is not valid JSON", manifest_path.display()))?;
    let main = match manifest.get("main").and_then(|m| m.as_str()) {
        Some(main) => dir.join(main),
        None => [
            "src/plugin.ts",
            "src/plugin.js",
            "src/index.ts",
            "src/index.js",
        ]
        .iter()
        .map(|m| dir.join(m))
        .find(|m| m.is_file())
        .with_context(|| {
            format!(
                "{} names no \"main\" module and there is no src/plugin.ts",
                manifest_path.display()
            )
        })?,
    };
    if !main.is_file() {
        bail!(
            "the plugin's module {} (\"main\" in {}) does not exist",
            main.display(),
            manifest_path.display()
        );
    }
    let name = manifest
        .get("name")
        .and_then(|n| n.as_str())
        .map(|n| n.rsplit('/').next().unwrap_or(n).to_owned())
        .unwrap_or_else(|| folder_name(dir));
    let install = || {
        format!(
            "run `npm install` in {} first (package.json lists it)",
            dir.display()
        )
    };
    let sdk = node_module(dir, "switchyard-sdk")
        .with_context(|| format!("the switchyard-sdk package is not installed: {}", install()))?;
    let esbuild = node_bin(dir, "esbuild")
        .with_context(|| format!("esbuild is not installed: {}", install()))?;
    let componentize = node_bin(dir, "componentize-js").with_context(|| {
        format!(
            "componentize-js (@bytecodealliance/componentize-js) is not installed: {}",
            install()
        )
    })?;

    let out = out.unwrap_or_else(|| dir.join("target").join(format!("{name}.wasm")));
    let work = dir.join("target");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    create_parent(&out)?;
    // The component's exports: the plugin module's default export adapted
    // by the SDK, which also gets the router's host interface.
    let entry = work.join(format!("{name}.entry.js"));
    let main = serde_json::to_string(&main.to_string_lossy())?;
    std::fs::write(
        &entry,
        format!(
            "// Written by `switchyard build`: the component's exports.\n\
             import plugin from {main};\n\
             import * as host from \"{HOST}\";\n\
             import * as schemas from \"{SCHEMAS}\";\n\
             import {{ witExports }} from \"switchyard-sdk/component\";\n\
             export const {{ init, route }} = witExports(plugin, host, schemas);\n",
            HOST = CONTRACT.replace('@', "/host@"),
            SCHEMAS = CONTRACT.replace('@', "/schemas@"),
        ),
    )
    .with_context(|| format!("cannot write {}", entry.display()))?;
    let bundle = work.join(format!("{name}.bundle.js"));
    run(
        Command::new(&esbuild)
            .current_dir(dir)
            .arg(&entry)
            .args(["--bundle", "--format=esm", "--platform=neutral"])
            .args([
                "--main-fields=module,main",
                "--external:switchyard:*",
                "--log-level=warning",
            ])
            .arg(format!("--outfile={}", bundle.display())),
        "esbuild",
    )?;
    run(
        Command::new(&componentize)
            .current_dir(dir)
            .arg(&bundle)
            .arg("--wit")
            .arg(sdk.join("wit"))
            .args(["--world-name", "router"])
            // The router offers no HTTP: the component must not import it.
            .args(["--disable", "http", "fetch-event", "-o"])
            .arg(&out),
        "componentize-js",
    )?;
    Ok(out)
}

/// `node_modules/NAME` in `dir` or the nearest folder above it that has it.
fn node_module(dir: &Path, name: &str) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join("node_modules").join(name))
        .find(|p| p.join("package.json").is_file())
}

/// An npm package's command: `node_modules/.bin` of `dir` or above, or `PATH`.
fn node_bin(dir: &Path, name: &str) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join("node_modules/.bin").join(name))
        .find(|p| p.is_file())
        .or_else(|| on_path(name))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Where Switchyard's `scripts/setup` keeps the tools it installs.
fn setup_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("switchyard"))
}

fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".to_owned())
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    Ok(())
}

fn missing_tool(tool: &str, error: &std::io::Error, hint: &str) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!("{tool} is not installed (not on PATH): {hint}")
    } else {
        anyhow::anyhow!("cannot run {tool}: {error}")
    }
}

/// Runs a build tool, its output on our standard error (standard output
/// carries only the component's path).
fn run(command: &mut Command, tool: &str) -> anyhow::Result<()> {
    let status = command
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| missing_tool(tool, &e, "see the plugin guide"))?;
    if !status.success() {
        bail!("{tool} failed ({status}); its messages are above");
    }
    Ok(())
}
