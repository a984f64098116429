import assert from "node:assert/strict";
import { test } from "node:test";

import { Config, ConfigError, Message, RouteError } from "switchyard-sdk";
import { setSubjectId } from "switchyard-sdk/testing";

import JsonBridge from "../src/plugin.ts";

function bridge(pairs: Record<string, string>): InstanceType<typeof JsonBridge> {
  return new JsonBridge(new Config(pairs));
}

function framed(id: number, json: string): Uint8Array {
  const body = new TextEncoder().encode(json);
  const out = new Uint8Array(5 + body.length);
  new DataView(out.buffer).setUint32(1, id);
  out.set(body, 5);
  return out;
}

test("decoded values become JSON text with a content type", () => {
  const order = { id: 7, customer: { region: "eu" }, tags: ["a"] };
  const [out] = bridge({ direction: "to-json" }).route(new Message({ decoded: order, key: "o-7" }));
  assert.deepEqual(JSON.parse(new TextDecoder().decode(out.value as Uint8Array)), order);
  assert.deepEqual(out.headers, {
    append: [{ key: "content-type", value: new TextEncoder().encode("application/json") }],
  });
});

test("JSON values are written with the subject's schema", () => {
  setSubjectId("orders-value", 4);
  const [out] = bridge({ direction: "from-json", subject: "orders-value" }).route(
    new Message({ value: '{"id":7}' }),
  );
  // Outside the router, encode frames the JSON behind the ID.
  assert.deepEqual(out.value, framed(4, '{"id":7}'));
});

test("JSON values are written with a schema of its own under the subject", () => {
  setSubjectId("orders-value", 9);
  const schema = '{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}';
  const [out] = bridge({ direction: "from-json", subject: "orders-value", schema }).route(
    new Message({ value: '{"id":7}' }),
  );
  assert.deepEqual(out.value, framed(9, '{"id":7}'));
});

test("JSON that is not JSON is rejected", () => {
  setSubjectId("orders-value", 4);
  assert.throws(
    () => bridge({ direction: "from-json", subject: "orders-value" }).route(new Message({ value: "{" })),
    (e: unknown) => e instanceof RouteError && e.message.startsWith("value is not valid JSON"),
  );
});

test("the configuration is checked", () => {
  for (const bad of [
    { direction: "sideways" },
    { direction: "from-json" },
    { direction: "to-json", subject: "x" },
    { direction: "to-json", schema: "{}" },
    { direction: "from-json", subject: "x", schema_format: "avro" },
    { direction: "from-json", subject: "x", schema: "{}", schema_format: "xml" },
    {},
  ]) {
    assert.throws(() => bridge(bad), ConfigError, JSON.stringify(bad));
  }
});
