import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { Config, ConfigError, Message, Output, RouteError, fnv1a32 } from "switchyard-sdk";
import { reset, setPartitionCount } from "switchyard-sdk/testing";

import TenantPartitioner from "../src/plugin.ts";

beforeEach(() => setPartitionCount("output", 6));
afterEach(() => reset());

function partitionOf(plugin: InstanceType<typeof TenantPartitioner>, msg: Message): number | undefined {
  const [out] = plugin.route(msg);
  return out.partition;
}

test("the partition is FNV-1a of the tenant modulo the partition count", () => {
  const plugin = new TenantPartitioner(new Config());
  for (const tenant of ["acme", "globex", "initech", "umbrella"]) {
    const msg = new Message({ headers: { "tenant-id": tenant } });
    assert.equal(partitionOf(plugin, msg), fnv1a32(tenant) % 6);
  }
});

test("a known vector for six partitions", () => {
  assert.equal(fnv1a32("acme"), 0x45fd71af);
  const msg = new Message({ headers: { "tenant-id": "acme" } });
  assert.equal(partitionOf(new TenantPartitioner(new Config()), msg), 1);
});

test("the output is the original record", () => {
  const plugin = new TenantPartitioner(new Config());
  const outputs = plugin.route(new Message({ headers: { "tenant-id": "acme" }, value: "v" }));
  assert.deepEqual(outputs, [Output.forward({ partition: 1 })]);
  assert.ok(outputs[0].isForward());
});

test("an empty tenant falls back to the key, then to the empty string", () => {
  const plugin = new TenantPartitioner(new Config());
  const keyed = new Message({ key: "k", headers: { "tenant-id": "" } });
  assert.equal(partitionOf(plugin, keyed), fnv1a32("k") % 6);
  assert.equal(partitionOf(plugin, new Message()), fnv1a32("") % 6);
});

test("keyless = reject refuses records with neither tenant nor key", () => {
  const plugin = new TenantPartitioner(new Config({ keyless: "reject" }));
  assert.throws(() => plugin.route(new Message()), (e: unknown) => e instanceof RouteError && e.kind === "reject");
});

test("an unknown partition count asks for a retry", () => {
  reset();
  const plugin = new TenantPartitioner(new Config());
  assert.throws(
    () => plugin.route(new Message({ key: "k" })),
    (e: unknown) => e instanceof RouteError && e.kind === "retry",
  );
});

test("unknown config keys are refused", () => {
  assert.throws(() => new TenantPartitioner(new Config({ heder: "x" })), (e: unknown) => {
    return e instanceof ConfigError && e.message.startsWith("unknown config key 'heder'");
  });
});
