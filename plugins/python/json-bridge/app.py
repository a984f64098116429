"""Bridges a schema registry's records and plain JSON, both ways; the same
rules, configuration and messages as the Rust and TypeScript versions.

- ``direction = "to-json"``: each record's value, decoded by its schema
  (the route reads values by schema), is written as plain JSON text, with
  a ``content-type: application/json`` header added. The key, the other
  headers and the timestamp stay as consumed.
- ``direction = "from-json"``: each record's value, JSON text, is written
  with the latest schema of ``subject`` (and ``message``, for a Protobuf
  schema with several), in the registry's wire format. With ``schema``
  (its text) and ``schema_format`` (``avro``, the default, ``protobuf`` or
  ``json``), values are written with that schema instead, registered under
  ``subject`` the first time (the route needs ``register_schemas = true``).
"""

import json

import switchyard
from switchyard import Config, ConfigError, Message, Output

FROM_JSON = ("subject", "message", "schema", "schema_format")


@switchyard.plugin
class JsonBridge(switchyard.Plugin):
    def __init__(self, config: Config) -> None:
        config.deny_unknown(["direction", *FROM_JSON])
        self.direction = config.require("direction")
        if self.direction == "to-json":
            if any(config.get(key) is not None for key in FROM_JSON):
                raise ConfigError(
                    "'subject', 'message', 'schema' and 'schema_format' are for direction = \"from-json\""
                )
        elif self.direction == "from-json":
            self.schema_format = config.get("schema_format", "avro")
            if self.schema_format not in ("avro", "protobuf", "json"):
                raise ConfigError(
                    f"config key 'schema_format' is '{self.schema_format}': use \"avro\", \"protobuf\" or \"json\""
                )
            self.schema = config.get("schema")
            if config.get("schema_format") is not None and self.schema is None:
                raise ConfigError("'schema_format' goes with 'schema'")
            self.subject = config.require("subject")
            self.message = config.get("message")
        else:
            raise ConfigError(
                f"config key 'direction' is '{self.direction}': use \"to-json\" or \"from-json\""
            )

    def route(self, msg: Message) -> list[Output]:
        if self.direction == "to-json":
            text = json.dumps(msg.decoded(), separators=(",", ":"), ensure_ascii=False)
            return [Output.forward().with_value(text).with_header("content-type", "application/json")]
        value = switchyard.encode(
            msg.json(),
            subject=self.subject,
            message=self.message,
            schema=self.schema,
            schema_format=self.schema_format,
        )
        return [Output.forward().with_value(value)]
