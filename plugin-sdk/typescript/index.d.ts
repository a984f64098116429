/**
 * Write Switchyard routing plugins in TypeScript or JavaScript.
 *
 * A plugin decides, for each consumed Kafka record, what to produce: the
 * record itself (`Output.forward()`), new records, several, none, or why it
 * cannot be routed (`RouteError`):
 *
 * ```ts
 * import { Message, Output, route } from "switchyard-sdk";
 *
 * export default route((msg: Message) => [Output.forward()]);
 * ```
 *
 * `switchyard build` turns the module into a WebAssembly component (with
 * componentize-js) that the router loads. Outside the router the same code
 * runs in node, so plugin logic is unit-tested with node's test runner; see
 * `switchyard-sdk/testing`.
 *
 * Contract: `switchyard:plugin@0.3.1` (the `wit/` folder of this package).
 */

/** The plugin contract this SDK builds for. */
export declare const CONTRACT_VERSION: "0.3.1";

/** Bytes given as text (encoded as UTF-8) or as bytes. */
export type BytesLike = string | Uint8Array;

/** Headers given as `{name: value}` or `[[name, value], ...]`. */
export type HeadersLike = Record<string, BytesLike> | Iterable<readonly [string, BytesLike]>;

/** One Kafka record header. Keys need not be unique; order is kept. */
export interface Header {
  readonly key: string;
  readonly value: Uint8Array;
}

/** The configuration is refused: throw it (or any error) from a plugin's
 * constructor and the router reports the message and does not use the
 * plugin. */
export declare class ConfigError extends Error {
  constructor(message: string);
}

/** A route's `plugin_config`: string keys and values, in the order the
 * router passed them. */
export declare class Config implements Iterable<[string, string]> {
  /** From `{key: value}` or `[[key, value], ...]` (for tests). */
  constructor(pairs?: Record<string, string> | Iterable<readonly [string, string]>);
  /** The value of `key`, or `fallback` if it is not set. */
  get(key: string): string | undefined;
  get(key: string, fallback: string): string;
  /** The value of `key`; throws `ConfigError` naming the key if it is not set. */
  require(key: string): string;
  /** Refuses keys outside `known` (throws `ConfigError`), so that a typo in
   * the route's configuration is reported instead of silently ignored. */
  denyUnknown(known: Iterable<string>): void;
  /** The number of keys. */
  readonly size: number;
  /** Whether no key is set. */
  isEmpty(): boolean;
  /** The `[key, value]` pairs, in order. */
  [Symbol.iterator](): Iterator<[string, string]>;
}

/**
 * The 32-bit FNV-1a hash of `data` (a string is hashed as UTF-8): the same
 * number in the Rust and Python SDKs, so `fnv1a32(tenant) % partitions` is
 * the same partition whichever SDK a plugin uses.
 */
export declare function fnv1a32(data: BytesLike): number;

/** Severity of a log line. */
export declare const Level: {
  readonly Trace: "trace";
  readonly Debug: "debug";
  readonly Info: "info";
  readonly Warn: "warn";
  readonly Error: "error";
};
export type Level = (typeof Level)[keyof typeof Level];

/** Writes `message` to the router's log, tagged with the plugin's name.
 * Natively it goes to standard error. */
export declare function log(level: Level, message: string): void;

/** The route's default target topic: where an output without a topic goes.
 * Natively: `output`, unless `setDefaultTarget` said otherwise. */
export declare function defaultTarget(): string;

/** The number of partitions of `topic`, if the router knows it and the
 * route may write to it. Natively the answer comes from
 * `setPartitionCount`. */
export declare function partitionCount(topic: string): number | undefined;

/** Whether this code runs inside the router rather than natively in tests. */
export declare function inRouter(): boolean;

