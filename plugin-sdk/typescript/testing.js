// Stand-ins for the router when plugin code runs natively, in tests.
//
// Each setter changes what `partitionCount` and `defaultTarget` answer
// outside the router; `reset` puts the defaults back (`output`, no
// partition counts).

import { testState } from "./host.js";

export { start } from "./plugin.js";

/** Makes `partitionCount(topic)` answer `count`. */
export function setPartitionCount(topic, count) {
  testState.partitions.set(topic, count);
}

/** Makes `defaultTarget()` answer `topic`. */
export function setDefaultTarget(topic) {
  testState.target = topic;
}

/** Forgets what the setters said. */
export function reset() {
  testState.partitions.clear();
  testState.target = "output";
}
