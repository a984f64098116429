// What a plugin answers: outputs to produce, or why a record cannot be
// routed.

const encoder = new TextEncoder();

/** Bytes of `data`: strings are encoded as UTF-8. */
export function toBytes(data, what) {
  if (typeof data === "string") {
    return encoder.encode(data);
  }
  if (data instanceof Uint8Array) {
    return data;
  }
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  if (data instanceof ArrayBuffer) {
    return new Uint8Array(data);
  }
  throw new TypeError(`${what} must be a string or a Uint8Array, not ${describe(data)}`);
}

function describe(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? (value.constructor?.name ?? "an object") : typeof value;
}

/** Headers given as `{name: value}` or `[[name, value], ...]`, as a list. */
export function toHeaders(headers) {
  const pairs = Array.isArray(headers) ? headers : Object.entries(headers ?? {});
  return pairs.map((pair) => {
    const [key, value] = Array.isArray(pair) ? pair : [pair.key, pair.value];
    return { key: String(key), value: toBytes(value, `header '${key}'`) };
  });
}

/** The consumed record's own key, value or headers, unchanged (nothing is
 * copied across the sandbox boundary). */
export const ORIGINAL = Object.freeze({
  toString() {
    return "ORIGINAL";
  },
});

/** A record for the router to produce. */
export class Output {
  constructor() {
    /** Target topic; `undefined` is the route's default target. */
    this.topic = undefined;
    /** Target partition; `undefined` lets the producer choose from the key. */
    this.partition = undefined;
    /** `ORIGINAL`, `null` or bytes. */
    this.key = ORIGINAL;
    /** `ORIGINAL`, `null` (a tombstone) or bytes. */
    this.value = ORIGINAL;
    /** `ORIGINAL`, or `{ append: Header[] }`, or `{ replace: Header[] }`. */
    this.headers = ORIGINAL;
    /** Milliseconds since the Unix epoch; `undefined` keeps the consumed record's. */
    this.timestampMs = undefined;
  }

  /** The consumed record unchanged (key, value, headers, timestamp), for
   * `topic` (default: the route's default target) and `partition`
   * (default: the key's). */
  static forward(placement) {
    const out = new Output();
    if (placement !== undefined) {
      if (placement.topic !== undefined) out.toTopic(placement.topic);
      if (placement.partition !== undefined) out.toPartition(placement.partition);
    }
    return out;
  }

  /** A new record: null key and value and no headers unless given (strings
   * are encoded as UTF-8). */
  static new({ topic, partition, key = null, value = null, headers = [], timestampMs } = {}) {
    const out = Output.forward({ topic, partition });
    out.key = key === null ? null : toBytes(key, "key");
    out.value = value === null ? null : toBytes(value, "value");
    out.headers = { replace: toHeaders(headers) };
    if (timestampMs !== undefined) out.withTimestampMs(timestampMs);
    return out;
  }

  /** Sends the output to `topic` instead of the default target. */
  toTopic(topic) {
    if (typeof topic !== "string") {
      throw new TypeError(`topic must be a string, not ${describe(topic)}`);
    }
    this.topic = topic;
    return this;
  }

  /** Puts the output on an explicit partition. */
  toPartition(partition) {
    if (!Number.isInteger(partition) || partition < -(2 ** 31) || partition >= 2 ** 31) {
      throw new RangeError(`partition must be a 32-bit integer, not ${partition}`);
    }
    this.partition = partition;
    return this;
  }

  /** Replaces the key. */
  withKey(key) {
    this.key = toBytes(key, "key");
    return this;
  }

  /** Makes the key null. */
  withNullKey() {
    this.key = null;
    return this;
  }

  /** Replaces the value. */
  withValue(value) {
    this.value = toBytes(value, "value");
    return this;
  }

  /** Makes the value null (a tombstone). */
  withNullValue() {
    this.value = null;
    return this;
  }

  /** Adds a header after the others (after the consumed record's, if the
   * output keeps them). */
  withHeader(key, value) {
    const header = { key: String(key), value: toBytes(value, `header '${key}'`) };
    if (this.headers === ORIGINAL) {
      this.headers = { append: [header] };
    } else {
      (this.headers.append ?? this.headers.replace).push(header);
    }
    return this;
  }

  /** Replaces every header with `headers` (`{name: value}` or
   * `[[name, value], ...]`). */
  withHeaders(headers) {
    this.headers = { replace: toHeaders(headers) };
    return this;
  }

  /** Sets the timestamp (milliseconds since the Unix epoch). */
  withTimestampMs(timestampMs) {
    if (!Number.isSafeInteger(timestampMs) && typeof timestampMs !== "bigint") {
      throw new RangeError(`timestampMs must be an integer, not ${timestampMs}`);
    }
    this.timestampMs = timestampMs;
    return this;
  }

  /** Whether this is the consumed record unchanged (only its place may
   * differ). */
  isForward() {
    return (
      this.key === ORIGINAL &&
      this.value === ORIGINAL &&
      this.headers === ORIGINAL &&
      this.timestampMs === undefined
    );
  }
}

/**
 * Why a record could not be routed: throw it from `route`.
 *
 * `RouteError.retry` if the same record may succeed later (the router
 * retries with backoff), `RouteError.reject` if redelivery cannot help (the
 * record goes to the dead-letter destination). Any other exception is a
 * bug of the plugin: the call traps, as a Rust panic does.
 */
export class RouteError extends Error {
  constructor(kind, reason) {
    if (kind !== "retry" && kind !== "reject") {
      throw new TypeError(`kind must be "retry" or "reject", not ${String(kind)}`);
    }
    super(reason);
    this.name = "RouteError";
    this.kind = kind;
    this.reason = String(reason);
  }

  /** A transient failure: routing the record again later may work. */
  static retry(reason) {
    return new RouteError("retry", reason);
  }

  /** A permanent failure: redelivery cannot help. */
  static reject(reason) {
    return new RouteError("reject", reason);
  }
}
