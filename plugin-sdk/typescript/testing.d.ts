/**
 * Stand-ins for the router when plugin code runs natively, in tests.
 *
 * Each setter changes what `partitionCount` and `defaultTarget` answer
 * outside the router; `reset` puts the defaults back (`output`, no
 * partition counts).
 */
import type { Config, Message, PluginClass, RouteResult } from "./index.js";

/** Makes `partitionCount(topic)` answer `count`. */
export declare function setPartitionCount(topic: string, count: number): void;
/** Makes `defaultTarget()` answer `topic`. */
export declare function setDefaultTarget(topic: string): void;
/** Makes `encode(value, { subject })` write with schema `schemaId`. */
export declare function setSubjectId(subject: string, schemaId: number): void;
/** Forgets what the setters said. */
export declare function reset(): void;
/** Starts a marked plugin (a class or function marked with `plugin` or
 * `route`) with a configuration, as the router does once per instance, and
 * returns its route function. Throws what the plugin throws to refuse it. */
export declare function start(
  marked: PluginClass | ((msg: Message) => RouteResult),
  config?: Config | Record<string, string> | Iterable<readonly [string, string]>,
): (msg: Message) => RouteResult;
