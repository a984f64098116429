//! Custom partitioner: every record of a tenant lands on the same partition
//! of the route's default target.
//!
//! partition = FNV-1a-32(tenant) mod (partition count of the target), where
//! the tenant is the value of the `tenant-id` header (config key `header`
//! names another one), or the record key when the header is missing or
//! empty, or the empty string when there is no key either: the same
//! partition a producer balancing by tenant the usual way picks, so records
//! written directly and records routed here land together. Config
//! `keyless = "reject"` rejects records with neither tenant nor key instead.
//! Key, value and headers pass through unchanged.
//!
//! ```toml
//! plugin_config = { header = "tenant-id" }
//! ```
use switchyard_sdk::{
    Config, Message, Output, Plugin, RouteError, RouteResult, default_target, fnv1a_32,
    partition_count,
};

/// The partitioner and the header it reads.
pub struct TenantPartitioner {
    header: String,
    /// Reject records with neither tenant nor key (else they hash as "").
    reject_keyless: bool,
}

#[switchyard_sdk::plugin]
impl Plugin for TenantPartitioner {
    fn init(config: &Config) -> Result<Self, String> {
        config.deny_unknown(&["header", "keyless"])?;
        let header = config.get("header").unwrap_or("tenant-id");
        if header.is_empty() {
            return Err("config key 'header' must not be empty".to_owned());
        }
        let reject_keyless = match config.get("keyless") {
            None | Some("hash-empty") => false,
            Some("reject") => true,
            Some(other) => {
                return Err(format!(
                    "config key 'keyless' is '{other}': use \"hash-empty\" (the default) or \"reject\""
                ));
            }
        };
        Ok(Self {
            header: header.to_owned(),
            reject_keyless,
        })
    }

    fn route(&self, msg: &Message) -> RouteResult {
        let hash = match msg.header(&self.header).filter(|t| !t.is_empty()) {
            Some(tenant) => fnv1a_32(&tenant),
            None => match msg.key() {
                Some(key) => fnv1a_32(key),
                None if self.reject_keyless => {
                    return Err(RouteError::reject(format!(
                        "record has no '{}' header and no key",
                        self.header
                    )));
                }
                None => fnv1a_32(b""),
            },
        };
        let target = default_target();
        let partitions = partition_count(&target).filter(|&n| n > 0).ok_or_else(|| {
            RouteError::retry(format!("partition count of '{target}' is unknown"))
        })?;
        // The remainder is below `partitions`, itself an i32 partition count.
        let partition = i32::try_from(hash % partitions)
            .map_err(|_| RouteError::reject("partition out of range"))?;
        Ok(vec![Output::forward().partition(partition)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::set_partition_count;

    fn partitioner(config: &[(&str, &str)]) -> TenantPartitioner {
        TenantPartitioner::init(&Config::from_pairs(config.iter().copied())).unwrap()
    }

    fn partition_of(p: &TenantPartitioner, msg: &Message) -> i32 {
        let outputs = p.route(msg).unwrap();
        assert_eq!(outputs.len(), 1);
        outputs[0].partition.unwrap()
    }

    #[test]
    fn partition_is_fnv1a_of_the_tenant_modulo_the_partition_count() {
        set_partition_count("output", 6);
        let p = partitioner(&[]);
        for tenant in ["acme", "globex", "initech", "umbrella"] {
            let msg = Message::builder().header("tenant-id", tenant).build();
            let expected = (fnv1a_32(tenant.as_bytes()) % 6) as i32;
            assert_eq!(partition_of(&p, &msg), expected, "tenant {tenant:?}");
        }
    }

    #[test]
    fn known_vectors_for_six_partitions() {
        // fnv1a_32("acme") = 0x45fd_71af = 1174237615; 1174237615 % 6 = 1
        set_partition_count("output", 6);
        let msg = Message::builder().header("tenant-id", "acme").build();
        assert_eq!(fnv1a_32(b"acme"), 0x45fd_71af);
        assert_eq!(partition_of(&partitioner(&[]), &msg), 1);
    }

    #[test]
    fn output_is_the_original_record() {
        set_partition_count("output", 4);
        let msg = Message::builder()
            .header("tenant-id", "acme")
            .value("v")
            .build();
        let out = &partitioner(&[]).route(&msg).unwrap()[0];
        assert_eq!(out.topic, None);
        assert_eq!(out.key, switchyard_sdk::Data::Original);
        assert_eq!(out.value, switchyard_sdk::Data::Original);
        assert_eq!(out.headers, switchyard_sdk::OutputHeaders::Original);
    }

    #[test]
    fn configured_header_is_used_instead_of_tenant_id() {
        set_partition_count("output", 8);
        let msg = Message::builder()
            .header("tenant-id", "ignored")
            .header("org", "acme")
            .build();
        let expected = (fnv1a_32(b"acme") % 8) as i32;
        assert_eq!(
            partition_of(&partitioner(&[("header", "org")]), &msg),
            expected
        );
    }

    #[test]
    fn missing_header_falls_back_to_the_key() {
        set_partition_count("output", 6);
        let msg = Message::builder().key("acme").build();
        let expected = (fnv1a_32(b"acme") % 6) as i32;
        assert_eq!(partition_of(&partitioner(&[]), &msg), expected);
    }

    #[test]
    fn an_empty_tenant_counts_as_missing_and_falls_back_to_the_key() {
        set_partition_count("output", 6);
        let msg = Message::builder()
            .header("tenant-id", "")
            .key("globex")
            .build();
        let expected = (fnv1a_32(b"globex") % 6) as i32;
        assert_eq!(partition_of(&partitioner(&[]), &msg), expected);
    }

    #[test]
    fn a_record_without_tenant_or_key_hashes_as_the_empty_string() {
        set_partition_count("output", 6);
        let expected = (fnv1a_32(b"") % 6) as i32;
        for msg in [
            Message::builder().build(),
            Message::builder().header("tenant-id", "").build(),
        ] {
            assert_eq!(partition_of(&partitioner(&[]), &msg), expected);
        }
    }

    #[test]
    fn keyless_reject_refuses_a_record_without_tenant_or_key() {
        set_partition_count("output", 6);
        let err = partitioner(&[("keyless", "reject")])
            .route(&Message::builder().header("tenant-id", "").build())
            .unwrap_err();
        assert_eq!(
            err,
            RouteError::reject("record has no 'tenant-id' header and no key")
        );
    }

    #[test]
    fn unknown_partition_count_asks_for_a_retry() {
        let msg = Message::builder().key("k").build();
        let err = partitioner(&[]).route(&msg).unwrap_err();
        assert!(matches!(err, RouteError::Retry(_)), "{err:?}");
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let err = TenantPartitioner::init(&Config::from_pairs([("heder", "x")])).err();
        assert_eq!(
            err.as_deref(),
            Some("unknown config key 'heder' (known keys: header, keyless)")
        );
    }
}
