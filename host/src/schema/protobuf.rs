//! Protobuf bodies read and written with descriptors built at run time
//! from a registry's schema: `.proto` text (compiled by `protox`, no
//! `protoc` needed) or a serialized `FileDescriptorProto` in base64 (what
//! a registry answers with `?format=serialized`, and what some clients
//! register). Imports resolve to the schema's references by name, and to
//! the well-known `google/protobuf/*.proto` files.
//!
//! The JSON of a message is the proto3 JSON mapping, with the fields'
//! names as the `.proto` writes them (`customer_id`, not `customerId`:
//! paths and JSON then use the same names), fields at their default value
//! included, 64-bit integers as numbers.

use std::collections::HashMap;

use base64::Engine as _;
use prost_reflect::prost::Message as _;
use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FileDescriptor, MessageDescriptor,
    SerializeOptions,
};
use protox::file::{File, FileResolver, GoogleFileResolver};
use serde_json::Value;

/// The name the schema's own file gets (its imports name the others).
const ROOT_FILE: &str = "switchyard/registry-schema.proto";

/// A compiled Protobuf schema: the file a registry schema is.
#[derive(Debug)]
pub struct ProtobufSchema {
    file: FileDescriptor,
}

/// One schema text: `.proto` source or a base64 `FileDescriptorProto`.
fn file(name: &str, text: &str) -> Result<File, String> {
    let trimmed = text.trim();
    let looks_base64 = !trimmed.is_empty()
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if looks_base64
        && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(trimmed)
        && let Ok(mut proto) = FileDescriptorProto::decode(bytes.as_slice())
    {
        proto.name = Some(name.to_owned());
        return Ok(File::from_file_descriptor_proto(proto));
    }
    File::from_source(name, text).map_err(|e| e.to_string())
}

/// The schema and its references, by import name.
struct Files {
    files: HashMap<String, String>,
    google: GoogleFileResolver,
}

impl FileResolver for Files {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.files.get(name) {
            Some(text) => file(name, text).map_err(|reason| {
                protox::Error::new(std::io::Error::other(format!("'{name}': {reason}")))
            }),
            None => self.google.open_file(name),
        }
    }
}

impl ProtobufSchema {
    /// Compiles `schema`, whose imports are among `references` (import
    /// name and text).
    ///
    /// # Errors
    /// The compiler's reason when a text does not parse, an import is
    /// missing or a type is undefined.
    pub fn parse(schema: &str, references: &[(&str, &str)]) -> Result<Self, String> {
        let mut files: HashMap<String, String> = references
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        files.insert(ROOT_FILE.to_owned(), schema.to_owned());
        let mut compiler = protox::Compiler::with_file_resolver(Files {
            files,
            google: GoogleFileResolver::new(),
        });
        compiler.include_imports(true);
        compiler.open_file(ROOT_FILE).map_err(|e| e.to_string())?;
        let pool: DescriptorPool = compiler.descriptor_pool();
        let file = pool
            .get_file_by_name(ROOT_FILE)
            .ok_or_else(|| "the schema compiled to no file".to_owned())?;
        if file.messages().len() == 0 {
            return Err("the schema defines no message".to_owned());
        }
        Ok(Self { file })
    }

    /// The message the wire format's indexes name.
    ///
    /// # Errors
    /// When an index is past the messages there are.
    pub fn message(&self, indexes: &[usize]) -> Result<MessageDescriptor, String> {
        let missing = || format!("message indexes {indexes:?} name no message of the schema");
        let (&first, rest) = indexes.split_first().ok_or_else(missing)?;
        let mut message = self.file.messages().nth(first).ok_or_else(missing)?;
        for &index in rest {
            let child = message.child_messages().nth(index);
            message = child.ok_or_else(missing)?;
        }
        Ok(message)
    }

    /// The indexes of the message called `name` (its full name, or its
    /// name when that is unique), for writing it.
    ///
    /// # Errors
    /// When no message, or more than one, has that name.
    pub fn indexes_of(&self, name: &str) -> Result<Vec<usize>, String> {
        fn walk(
            messages: Vec<MessageDescriptor>,
            path: &mut Vec<usize>,
            name: &str,
            found: &mut Vec<Vec<usize>>,
        ) {
            for (i, message) in messages.into_iter().enumerate() {
                path.push(i);
                if message.full_name() == name || message.name() == name {
                    found.push(path.clone());
                }
                walk(message.child_messages().collect(), path, name, found);
                path.pop();
            }
        }
        let mut found = Vec::new();
        walk(
            self.file.messages().collect(),
            &mut Vec::new(),
            name,
            &mut found,
        );
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!("the schema has no message '{name}'")),
            _ => Err(format!(
                "the schema has several messages called '{name}': use the full name"
            )),
        }
    }

    /// Decodes `body` as the message `indexes` name.
    ///
    /// # Errors
    /// When the bytes are not such a message.
    pub fn message_of(&self, indexes: &[usize], body: &[u8]) -> Result<DynamicMessage, String> {
        let descriptor = self.message(indexes)?;
        DynamicMessage::decode(descriptor.clone(), body)
            .map_err(|e| format!("not a valid {}: {e}", descriptor.full_name()))
    }

    /// `body` as JSON.
    ///
    /// # Errors
    /// When the bytes are not the message.
    pub fn decode(&self, indexes: &[usize], body: &[u8]) -> Result<Value, String> {
        let message = self.message_of(indexes, body)?;
        to_json(&message)
    }

    /// `value` (JSON) written as the message `indexes` name.
    ///
    /// # Errors
    /// When `value` does not fit the message.
    pub fn encode(&self, indexes: &[usize], value: &Value) -> Result<Vec<u8>, String> {
        let descriptor = self.message(indexes)?;
        let message = DynamicMessage::deserialize_with_options(
            descriptor.clone(),
            value,
            &DeserializeOptions::new(),
        )
        .map_err(|e| format!("not a {}: {e}", descriptor.full_name()))?;
        Ok(message.encode_to_vec())
    }
}

fn to_json(message: &DynamicMessage) -> Result<Value, String> {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| e.to_string())
}
