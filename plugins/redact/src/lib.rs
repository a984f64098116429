//! Masks or removes configured fields of a JSON value and says how many it
//! touched in a header.
//!
//! - `fields`: comma-separated dotted paths (`password,card.number`);
//! - `mode`: `mask` (default; the field's value becomes `mask`) or `remove`;
//! - `mask`: the replacement text, default `***`;
//! - `count_header`: the header that carries the number of redacted fields,
//!   default `redacted-count`.
//!
//! A null value (a tombstone) passes unchanged; a value that is not JSON is
//! rejected, so nothing unredacted slips through.
//!
//! ```toml
//! plugin_config = { fields = "password,card.number", mode = "mask" }
//! ```
use switchyard_sdk::json::Value;
use switchyard_sdk::{Config, Message, Output, Plugin, RouteError, RouteResult, json_field_mut};

/// What to redact and how.
pub struct Redact {
    fields: Vec<String>,
    mask: Option<String>,
    count_header: String,
}

#[switchyard_sdk::plugin]
impl Plugin for Redact {
    fn init(config: &Config) -> Result<Self, String> {
        config.deny_unknown(&["fields", "mode", "mask", "count_header"])?;
        let fields: Vec<String> = config
            .require("fields")?
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        if fields.is_empty() {
            return Err("config key 'fields' names no field".to_owned());
        }
        let mask = match config.get("mode").unwrap_or("mask") {
            "mask" => Some(config.get("mask").unwrap_or("***").to_owned()),
            "remove" => None,
            other => {
                return Err(format!(
                    "config key 'mode' is '{other}', expected 'mask' or 'remove'"
                ));
            }
        };
        let count_header = config
            .get("count_header")
            .unwrap_or("redacted-count")
            .to_owned();
        Ok(Self {
            fields,
            mask,
            count_header,
        })
    }

    fn route(&self, msg: &Message) -> RouteResult {
        if msg.value().is_none() {
            return Ok(vec![Output::forward()]);
        }
        let mut doc = msg.json_value()?;
        let count = self
            .fields
            .iter()
            .filter(|path| self.redact(&mut doc, path))
            .count();
        let mut out = Output::forward().header(self.count_header.as_str(), count.to_string());
        if count > 0 {
            let value = switchyard_sdk::json::to_vec(&doc)
                .map_err(|e| RouteError::reject(format!("cannot serialize redacted value: {e}")))?;
            out = out.value(value);
        }
        Ok(vec![out])
    }
}

impl Redact {
    /// Redacts one field; whether it was there.
    fn redact(&self, doc: &mut Value, path: &str) -> bool {
        match &self.mask {
            Some(mask) => match json_field_mut(doc, path) {
                Some(field) => {
                    *field = Value::String(mask.clone());
                    true
                }
                None => false,
            },
            None => {
                let (parent, last) = match path.rsplit_once('.') {
                    Some((parent, last)) => (json_field_mut(doc, parent), last),
                    None => (Some(doc), path),
                };
                match parent {
                    Some(Value::Object(map)) => map.remove(last).is_some(),
                    Some(Value::Array(items)) => match last.parse::<usize>() {
                        Ok(i) if i < items.len() => {
                            items.remove(i);
                            true
                        }
                        _ => false,
                    },
                    _ => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::{Data, Header, OutputHeaders};

    fn redact(config: &[(&str, &str)], value: &str) -> (Value, String) {
        let p = Redact::init(&Config::from_pairs(config.iter().copied())).unwrap();
        let out = p
            .route(&Message::builder().value(value).build())
            .unwrap()
            .remove(0);
        let OutputHeaders::Append(headers) = out.headers else {
            panic!("{out:?}")
        };
        let [Header { key, value: count }] = headers.as_slice() else {
            panic!("{headers:?}")
        };
        assert_eq!(key, "redacted-count");
        let doc = match out.value {
            Data::Bytes(b) => serde_json_from(&b),
            Data::Original => serde_json_from(value.as_bytes()),
            Data::Null => panic!("value became null"),
        };
        (doc, String::from_utf8(count.clone()).unwrap())
    }

    fn serde_json_from(b: &[u8]) -> Value {
        switchyard_sdk::json::from_slice(b).unwrap()
    }

    const ORDER: &str = r#"{"id":1,"password":"hunter2","card":{"number":"4111","exp":"12/30"}}"#;

    #[test]
    fn masks_configured_fields_and_counts_them() {
        let (doc, count) = redact(&[("fields", "password,card.number,missing")], ORDER);
        assert_eq!(count, "2");
        assert_eq!(
            doc,
            switchyard_sdk::json::json!({"id":1,"password":"***","card":{"number":"***","exp":"12/30"}})
        );
    }

    #[test]
    fn removes_fields_in_remove_mode() {
        let (doc, count) = redact(
            &[("fields", "password,card.number"), ("mode", "remove")],
            ORDER,
        );
        assert_eq!(count, "2");
        assert_eq!(
            doc,
            switchyard_sdk::json::json!({"id":1,"card":{"exp":"12/30"}})
        );
    }

    #[test]
    fn record_without_the_fields_passes_with_a_zero_count() {
        let (doc, count) = redact(&[("fields", "password")], r#"{"id":2}"#);
        assert_eq!(
            (doc, count.as_str()),
            (switchyard_sdk::json::json!({"id":2}), "0")
        );
    }

    #[test]
    fn non_json_is_rejected_and_tombstones_pass() {
        let p = Redact::init(&Config::from_pairs([("fields", "password")])).unwrap();
        assert!(matches!(
            p.route(&Message::builder().value("password=hunter2").build()),
            Err(RouteError::Reject(_))
        ));
        assert_eq!(
            p.route(&Message::builder().build()),
            Ok(vec![Output::forward()])
        );
    }

    #[test]
    fn unknown_mode_is_refused() {
        let err = Redact::init(&Config::from_pairs([("fields", "a"), ("mode", "blur")])).err();
        assert_eq!(
            err.as_deref(),
            Some("config key 'mode' is 'blur', expected 'mask' or 'remove'")
        );
    }
}
