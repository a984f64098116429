import assert from "node:assert/strict";
import { test } from "node:test";

import { Message, Output } from "switchyard-sdk";

import route from "../src/plugin.ts";

test("a record is forwarded unchanged", () => {
  assert.deepEqual(route(new Message({ key: "k", value: "v" })), [Output.forward()]);
});

test("a tombstone is dropped", () => {
  assert.deepEqual(route(new Message({ key: "k" })), []);
});
