//! Test fixture, not an example: partitions like `tenant-partitioner`
//! (FNV-1a-32 of the `tenant-id` header, or of the key, modulo the target's
//! partition count; it takes the same config keys), except that the tenant
//! `moved` lands one partition further. A candidate version whose decisions
//! differ from the example's for exactly one tenant.
use switchyard_sdk::{
    Config, Message, Output, Plugin, RouteError, RouteResult, default_target, fnv1a_32,
    partition_count,
};

/// The tenant whose records land elsewhere.
const MOVED: &str = "moved";

/// The fixture.
pub struct TenantMoved {
    header: String,
}

#[switchyard_sdk::plugin]
impl Plugin for TenantMoved {
    fn init(config: &Config) -> Result<Self, String> {
        config.deny_unknown(&["header", "keyless"])?;
        Ok(Self {
            header: config.get("header").unwrap_or("tenant-id").to_owned(),
        })
    }

    fn route(&self, msg: &Message) -> RouteResult {
        let tenant = msg.header(&self.header).filter(|t| !t.is_empty());
        let hash = match &tenant {
            Some(tenant) => fnv1a_32(tenant),
            None => fnv1a_32(msg.key().unwrap_or_default()),
        };
        let target = default_target();
        let partitions = partition_count(&target)
            .filter(|&n| n > 0)
            .ok_or_else(|| RouteError::retry("partition count unknown"))?;
        let shift = u32::from(tenant.as_deref() == Some(MOVED.as_bytes()));
        let partition = i32::try_from((hash % partitions + shift) % partitions)
            .map_err(|_| RouteError::reject("partition out of range"))?;
        Ok(vec![Output::forward().partition(partition)])
    }
}
