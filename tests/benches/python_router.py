"""The router a team writes by hand in Python, for the benchmarks to compare
with: a confluent-kafka consume -> produce loop with the tenant
partitioner's logic (partition = FNV-1a-32 of the `tenant-id` header, or of
the key, modulo the target's partition count). Auto-commit, no checks.

Usage: python_router.py BOOTSTRAP GROUP SOURCE TARGET [KEY=VALUE...], the
pairs being librdkafka consumer properties. Runs until killed.
"""

import sys

from confluent_kafka import Consumer, Producer


def fnv1a_32(data):
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def main():
    bootstrap, group, source, target, *pairs = sys.argv[1:]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            **dict(pair.split("=", 1) for pair in pairs),
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    partitions = len(producer.list_topics(target, timeout=10).topics[target].partitions)
    if partitions == 0:
        sys.exit(f"topic '{target}' has no partitions")
    consumer.subscribe([source])
    while True:
        producer.poll(0)
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            sys.exit(f"consume failed: {msg.error()}")
        headers = msg.headers() or []
        tenant = next((v for k, v in headers if k == "tenant-id"), None) or msg.key() or b""
        partition = fnv1a_32(tenant) % partitions
        _, timestamp = msg.timestamp()
        while True:
            try:
                producer.produce(
                    target,
                    value=msg.value(),
                    key=msg.key(),
                    partition=partition,
                    timestamp=timestamp,
                    headers=headers,
                )
                break
            except BufferError:
                producer.poll(0.01)


if __name__ == "__main__":
    main()
