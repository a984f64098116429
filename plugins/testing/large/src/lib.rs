//! Test fixture, not an example: a plugin of about 4 MiB, the size of one
//! that embeds a large lookup table (a geo database, say). It partitions by
//! a table lookup of the key's hash, so the table is really used.
use switchyard_sdk::{Message, Output, RouteError, RouteResult, fnv1a_32, partition_count};

const SIZE: usize = 4 << 20;

/// A deterministic pseudo-random table, written by `build.rs`.
static TABLE: &[u8; SIZE] = include_bytes!(concat!(env!("OUT_DIR"), "/table.bin"));

#[switchyard_sdk::route]
fn route(msg: &Message) -> RouteResult {
    let key = msg
        .key()
        .ok_or_else(|| RouteError::reject("record has no key"))?;
    let slot = fnv1a_32(key) as usize % SIZE;
    let partitions = partition_count(&switchyard_sdk::default_target())
        .unwrap_or(1)
        .max(1);
    let partition = i32::try_from(u32::from(std::hint::black_box(TABLE)[slot]) % partitions)
        .map_err(|_| RouteError::reject("partition out of range"))?;
    Ok(vec![Output::forward().partition(partition)])
}
