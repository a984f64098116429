//! A directory of schemas by ID: the offline schema source (`switchyard
//! route --schemas DIR`, air-gapped sites, tests).
//!
//! Schema `7` is one of these files in the directory:
//! - `7.json`: what a registry answers for it, `GET /schemas/ids/7` (
//!   `{"schema": "...", "schemaType": "PROTOBUF", "references": [...]}`)
//!   or `GET /subjects/S/versions/V` (the same with `subject`, `version`
//!   and `id`), so `curl $REGISTRY/schemas/ids/7 > 7.json` exports one;
//! - `7.avsc`, `7.proto` or `7.schema.json`: the bare schema text of an
//!   Avro, Protobuf or JSON Schema schema, without references.
//!
//! A reference to version V of subject S resolves to the `.json` file that
//! says `"subject": "S", "version": V` (see [`super::store`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Format, Reference, SchemaText};

/// Schema files larger than this are refused (the largest real schemas
/// are a few hundred KiB).
const MAX_FILE: u64 = 16 << 20;

/// A directory of schemas.
#[derive(Debug, Clone)]
pub struct SchemaDir {
    path: PathBuf,
}

/// What a registry answers for a schema (by ID, or a subject's version).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegistrySchema {
    pub schema: String,
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Vec<Reference>,
    pub subject: Option<String>,
    pub version: Option<i32>,
    pub id: Option<u32>,
}

impl RegistrySchema {
    pub(crate) fn into_text(self) -> Result<SchemaText, String> {
        Ok(SchemaText {
            format: Format::from_registry(self.schema_type.as_deref())?,
            text: self.schema,
            references: self.references,
        })
    }
}

/// Why a schema could not be read from the directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema file '{path}': {reason}")]
pub struct DirError {
    /// The file (or the directory) concerned.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl SchemaDir {
    /// The directory at `path`, which must exist.
    ///
    /// # Errors
    /// When `path` is not a readable directory.
    pub fn open(path: &Path) -> Result<Self, DirError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(Self {
                path: path.to_owned(),
            }),
            Ok(_) => Err(DirError {
                path: path.to_owned(),
                reason: "not a directory".to_owned(),
            }),
            Err(e) => Err(DirError {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Where the directory is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Schema `id`, if the directory has it.
    ///
    /// # Errors
    /// When its file cannot be read or is not a schema.
    pub fn by_id(&self, id: u32) -> Result<Option<SchemaText>, DirError> {
        let candidates = [
            (format!("{id}.json"), None),
            (format!("{id}.avsc"), Some(Format::Avro)),
            (format!("{id}.proto"), Some(Format::Protobuf)),
            (format!("{id}.schema.json"), Some(Format::Json)),
        ];
        let mut found = None;
        for (name, format) in candidates {
            let path = self.path.join(&name);
            let Some(text) = read(&path)? else { continue };
            if found.is_some() {
                return Err(DirError {
                    path,
                    reason: format!("schema {id} has more than one file"),
                });
            }
            let schema = match format {
                Some(format) => SchemaText {
                    format,
                    text,
                    references: Vec::new(),
                },
                None => {
                    let answer = parse_answer(&path, &text)?;
                    if let Some(other) = answer.id.filter(|&other| other != id) {
                        return Err(DirError {
                            path,
                            reason: format!("it says it is schema {other}, not {id}"),
                        });
                    }
                    answer
                        .into_text()
                        .map_err(|reason| DirError { path, reason })?
                }
            };
            found = Some(schema);
        }
        Ok(found)
    }

    /// Version `version` of `subject` (its latest when `None`), with its
    /// ID and its version.
    ///
    /// # Errors
    /// When a file of the directory cannot be read or is not a schema.
    pub fn by_subject(
        &self,
        subject: &str,
        version: Option<i32>,
    ) -> Result<Option<(u32, i32, SchemaText)>, DirError> {
        let dir_error = |e: std::io::Error| DirError {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut best: Option<(i32, u32, RegistrySchema)> = None;
        for entry in std::fs::read_dir(&self.path).map_err(dir_error)? {
            let path = entry.map_err(dir_error)?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|stem| stem.parse::<u32>().ok())
            else {
                continue;
            };
            // A file that cannot be read or parsed is reported when its
            // own ID is looked up; it names no subject meanwhile.
            let Ok(Some(text)) = read(&path) else {
                continue;
            };
            let Ok(answer) = parse_answer(&path, &text) else {
                continue;
            };
            let (Some(s), Some(v)) = (&answer.subject, answer.version) else {
                continue;
            };
            if s != subject || version.is_some_and(|wanted| wanted != v) {
                continue;
            }
            if best.as_ref().is_none_or(|(best_v, _, _)| v > *best_v) {
                best = Some((v, id, answer));
            }
        }
        best.map(|(version, id, answer)| {
            answer
                .into_text()
                .map(|text| (id, version, text))
                .map_err(|reason| DirError {
                    path: self.path.join(format!("{id}.json")),
                    reason,
                })
        })
        .transpose()
    }
}

fn parse_answer(path: &Path, text: &str) -> Result<RegistrySchema, DirError> {
    serde_json::from_str(text).map_err(|e| DirError {
        path: path.to_owned(),
        reason: format!(
            "not a registry answer ({{\"schema\": \"...\", \"schemaType\": ..., \"references\": [...]}}): {e}"
        ),
    })
}

/// The text of the file at `path`; `None` if there is none.
fn read(path: &Path) -> Result<Option<String>, DirError> {
    let error = |reason: String| DirError {
        path: path.to_owned(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error(e.to_string())),
    };
    if !meta.is_file() {
        return Err(error("not a regular file".to_owned()));
    }
    if meta.len() > MAX_FILE {
        return Err(error(format!(
            "{} bytes, more than the {MAX_FILE} a schema may have",
            meta.len()
        )));
    }
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| error(e.to_string()))
}
