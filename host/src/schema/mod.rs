//! Records in a schema registry's wire format: Avro, Protobuf and JSON
//! Schema bodies behind a magic byte and a schema ID ([`wire`]), their
//! schemas read from a directory ([`dir`]) and compiled once per ID
//! ([`Compiled`]).

mod avro;
pub mod check;
pub mod dir;
mod protobuf;
pub mod registry;
pub mod store;
pub mod wire;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::avro::AvroError;

/// The format of a schema and of the records written with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Format {
    /// Apache Avro (a registry's default `schemaType`).
    Avro,
    /// Protocol Buffers.
    Protobuf,
    /// JSON Schema: the body is JSON text.
    Json,
}

impl Format {
    /// The format a registry's `schemaType` names (absent: Avro).
    ///
    /// # Errors
    /// An unknown type, named.
    pub fn from_registry(schema_type: Option<&str>) -> Result<Self, String> {
        match schema_type {
            None | Some("AVRO") => Ok(Self::Avro),
            Some("PROTOBUF") => Ok(Self::Protobuf),
            Some("JSON") => Ok(Self::Json),
            Some(other) => Err(format!(
                "unknown schemaType '{other}' (AVRO, PROTOBUF or JSON)"
            )),
        }
    }

    /// The format's name, for messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Avro => "Avro",
            Self::Protobuf => "Protobuf",
            Self::Json => "JSON Schema",
        }
    }
}

/// A schema's reference to another: an Avro named type's or a Protobuf
/// import's `name`, found as `version` of `subject`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    /// The Avro type's full name, or the Protobuf import's path.
    pub name: String,
    /// The subject the referenced schema is registered under.
    pub subject: String,
    /// Its version there.
    pub version: i32,
}

/// A schema as a registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaText {
    /// What kind of schema the text is.
    pub format: Format,
    /// The schema: Avro JSON, `.proto` source (or a base64
    /// `FileDescriptorProto`), or a JSON Schema document.
    pub text: String,
    /// The schemas it needs, by subject and version.
    pub references: Vec<Reference>,
}

/// A schema with the schemas it references, transitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The schema.
    pub schema: SchemaText,
    /// Each schema it needs, directly or not, with the reference that
    /// named it; what a schema depends on comes before it.
    pub references: Vec<(Reference, SchemaText)>,
}

/// Why a framed record cannot be read with its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not in the wire format.
    #[error("{0}")]
    Framing(#[from] wire::FramingError),
    /// The body does not match its schema.
    #[error("schema {id} ({format}): {reason}", format = format.name())]
    Body {
        /// The schema's ID.
        id: u32,
        /// Its format.
        format: Format,
        /// What does not match, and where.
        reason: String,
    },
}

/// A schema compiled for reading and writing records.
#[derive(Debug)]
pub struct Compiled {
    id: u32,
    kind: Kind,
}

enum Kind {
    Avro(avro::AvroSchema),
    Protobuf(protobuf::ProtobufSchema),
    Json(Box<jsonschema::Validator>),
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Avro(schema) => schema.fmt(f),
            Self::Protobuf(schema) => schema.fmt(f),
            Self::Json(_) => f.write_str("JsonSchema"),
        }
    }
}

/// A JSON Schema's references, by the name its `$ref`s use: all it may
/// reach (nothing is fetched from anywhere else).
struct References(std::collections::HashMap<String, Value>);

impl jsonschema::Retrieve for References {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let wanted = uri.as_str();
        self.0
            .iter()
            .find(|(name, _)| wanted == name.as_str() || wanted.ends_with(&format!("/{name}")))
            .map(|(_, schema)| schema.clone())
            .ok_or_else(|| format!("'{wanted}' is not among the schema's references").into())
    }
}

/// Checks `value` against a JSON Schema: the first violation, where.
fn validate_json(validator: &jsonschema::Validator, value: &Value) -> Result<(), String> {
    validator.validate(value).map_err(|e| {
        let at = e.instance_path().to_string();
        if at.is_empty() {
            e.to_string()
        } else {
            format!("at '{at}': {e}")
        }
    })
}

impl Compiled {
    /// Compiles schema `id` from its text and the texts of the schemas it
    /// references, transitively (each with the reference that named it).
    ///
    /// # Errors
    /// Why the schema does not parse.
    pub fn compile(id: u32, resolved: &Resolved) -> Result<Self, String> {
        let Resolved { schema, references } = resolved;
        if let Some((reference, _)) = references
            .iter()
            .find(|(_, text)| text.format != schema.format)
        {
            return Err(format!(
                "it is {} and references '{}' ({} version {}), which is not",
                schema.format.name(),
                reference.name,
                reference.subject,
                reference.version
            ));
        }
        let kind = match schema.format {
            Format::Avro => {
                let texts: Vec<&str> = references.iter().map(|(_, t)| t.text.as_str()).collect();
                Kind::Avro(avro::AvroSchema::parse(&schema.text, &texts)?)
            }
            Format::Protobuf => {
                let files: Vec<(&str, &str)> = references
                    .iter()
                    .map(|(r, t)| (r.name.as_str(), t.text.as_str()))
                    .collect();
                Kind::Protobuf(protobuf::ProtobufSchema::parse(&schema.text, &files)?)
            }
            Format::Json => {
                let root: Value =
                    serde_json::from_str(&schema.text).map_err(|e| format!("not JSON: {e}"))?;
                let mut known = std::collections::HashMap::new();
                for (reference, text) in references {
                    let value = serde_json::from_str(&text.text).map_err(|e| {
                        format!("its reference '{}' is not JSON: {e}", reference.name)
                    })?;
                    known.insert(reference.name.clone(), value);
                }
                let validator = jsonschema::options()
                    .with_retriever(References(known))
                    .build(&root)
                    .map_err(|e| e.to_string())?;
                Kind::Json(Box::new(validator))
            }
        };
        Ok(Self { id, kind })
    }

