// Test fixture, not an example: misbehaves on demand so that tests can
// watch the router cope with a TypeScript plugin. The record value picks
// the behaviour:
//
// - `throw`: throws an error that is not a RouteError (a trap);
// - `loop`: never returns (the call's time limit ends it);
// - `hog`: allocates memory until the instance's limit stops it;
// - `retry` / `reject`: fails with that disposition;
// - `log`: logs through the host and to the console, then forwards;
// - anything else: forwards the record unchanged.

import { Level, Message, Output, RouteError, log, route } from "switchyard-sdk";

export default route((msg: Message): Output[] => {
  switch (msg.valueStr()) {
    case "throw":
      throw new Error(`asked to throw at offset ${msg.offset}`);
    case "loop":
      for (;;) {
        // Spins until the router's time limit ends the call.
      }
    case "hog": {
      const blocks: Uint8Array[] = [];
      for (;;) {
        blocks.push(new Uint8Array(1 << 20).fill(1));
      }
    }
    case "retry":
      throw RouteError.retry("asked to retry");
    case "reject":
      throw RouteError.reject("asked to reject");
    case "log":
      log(Level.Warn, "log line from the plugin");
      console.log("stdout line from the plugin");
      break;
  }
  return [Output.forward()];
});