/** What a test builds a `Message` from; every field is optional. */
export interface MessageInit {
  /** Default `input`. */
  topic?: string;
  /** Default 0. */
  partition?: number;
  /** Default 0. */
  offset?: number;
  timestampMs?: number;
  /** `null` (the default) for a null key. */
  key?: BytesLike | null;
  /** `null` (the default) for a null value. */
  value?: BytesLike | null;
  headers?: HeadersLike;
  /** What the router would decode the value to, on a route that reads
   * values by schema. */
  decoded?: unknown;
  /** The ID of the schema of `decoded`; default 1. */
  schemaId?: number;
  /** What the router would decode the key to. */
  decodedKey?: unknown;
  /** The ID of the schema of `decodedKey`; default 1. */
  keySchemaId?: number;
}

/**
 * A consumed Kafka record.
 *
 * Inside the router each field is fetched the first time it is read and
 * kept, so a plugin pays only for what it reads: a partitioner that looks at
 * one header never copies the value.
 */
export declare class Message {
  /** A record for unit tests (strings are encoded as UTF-8). */
  constructor(init?: MessageInit);
  /** The topic the record was consumed from. */
  readonly topic: string;
  /** The partition the record was consumed from. */
  readonly partition: number;
  /** The record's offset in its partition. */
  readonly offset: number;
  /** The record's timestamp (milliseconds since the Unix epoch), if it has one. */
  readonly timestampMs: number | undefined;
  /** The key; `null` for a null key. */
  readonly key: Uint8Array | null;
  /** The value; `null` for a null value (a tombstone). */
  readonly value: Uint8Array | null;
  /** Every header, in order, duplicates included. */
  readonly headers: readonly Header[];
  /** The key as UTF-8 text; `null` if it is null or not UTF-8. */
  keyStr(): string | null;
  /** The value as UTF-8 text; `null` if it is null or not UTF-8. */
  valueStr(): string | null;
  /** The value of the first header named `name` (case-sensitive), or
   * `null`. Cheap: the router hands over the headers a plugin reads. */
  header(name: string): Uint8Array | null;
  /** The first header named `name` as UTF-8 text, if present and valid. */
  headerStr(name: string): string | null;
  /** The value parsed as JSON. A null value or malformed JSON throws
   * `RouteError.reject` saying what is wrong. */
  json<T = unknown>(): T;
  /** The ID of the schema the value was written with, on a route that
   * reads values by schema; `undefined` otherwise, and for a null value. */
  readonly schemaId: number | undefined;
  /** The ID of the schema the key was written with. */
  readonly keySchemaId: number | undefined;
  /** The field at a dotted `path` of the decoded value (field names, array
   * indexes, map keys: `"customer.region"`, `"lines.0.sku"`); `fallback`
   * when the path leads nowhere. A 64-bit integer beyond 2^53 comes as a
   * `bigint`. Throws `RouteError.reject` when the route does not read
   * values by schema, or the value is null. */
  field<T = unknown>(path: string, fallback?: T): unknown;
  /** The field at a dotted `path` of the decoded key. */
  keyField<T = unknown>(path: string, fallback?: T): unknown;
  /** The whole decoded value (the JSON mapping of the plugin guide's
   * "Schemas"). */
  decoded<T = unknown>(): T;
  /** The whole decoded key. */
  decodedKey<T = unknown>(): T;
}

/** Which schema `encode` writes with: its ID, a subject's latest version,
 * or `schema` (its text, of `schemaFormat`, default `"avro"`) registered
 * under `subject` the first time the router meets it (only on a route with
 * `register_schemas = true`); `message` names a Protobuf schema's
 * message. */
export type EncodeWith =
  | { schemaId: number; subject?: undefined; schema?: undefined; message?: string }
  | {
      subject: string;
      schemaId?: undefined;
      schema?: string;
      schemaFormat?: "avro" | "protobuf" | "json";
      message?: string;
    };

/** `value` written with a registry's schema, in the wire format: the bytes
 * of an output's key or value. Throws `RouteError.retry` while the schema
 * is being fetched, `RouteError.reject` when it does not exist or the value
 * does not fit it. */
export declare function encode(value: unknown, schema: EncodeWith): Uint8Array;

/** The field at a dotted `path` (`"customer.address.city"`) of a JSON
 * document, array elements by index (`"items.0.sku"`); `undefined` if there
 * is none. */
