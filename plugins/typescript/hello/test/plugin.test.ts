import assert from "node:assert/strict";
import { test } from "node:test";

import { Message, Output } from "switchyard-sdk";

import route from "../src/plugin.ts";

test("forwards the record unchanged", () => {
  assert.deepEqual(route(new Message({ key: "k", value: "v" })), [Output.forward()]);
});
