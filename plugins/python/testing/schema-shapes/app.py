"""Benchmark fixture: reads the field at ``path`` of each record's decoded
value and forwards the record to the topic it names, reading it the way
``shape`` says: ``fields`` (the SDK's way: the field of every record of the
call in one call into the router), ``field`` (one call into the router per
record) or ``decoded`` (the whole value as JSON, parsed here)."""

import json

import switchyard
from switchyard import Config, ConfigError, Message, Output, json_field


@switchyard.plugin
class SchemaShapes(switchyard.Plugin):
    def __init__(self, config: Config) -> None:
        config.deny_unknown(["path", "shape"])
        self.path = config.get("path", "")
        self.shape = config.get("shape", "fields")
        if self.shape not in ("fields", "field", "decoded"):
            raise ConfigError(f"shape '{self.shape}': fields, field or decoded")

    def route(self, msg: Message) -> list[Output]:
        if self.shape == "fields":
            topic = msg.field(self.path)
        elif self.shape == "decoded":
            topic = json_field(msg.decoded(), self.path)
        else:
            # The contract's per-record call, bypassing the SDK's batching.
            from wit_world.imports import types

            found = msg._call.batch.field(msg._index, types.Part.VALUE, self.path)
            topic = None if found is None else found.value
        if isinstance(topic, str):
            return [Output.forward(topic=topic)]
        return [Output.forward()]
