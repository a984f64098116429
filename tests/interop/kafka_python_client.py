"""An independent Kafka client (kafka-python, pure Python) for interop tests.

    produce BOOTSTRAP TOPIC COUNT     writes COUNT records with keys and headers
    consume BOOTSTRAP TOPIC COUNT     prints COUNT records as JSON lines
"""
import json
import sys

from kafka import KafkaConsumer, KafkaProducer


def produce(bootstrap, topic, count):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(count):
        headers = [("tenant-id", f"tenant-{i % 3}".encode()), ("bin", bytes([0, 255, i % 256]))]
        producer.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode(), headers=headers)
    producer.flush(timeout=30)
    producer.close()


def consume(bootstrap, topic, count):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=60_000,
        fetch_max_wait_ms=10,
    )
    seen = 0
    for record in consumer:
        print(json.dumps({
            "partition": record.partition,
            "key": record.key.decode(),
            "value": record.value.decode(),
            "headers": [[k, v.hex()] for k, v in record.headers],
        }), flush=True)
        seen += 1
        if seen == count:
            break
    consumer.close()
    if seen != count:
        sys.exit(f"read {seen} of {count} records")


if __name__ == "__main__":
    command, bootstrap, topic, count = sys.argv[1:5]
    {"produce": produce, "consume": consume}[command](bootstrap, topic, int(count))
