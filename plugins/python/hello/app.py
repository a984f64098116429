"""Hello world: forwards every record unchanged to the route's default
target."""

import switchyard
from switchyard import Message, Output


@switchyard.route
def route(msg: Message) -> list[Output]:
    return [Output.forward()]
