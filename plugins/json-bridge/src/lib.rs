//! Bridges a schema registry's records and plain JSON, both ways.
//!
//! - `direction = "to-json"`: each record's value, decoded by its schema
//!   (Avro, Protobuf or JSON Schema; the route reads values by schema), is
//!   written as plain JSON text for a consumer that has no registry client;
//!   a `content-type: application/json` header is added. The key, the other
//!   headers and the timestamp stay as consumed.
//! - `direction = "from-json"`: each record's value, JSON text, is written
//!   with the latest schema of `subject` (and `message`, for a Protobuf
//!   schema with several), in the registry's wire format. A value that does
//!   not fit the schema is rejected, saying where; while the schema is being
//!   fetched, the record is retried.
//!   With `schema` (its text) and `schema_format` (`avro`, the default,
//!   `protobuf` or `json`), values are written with that schema instead,
//!   registered under `subject` the first time (the route needs
//!   `register_schemas = true`).
//!
//! ```toml
//! # Avro orders to JSON:
//! value_format = "schema-registry"
//! plugin_config = { direction = "to-json" }
//! # and back:
//! plugin_config = { direction = "from-json", subject = "orders-value" }
//! # or with a schema of its own, registered on first use:
//! register_schemas = true
//! plugin_config = { direction = "from-json", subject = "orders-value", schema = '''
//!   {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "long"}]}''' }
//! ```
use switchyard_sdk::json::Value;
use switchyard_sdk::{
    Config, Header, Message, Output, OutputHeaders, Plugin, RouteResult, SchemaFormat, SchemaRef,
    encode, encode_message,
};

/// Which way records go.
pub enum JsonBridge {
    /// Decoded values to JSON text.
    ToJson,
    /// JSON text to values of the subject's latest schema.
    FromJson {
        /// The subject whose latest schema values are written with (or
        /// where `schema` is registered).
        subject: String,
        /// A schema of its own to write with, registered under `subject`.
        schema: Option<(SchemaFormat, String)>,
        /// The Protobuf message, when the schema has several.
        message: Option<String>,
    },
}

#[switchyard_sdk::plugin]
impl Plugin for JsonBridge {
    fn init(config: &Config) -> Result<Self, String> {
        const FROM_JSON: [&str; 4] = ["subject", "message", "schema", "schema_format"];
        config.deny_unknown(&["direction", "subject", "message", "schema", "schema_format"])?;
        match config.require("direction")? {
            "to-json" => {
                if FROM_JSON.iter().any(|key| config.get(key).is_some()) {
                    return Err(
                        "'subject', 'message', 'schema' and 'schema_format' are for direction = \"from-json\""
                            .to_owned(),
                    );
                }
                Ok(Self::ToJson)
            }
            "from-json" => {
                let format = match config.get("schema_format") {
                    None | Some("avro") => SchemaFormat::Avro,
                    Some("protobuf") => SchemaFormat::Protobuf,
                    Some("json") => SchemaFormat::Json,
                    Some(other) => {
                        return Err(format!(
                            "config key 'schema_format' is '{other}': use \"avro\", \"protobuf\" or \"json\""
                        ));
                    }
                };
                if config.get("schema_format").is_some() && config.get("schema").is_none() {
                    return Err("'schema_format' goes with 'schema'".to_owned());
                }
                Ok(Self::FromJson {
                    subject: config.require("subject")?.to_owned(),
                    schema: config.get("schema").map(|text| (format, text.to_owned())),
                    message: config.get("message").map(ToOwned::to_owned),
                })
            }
            other => Err(format!(
                "config key 'direction' is '{other}': use \"to-json\" or \"from-json\""
            )),
        }
    }

