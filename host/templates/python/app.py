"""{{name}}: a Switchyard routing plugin."""

import switchyard
from switchyard import Message, Output


@switchyard.route
def route(msg: Message) -> list[Output]:
    """Forwards every record unchanged to the route's default target, and
    drops tombstones (records with a null value)."""
    if msg.value is None:
        return []
    return [Output.forward()]
