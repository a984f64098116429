//! Routes records in a schema registry's wire format (Avro, Protobuf or
//! JSON Schema) to a topic named after a field of their decoded value,
//! forwarding them unchanged (never re-encoded).
//!
//! `field` is a dotted path into the value (`customer.region`); the record
//! goes to `topic_prefix` + the field's value (a string as it is, a number
//! or boolean as written), or to the route's default target when the field
//! is missing, null, or not one of `only` (a comma-separated list, when
//! given). The route reads values by schema (`value_format =
//! "schema-registry"`), and its `allowed_targets` must admit the topics.
//!
//! ```toml
//! value_format = "schema-registry"
//! allowed_targets = ["orders-*"]
//! plugin_config = { field = "customer.region", topic_prefix = "orders-", only = "eu,us" }
//! ```
use switchyard_sdk::{Config, Field, Message, Output, Plugin, RouteResult};

/// Where records go, by a field of their value.
pub struct FieldRouter {
    field: String,
    prefix: String,
    only: Option<Vec<String>>,
}

#[switchyard_sdk::plugin]
impl Plugin for FieldRouter {
    fn init(config: &Config) -> Result<Self, String> {
        config.deny_unknown(&["field", "topic_prefix", "only"])?;
        let field = config.require("field")?.to_owned();
        if field.is_empty() || field.split('.').any(str::is_empty) {
            return Err(format!(
                "config key 'field' is '{field}': give a dotted path such as customer.region"
            ));
        }
        Ok(Self {
            field,
            prefix: config.get("topic_prefix").unwrap_or_default().to_owned(),
            only: config
                .get("only")
                .map(|only| only.split(',').map(|s| s.trim().to_owned()).collect()),
        })
    }

    fn route(&self, msg: &Message) -> RouteResult {
        let name = match msg.field(&self.field)? {
            Some(Field::Text(text)) => Some(text),
            Some(Field::Integer(i)) => Some(i.to_string()),
            Some(Field::Bool(b)) => Some(b.to_string()),
            Some(Field::Float(f)) => Some(f.to_string()),
            Some(Field::Null | Field::Json(_)) | None => None,
        };
        let name = name.filter(|n| {
            !n.is_empty()
                && self
                    .only
                    .as_ref()
                    .is_none_or(|only| only.iter().any(|o| o == n))
        });
        Ok(vec![match name {
            Some(name) => Output::forward().to_topic(format!("{}{name}", self.prefix)),
            None => Output::forward(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::RouteError;
    use switchyard_sdk::json::json;

    fn router(pairs: &[(&str, &str)]) -> FieldRouter {
        FieldRouter::init(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn topic(r: &FieldRouter, value: switchyard_sdk::json::Value) -> Option<String> {
        let outputs = r.route(&Message::builder().decoded(value).build()).unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(
            outputs[0].value,
            switchyard_sdk::Data::Original,
            "never re-encoded"
        );
        outputs[0].topic.clone()
    }

    #[test]
    fn routes_by_a_nested_field_with_a_prefix() {
        let r = router(&[("field", "customer.region"), ("topic_prefix", "orders-")]);
        let order = json!({"id": 1, "customer": {"name": "Ada", "region": "eu"}});
        assert_eq!(topic(&r, order).as_deref(), Some("orders-eu"));
    }

    #[test]
    fn numbers_and_booleans_name_topics_as_written() {
        let r = router(&[("field", "shard")]);
        assert_eq!(topic(&r, json!({"shard": 7})).as_deref(), Some("7"));
        assert_eq!(topic(&r, json!({"shard": true})).as_deref(), Some("true"));
    }

    #[test]
    fn missing_null_empty_or_unlisted_fields_go_to_the_default_target() {
        let r = router(&[
            ("field", "region"),
            ("topic_prefix", "o-"),
            ("only", "eu, us"),
        ]);
        assert_eq!(topic(&r, json!({"region": "us"})).as_deref(), Some("o-us"));
        for value in [
            json!({}),
            json!({"region": null}),
            json!({"region": ""}),
            json!({"region": "apac"}),
            json!({"region": {"a": 1}}),
        ] {
            assert_eq!(topic(&r, value.clone()), None, "{value}");
        }
    }

    #[test]
    fn a_record_not_read_by_schema_is_rejected_with_why() {
        let r = router(&[("field", "region")]);
        let err = r
            .route(&Message::builder().value("{}").build())
            .unwrap_err();
        assert!(matches!(err, RouteError::Reject(why) if why.contains("no decoded value")));
    }

    #[test]
    fn a_bad_path_is_refused_at_init() {
        for field in ["", "a..b", ".a"] {
            assert!(
                FieldRouter::init(&Config::from_pairs([("field", field)])).is_err(),
                "{field}"
            );
        }
    }
}
