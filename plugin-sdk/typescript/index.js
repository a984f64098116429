// Write Switchyard routing plugins in TypeScript or JavaScript.
//
// Contract: switchyard:plugin@0.3.1 (the wit/ folder of this package).

export { Config, ConfigError } from "./config.js";
export { fnv1a32 } from "./hash.js";
export { Level, defaultTarget, inRouter, log, partitionCount } from "./host.js";
export { Message, jsonField } from "./message.js";
export { ORIGINAL, Output, RouteError } from "./output.js";
export { plugin, route } from "./plugin.js";
export { encode } from "./schema.js";

/** The plugin contract this SDK builds for. */
export const CONTRACT_VERSION = "0.3.1";
