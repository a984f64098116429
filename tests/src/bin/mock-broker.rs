//! librdkafka's mock cluster in a process of its own, so that a benchmark
//! can measure a router against a broker faster than the test broker
//! without sharing the router's process.
//!
//! Usage: `mock-broker TOPIC:PARTITIONS...`. Prints the bootstrap address
//! on one line, then serves until its standard input closes. The mock keeps
//! only the last ~5 MiB of each partition.

use std::io::{Read as _, Write as _};

use anyhow::Context as _;
use rdkafka::mocking::MockCluster;

fn main() -> anyhow::Result<()> {
    let cluster = MockCluster::new(1)?;
    for spec in std::env::args().skip(1) {
        let (topic, partitions) = spec
            .rsplit_once(':')
            .with_context(|| format!("'{spec}' is not TOPIC:PARTITIONS"))?;
        cluster.create_topic(topic, partitions.parse()?, 1)?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", cluster.bootstrap_servers())?;
    stdout.flush()?;
    // Serve until whoever started us goes away.
    std::io::stdin().read_to_end(&mut Vec::new())?;
    Ok(())
}
