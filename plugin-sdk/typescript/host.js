// Calls into the router. Natively (in a plugin's unit tests) they are
// answered by the stand-ins of `switchyard-sdk/testing`.

/** The router's `host` interface, once the component's entry installed it. */
let wit = null;

/** Installs the router's `host` interface (the component's entry does). */
export function installHost(host) {
  wit = host;
}

/** Whether this code runs inside the router rather than natively in tests. */
export function inRouter() {
  return wit !== null;
}

/** Severity of a log line. */
export const Level = Object.freeze({
  Trace: "trace",
  Debug: "debug",
  Info: "info",
  Warn: "warn",
  Error: "error",
});

const LEVELS = new Set(Object.values(Level));

// Header names this instance asked the router to hand over with every
// call, with their index in the call's context. Bounded: a plugin reading
// many different names fetches the rest one by one.
const MAX_GIVEN = 8;
const given = new Map();

/** The default target's partition count handed over with the current call
 * (0: not handed over). */
let callPartitions = 0;
let target = null;

export const testState = {
  partitions: new Map(),
  target: "output",
};

export function startCall(partitions) {
  callPartitions = partitions;
}

/**
 * Writes `message` to the router's log, tagged with the plugin's name.
 * Natively it goes to standard error.
 */
export function log(level, message) {
  if (!LEVELS.has(level)) {
    throw new TypeError(`unknown log level ${String(level)}: use one of ${[...LEVELS].join(", ")}`);
  }
  if (wit !== null) {
    wit.log(level, String(message));
  } else {
    console.error(`[${level.toUpperCase()}] ${message}`);
  }
}

/**
 * The route's default target topic: where an output without a topic goes.
 * Natively: `output`, unless `setDefaultTarget` said otherwise.
 */
export function defaultTarget() {
  if (wit === null) {
    return testState.target;
  }
  if (target === null) {
    // Constant for the life of an instance: ask the router once.
    target = wit.defaultTarget();
  }
  return target;
}

/**
 * The number of partitions of `topic`, if the router knows it and the
 * route may write to it. Natively the answer comes from
 * `setPartitionCount`.
 */
export function partitionCount(topic) {
  if (wit === null) {
    return testState.partitions.get(topic);
  }
  if (callPartitions > 0 && topic === target) {
    return callPartitions;
  }
  // Asking for the default target's makes the router hand it over with
  // the next calls.
  return wit.partitionCount(topic) ?? undefined;
}

/**
 * Where the router hands header `name` over in the call's context; asks
 * for it (from the next call on) the first time. `undefined` while it is
 * not handed over yet.
 */
export function givenIndex(name) {
  const index = given.get(name);
  if (index !== undefined) {
    return index;
  }
  if (given.size < MAX_GIVEN) {
    given.set(name, wit.wantHeader(name));
  }
  return undefined;
}
