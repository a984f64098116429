// The SDK natively: what plugin code sees, and what the component's
// exports hand the router (with a stand-in for the router's batch and host).

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Config,
  ConfigError,
  Message,
  ORIGINAL,
  Output,
  RouteError,
  fnv1a32,
  jsonField,
  plugin,
  route,
} from "../index.js";
import { witExports } from "../component.js";
import { start } from "../testing.js";

const bytes = (s) => new TextEncoder().encode(s);

test("fnv1a32 matches the reference vectors", () => {
  assert.equal(fnv1a32(""), 0x811c9dc5);
  assert.equal(fnv1a32("a"), 0xe40c292c);
  assert.equal(fnv1a32("foobar"), 0xbf9cf968);
  assert.equal(fnv1a32(bytes("acme")), fnv1a32("acme"));
});

test("a test message encodes strings and reads headers", () => {
  const msg = new Message({ key: "k", value: '{"a":{"b":[1,2]}}', headers: [["h", "1"], ["h", "2"]] });
  assert.deepEqual(msg.key, bytes("k"));
  assert.equal(msg.headerStr("h"), "1");
  assert.equal(msg.header("missing"), null);
  assert.equal(msg.headers.length, 2);
  assert.equal(jsonField(msg.json(), "a.b.1"), 2);
  assert.equal(jsonField(msg.json(), "a.x"), undefined);
  assert.equal(new Message().value, null);
});

test("json() rejects null and malformed values saying so", () => {
  assert.throws(() => new Message().json(), (e) => e instanceof RouteError && e.reason === "value is null, expected JSON");
  assert.throws(
    () => new Message({ value: "{" }).json(),
    (e) => e instanceof RouteError && e.kind === "reject" && e.reason.startsWith("value is not valid JSON: "),
  );
});

test("output builders", () => {
  const out = Output.forward().toTopic("t").toPartition(3);
  assert.ok(out.isForward());
  const changed = Output.forward().withHeader("x", "1");
  assert.ok(!changed.isForward());
  assert.deepEqual(changed.headers, { append: [{ key: "x", value: bytes("1") }] });
  const made = Output.new({ key: "k", headers: { a: "b" } }).withTimestampMs(5);
  assert.equal(made.value, null);
  assert.deepEqual(made.headers, { replace: [{ key: "a", value: bytes("b") }] });
  assert.equal(Output.forward().key, ORIGINAL);
  assert.throws(() => Output.forward().toPartition(1.5), RangeError);
  assert.throws(() => Output.forward().withValue(42), TypeError);
});

test("config: get, require, denyUnknown", () => {
  const config = new Config({ a: "1" });
  assert.equal(config.get("a"), "1");
  assert.equal(config.get("b", "x"), "x");
  assert.throws(() => config.require("b"), /missing required config key 'b'/);
  assert.throws(() => config.denyUnknown(["c"]), (e) => e instanceof ConfigError && e.message === "unknown config key 'a' (known keys: c)");
  assert.throws(() => config.denyUnknown([]), /this plugin takes no configuration/);
  assert.deepEqual([...config], [["a", "1"]]);
});

test("start() runs a plugin as the router does; route() takes no configuration", () => {
  const fn = route(() => [Output.forward()]);
  assert.deepEqual(start(fn)(new Message()), [Output.forward()]);
  assert.throws(() => start(fn, { x: "1" }), /takes no configuration/);
  assert.throws(() => start(() => []), /not a plugin/);
});

