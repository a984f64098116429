//! Copies every record, unchanged, to each configured topic.
//!
//! ```toml
//! plugin_config = { topics = "audit,analytics,archive" }
//! ```
use switchyard_sdk::{Config, Message, Output, Plugin, RouteResult};

/// The topics every record is copied to.
pub struct FanOut {
    topics: Vec<String>,
}

#[switchyard_sdk::plugin]
impl Plugin for FanOut {
    fn init(config: &Config) -> Result<Self, String> {
        config.deny_unknown(&["topics"])?;
        let topics: Vec<String> = config
            .require("topics")?
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if topics.is_empty() {
            return Err("config key 'topics' names no topic".to_owned());
        }
        Ok(Self { topics })
    }

    fn route(&self, _msg: &Message) -> RouteResult {
        Ok(self
            .topics
            .iter()
            .map(|t| Output::forward().to_topic(t))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_goes_to_every_topic_in_order() {
        let p = FanOut::init(&Config::from_pairs([("topics", "a, b,c")])).unwrap();
        let outputs = p.route(&Message::builder().value("x").build()).unwrap();
        let topics: Vec<_> = outputs
            .iter()
            .map(|o| o.topic.as_deref().unwrap())
            .collect();
        assert_eq!(topics, ["a", "b", "c"]);
        assert!(
            outputs
                .iter()
                .all(|o| o.value == switchyard_sdk::Data::Original)
        );
    }

    #[test]
    fn missing_or_empty_topic_list_is_refused() {
        assert_eq!(
            FanOut::init(&Config::default()).err().as_deref(),
            Some("missing required config key 'topics'")
        );
        assert!(FanOut::init(&Config::from_pairs([("topics", " , ")])).is_err());
    }
}
