// {{name}}: a Switchyard routing plugin.
import { Message, Output, route } from "switchyard-sdk";

/** Forwards every record unchanged to the route's default target, and drops
 * tombstones (records with a null value). */
export default route((msg: Message): Output[] => {
  if (msg.value === null) {
    return [];
  }
  return [Output.forward()];
});