/** The router's side: a batch of records and the host interface. */
function router(records) {
  const wanted = [];
  const logs = [];
  const calls = { header: 0, value: 0 };
  const host = {
    log: (level, message) => logs.push([level, message]),
    defaultTarget: () => "out",
    partitionCount: (topic) => (topic === "out" ? 4 : undefined),
    wantHeader: (name) => wanted.push(name) - 1,
  };
  const batch = {
    topic: () => "in",
    partition: () => 0,
    offset: (i) => BigInt(i),
    timestampMs: () => undefined,
    key: (i) => records[i].key,
    value: (i) => {
      calls.value++;
      return records[i].value;
    },
    keyLen: (i) => records[i].key?.length,
    valueLen: (i) => records[i].value?.length,
    header: (i, name) => {
      calls.header++;
      return records[i].headers.find((h) => h.key === name)?.value;
    },
    headers: (i) => records[i].headers,
  };
  /** The call context the router builds for the headers asked for. */
  function context() {
    const spans = [];
    const chunks = [];
    let at = 0;
    for (const record of records) {
      for (const name of wanted) {
        const value = record.headers.find((h) => h.key === name)?.value;
        if (value === undefined) {
          spans.push(undefined);
        } else {
          spans.push({ start: at, len: value.length });
          chunks.push(value);
          at += value.length;
        }
      }
    }
    const headerBytes = new Uint8Array(at);
    let offset = 0;
    for (const chunk of chunks) {
      headerBytes.set(chunk, offset);
      offset += chunk.length;
    }
    return { defaultTargetPartitions: 4, headerSpans: spans, headerBytes };
  }
  return { host, batch, context, wanted, logs, calls };
}

const record = (tenant, value = "v") => ({
  key: bytes("k"),
  value: bytes(value),
  headers: tenant === null ? [] : [{ key: "tenant", value: bytes(tenant) }],
});

test("the exports forward unchanged records without copying, and ask for wanted headers once", () => {
  const Partitioner = plugin(
    class {
      constructor(config) {
        config.denyUnknown([]);
      }
      route(msg) {
        const tenant = msg.header("tenant");
        if (tenant === null) throw RouteError.reject("no tenant");
        return [Output.forward({ partition: fnv1a32(tenant) % 4 })];
      }
    },
  );
  const records = [record("acme"), record(null), record("globex")];
  const r = router(records);
  const { init, route: routeCall } = witExports(Partitioner, r.host);
  init([]);
  const first = routeCall(r.batch, 3, r.context());
  assert.deepEqual(first, [
    { tag: "ok", val: { tag: "forward", val: { topic: undefined, partition: fnv1a32("acme") % 4 } } },
    { tag: "err", val: { tag: "reject", val: "no tenant" } },
    { tag: "ok", val: { tag: "forward", val: { topic: undefined, partition: fnv1a32("globex") % 4 } } },
  ]);
  assert.deepEqual(r.wanted, ["tenant"]);
  assert.equal(r.calls.value, 0, "a forwarding plugin never reads the value");
  // From the second call on, the header comes with the call.
  const before = r.calls.header;
  const second = routeCall(r.batch, 3, r.context());
  assert.deepEqual(second, first);
  assert.equal(r.calls.header, before, "no header fetched record by record");
  assert.deepEqual(r.wanted, ["tenant"]);
});

test("the exports send changed outputs in full and drop on []", () => {
  const fn = route((msg) => {
    if (msg.valueStr() === "drop") return [];
    return [Output.forward().withHeader("seen", "1").withTimestampMs(7), Output.new({ topic: "copy", value: msg.value })];
  });
  const r = router([record(null), record(null, "drop")]);
  const { init, route: routeCall } = witExports(fn, r.host);
  init([]);
  const [kept, dropped] = routeCall(r.batch, 2, r.context());
  assert.deepEqual(dropped, { tag: "ok", val: { tag: "outputs", val: [] } });
  assert.equal(kept.tag, "ok");
  assert.equal(kept.val.tag, "outputs");
  const [changed, made] = kept.val.val;
  assert.deepEqual(changed.key, { tag: "original" });
  assert.deepEqual(changed.headers, { tag: "append", val: [{ key: "seen", value: bytes("1") }] });
  assert.equal(changed.timestampMs, 7n);
  assert.deepEqual(made.key, { tag: "null" });
  assert.deepEqual(made.value, { tag: "bytes", val: bytes("v") });
  assert.deepEqual(made.headers, { tag: "replace", val: [] });
  assert.equal(made.topic, "copy");
});

