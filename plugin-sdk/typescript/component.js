// The component's exports (`init`, `route` of the `router` world) for a
// marked plugin. `switchyard build` writes an entry module that calls
// `witExports` with the plugin module's default export and the router's
// `host` import; componentize-js turns the bundle into the component.

import { Config } from "./config.js";
import { installHost, startCall } from "./host.js";
import { Message } from "./message.js";
import { installSchemas } from "./schema.js";
import { ORIGINAL, Output, RouteError } from "./output.js";
import { START } from "./plugin.js";

const NO_OUTPUTS = Object.freeze({ tag: "ok", val: Object.freeze({ tag: "outputs", val: [] }) });

// The answers of unchanged records, kept and reused: most records of a
// router or a partitioner get one of a few (the SpiderMonkey interpreter
// the component runs pays for every object it builds).
const FORWARD = { tag: "ok", val: { tag: "forward", val: { topic: undefined, partition: undefined } } };
const toPartition = [];
const toTopic = new Map();
const CACHED_PARTITIONS = 4096;
const CACHED_TOPICS = 256;

function forwardAnswer(topic, partition) {
  if (topic === undefined) {
    if (partition === undefined) return FORWARD;
    if (partition >= 0 && partition < CACHED_PARTITIONS) {
      return (toPartition[partition] ??= forwardTo(undefined, partition));
    }
  } else if (partition === undefined) {
    let answer = toTopic.get(topic);
    if (answer === undefined) {
      answer = forwardTo(topic, undefined);
      if (toTopic.size < CACHED_TOPICS) toTopic.set(topic, answer);
    }
    return answer;
  }
  return forwardTo(topic, partition);
}

function forwardTo(topic, partition) {
  return { tag: "ok", val: { tag: "forward", val: { topic, partition } } };
}

/** The `init` and `route` exports of the component for `marked`. */
export function witExports(marked, host, schemas) {
  if (typeof marked?.[START] !== "function") {
    throw new TypeError(
      "the plugin module's default export is not a plugin: " +
        "export default plugin(MyClass) or export default route(fn)",
    );
  }
  installHost(host);
  installSchemas(schemas);
  let routed = null;

  function init(pairs) {
    try {
      routed = marked[START](new Config(pairs));
    } catch (e) {
      // Any error refuses the configuration; the router reports it.
      throw (e instanceof Error ? e.message : String(e)) || "plugin refused its configuration";
    }
  }

  function route(records, count, context) {
    startCall(context.defaultTargetPartitions);
    const spans = context.headerSpans;
    const call = {
      batch: records,
      spans,
      bytes: context.headerBytes,
      given: count > 0 ? spans.length / count : 0,
      // Decoded fields fetched for all the call's records, by part and path.
      fields: null,
    };
    const answers = new Array(count);
    for (let i = 0; i < count; i++) {
      if (routed === null) {
        answers[i] = { tag: "err", val: { tag: "reject", val: "plugin called before init" } };
        continue;
      }
      let outputs;
      try {
        outputs = routed(new Message(undefined, call, i));
      } catch (e) {
        if (e instanceof RouteError) {
          answers[i] = { tag: "err", val: { tag: e.kind, val: e.reason } };
          continue;
        }
        // A bug of the plugin: the call traps, as a Rust panic does.
        throw e;
      }
      answers[i] = answer(outputs);
    }
    return answers;
  }

  return { init, route };
}

/** A lone unchanged output travels as `forward` (nothing copied); anything
 * else as a list. */
function answer(outputs) {
  if (outputs instanceof Output) {
    outputs = [outputs];
  } else if (!Array.isArray(outputs)) {
    throw new TypeError(
      `route returned ${outputs === null ? "null" : typeof outputs}: ` +
        "return an array of outputs ([] drops the record)",
    );
  }
  if (outputs.length === 0) {
    return NO_OUTPUTS;
  }
  if (outputs.length === 1) {
    const only = outputs[0];
    if (only instanceof Output && only.isForward()) {
      return forwardAnswer(only.topic, only.partition);
    }
  }
  return { tag: "ok", val: { tag: "outputs", val: outputs.map(toWit) } };
}

function data(d) {
  if (d === ORIGINAL) return { tag: "original" };
  if (d === null) return { tag: "null" };
  return { tag: "bytes", val: d };
}

function toWit(out) {
  if (!(out instanceof Output)) {
    throw new TypeError("route returned something that is not an Output in its array");
  }
  let headers;
  if (out.headers === ORIGINAL) {
    headers = { tag: "original" };
  } else if (out.headers.append !== undefined) {
    headers = { tag: "append", val: out.headers.append };
  } else {
    headers = { tag: "replace", val: out.headers.replace };
  }
  return {
    topic: out.topic,
    partition: out.partition,
    key: data(out.key),
    value: data(out.value),
    headers,
    timestampMs: out.timestampMs === undefined ? undefined : BigInt(out.timestampMs),
  };
}
