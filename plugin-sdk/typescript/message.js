// A consumed record, read lazily.

import { givenIndex } from "./host.js";
import { RouteError, toBytes, toHeaders } from "./output.js";
import { errorPayload, fromField, lookup } from "./schema.js";

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
      decoded = undefined,
      schemaId = 1,
      decodedKey = undefined,
      keySchemaId = 1,
    } = init ?? {};
    // What the router would have decoded, per part, as [schema ID, value].
    this._decoded = {
      key: decodedKey === undefined ? null : [keySchemaId, decodedKey],
      value: decoded === undefined ? null : [schemaId, decoded],
    };
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

  /** The ID of the schema the value was written with, on a route that
   * reads values by schema; `undefined` otherwise, and for a null value. */
  get schemaId() {
    return this._schemaId("value");
  }

  /** The ID of the schema the key was written with (see `schemaId`). */
  get keySchemaId() {
    return this._schemaId("key");
  }

  /**
   * The field at `path` of the decoded value: field names, array indexes
   * and map keys joined by dots (`"customer.region"`, `"lines.0.sku"`);
   * `fallback` (default `undefined`) when the path leads nowhere. Inside
   * the router, the first read of a path fetches it for every record of
   * the call at once. Throws `RouteError.reject` when the route does not
   * read values by schema, or the value is null.
   */
  field(path, fallback = undefined) {
    return this._field("value", path, fallback);
  }

  /** The field at `path` of the decoded key (see `field`). */
  keyField(path, fallback = undefined) {
    return this._field("key", path, fallback);
  }

  /** The whole decoded value (the JSON mapping of the plugin guide's
   * "Schemas"). Throws `RouteError.reject` when the route does not read
   * values by schema, or the value is null. */
  decoded() {
    return this._whole("value");
  }

  /** The whole decoded key (see `decoded`). */
  decodedKey() {
    return this._whole("key");
  }

  _detached(part) {
    const found = this._decoded[part];
    if (found === null) {
      const arg = part === "value" ? "decoded" : "decodedKey";
      throw RouteError.reject(`the test message has no decoded ${part} (new Message({ ${arg} }))`);
    }
    return found;
  }

  _schemaId(part) {
    if (this._call === null) {
      return this._decoded[part]?.[0];
    }
    return this._call.batch.schemaId(this._index, part) ?? undefined;
  }

  _field(part, path, fallback) {
    const call = this._call;
    if (call === null) {
      return lookup(this._detached(part)[1], path, fallback);
    }
    call.fields ??= new Map();
    const key = `${part}:${path}`;
    let results = call.fields.get(key);
    if (results === undefined) {
      results = call.batch.fields(part, path);
      call.fields.set(key, results);
    }
    const result = results[this._index];
    if (result.tag === "err") throw RouteError.reject(result.val);
    return result.val === undefined || result.val === null ? fallback : fromField(result.val);
  }

  _whole(part) {
    if (this._call === null) {
      return this._detached(part)[1];
    }
    let text;
    try {
      text = this._call.batch.decoded(this._index, part);
    } catch (e) {
      throw RouteError.reject(String(errorPayload(e)));
    }
    return JSON.parse(text);
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
  return lookup(doc, path, undefined);
}
