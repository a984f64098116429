// The component's exports (`init`, `route` of the `router` world) for a
// marked plugin. `switchyard build` writes an entry module that calls
// `witExports` with the plugin module's default export and the router's
// `host` import; componentize-js turns the bundle into the component.

import { Config } from "./config.js";
import { installHost, startCall } from "./host.js";
import { Message } from "./message.js";
import { ORIGINAL, Output, RouteError } from "./output.js";
import { START } from "./plugin.js";

const NO_OUTPUTS = Object.freeze({ tag: "outputs", val: [] });

/** The `init` and `route` exports of the component for `marked`. */
export function witExports(marked, host) {
  if (typeof marked?.[START] !== "function") {
    throw new TypeError(
      "the plugin module's default export is not a plugin: " +
        "export default plugin(MyClass) or export default route(fn)",
    );
  }
  installHost(host);
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
    const bytes = context.headerBytes;
    const given = count > 0 ? spans.length / count : 0;
    const answers = new Array(count);
    for (let i = 0; i < count; i++) {
      if (routed === null) {
        answers[i] = { tag: "err", val: { tag: "reject", val: "plugin called before init" } };
        continue;
      }
      const msg = Message.fromHost(records, i, spans, i * given, given, bytes);
      let outputs;
      try {
        outputs = routed(msg);
      } catch (e) {
        if (e instanceof RouteError) {
          answers[i] = { tag: "err", val: { tag: e.kind, val: e.reason } };
          continue;
        }
        // A bug of the plugin: the call traps, as a Rust panic does.
        throw e;
      }
      answers[i] = { tag: "ok", val: routing(outputs) };
    }
    return answers;
  }

  return { init, route };
}

/** A lone unchanged output travels as `forward` (nothing copied); anything
 * else as a list. */
function routing(outputs) {
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
  if (outputs.length === 1 && outputs[0] instanceof Output && outputs[0].isForward()) {
    const only = outputs[0];
    return { tag: "forward", val: { topic: only.topic, partition: only.partition } };
  }
  return { tag: "outputs", val: outputs.map(toWit) };
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