    fn route(&self, msg: &Message) -> RouteResult {
        let value = match self {
            Self::ToJson => {
                let decoded: Value = msg.decoded()?;
                let mut out = Output::forward().value(decoded.to_string());
                out.headers =
                    OutputHeaders::Append(vec![Header::new("content-type", "application/json")]);
                return Ok(vec![out]);
            }
            Self::FromJson {
                subject,
                schema,
                message,
            } => {
                let json = msg.json_value()?;
                let schema = match schema {
                    Some((format, text)) => SchemaRef::Register {
                        subject,
                        format: *format,
                        text,
                    },
                    None => SchemaRef::Subject(subject),
                };
                match message {
                    Some(message) => encode_message(schema, message, &json)?,
                    None => encode(schema, &json)?,
                }
            }
        };
        Ok(vec![Output::forward().value(value)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::json::json;
    use switchyard_sdk::testing::set_subject_id;
    use switchyard_sdk::{Data, RouteError};

    fn bridge(pairs: &[(&str, &str)]) -> JsonBridge {
        JsonBridge::init(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn decoded_values_become_json_text_with_a_content_type() {
        let order = json!({"id": 7, "customer": {"region": "eu"}, "tags": ["a"]});
        let msg = Message::builder().decoded(order.clone()).key("o-7").build();
        let outputs = bridge(&[("direction", "to-json")]).route(&msg).unwrap();
        assert_eq!(outputs.len(), 1);
        let Data::Bytes(text) = &outputs[0].value else {
            panic!("{:?}", outputs[0].value)
        };
        assert_eq!(
            switchyard_sdk::json::from_slice::<Value>(text).unwrap(),
            order
        );
        assert_eq!(outputs[0].key, Data::Original);
        assert_eq!(
            outputs[0].headers,
            OutputHeaders::Append(vec![Header::new("content-type", "application/json")])
        );
    }

    #[test]
    fn json_values_are_written_with_the_subject_s_schema() {
        set_subject_id("orders-value", 4);
        let msg = Message::builder().value(r#"{"id":7}"#).build();
        let outputs = bridge(&[("direction", "from-json"), ("subject", "orders-value")])
            .route(&msg)
            .unwrap();
        // Natively, encode frames the JSON behind the ID (the router applies
        // the schema).
        assert_eq!(
            outputs[0].value,
            Data::Bytes(b"\0\0\0\0\x04{\"id\":7}".to_vec())
        );
    }

    #[test]
    fn json_values_are_written_with_a_schema_of_its_own_under_the_subject() {
        set_subject_id("orders-value", 9);
        let schema = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
        let msg = Message::builder().value(r#"{"id":7}"#).build();
        let outputs = bridge(&[
            ("direction", "from-json"),
            ("subject", "orders-value"),
            ("schema", schema),
        ])
        .route(&msg)
        .unwrap();
        assert_eq!(
            outputs[0].value,
            Data::Bytes(b"\0\0\0\0\x09{\"id\":7}".to_vec())
        );
    }

    #[test]
    fn json_that_is_not_json_is_rejected() {
        set_subject_id("orders-value", 4);
        let err = bridge(&[("direction", "from-json"), ("subject", "orders-value")])
            .route(&Message::builder().value("{").build())
            .unwrap_err();
        assert!(
            matches!(err, RouteError::Reject(why) if why.starts_with("value is not valid JSON"))
        );
    }

    #[test]
    fn the_configuration_is_checked() {
        for bad in [
            vec![("direction", "sideways")],
            vec![("direction", "from-json")],
            vec![("direction", "to-json"), ("subject", "x")],
            vec![("direction", "to-json"), ("schema", "{}")],
            vec![
                ("direction", "from-json"),
                ("subject", "x"),
                ("schema_format", "avro"),
            ],
            vec![
                ("direction", "from-json"),
                ("subject", "x"),
                ("schema", "{}"),
                ("schema_format", "xml"),
            ],
            vec![],
        ] {
            assert!(
                JsonBridge::init(&Config::from_pairs(bad.iter().copied())).is_err(),
                "{bad:?}"
            );
        }
    }
}
