//! `[kafka]`: the cluster, the consumer group, delivery, and librdkafka
//! properties passed through, less the ones Switchyard must fix or guard
//! (listed here with their reasons).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The `[kafka]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` of the brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Consumer group. Instances with the same group share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// librdkafka consumer properties, passed through.
    #[serde(default)]
    pub consumer: BTreeMap<String, Property>,
    /// librdkafka producer properties, passed through.
    #[serde(default)]
    pub producer: BTreeMap<String, Property>,
    /// At-least-once (the default) or exactly-once.
    #[serde(default)]
    pub delivery: Delivery,
    /// The producer's transactional id in exactly-once mode: stable for
    /// this instance across restarts, unique among instances. Default:
    /// `<group_id>-<hostname>`.
    pub transactional_id: Option<String>,
    /// Exactly-once mode: how often the transaction (outputs and consumed
    /// offsets together) is committed, in milliseconds.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
}

/// The `kafka.delivery` field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Offsets committed after every output is acknowledged; a crash may
    /// route a record again.
    #[default]
    AtLeastOnce,
    /// Outputs and consumed offsets committed in one Kafka transaction;
    /// `read_committed` consumers see each record's outputs once.
    ExactlyOnce,
}

fn default_group_id() -> String {
    "switchyard".to_owned()
}

/// Kafka Streams' choice for exactly-once: short transactions keep the
/// latency `read_committed` readers see low.
const fn default_commit_interval_ms() -> u64 {
    100
}

impl KafkaConfig {
    /// The transactional id in exactly-once mode (none otherwise).
    #[must_use]
    pub fn transactional_id(&self) -> Option<String> {
        if self.delivery != Delivery::ExactlyOnce {
            return None;
        }
        Some(self.transactional_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                .unwrap_or_default();
            let host = host.trim();
            let host = if host.is_empty() { "localhost" } else { host };
            format!("{}-{host}", self.group_id)
        }))
    }
}

/// A librdkafka property value: TOML strings, integers, floats and booleans
/// are all accepted and passed as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Property {
    /// Text.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl std::fmt::Display for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Consumer properties Switchyard sets itself, and why a user may not.
pub(super) const FIXED_CONSUMER: &[(&str, &str)] = &[
    (
        "enable.auto.offset.store",
        "Switchyard stores each offset only after every output of the record and of all earlier records is acknowledged (at-least-once); automatic storing would commit records that were never produced",
    ),
    ("group.id", "set it with kafka.group_id"),
    ("bootstrap.servers", "set it with kafka.bootstrap_servers"),
];

/// Producer properties that would break a guarantee, with the values that
/// keep it.
pub(super) const GUARDED_PRODUCER: &[(&str, &[&str], &str)] = &[
    (
        "acks",
        &["all", "-1"],
        "an output is acknowledged only once all in-sync replicas have it; fewer acks could lose records whose offsets are already committed",
    ),
    (
        "request.required.acks",
        &["all", "-1"],
        "an output is acknowledged only once all in-sync replicas have it; fewer acks could lose records whose offsets are already committed",
    ),
    (
        "enable.idempotence",
        &["true"],
        "the idempotent producer keeps retried outputs in order and free of duplicates",
    ),
    (
        "transactional.id",
        &[],
        "set kafka.delivery = \"exactly-once\" (and kafka.transactional_id if the default <group_id>-<hostname> does not suit)",
    ),
    (
        "bootstrap.servers",
        &[],
        "set it with kafka.bootstrap_servers",
    ),
];
