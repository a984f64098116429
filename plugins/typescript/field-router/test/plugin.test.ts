import assert from "node:assert/strict";
import { test } from "node:test";

import { Config, ConfigError, Message, RouteError } from "switchyard-sdk";

import FieldRouter from "../src/plugin.ts";

function topic(router: InstanceType<typeof FieldRouter>, decoded: unknown): string | undefined {
  const outputs = router.route(new Message({ decoded }));
  assert.equal(outputs.length, 1);
  assert.ok(outputs[0].isForward(), "never re-encoded");
  return outputs[0].topic;
}

test("routes by a nested field with a prefix", () => {
  const router = new FieldRouter(new Config({ field: "customer.region", topic_prefix: "orders-" }));
  assert.equal(topic(router, { id: 1, customer: { name: "Ada", region: "eu" } }), "orders-eu");
});

test("numbers and booleans name topics as written", () => {
  const router = new FieldRouter(new Config({ field: "shard" }));
  assert.equal(topic(router, { shard: 7 }), "7");
  assert.equal(topic(router, { shard: true }), "true");
});

test("missing, null, empty or unlisted fields go to the default target", () => {
  const router = new FieldRouter(new Config({ field: "region", topic_prefix: "o-", only: "eu, us" }));
  assert.equal(topic(router, { region: "us" }), "o-us");
  for (const value of [{}, { region: null }, { region: "" }, { region: "apac" }, { region: { a: 1 } }]) {
    assert.equal(topic(router, value), undefined, JSON.stringify(value));
  }
});

test("a record not read by schema is rejected with why", () => {
  const router = new FieldRouter(new Config({ field: "region" }));
  assert.throws(
    () => router.route(new Message({ value: "{}" })),
    (e: unknown) => e instanceof RouteError && e.reason.includes("no decoded value"),
  );
});

test("a bad path is refused at init", () => {
  for (const field of ["", "a..b", ".a"]) {
    assert.throws(() => new FieldRouter(new Config({ field })), ConfigError);
  }
});
