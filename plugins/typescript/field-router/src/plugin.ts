// Routes records in a schema registry's wire format (Avro, Protobuf or
// JSON Schema) to a topic named after a field of their decoded value,
// forwarding them unchanged (never re-encoded).
//
// `field` is a dotted path into the value (`customer.region`); the record
// goes to `topic_prefix` + the field's value (a string as it is, a number
// or boolean as written), or to the route's default target when the field
// is missing, null, or not one of `only` (comma-separated, when given).
// The same rule as the Rust and Python versions.

import { Config, ConfigError, Message, Output, plugin } from "switchyard-sdk";

export default plugin(
  class FieldRouter {
    readonly field: string;
    readonly prefix: string;
    readonly only: Set<string> | null;

    constructor(config: Config) {
      config.denyUnknown(["field", "topic_prefix", "only"]);
      this.field = config.get("field") ?? "";
      if (this.field === "" || this.field.split(".").includes("")) {
        throw new ConfigError(
          `config key 'field' is '${this.field}': give a dotted path such as customer.region`,
        );
      }
      this.prefix = config.get("topic_prefix") ?? "";
      const only = config.get("only");
      this.only = only === undefined ? null : new Set(only.split(",").map((o) => o.trim()));
    }

    route(msg: Message): Output[] {
      const value = msg.field(this.field);
      const name =
        typeof value === "string" || typeof value === "number" || typeof value === "bigint" || typeof value === "boolean"
          ? String(value)
          : "";
      if (name !== "" && (this.only === null || this.only.has(name))) {
        return [Output.forward({ topic: this.prefix + name })];
      }
      return [Output.forward()];
    }
  },
);
