// Stand-ins for the router when plugin code runs natively, in tests.
//
// Each setter changes what `partitionCount` and `defaultTarget` answer
// outside the router (and which schema `encode` writes a subject with);
// `reset` puts the defaults back (`output`, no partition counts, no
// subjects).

import { testState } from "./host.js";
import { schemaTestState } from "./schema.js";

export { start } from "./plugin.js";

/** Makes `partitionCount(topic)` answer `count`. */
export function setPartitionCount(topic, count) {
  testState.partitions.set(topic, count);
}

/** Makes `defaultTarget()` answer `topic`. */
export function setDefaultTarget(topic) {
  testState.target = topic;
}

/** Makes `encode(value, { subject })` write with schema `schemaId`. */
export function setSubjectId(subject, schemaId) {
  schemaTestState.subjects.set(subject, schemaId);
}

/** Forgets what the setters said. */
export function reset() {
  testState.partitions.clear();
  testState.target = "output";
  schemaTestState.subjects.clear();
}
