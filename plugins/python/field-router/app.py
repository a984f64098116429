"""Routes records in a schema registry's wire format (Avro, Protobuf or
JSON Schema) to a topic named after a field of their decoded value,
forwarding them unchanged (never re-encoded).

``field`` is a dotted path into the value (``customer.region``); the
record goes to ``topic_prefix`` + the field's value (a string as it is, a
number or boolean as written), or to the route's default target when the
field is missing, null, or not one of ``only`` (comma-separated, when
given). The same rule as the Rust and TypeScript versions.
"""

import switchyard
from switchyard import Config, ConfigError, Message, Output


@switchyard.plugin
class FieldRouter(switchyard.Plugin):
    def __init__(self, config: Config) -> None:
        config.deny_unknown(["field", "topic_prefix", "only"])
        self.field = config.get("field", "")
        if not self.field or "" in self.field.split("."):
            raise ConfigError(
                f"config key 'field' is '{self.field}': give a dotted path such as customer.region"
            )
        self.prefix = config.get("topic_prefix", "")
        only = config.get("only")
        self.only = None if only is None else {o.strip() for o in only.split(",")}

    def route(self, msg: Message) -> list[Output]:
        value = msg.field(self.field)
        if isinstance(value, bool):
            name = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            name = str(value)
        else:
            name = ""
        if name and (self.only is None or name in self.only):
            return [Output.forward(topic=self.prefix + name)]
        return [Output.forward()]
