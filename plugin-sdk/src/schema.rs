//! Records in a schema registry's wire format (Avro, Protobuf, JSON
//! Schema): read decoded, written with a schema.
//!
//! On a route with `value_format = "schema-registry"` (or `key_format`),
//! the router checks every record against its schema before the plugin
//! sees it, so reading one never fails for bad bytes:
//!
//! ```
//! use switchyard_sdk::{Message, Output, RouteResult};
//!
//! fn route(msg: &Message) -> RouteResult {
//!     // One field, decoded by the router (Avro: only as far as the field).
//!     let region = msg.field("customer.region")?;
//!     let topic = match region.as_ref().and_then(|f| f.as_str()) {
//!         Some(region) => format!("orders-{region}"),
//!         None => "orders-unknown".to_owned(),
//!     };
//!     Ok(vec![Output::forward().to_topic(topic)])
//! }
//! # let msg = Message::builder().decoded(switchyard_sdk::json::json!({"customer": {"region": "eu"}})).build();
//! # assert_eq!(route(&msg).unwrap()[0].topic.as_deref(), Some("orders-eu"));
//! ```
//!
//! A forwarded record is never re-encoded. To write a new value with a
//! schema, [`encode`] it and put the bytes in an [`Output`](crate::Output).
//!
//! Natively (in unit tests), [`MessageBuilder::decoded`](crate::MessageBuilder::decoded)
//! sets what the router would decode, and [`encode`] frames the value's
//! JSON text behind the schema ID (no schema is applied): tests check what
//! is written, the router's own tests check how.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Message, RouteError};

/// A value read from a decoded record.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// Null (an Avro union holding `null`, a JSON null).
    Null,
    /// A boolean.
    Bool(bool),
    /// Avro int and long, Protobuf integers, JSON integers.
    Integer(i64),
    /// Avro float and double, Protobuf floating point, other JSON numbers.
    Float(f64),
    /// Strings, enum symbols, and what the JSON mapping makes a string
    /// (Avro bytes and fixed, decimals, UUIDs; Protobuf bytes in base64).
    Text(String),
    /// A record, message, map or array: its JSON text.
    Json(String),
}

impl Field {
    /// The text, for [`Field::Text`].
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The number, for [`Field::Integer`].
    #[must_use]
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The number, for [`Field::Integer`] and [`Field::Float`].
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "a JSON number is an f64")]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Integer(i) => Some(*i as f64),
            Self::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The boolean, for [`Field::Bool`].
    #[must_use]
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Whether it is [`Field::Null`].
    #[must_use]
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The field as a JSON value.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Integer(i) => Value::from(*i),
            Self::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Text(s) => Value::String(s.clone()),
            Self::Json(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        }
    }

    /// A JSON value as a field.
    #[must_use]
    pub fn from_json(value: &serde_json::Value) -> Self {
        use serde_json::Value;
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Self::Integer(i),
                None => Self::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Self::Text(s.clone()),
            other => Self::Json(other.to_string()),
        }
    }
}

/// A record's key or its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The key.
    Key,
    /// The value.
    Value,
}

/// What a unit test says the router decoded (see
/// [`MessageBuilder::decoded`](crate::MessageBuilder::decoded)).
#[derive(Debug, Clone, Default)]
pub(crate) struct Detached {
    pub(crate) key: Option<(u32, serde_json::Value)>,
    pub(crate) value: Option<(u32, serde_json::Value)>,
}

