// A consumed record, read lazily.

import { givenIndex } from "./host.js";
import { RouteError, toBytes, toHeaders } from "./output.js";

const UNSET = Symbol("unset");
const decoder = new TextDecoder("utf-8", { fatal: true });

function text(bytes) {
  if (bytes === null || bytes === undefined) return null;
  try {
    return decoder.decode(bytes);
  } catch {
    return null;
  }
}

/**
 * A consumed Kafka record.
 *
 * Inside the router each field is fetched the first time it is read and
 * kept, so a plugin pays only for what it reads: a partitioner that looks at
 * one header never copies the value. Build one for unit tests with the
 * constructor (strings are encoded as UTF-8):
 *
 *     new Message({ key: "order-1", value: '{"total": 10}', headers: { "tenant-id": "acme" } })
 */
export class Message {
  #batch = null;
  #index = 0;
  #spans = null;
  #start = 0;
  #given = 0;
  #bytes = null;
  #topic;
  #partition;
  #offset;
  #timestampMs;
  #key;
  #value;
  #headers;

  constructor({
    topic = "input",
    partition = 0,
    offset = 0,
    timestampMs = undefined,
    key = null,
    value = null,
    headers = [],
  } = {}) {
    this.#topic = topic;
    this.#partition = partition;
    this.#offset = offset;
    this.#timestampMs = timestampMs;
    this.#key = key === null ? null : toBytes(key, "key");
    this.#value = value === null ? null : toBytes(value, "value");
    this.#headers = toHeaders(headers);
  }

  /** Record `index` of the call's `batch`; its wanted headers are
   * `spans[start .. start + given]` into `bytes`. */
  static fromHost(batch, index, spans, start, given, bytes) {
    const msg = new Message();
    msg.#batch = batch;
    msg.#index = index;
    msg.#spans = spans;
    msg.#start = start;
    msg.#given = given;
    msg.#bytes = bytes;
    msg.#topic = msg.#partition = msg.#offset = msg.#timestampMs = UNSET;
    msg.#key = msg.#value = msg.#headers = UNSET;
    return msg;
  }

  /** The topic the record was consumed from. */
  get topic() {
    if (this.#topic === UNSET) this.#topic = this.#batch.topic(this.#index);
    return this.#topic;
  }

  /** The partition the record was consumed from. */
  get partition() {
    if (this.#partition === UNSET) this.#partition = this.#batch.partition(this.#index);
    return this.#partition;
  }

  /** The record's offset in its partition. */
  get offset() {
    if (this.#offset === UNSET) this.#offset = Number(this.#batch.offset(this.#index));
    return this.#offset;
  }

  /** The record's timestamp (milliseconds since the Unix epoch), if it has one. */
  get timestampMs() {
    if (this.#timestampMs === UNSET) {
      const ts = this.#batch.timestampMs(this.#index);
      this.#timestampMs = ts === undefined || ts === null ? undefined : Number(ts);
    }
    return this.#timestampMs;
  }

  /** The key; `null` for a null key. */
  get key() {
    if (this.#key === UNSET) this.#key = this.#batch.key(this.#index) ?? null;
    return this.#key;
  }

  /** The value; `null` for a null value (a tombstone). */
  get value() {
    if (this.#value === UNSET) this.#value = this.#batch.value(this.#index) ?? null;
    return this.#value;
  }

  /** The key as UTF-8 text; `null` if it is null or not UTF-8. */
  keyStr() {
    return text(this.key);
  }

  /** The value as UTF-8 text; `null` if it is null or not UTF-8. */
  valueStr() {
    return text(this.value);
  }

  /** Every header (`{key, value}`), in order, duplicates included. */
  get headers() {
    if (this.#headers === UNSET) this.#headers = this.#batch.headers(this.#index);
    return this.#headers;
  }

  /**
   * The value of the first header named `name` (case-sensitive), or `null`.
   *
   * Inside the router this fetches just that header unless `headers` was
   * read already; and from the second call on, the router hands the headers
   * a plugin reads over with the call, so reading one costs no call into
   * the router.
   */
  header(name) {
    if (this.#batch !== null && this.#headers === UNSET) {
      const j = givenIndex(name);
      if (j !== undefined && j < this.#given) {
        const span = this.#spans[this.#start + j];
        if (span === undefined || span === null) return null;
        return this.#bytes.subarray(span.start, span.start + span.len);
      }
      return this.#batch.header(this.#index, name) ?? null;
    }
    for (const header of this.headers) {
      if (header.key === name) return header.value;
    }
    return null;
  }

  /** The first header named `name` as UTF-8 text, if present and valid. */
  headerStr(name) {
    return text(this.header(name));
  }

  /** The value parsed as JSON. A null value or malformed JSON throws
   * `RouteError.reject` saying what is wrong. */
  json() {
    const value = this.value;
    if (value === null) {
      throw RouteError.reject("value is null, expected JSON");
    }
    let source;
    try {
      source = decoder.decode(value);
    } catch (e) {
      throw RouteError.reject(`value is not valid JSON: not UTF-8: ${e.message}`);
    }
    try {
      return JSON.parse(source);
    } catch (e) {
      throw RouteError.reject(`value is not valid JSON: ${e.message}`);
    }
  }
}

/**
 * The field at a dotted `path` (`"customer.address.city"`) of a JSON
 * document, array elements by index (`"items.0.sku"`); `undefined` if there
 * is none.
 */
export function jsonField(doc, path) {
  let node = doc;
  for (const part of path.split(".")) {
    if (Array.isArray(node)) {
      if (!/^[0-9]+$/.test(part) || Number(part) >= node.length) return undefined;
      node = node[Number(part)];
    } else if (node !== null && typeof node === "object") {
      if (!Object.hasOwn(node, part)) return undefined;
      node = node[part];
    } else {
      return undefined;
    }
  }
  return node;
}
