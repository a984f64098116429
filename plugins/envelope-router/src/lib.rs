//! Routes JSON envelopes by their `type`.
//!
//! Each record's value is an envelope
//! `{"type": "...", "version": ..., "timestamp": ..., "payload": {...}}`.
//! The plugin config maps envelope types to topics; the record goes, as it
//! is, to the topic of its type. An unknown type, malformed JSON, or an
//! envelope without a string `type` or without `payload` is rejected with
//! the reason. The same rule as the Python and TypeScript versions.
//!
//! ```toml
//! plugin_config = { "order.created" = "orders.created", "order.paid" = "orders.paid" }
//! ```
use std::collections::HashMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use switchyard_sdk::{Config, Message, Output, Plugin, RouteError, RouteResult};

/// Envelope type → target topic.
pub struct EnvelopeRouter {
    topics: HashMap<String, String>,
}

/// Only what routing needs; the payload is checked for presence, not parsed.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[allow(dead_code, reason = "required to be present, never read")]
    payload: IgnoredAny,
}

/// The envelope's type. The usual envelope is read without building a
/// document; anything else is parsed again to say exactly what is wrong.
fn envelope_kind(msg: &Message) -> Result<String, RouteError> {
    let is_object = msg
        .value()
        .is_some_and(|v| v.trim_ascii_start().first() == Some(&b'{'));
    if is_object && let Ok(envelope) = msg.json::<Envelope>() {
        return Ok(envelope.kind);
    }
    let doc = msg.json_value()?;
    let Some(fields) = doc.as_object() else {
        return Err(RouteError::reject("envelope is not a JSON object"));
    };
    let Some(kind) = fields.get("type").and_then(|kind| kind.as_str()) else {
        return Err(RouteError::reject("envelope has no string field 'type'"));
    };
    if !fields.contains_key("payload") {
        return Err(RouteError::reject("envelope has no field 'payload'"));
    }
    Ok(kind.to_owned())
}

#[switchyard_sdk::plugin]
impl Plugin for EnvelopeRouter {
    fn init(config: &Config) -> Result<Self, String> {
        if config.is_empty() {
            return Err("no envelope types configured: map each type to a topic, \
                        e.g. order.created=orders.created"
                .to_owned());
        }
        let mut topics = HashMap::new();
        for (kind, topic) in config.iter() {
            if topic.is_empty() {
                return Err(format!(
                    "envelope type '{kind}' maps to an empty topic name"
                ));
            }
            topics.insert(kind.to_owned(), topic.to_owned());
        }
        Ok(Self { topics })
    }

    fn route(&self, msg: &Message) -> RouteResult {
        let kind = envelope_kind(msg)?;
        let topic = self
            .topics
            .get(&kind)
            .ok_or_else(|| RouteError::reject(format!("unknown envelope type '{kind}'")))?;
        Ok(vec![Output::forward().to_topic(topic)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> EnvelopeRouter {
        EnvelopeRouter::init(&Config::from_pairs([
            ("order.created", "orders.created"),
            ("order.paid", "orders.paid"),
        ]))
        .unwrap()
    }

    fn route(value: &str) -> RouteResult {
        router().route(&Message::builder().value(value).build())
    }

    #[test]
    fn each_type_goes_to_its_topic_unchanged() {
        let outputs = route(
            r#"{"type":"order.paid","version":1,"timestamp":"2026-01-01T00:00:00Z","payload":{"id":7}}"#,
        )
        .unwrap();
        assert_eq!(outputs, vec![Output::forward().to_topic("orders.paid")]);
    }

    #[test]
    fn unknown_type_is_rejected_with_its_name() {
        let err = route(r#"{"type":"order.lost","version":1,"timestamp":0,"payload":{}}"#);
        assert_eq!(
            err,
            Err(RouteError::reject("unknown envelope type 'order.lost'"))
        );
    }

    #[test]
    fn malformed_json_is_rejected_with_the_position() {
        let Err(RouteError::Reject(reason)) = route(r#"{"type":"order.paid""#) else {
            panic!("expected a reject");
        };
        assert!(reason.starts_with("value is not valid JSON: "), "{reason}");
        assert!(reason.contains("line 1 column"), "{reason}");
    }

    #[test]
    fn envelope_without_type_or_payload_is_rejected() {
        for (value, reason) in [
            (r#"{"payload":{}}"#, "envelope has no string field 'type'"),
            (
                r#"{"type":7,"payload":{}}"#,
                "envelope has no string field 'type'",
            ),
            (
                r#"{"type":"order.paid"}"#,
                "envelope has no field 'payload'",
            ),
            (r#"["order.paid",{}]"#, "envelope is not a JSON object"),
        ] {
            assert_eq!(route(value), Err(RouteError::reject(reason)), "{value}");
        }
    }

    #[test]
    fn a_repeated_type_field_takes_the_last_as_json_parsers_do() {
        let value = r#"{"type":"order.lost","type":"order.paid","payload":{}}"#;
        assert_eq!(
            route(value),
            Ok(vec![Output::forward().to_topic("orders.paid")])
        );
    }

    #[test]
    fn empty_or_null_value_is_rejected() {
        assert!(matches!(route(""), Err(RouteError::Reject(_))));
        let err = router().route(&Message::builder().build());
        assert_eq!(err, Err(RouteError::reject("value is null, expected JSON")));
    }

    #[test]
    fn empty_configuration_is_refused() {
        assert!(EnvelopeRouter::init(&Config::default()).is_err());
    }
}