    /// The schema's ID.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The schema's format.
    #[must_use]
    pub fn format(&self) -> Format {
        match self.kind {
            Kind::Avro(_) => Format::Avro,
            Kind::Protobuf(_) => Format::Protobuf,
            Kind::Json(_) => Format::Json,
        }
    }

    fn body_error(&self, reason: impl ToString) -> DecodeError {
        DecodeError::Body {
            id: self.id,
            format: self.format(),
            reason: reason.to_string(),
        }
    }

    /// The body of `framed` (a record written with this schema) and, for
    /// Protobuf, the indexes of its message.
    fn body<'a>(&self, framed: &'a [u8]) -> Result<(Vec<usize>, &'a [u8]), DecodeError> {
        let (id, rest) = wire::split(framed)?;
        if id != self.id {
            return Err(self.body_error(format!("the record was written with schema {id}")));
        }
        match self.kind {
            Kind::Protobuf(_) => Ok(wire::split_message_indexes(id, rest)?),
            _ => Ok((Vec::new(), rest)),
        }
    }

    /// Checks that `framed` is one whole value of this schema.
    ///
    /// # Errors
    /// What does not match, and where.
    pub fn validate(&self, framed: &[u8]) -> Result<(), DecodeError> {
        let (indexes, body) = self.body(framed)?;
        match &self.kind {
            Kind::Avro(schema) => schema.validate(body).map_err(|e| self.body_error(e)),
            Kind::Protobuf(schema) => schema
                .message_of(&indexes, body)
                .map(drop)
                .map_err(|e| self.body_error(e)),
            Kind::Json(validator) => {
                let value: Value = serde_json::from_slice(body)
                    .map_err(|e| self.body_error(format!("the body is not JSON: {e}")))?;
                validate_json(validator, &value).map_err(|e| self.body_error(e))
            }
        }
    }

    /// `framed` as JSON.
    ///
    /// # Errors
    /// What does not match the schema, and where.
    pub fn decode(&self, framed: &[u8]) -> Result<Value, DecodeError> {
        let (indexes, body) = self.body(framed)?;
        match &self.kind {
            Kind::Avro(schema) => schema.decode(body).map_err(|e| self.body_error(e)),
            Kind::Protobuf(schema) => schema
                .decode(&indexes, body)
                .map_err(|e| self.body_error(e)),
            Kind::Json(_) => serde_json::from_slice(body)
                .map_err(|e| self.body_error(format!("the body is not JSON: {e}"))),
        }
    }

    /// The value at `path` (field names, array indexes and map keys) in
    /// `framed`, as JSON; `None` when the path leads nowhere.
    ///
    /// # Errors
    /// What does not match the schema on the way.
    pub fn field(&self, framed: &[u8], path: &[&str]) -> Result<Option<Value>, DecodeError> {
        if let Kind::Avro(schema) = &self.kind {
            let (_, body) = self.body(framed)?;
            return schema.field(body, path).map_err(|e| self.body_error(e));
        }
        let whole = self.decode(framed)?;
        Ok(lookup(whole, path))
    }

    /// `value` written with this schema, framed. `message` picks a
    /// Protobuf schema's message (full name or unique name; default: its
    /// first).
    ///
    /// # Errors
    /// What does not fit the schema, and where.
    pub fn encode(&self, value: &Value, message: Option<&str>) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(64);
        wire::write_header(&mut out, self.id);
        match &self.kind {
            Kind::Avro(schema) => schema.encode(value, &mut out).map_err(|e| e.to_string())?,
            Kind::Protobuf(schema) => {
                let indexes = match message {
                    Some(name) => schema.indexes_of(name)?,
                    None => vec![0],
                };
                let body = schema.encode(&indexes, value)?;
                wire::write_message_indexes(&mut out, &indexes);
                out.extend_from_slice(&body);
            }
            Kind::Json(validator) => {
                validate_json(validator, value)?;
                serde_json::to_writer(&mut out, value).map_err(|e| e.to_string())?;
            }
        }
        Ok(out)
    }
}

/// The part of `value` at `path`.
fn lookup(mut value: Value, path: &[&str]) -> Option<Value> {
    for segment in path {
        value = match value {
            Value::Object(mut fields) => fields.remove(*segment)?,
            Value::Array(mut items) => {
                let index: usize = segment.parse().ok()?;
                if index >= items.len() {
                    return None;
                }
                items.swap_remove(index)
            }
            _ => return None,
        };
    }
    Some(value)
}
