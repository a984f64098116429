// Declaring a plugin: a class or a function, marked for the component's
// entry (see component.js).

import { Config } from "./config.js";

/** Where a marked plugin keeps how to start it. */
export const START = Symbol.for("switchyard.plugin.start");

/**
 * Marks a plugin class, and returns it unchanged: `constructor(config)`
 * runs once per instance (throw to refuse the configuration),
 * `route(msg)` once per record.
 *
 *     export default plugin(class TenantPartitioner { ... });
 */
export function plugin(cls) {
  if (typeof cls !== "function" || typeof cls.prototype?.route !== "function") {
    throw new TypeError("plugin() takes a class with a route(msg) method");
  }
  cls[START] = (config) => {
    const instance = new cls(config);
    return (msg) => instance.route(msg);
  };
  return cls;
}

/**
 * Marks a `route(msg)` function as the plugin (one that takes no
 * configuration), and returns it unchanged.
 *
 *     export default route((msg) => [Output.forward()]);
 */
export function route(fn) {
  if (typeof fn !== "function") {
    throw new TypeError("route() takes a function route(msg)");
  }
  fn[START] = (config) => {
    config.denyUnknown([]);
    return fn;
  };
  return fn;
}

/** Starts a marked plugin with `config` (pairs or a `Config`), natively:
 * what the router does once per instance. */
export function start(marked, config = []) {
  if (typeof marked?.[START] !== "function") {
    throw new TypeError(
      "not a plugin: mark it with plugin(MyClass) or route(fn) and export it as the module's default",
    );
  }
  return marked[START](config instanceof Config ? config : new Config(config));
}
