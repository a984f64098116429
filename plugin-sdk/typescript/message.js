// A consumed record, read lazily.

import { givenIndex } from "./host.js";
import { RouteError, toBytes, toHeaders } from "./output.js";

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
  constructor(init, call, index) {
    if (call !== undefined) {
      // A record of the router's call: every field is read when first
      // asked for (`undefined` until then), nothing else is set.
      this._call = call;
      this._index = index;
      return;
    }
    const {
      topic = "input",
      partition = 0,
      offset = 0,
      timestampMs = undefined,
      key = null,
      value = null,
      headers = [],
    } = init ?? {};
    this._call = null;
    this._index = 0;
    this._topic = topic;
    this._partition = partition;
    this._offset = offset;
    this._timestampMs = timestampMs === undefined ? null : timestampMs;
    this._key = key === null ? null : toBytes(key, "key");
    this._value = value === null ? null : toBytes(value, "value");
    this._headers = toHeaders(headers);
  }

  /** The topic the record was consumed from. */
  get topic() {
    if (this._topic === undefined) this._topic = this._call.batch.topic(this._index);
    return this._topic;
  }

  /** The partition the record was consumed from. */
  get partition() {
    if (this._partition === undefined) this._partition = this._call.batch.partition(this._index);
    return this._partition;
  }

  /** The record's offset in its partition. */
  get offset() {
    if (this._offset === undefined) this._offset = Number(this._call.batch.offset(this._index));
    return this._offset;
  }

  /** The record's timestamp (milliseconds since the Unix epoch), if it has one. */
  get timestampMs() {
    if (this._timestampMs === undefined) {
      const ts = this._call.batch.timestampMs(this._index);
      this._timestampMs = ts === undefined || ts === null ? null : Number(ts);
    }
    return this._timestampMs ?? undefined;
  }

  /** The key; `null` for a null key. */
  get key() {
    if (this._key === undefined) this._key = this._call.batch.key(this._index) ?? null;
    return this._key;
  }

  /** The value; `null` for a null value (a tombstone). */
  get value() {
    if (this._value === undefined) this._value = this._call.batch.value(this._index) ?? null;
    return this._value;
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
    if (this._headers === undefined) this._headers = this._call.batch.headers(this._index);
    return this._headers;
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
    const call = this._call;
    if (call !== null && this._headers === undefined) {
      const j = givenIndex(name);
      if (j !== undefined && j < call.given) {
        const span = call.spans[this._index * call.given + j];
        if (span === undefined || span === null) return null;
        return call.bytes.subarray(span.start, span.start + span.len);
      }
      return call.batch.header(this._index, name) ?? null;
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