impl Detached {
    fn part(&self, part: Part) -> Result<&(u32, serde_json::Value), RouteError> {
        let found = match part {
            Part::Key => self.key.as_ref(),
            Part::Value => self.value.as_ref(),
        };
        found.ok_or_else(|| {
            RouteError::reject(format!(
                "the test message has no decoded {} (MessageBuilder::decoded{})",
                part.name(),
                if part == Part::Key { "_key" } else { "" }
            ))
        })
    }
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Value => "value",
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn wit(self) -> crate::__private::bindings::switchyard::plugin::types::Part {
        use crate::__private::bindings::switchyard::plugin::types::Part as Wit;
        match self {
            Self::Key => Wit::Key,
            Self::Value => Wit::Value,
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn from_wit(field: crate::__private::bindings::switchyard::plugin::types::Field) -> Field {
    use crate::__private::bindings::switchyard::plugin::types::Field as Wit;
    match field {
        Wit::Null => Field::Null,
        Wit::Boolean(b) => Field::Bool(b),
        Wit::Integer(i) => Field::Integer(i),
        Wit::Float(f) => Field::Float(f),
        Wit::Text(s) => Field::Text(s),
        Wit::Json(s) => Field::Json(s),
    }
}

impl Message<'_> {
    /// The ID of the schema the value was written with, on a route that
    /// reads values by schema; `None` otherwise, and for a null value.
    #[must_use]
    pub fn schema_id(&self) -> Option<u32> {
        self.schema_id_of(Part::Value)
    }

    /// The ID of the schema the key was written with (see
    /// [`schema_id`](Self::schema_id)).
    #[must_use]
    pub fn key_schema_id(&self) -> Option<u32> {
        self.schema_id_of(Part::Key)
    }

    /// The field at `path` of the decoded value: field names, array
    /// indexes and map keys joined by dots (`"customer.region"`,
    /// `"lines.0.sku"`); `None` when the path leads nowhere.
    ///
    /// # Errors
    /// A [`RouteError::Reject`] when the route does not read values by
    /// schema, or the value is null.
    pub fn field(&self, path: &str) -> Result<Option<Field>, RouteError> {
        self.field_of(Part::Value, path)
    }

    /// The field at `path` of the decoded key (see [`field`](Self::field)).
    ///
    /// # Errors
    /// As [`field`](Self::field), for the key.
    pub fn key_field(&self, path: &str) -> Result<Option<Field>, RouteError> {
        self.field_of(Part::Key, path)
    }

    /// The whole decoded value, deserialized into `T` (a
    /// `serde_json::Value` for dynamic access), from the JSON mapping of
    /// the plugin guide's "Schemas".
    ///
    /// # Errors
    /// A [`RouteError::Reject`] when the route does not read values by
    /// schema, the value is null, or it does not fit `T`.
    pub fn decoded<T: DeserializeOwned>(&self) -> Result<T, RouteError> {
        self.decoded_of(Part::Value)
    }

    /// The whole decoded key (see [`decoded`](Self::decoded)).
    ///
    /// # Errors
    /// As [`decoded`](Self::decoded), for the key.
    pub fn decoded_key<T: DeserializeOwned>(&self) -> Result<T, RouteError> {
        self.decoded_of(Part::Key)
    }

    fn schema_id_of(&self, part: Part) -> Option<u32> {
        #[cfg(target_arch = "wasm32")]
        if let Some((batch, index)) = self.host_record() {
            return batch.schema_id(index, part.wit());
        }
        self.detached_schema().part(part).ok().map(|(id, _)| *id)
    }

    fn field_of(&self, part: Part, path: &str) -> Result<Option<Field>, RouteError> {
        #[cfg(target_arch = "wasm32")]
        if let Some((batch, index)) = self.host_record() {
            return batch
                .field(index, part.wit(), path)
                .map(|found| found.map(from_wit))
                .map_err(RouteError::reject);
        }
        let (_, value) = self.detached_schema().part(part)?;
        let found = if path.is_empty() {
            Some(value)
        } else {
            crate::json_field(value, path)
        };
        Ok(found.map(Field::from_json))
    }

    fn decoded_of<T: DeserializeOwned>(&self, part: Part) -> Result<T, RouteError> {
        let fit = |e: serde_json::Error| {
            RouteError::reject(format!("the decoded {} does not fit: {e}", part.name()))
        };
        #[cfg(target_arch = "wasm32")]
        if let Some((batch, index)) = self.host_record() {
            let text = batch
                .decoded(index, part.wit())
                .map_err(RouteError::reject)?;
            return serde_json::from_str(&text).map_err(fit);
        }
        let (_, value) = self.detached_schema().part(part)?;
        T::deserialize(value).map_err(fit)
    }
}

/// The schema to write a value with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaRef<'a> {
    /// The schema with this ID (say a record's own, [`Message::schema_id`]).
    Id(u32),
    /// The latest version of this subject (`"orders-value"`), as the
    /// router last fetched it.
    Subject(&'a str),
    /// This schema, registered under `subject` the first time the router
    /// meets it (the registry answers with the ID it already has for a
    /// schema it knows). Only on a route with `register_schemas = true`;
    /// elsewhere [`encode`] rejects.
    Register {
        /// The subject to register it under.
        subject: &'a str,
        /// What kind of schema `text` is.
        format: SchemaFormat,
        /// The schema (without references to other schemas).
        text: &'a str,
    },
}

/// A kind of schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaFormat {
    /// Avro: `text` is the schema's JSON.
    Avro,
    /// Protocol Buffers: `text` is `.proto` source.
    Protobuf,
    /// JSON Schema: `text` is the schema document.
    Json,
}

/// `value` written with `schema`, in the wire format: the bytes of an
/// output's key or value. For Protobuf, the schema's first message (see
/// [`encode_message`]).
///
/// # Errors
/// A [`RouteError::Retry`] while the schema is being fetched (the record
/// comes again once it is here); a [`RouteError::Reject`] when the schema
/// does not exist or the value does not fit it, saying where.
pub fn encode(schema: SchemaRef<'_>, value: &impl Serialize) -> Result<Vec<u8>, RouteError> {
    encode_with(schema, None, value)
}

/// [`encode`] for a Protobuf schema's message `message` (its full name,
/// or its name when unique).
///
/// # Errors
/// As [`encode`].
pub fn encode_message(
    schema: SchemaRef<'_>,
    message: &str,
    value: &impl Serialize,
) -> Result<Vec<u8>, RouteError> {
    encode_with(schema, Some(message), value)
}

fn encode_with(
    schema: SchemaRef<'_>,
    message: Option<&str>,
    value: &impl Serialize,
) -> Result<Vec<u8>, RouteError> {
    let json = serde_json::to_string(value)
        .map_err(|e| RouteError::reject(format!("the value to write is not JSON: {e}")))?;
    imp::encode(schema, message, json)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::SchemaRef;
    use crate::__private::bindings::switchyard::plugin::schemas;
    use crate::RouteError;

    pub(super) fn encode(
        schema: SchemaRef<'_>,
        message: Option<&str>,
        json: String,
    ) -> Result<Vec<u8>, RouteError> {
        let schema = match schema {
            SchemaRef::Id(id) => schemas::SchemaRef::Id(id),
            SchemaRef::Subject(subject) => schemas::SchemaRef::Subject(subject.to_owned()),
            SchemaRef::Register {
                subject,
                format,
                text,
            } => schemas::SchemaRef::Register(schemas::NewSchema {
                subject: subject.to_owned(),
                format: match format {
                    super::SchemaFormat::Avro => schemas::SchemaFormat::Avro,
                    super::SchemaFormat::Protobuf => schemas::SchemaFormat::Protobuf,
                    super::SchemaFormat::Json => schemas::SchemaFormat::Json,
                },
                text: text.to_owned(),
            }),
        };
        schemas::encode(&schema, message, &json).map_err(|e| match e {
            schemas::EncodeError::NotReady(why) => RouteError::retry(why),
            schemas::EncodeError::Invalid(why) => RouteError::reject(why),
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::SchemaRef;
    use crate::RouteError;

    pub(super) fn encode(
        schema: SchemaRef<'_>,
        _message: Option<&str>,
        json: String,
    ) -> Result<Vec<u8>, RouteError> {
        let id = match schema {
            SchemaRef::Id(id) => id,
            SchemaRef::Subject(subject) | SchemaRef::Register { subject, .. } => {
                crate::testing::subject_id(subject).ok_or_else(|| {
                    RouteError::reject(format!(
                        "no schema ID for subject '{subject}': call testing::set_subject_id first"
                    ))
                })?
            }
        };
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(json.as_bytes());
        Ok(out)
    }
}
