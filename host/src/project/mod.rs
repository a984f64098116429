//! Plugin projects: `switchyard new` writes one, `switchyard build` turns
//! one into a component. Rust, Python and TypeScript (or JavaScript)
//! projects; each language's own tools do the building (cargo,
//! componentize-py, esbuild and componentize-js), found where a user of
//! that language keeps them, and nothing is installed behind the user's
//! back: a missing tool is an error that says how to get it.

mod build;
mod new;

use std::fmt;
use std::path::{Path, PathBuf};

pub use build::{BuildOptions, build};
pub use new::new_project;

/// The languages a plugin project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with `switchyard-sdk` (cargo, the wasm32-wasip2 target).
    Rust,
    /// Python with the `switchyard` package (componentize-py).
    Python,
    /// TypeScript or JavaScript with `switchyard-sdk` (npm, esbuild,
    /// componentize-js).
    #[value(alias = "javascript", alias = "ts", alias = "js")]
    Typescript,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::Typescript => "typescript",
        })
    }
}

impl Lang {
    /// The language of the project in `dir`, from the manifest it has.
    pub fn of(dir: &Path) -> anyhow::Result<Self> {
        if dir.join("Cargo.toml").is_file() {
            Ok(Self::Rust)
        } else if dir.join("package.json").is_file() {
            Ok(Self::Typescript)
        } else if dir.join("pyproject.toml").is_file() || dir.join("app.py").is_file() {
            Ok(Self::Python)
        } else {
            anyhow::bail!(
                "{} is not a plugin project: it has no Cargo.toml (Rust), package.json \
                 (TypeScript/JavaScript), or pyproject.toml or app.py (Python); \
                 `switchyard new NAME --lang rust|python|typescript` starts one",
                dir.display()
            )
        }
    }
}

/// Where the SDKs are: `plugin-sdk/` of a Switchyard source tree (the Rust
/// crate, with `python/` and `typescript/` beside it).
#[derive(Debug, Clone)]
pub struct Sdks {
    root: PathBuf,
}

impl Sdks {
    /// The SDKs at `root`, which must hold all three.
    pub fn at(root: &Path) -> anyhow::Result<Self> {
        let root = std::path::absolute(root)?;
        for (lang, marker) in [
            (Lang::Rust, "Cargo.toml"),
            (Lang::Python, "python/switchyard/__init__.py"),
            (Lang::Typescript, "typescript/package.json"),
        ] {
            if !root.join(marker).is_file() {
                anyhow::bail!(
                    "{} does not hold the Switchyard SDKs: no {marker} (the {lang} SDK)",
                    root.display()
                );
            }
        }
        Ok(Self { root })
    }

    /// The SDKs this binary goes with: `SWITCHYARD_SDK_DIR` if set, else
    /// `share/switchyard/sdk` beside the binary's folder (an installed
    /// layout), else the source tree it was built from.
    pub fn locate() -> anyhow::Result<Self> {
        if let Some(dir) = std::env::var_os("SWITCHYARD_SDK_DIR") {
            return Self::at(Path::new(&dir))
                .map_err(|e| anyhow::anyhow!("SWITCHYARD_SDK_DIR: {e}"));
        }
        let mut candidates = Vec::new();
        if let Some(bin) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
        {
            candidates.push(bin.join("../share/switchyard/sdk"));
        }
        candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk"));
        for dir in &candidates {
            if let Ok(sdks) = Self::at(dir) {
                return Ok(Self {
                    root: sdks.root.canonicalize().unwrap_or(sdks.root),
                });
            }
        }
        anyhow::bail!(
            "cannot find the Switchyard SDKs (looked in {}): set SWITCHYARD_SDK_DIR to the \
             plugin-sdk folder of a Switchyard source tree",
            candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The SDK of `lang`.
    pub fn of(&self, lang: Lang) -> PathBuf {
        match lang {
            Lang::Rust => self.root.clone(),
            Lang::Python => self.root.join("python"),
            Lang::Typescript => self.root.join("typescript"),
        }
    }
}
