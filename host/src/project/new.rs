//! `switchyard new`: a plugin project that builds and tests as written.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Lang, Sdks};

/// One file of a template: its path in the project and its text, with
/// `{{name}}` and `{{sdk}}` to fill in.
type TemplateFile = (&'static str, &'static str);

const SAMPLE: TemplateFile = ("sample.jsonl", include_str!("../../templates/sample.jsonl"));

const RUST: &[TemplateFile] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml"),
    ),
    (
        "rust-toolchain.toml",
        include_str!("../../../plugins/rust-toolchain.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs"),
    ),
    ("README.md", include_str!("../../templates/rust/README.md")),
    (".gitignore", include_str!("../../templates/rust/gitignore")),
    SAMPLE,
];

const PYTHON: &[TemplateFile] = &[
    (
        "pyproject.toml",
        include_str!("../../templates/python/pyproject.toml"),
    ),
    ("app.py", include_str!("../../templates/python/app.py")),
    (
        "test_app.py",
        include_str!("../../templates/python/test_app.py"),
    ),
    (
        "README.md",
        include_str!("../../templates/python/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/python/gitignore"),
    ),
    SAMPLE,
];

const TYPESCRIPT: &[TemplateFile] = &[
    (
        "package.json",
        include_str!("../../templates/typescript/package.json"),
    ),
    (
        "tsconfig.json",
        include_str!("../../templates/typescript/tsconfig.json"),
    ),
    (
        "src/plugin.ts",
        include_str!("../../templates/typescript/src/plugin.ts"),
    ),
    (
        "test/plugin.test.ts",
        include_str!("../../templates/typescript/test/plugin.test.ts"),
    ),
    (
        "README.md",
        include_str!("../../templates/typescript/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/typescript/gitignore"),
    ),
    SAMPLE,
];

/// Writes a new plugin project named `name` in `lang` into the folder
/// `dir` (created; it must not exist or be empty), its SDK dependency
/// pointing at `sdks`. Returns the folder.
pub fn new_project(name: &str, lang: Lang, dir: &Path, sdks: &Sdks) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        anyhow::bail!(
            "{} already exists and is not empty: choose another name or folder",
            dir.display()
        );
    }
    let sdk = sdks.of(lang);
    let sdk = sdk
        .to_str()
        .with_context(|| format!("the {lang} SDK's path {} is not UTF-8", sdk.display()))?;
    // The manifests are TOML and JSON, whose strings escape alike.
    let sdk = sdk.replace('\\', "\\\\").replace('"', "\\\"");
    let files = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Typescript => TYPESCRIPT,
    };
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = text.replace("{{name}}", name).replace("{{sdk}}", &sdk);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir.to_path_buf())
}

/// A name every language's package manager takes as it is: lowercase
/// letters, digits, `-` and `_`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if !valid {
        anyhow::bail!(
            "'{name}' cannot name a plugin project: use lowercase letters, digits, '-' and '_', \
             starting with a letter (at most 64 characters)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_those_every_package_manager_takes() {
        for good in ["hello", "tenant-router", "a1_b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Hello", "1st", "-x", "a b", "a/b", "café"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
