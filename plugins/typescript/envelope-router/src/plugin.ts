// Routes JSON envelopes by their `type`.
//
// Each record's value is an envelope
// `{"type": "...", "version": ..., "timestamp": ..., "payload": {...}}`. The
// plugin config maps envelope types to topics; the record goes, as it is, to
// the topic of its type. An unknown type, malformed JSON, or an envelope
// without a string `type` or without `payload` is rejected with the reason.
// The same rule as the Rust and Python versions:
//
//     plugin_config = { "order.created" = "orders.created", "order.paid" = "orders.paid" }

import { Config, ConfigError, Message, Output, RouteError, plugin } from "switchyard-sdk";

export default plugin(
  class EnvelopeRouter {
    readonly topics = new Map<string, string>();

    constructor(config: Config) {
      if (config.isEmpty()) {
        throw new ConfigError(
          "no envelope types configured: map each type to a topic, e.g. order.created=orders.created",
        );
      }
      for (const [kind, topic] of config) {
        if (topic === "") {
          throw new ConfigError(`envelope type '${kind}' maps to an empty topic name`);
        }
        this.topics.set(kind, topic);
      }
    }

    route(msg: Message): Output[] {
      const envelope = msg.json();
      if (envelope === null || typeof envelope !== "object" || Array.isArray(envelope)) {
        throw RouteError.reject("envelope is not a JSON object");
      }
      const fields = envelope as Record<string, unknown>;
      const kind = Object.hasOwn(fields, "type") ? fields.type : undefined;
      if (typeof kind !== "string") {
        throw RouteError.reject("envelope has no string field 'type'");
      }
      if (!Object.hasOwn(fields, "payload")) {
        throw RouteError.reject("envelope has no field 'payload'");
      }
      const topic = this.topics.get(kind);
      if (topic === undefined) {
        throw RouteError.reject(`unknown envelope type '${kind}'`);
      }
      return [Output.forward({ topic })];
    }
  },
);
