"""Parses OpenMetrics text from stdin with Prometheus's own Python client
(strict: a malformed exposition raises) and prints every sample as a JSON
line: {"name": ..., "labels": {...}, "value": ...}, after one line per
family: {"family": ..., "type": ...}."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    print(json.dumps({"family": family.name, "type": family.type}))
    for sample in family.samples:
        print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value}))
