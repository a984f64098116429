// Bridges a schema registry's records and plain JSON, both ways; the same
// rules, configuration and messages as the Rust and Python versions.
//
// - `direction = "to-json"`: each record's value, decoded by its schema
//   (the route reads values by schema), is written as plain JSON text,
//   with a `content-type: application/json` header added. The key, the
//   other headers and the timestamp stay as consumed.
// - `direction = "from-json"`: each record's value, JSON text, is written
//   with the latest schema of `subject` (and `message`, for a Protobuf
//   schema with several), in the registry's wire format. With `schema` (its
//   text) and `schema_format` (`avro`, the default, `protobuf` or `json`),
//   values are written with that schema instead, registered under `subject`
//   the first time (the route needs `register_schemas = true`).

import { Config, ConfigError, Message, Output, encode, plugin } from "switchyard-sdk";

const FROM_JSON = ["subject", "message", "schema", "schema_format"];
const FORMATS = ["avro", "protobuf", "json"] as const;
type SchemaFormat = (typeof FORMATS)[number];

export default plugin(
  class JsonBridge {
    readonly toJson: boolean;
    readonly subject: string = "";
    readonly message: string | undefined;
    readonly schema: string | undefined;
    readonly schemaFormat: SchemaFormat = "avro";

    constructor(config: Config) {
      config.denyUnknown(["direction", ...FROM_JSON]);
      const direction = config.require("direction");
      if (direction === "to-json") {
        if (FROM_JSON.some((key) => config.get(key) !== undefined)) {
          throw new ConfigError(
            `'subject', 'message', 'schema' and 'schema_format' are for direction = "from-json"`,
          );
        }
        this.toJson = true;
        return;
      }
      if (direction !== "from-json") {
        throw new ConfigError(`config key 'direction' is '${direction}': use "to-json" or "from-json"`);
      }
      this.toJson = false;
      const format = config.get("schema_format", "avro");
      if (!(FORMATS as readonly string[]).includes(format)) {
        throw new ConfigError(`config key 'schema_format' is '${format}': use "avro", "protobuf" or "json"`);
      }
      this.schemaFormat = format as SchemaFormat;
      this.schema = config.get("schema");
      if (config.get("schema_format") !== undefined && this.schema === undefined) {
        throw new ConfigError("'schema_format' goes with 'schema'");
      }
      this.subject = config.require("subject");
      this.message = config.get("message");
    }

    route(msg: Message): Output[] {
      if (this.toJson) {
        return [
          Output.forward()
            .withValue(JSON.stringify(msg.decoded()))
            .withHeader("content-type", "application/json"),
        ];
      }
      const value = encode(msg.json(), {
        subject: this.subject,
        message: this.message,
        schema: this.schema,
        schemaFormat: this.schemaFormat,
      });
      return [Output.forward().withValue(value)];
    }
  },
);
