/** The configuration is refused: throw it (or any error) from a plugin's
 * constructor and the router reports the message and does not use the
 * plugin. */
export class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = "ConfigError";
  }
}

/** A route's `plugin_config`: string keys and values, in the order the
 * router passed them. */
export class Config {
  #pairs;

  /** From `{key: value}` or `[[key, value], ...]`. */
  constructor(pairs = []) {
    const items = Array.isArray(pairs) ? pairs : Object.entries(pairs);
    this.#pairs = items.map(([k, v]) => [String(k), String(v)]);
  }

  /** The value of `key`, or `fallback` if it is not set. */
  get(key, fallback = undefined) {
    for (const [k, v] of this.#pairs) {
      if (k === key) return v;
    }
    return fallback;
  }

  /** The value of `key`; throws `ConfigError` naming the key if it is not set. */
  require(key) {
    const value = this.get(key);
    if (value === undefined) {
      throw new ConfigError(`missing required config key '${key}'`);
    }
    return value;
  }

  /** Refuses keys outside `known` (throws `ConfigError`), so that a typo in
   * the route's configuration is reported instead of silently ignored. */
  denyUnknown(known) {
    const names = [...known];
    for (const [k] of this.#pairs) {
      if (!names.includes(k)) {
        if (names.length === 0) {
          throw new ConfigError(`unknown config key '${k}': this plugin takes no configuration`);
        }
        throw new ConfigError(`unknown config key '${k}' (known keys: ${names.join(", ")})`);
      }
    }
  }

  /** The number of keys. */
  get size() {
    return this.#pairs.length;
  }

  /** Whether no key is set. */
  isEmpty() {
    return this.#pairs.length === 0;
  }

  /** The `[key, value]` pairs, in order. */
  [Symbol.iterator]() {
    return this.#pairs[Symbol.iterator]();
  }
}