test("init refuses with the error's message; other errors from route propagate (a trap)", () => {
  const Refusing = plugin(
    class {
      constructor() {
        throw new ConfigError("bad config");
      }
      route() {
        return [];
      }
    },
  );
  const r = router([record(null)]);
  assert.throws(() => witExports(Refusing, r.host).init([["a", "b"]]), (e) => e === "bad config");
  const buggy = route(() => {
    throw new TypeError("oops");
  });
  const exports = witExports(buggy, r.host);
  exports.init([]);
  assert.throws(() => exports.route(r.batch, 1, r.context()), TypeError);
  const wrong = route(() => "nope");
  const wrongExports = witExports(wrong, r.host);
  wrongExports.init([]);
  assert.throws(() => wrongExports.route(r.batch, 1, r.context()), /return an array of outputs/);
});

test("witExports refuses a module whose default export is not a plugin", () => {
  assert.throws(() => witExports(() => [], {}), /not a plugin/);
});

test("decoded records: fields, the whole value and the schema ID, natively", () => {
  const msg = new Message({ decoded: { a: [1, { b: "c" }] }, schemaId: 7 });
  assert.equal(msg.schemaId, 7);
  assert.equal(msg.field("a.1.b"), "c");
  assert.equal(msg.field("a.5", "none"), "none");
  assert.deepEqual(msg.decoded(), { a: [1, { b: "c" }] });
  assert.equal(new Message().schemaId, undefined);
  assert.throws(
    () => new Message({ value: "{}" }).field("a"),
    (e) => e instanceof RouteError && e.reason.includes("no decoded value"),
  );
});

test("encode frames the JSON behind the schema ID natively", async () => {
  const { encode } = await import("../index.js");
  const { setSubjectId, reset } = await import("../testing.js");
  assert.deepEqual(encode({ a: 1 }, { schemaId: 7 }), new Uint8Array([0, 0, 0, 0, 7, ...bytes('{"a":1}')]));
  assert.throws(
    () => encode({}, { subject: "orders-value" }),
    (e) => e instanceof RouteError && e.kind === "reject" && e.reason.includes("setSubjectId"),
  );
  setSubjectId("orders-value", 3);
  try {
    assert.deepEqual(encode([], { subject: "orders-value" }), new Uint8Array([0, 0, 0, 0, 3, ...bytes("[]")]));
  } finally {
    reset();
  }
  assert.throws(() => encode({}, { schemaId: 1, subject: "x" }), TypeError);
});

test("inside the router a field is fetched once per call for every record, and encode maps the router's errors", () => {
  const calls = [];
  const batch = {
    fields(part, path) {
      calls.push([part, path]);
      return [
        { tag: "ok", val: { tag: "text", val: "eu" } },
        { tag: "ok", val: undefined },
        { tag: "ok", val: { tag: "integer", val: 7n } },
        { tag: "err", val: "route 'r' does not read record values by schema" },
      ];
    },
  };
  const seen = [];
  const fn = route((msg) => {
    try {
      seen.push(msg.field("customer.region", "none"));
    } catch (e) {
      seen.push(e.reason);
    }
    return [Output.forward()];
  });
  const schemas = {
    encode(ref, message, json) {
      if (ref.tag === "subject") throw { payload: { tag: "not-ready", val: "being fetched" } };
      throw { payload: { tag: "invalid", val: `bad ${json}` } };
    },
  };
  const host = { wantHeader: () => 0, defaultTarget: () => "output", partitionCount: () => undefined, log() {} };
  const { init, route: routeCall } = witExports(fn, host, schemas);
  init([]);
  routeCall(batch, 4, { defaultTargetPartitions: 0, headerSpans: [], headerBytes: new Uint8Array() });
  assert.deepEqual(seen, ["eu", "none", 7, "route 'r' does not read record values by schema"]);
  assert.deepEqual(calls, [["value", "customer.region"]], "one call for the whole batch");
  return import("../index.js").then(({ encode }) => {
    assert.throws(() => encode({}, { subject: "s" }), (e) => e.kind === "retry" && e.reason === "being fetched");
    assert.throws(() => encode(1, { schemaId: 2 }), (e) => e.kind === "reject" && e.reason === "bad 1");
  });
});
