//! Keeps only records whose JSON field equals a configured value; drops the
//! others.
//!
//! `field` is a dotted path into the value (`customer.country`); `equals`
//! is compared with a JSON string field as text and with any other field as
//! its JSON form (`true`, `42`, `null`). A record without the field is
//! dropped; a value that is not JSON is rejected.
//!
//! ```toml
//! plugin_config = { field = "status", equals = "paid" }
//! ```
use switchyard_sdk::json::Value;
use switchyard_sdk::{Config, Message, Output, Plugin, RouteResult, json_field};

/// The field and the value a record must have to be kept.
pub struct Filter {
    field: String,
    /// Compared with string fields.
    equals: String,
    /// Compared with other fields, when `equals` is itself valid JSON.
    equals_json: Option<Value>,
}

#[switchyard_sdk::plugin]
impl Plugin for Filter {
    fn init(config: &Config) -> Result<Self, String> {
        config.deny_unknown(&["field", "equals"])?;
        let equals = config.require("equals")?;
        Ok(Self {
            field: config.require("field")?.to_owned(),
            equals: equals.to_owned(),
            equals_json: switchyard_sdk::json::from_str(equals).ok(),
        })
    }

    fn route(&self, msg: &Message) -> RouteResult {
        let doc = msg.json_value()?;
        let keep = match json_field(&doc, &self.field) {
            Some(Value::String(s)) => *s == self.equals,
            Some(other) => Some(other) == self.equals_json.as_ref(),
            None => false,
        };
        Ok(if keep {
            vec![Output::forward()]
        } else {
            vec![]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::RouteError;

    fn filter(field: &str, equals: &str) -> Filter {
        Filter::init(&Config::from_pairs([("field", field), ("equals", equals)])).unwrap()
    }

    fn kept(f: &Filter, value: &str) -> bool {
        let outputs = f.route(&Message::builder().value(value).build()).unwrap();
        match outputs.as_slice() {
            [] => false,
            [out] => *out == Output::forward(),
            more => panic!("unexpected outputs {more:?}"),
        }
    }

    #[test]
    fn keeps_matching_strings_and_drops_the_rest() {
        let f = filter("status", "paid");
        assert!(kept(&f, r#"{"status":"paid","id":1}"#));
        assert!(!kept(&f, r#"{"status":"open","id":2}"#));
        assert!(!kept(&f, r#"{"id":3}"#));
    }

    #[test]
    fn compares_nested_and_non_string_fields_by_their_json_form() {
        assert!(kept(
            &filter("order.flags.vip", "true"),
            r#"{"order":{"flags":{"vip":true}}}"#
        ));
        assert!(kept(
            &filter("items.0.qty", "2"),
            r#"{"items":[{"qty":2}]}"#
        ));
        assert!(!kept(
            &filter("items.0.qty", "2"),
            r#"{"items":[{"qty":"3"}]}"#
        ));
    }

    #[test]
    fn non_json_value_is_rejected() {
        let err = filter("status", "paid").route(&Message::builder().value("paid").build());
        assert!(
            matches!(err, Err(RouteError::Reject(r)) if r.starts_with("value is not valid JSON"))
        );
    }

    #[test]
    fn both_keys_are_required() {
        let err = Filter::init(&Config::from_pairs([("field", "status")])).err();
        assert_eq!(err.as_deref(), Some("missing required config key 'equals'"));
    }
}
