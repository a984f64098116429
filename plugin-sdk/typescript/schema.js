// Records in a schema registry's wire format (Avro, Protobuf, JSON
// Schema): read decoded (`Message.field`, `decoded`, `schemaId`), written
// with a schema (`encode`). Natively, `new Message({ decoded })` sets what
// the router would decode, and `encode` frames the value's JSON behind the
// schema ID without applying the schema.

import { RouteError } from "./output.js";

/** The router's `schemas` interface, once the component's entry installed it. */
let wit = null;

/** Installs the router's `schemas` interface (the component's entry does). */
export function installSchemas(schemas) {
  wit = schemas ?? null;
}

export const schemaTestState = { subjects: new Map() };

/** What an error thrown by a WIT import carries. */
export function errorPayload(e) {
  return e !== null && typeof e === "object" && "payload" in e ? e.payload : e;
}

/** A WIT `field` as a JavaScript value. */
export function fromField(field) {
  switch (field.tag) {
    case "null":
      return null;
    case "json":
      return JSON.parse(field.val);
    case "integer":
      // An s64 arrives as a BigInt; a number when it fits exactly.
      return Number.isSafeInteger(Number(field.val)) ? Number(field.val) : field.val;
    default:
      return field.val;
  }
}

/** The part of `doc` at the dotted `path`, or `fallback`. */
export function lookup(doc, path, fallback) {
  if (path === "") return doc;
  let node = doc;
  for (const part of path.split(".")) {
    if (Array.isArray(node)) {
      if (!/^[0-9]+$/.test(part) || Number(part) >= node.length) return fallback;
      node = node[Number(part)];
    } else if (node !== null && typeof node === "object") {
      if (!Object.hasOwn(node, part)) return fallback;
      node = node[part];
    } else {
      return fallback;
    }
  }
  return node;
}

/**
 * `value` (JSON-able: the JSON mapping of the plugin guide's "Schemas")
 * written with schema `schemaId`, or the latest version of `subject`, in
 * the wire format: the bytes of an output's key or value. `message` names
 * a Protobuf schema's message (default: its first).
 *
 * With `schema` (its text; `schemaFormat` "avro", "protobuf" or "json"),
 * the value is written with that schema, registered under `subject` the
 * first time the router meets it: only on a route with
 * `register_schemas = true`.
 *
 * Throws `RouteError.retry` while the schema is being fetched or
 * registered (the record comes again once it is here), `RouteError.reject`
 * when the schema does not exist or the value does not fit it.
 */
export function encode(value, { schemaId, subject, message, schema, schemaFormat = "avro" } = {}) {
  if ((schemaId === undefined) === (subject === undefined)) {
    throw new TypeError("encode needs exactly one of schemaId and subject");
  }
  if (schema !== undefined && subject === undefined) {
    throw new TypeError("encode with schema registers it under a subject: give subject");
  }
  if (!["avro", "protobuf", "json"].includes(schemaFormat)) {
    throw new TypeError(`schemaFormat is '${schemaFormat}': use "avro", "protobuf" or "json"`);
  }
  const json = JSON.stringify(value);
  if (wit === null) {
    let id = schemaId;
    if (subject !== undefined) {
      id = schemaTestState.subjects.get(subject);
      if (id === undefined) {
        throw RouteError.reject(`no schema ID for subject '${subject}': call setSubjectId first`);
      }
    }
    const body = new TextEncoder().encode(json);
    const out = new Uint8Array(5 + body.length);
    new DataView(out.buffer).setUint32(1, id);
    out.set(body, 5);
    return out;
  }
  let ref;
  if (schema !== undefined) {
    ref = { tag: "register", val: { subject, format: schemaFormat, text: schema } };
  } else if (subject === undefined) {
    ref = { tag: "id", val: schemaId };
  } else {
    ref = { tag: "subject", val: subject };
  }
  try {
    return wit.encode(ref, message, json);
  } catch (e) {
    const error = errorPayload(e);
    if (error?.tag === "not-ready") throw RouteError.retry(error.val);
    if (error?.tag === "invalid") throw RouteError.reject(error.val);
    throw e;
  }
}
