//! Benchmark fixture: reads the field at `path` of each record's decoded
//! value and forwards the record to the topic it names, reading it the way
//! `shape` says: `field` (the router reads the one field, `batch.field`)
//! or `decoded` (the whole value as JSON, parsed here).
use switchyard_sdk::json::Value;
use switchyard_sdk::{Config, Field, Message, Output, Plugin, RouteResult, json_field};

/// The path, and how it is read.
pub struct SchemaShapes {
    path: String,
    decoded: bool,
}

#[switchyard_sdk::plugin]
impl Plugin for SchemaShapes {
    fn init(config: &Config) -> Result<Self, String> {
        config.deny_unknown(&["path", "shape"])?;
        let decoded = match config.get("shape").unwrap_or("field") {
            "field" => false,
            "decoded" => true,
            other => return Err(format!("shape '{other}': field or decoded")),
        };
        Ok(Self {
            path: config.require("path")?.to_owned(),
            decoded,
        })
    }

    fn route(&self, msg: &Message) -> RouteResult {
        let topic = if self.decoded {
            let value: Value = msg.decoded()?;
            json_field(&value, &self.path)
                .and_then(Value::as_str)
                .map(ToOwned::to_owned)
        } else {
            match msg.field(&self.path)? {
                Some(Field::Text(text)) => Some(text),
                _ => None,
            }
        };
        Ok(vec![match topic {
            Some(topic) => Output::forward().to_topic(topic),
            None => Output::forward(),
        }])
    }
}
