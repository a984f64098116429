import assert from "node:assert/strict";
import { test } from "node:test";

import { Config, ConfigError, Message, Output, RouteError } from "switchyard-sdk";

import EnvelopeRouter from "../src/plugin.ts";

const router = () => new EnvelopeRouter(new Config({ "order.created": "orders.created", "order.paid": "orders.paid" }));

function rejectReason(value: string | null): string {
  try {
    router().route(new Message({ value }));
  } catch (e) {
    assert.ok(e instanceof RouteError, `expected a RouteError, got ${e}`);
    assert.equal(e.kind, "reject");
    return e.reason;
  }
  assert.fail("expected a reject");
}

test("each type goes to its topic unchanged", () => {
  const value = '{"type":"order.paid","version":1,"timestamp":"2026-01-01T00:00:00Z","payload":{"id":7}}';
  assert.deepEqual(router().route(new Message({ value })), [Output.forward({ topic: "orders.paid" })]);
});

test("an unknown type is rejected with its name", () => {
  const value = '{"type":"order.lost","version":1,"timestamp":0,"payload":{}}';
  assert.equal(rejectReason(value), "unknown envelope type 'order.lost'");
});

test("malformed JSON is rejected saying so", () => {
  assert.match(rejectReason('{"type":"order.paid"'), /^value is not valid JSON: /);
});

test("an envelope without type or payload is rejected", () => {
  assert.equal(rejectReason('{"payload":{}}'), "envelope has no string field 'type'");
  assert.equal(rejectReason('{"type":7,"payload":{}}'), "envelope has no string field 'type'");
  assert.equal(rejectReason('{"type":"order.paid"}'), "envelope has no field 'payload'");
  assert.equal(rejectReason('["order.paid",{}]'), "envelope is not a JSON object");
});

test("an empty or null value is rejected", () => {
  assert.match(rejectReason(""), /^value is not valid JSON: /);
  assert.equal(rejectReason(null), "value is null, expected JSON");
});

test("an empty configuration or topic is refused", () => {
  assert.throws(() => new EnvelopeRouter(new Config()), ConfigError);
  assert.throws(() => new EnvelopeRouter(new Config({ "order.paid": "" })), /maps to an empty topic name/);
});
