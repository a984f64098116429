"""Routes JSON envelopes by their ``type``.

Each record's value is an envelope
``{"type": "...", "version": ..., "timestamp": ..., "payload": {...}}``. The
plugin config maps envelope types to topics; the record goes, as it is, to
the topic of its type. An unknown type, malformed JSON, or an envelope
without a string ``type`` or without ``payload`` is rejected with the
reason. The same rule as the Rust and TypeScript versions::

    plugin_config = { "order.created" = "orders.created", "order.paid" = "orders.paid" }
"""

import switchyard
from switchyard import Config, ConfigError, Message, Output, RouteError


@switchyard.plugin
class EnvelopeRouter(switchyard.Plugin):
    def __init__(self, config: Config) -> None:
        if not len(config):
            raise ConfigError(
                "no envelope types configured: map each type to a topic, e.g. order.created=orders.created"
            )
        self.topics: dict[str, str] = {}
        for kind, topic in config:
            if not topic:
                raise ConfigError(f"envelope type '{kind}' maps to an empty topic name")
            self.topics[kind] = topic

    def route(self, msg: Message) -> list[Output]:
        envelope = msg.json()
        if not isinstance(envelope, dict):
            raise RouteError.reject("envelope is not a JSON object")
        kind = envelope.get("type")
        if not isinstance(kind, str):
            raise RouteError.reject("envelope has no string field 'type'")
        if "payload" not in envelope:
            raise RouteError.reject("envelope has no field 'payload'")
        topic = self.topics.get(kind)
        if topic is None:
            raise RouteError.reject(f"unknown envelope type '{kind}'")
        return [Output.forward(topic=topic)]
