"""Test fixture, not an example: misbehaves on demand so that tests can
watch the router cope with a Python plugin. The record value picks the
behaviour:

- ``raise``: raises an exception that is not a RouteError (a trap);
- ``loop``: never returns (the call's time limit ends it);
- ``hog``: allocates memory until the instance's limit stops it;
- ``retry`` / ``reject``: fails with that disposition;
- ``log``: logs through the host and prints, then forwards;
- anything else: forwards the record unchanged.
"""

import switchyard
from switchyard import Level, Message, Output, RouteError


@switchyard.route
def route(msg: Message) -> list[Output]:
    what = msg.value_str()
    if what == "raise":
        raise ValueError(f"asked to raise at offset {msg.offset}")
    if what == "loop":
        while True:
            pass
    if what == "hog":
        blocks = []
        while True:
            blocks.append(bytearray(1 << 20))
    if what == "retry":
        raise RouteError.retry("asked to retry")
    if what == "reject":
        raise RouteError.reject("asked to reject")
    if what == "log":
        switchyard.log(Level.WARN, "log line from the plugin")
        print("stdout line from the plugin")
    return [Output.forward()]
