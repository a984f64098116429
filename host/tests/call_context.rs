//! What the router hands a plugin with every call (`call-context`): the
//! headers the plugin asked for and the default target's partition count
//! must always be each record's own and the current count, never another
//! record's or a previous call's.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use switchyard::plugin::{Limits, PartitionCounts, PluginEngine, PluginInstance, RouteContext};
use switchyard::record::{Header, SourceRecord};
use switchyard_plugin_fixtures as fixtures;

/// Partition counts a test can change while the plugin runs.
struct Counts(AtomicU32);

impl PartitionCounts for Counts {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        (topic == "output").then(|| self.0.load(Ordering::Relaxed))
    }
}

fn partitioner(counts: Arc<Counts>) -> PluginInstance {
    let engine = PluginEngine::new().unwrap();
    let plugin = engine.load(&fixtures::tenant_partitioner()).unwrap();
    let context = RouteContext::new("r".to_owned(), "output".to_owned(), counts);
    plugin.instantiate(&[], context, Limits::default()).unwrap()
}

fn record(offset: i64, key: &str, headers: &[(&str, &str)]) -> Arc<SourceRecord> {
    Arc::new(SourceRecord {
        topic: "input".into(),
        partition: 0,
        offset,
        timestamp_ms: None,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::from_static(b"v")),
        headers: headers
            .iter()
            .map(|(k, v)| Header {
                key: (*k).into(),
                value: Bytes::copy_from_slice(v.as_bytes()),
            })
            .collect(),
        wire_headers: Default::default(),
    })
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A record's key, its headers, and what its partition is hashed from.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

fn partition_of(instance: &mut PluginInstance, record: &Arc<SourceRecord>) -> i32 {
    let outputs = instance.route(record).unwrap();
    assert_eq!(outputs.len(), 1);
    outputs[0].partition.unwrap()
}

#[test]
fn headers_handed_with_the_call_are_always_the_current_records() {
    let mut instance = partitioner(Arc::new(Counts(AtomicU32::new(6))));
    // (key, headers, what the partition is hashed from): a tenant, another,
    // none (the key is used), a repeated header (the first counts), an
    // empty value (as none: the key is used), a tenant again.
    let cases: [Case<'_>; 6] = [
        ("k0", &[("tenant-id", "acme")], "acme"),
        ("k1", &[("trace", "x"), ("tenant-id", "globex")], "globex"),
        ("k2", &[("trace", "y")], "k2"),
        (
            "k3",
            &[("tenant-id", "initech"), ("tenant-id", "acme")],
            "initech",
        ),
        ("k4", &[("tenant-id", "")], "k4"),
        ("k5", &[("tenant-id", "umbrella")], "umbrella"),
    ];
    // The first call reads the header with a host call and asks for it to
    // be handed over; every later call gets it with the call: go round
    // several times so that each case is seen both ways and after each
    // other case.
    for round in 0..4 {
        for (i, (key, headers, hashed)) in cases.iter().enumerate() {
            let offset = i64::try_from(round * cases.len() + i).unwrap();
            let expected = i32::try_from(fnv1a_32(hashed.as_bytes()) % 6).unwrap();
            assert_eq!(
                partition_of(&mut instance, &record(offset, key, headers)),
                expected,
                "round {round}, record {key} with {headers:?}"
            );
        }
    }
}

#[test]
fn headers_handed_with_a_batch_are_each_records_own() {
    let mut instance = partitioner(Arc::new(Counts(AtomicU32::new(6))));
    let cases: [Case<'_>; 5] = [
        ("k0", &[("tenant-id", "acme")], "acme"),
        ("k1", &[("trace", "y")], "k1"),
        ("k2", &[("trace", "x"), ("tenant-id", "globex")], "globex"),
        ("k3", &[("tenant-id", "")], "k3"),
        (
            "k4",
            &[("tenant-id", "initech"), ("tenant-id", "acme")],
            "initech",
        ),
    ];
    // The first batch reads the header with host calls; later ones get it
    // with the call. Each batch starts at another case, so that every case
    // is seen at every position, after a record with and without the header.
    for round in 0..cases.len() {
        let batch: Vec<_> = (0..cases.len())
            .map(|i| {
                let (key, headers, _) = cases[(round + i) % cases.len()];
                record(i64::try_from(i).unwrap(), key, headers)
            })
            .collect();
        let answers = instance.route_batch(&batch).unwrap();
        assert_eq!(answers.len(), batch.len());
        for (i, answer) in answers.into_iter().enumerate() {
            let (key, headers, hashed) = cases[(round + i) % cases.len()];
            let outputs = answer.unwrap();
            let expected = i32::try_from(fnv1a_32(hashed.as_bytes()) % 6).unwrap();
            assert_eq!(
                outputs[0].partition,
                Some(expected),
                "round {round}, position {i}: record {key} with {headers:?}"
            );
        }
    }
}

#[test]
fn the_partition_count_handed_over_follows_the_topic() {
    let counts = Arc::new(Counts(AtomicU32::new(6)));
    let mut instance = partitioner(counts.clone());
    let tenants = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];
    for (count, rounds) in [(6, 3), (12, 3), (5, 3)] {
        counts.0.store(count, Ordering::Relaxed);
        for round in 0..rounds {
            for tenant in tenants {
                let expected = i32::try_from(fnv1a_32(tenant.as_bytes()) % count).unwrap();
                assert_eq!(
                    partition_of(&mut instance, &record(0, "k", &[("tenant-id", tenant)])),
                    expected,
                    "{count} partitions, round {round}, tenant {tenant}"
                );
            }
        }
    }
}