export declare function jsonField(doc: unknown, path: string): unknown;

/** The consumed record's own key, value or headers, unchanged (nothing is
 * copied across the sandbox boundary). */
export declare const ORIGINAL: Original;
/** The type of `ORIGINAL`. */
export interface Original {
  toString(): "ORIGINAL";
}

/** Where an output goes; both default to the route's choice. */
export interface Placement {
  /** Target topic; default: the route's default target. */
  topic?: string;
  /** Target partition; default: the producer chooses from the key. */
  partition?: number;
}

/** What `Output.new` builds a record from. */
export interface OutputInit extends Placement {
  key?: BytesLike | null;
  value?: BytesLike | null;
  headers?: HeadersLike;
  timestampMs?: number;
}

/** A record for the router to produce. Build one with `Output.forward` or
 * `Output.new`, then change it with the `to*`/`with*` methods, which return
 * it. */
export declare class Output {
  /** Target topic; `undefined` is the route's default target. */
  topic: string | undefined;
  /** Target partition; `undefined` lets the producer choose from the key. */
  partition: number | undefined;
  /** `ORIGINAL`, `null` or bytes. */
  key: Original | Uint8Array | null;
  /** `ORIGINAL`, `null` (a tombstone) or bytes. */
  value: Original | Uint8Array | null;
  /** The consumed record's headers, or theirs followed by more, or only these. */
  headers: Original | { append: Header[] } | { replace: Header[] };
  /** Milliseconds since the Unix epoch; `undefined` keeps the consumed record's. */
  timestampMs: number | undefined;
  /** The consumed record unchanged (key, value, headers, timestamp), to a place. */
  static forward(placement?: Placement): Output;
  /** A new record: null key and value and no headers unless given. */
  static new(init?: OutputInit): Output;
  /** Sends the output to `topic` instead of the default target. */
  toTopic(topic: string): this;
  /** Puts the output on an explicit partition. */
  toPartition(partition: number): this;
  /** Replaces the key. */
  withKey(key: BytesLike): this;
  /** Makes the key null. */
  withNullKey(): this;
  /** Replaces the value. */
  withValue(value: BytesLike): this;
  /** Makes the value null (a tombstone). */
  withNullValue(): this;
  /** Adds a header after the others (after the consumed record's, if the
   * output keeps them). */
  withHeader(key: string, value: BytesLike): this;
  /** Replaces every header. */
  withHeaders(headers: HeadersLike): this;
  /** Sets the timestamp (milliseconds since the Unix epoch). */
  withTimestampMs(timestampMs: number): this;
  /** Whether this is the consumed record unchanged (only its place may differ). */
  isForward(): boolean;
}

/**
 * Why a record could not be routed: throw it from `route`.
 *
 * `RouteError.retry` if the same record may succeed later (the router
 * retries with backoff), `RouteError.reject` if redelivery cannot help (the
 * record goes to the dead-letter destination). Any other exception is a bug
 * of the plugin: the call traps, as a Rust panic does.
 */
export declare class RouteError extends Error {
  constructor(kind: "retry" | "reject", reason: string);
  readonly kind: "retry" | "reject";
  readonly reason: string;
  /** A transient failure: routing the record again later may work. */
  static retry(reason: string): RouteError;
  /** A permanent failure: redelivery cannot help. */
  static reject(reason: string): RouteError;
}

/** What `route` answers for a record: its outputs (`[]` drops it). */
export type RouteResult = Output[];

/** A plugin with state: constructed once per instance with the route's
 * configuration (throw to refuse it), `route` called once per record. */
export interface PluginClass {
  new (config: Config): { route(msg: Message): RouteResult };
}

/** Marks a plugin class (and returns it): export it as the module's default. */
export declare function plugin<C extends PluginClass>(cls: C): C;

/** Marks a `route(msg)` function as the plugin (one that takes no
 * configuration), and returns it: export it as the module's default. */
export declare function route<F extends (msg: Message) => RouteResult>(fn: F): F;
