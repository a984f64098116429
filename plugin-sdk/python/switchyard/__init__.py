"""Write Switchyard routing plugins in Python.

A plugin decides, for each consumed Kafka record, what to produce: the
record itself (:meth:`Output.forward`), new records, several, none, or why
it cannot be routed (:class:`RouteError`)::

    import switchyard

    @switchyard.route
    def route(msg: switchyard.Message) -> list[switchyard.Output]:
        return [switchyard.Output.forward()]

``switchyard build`` turns the module into a WebAssembly component (with
componentize-py) that the router loads. Outside the router the same code
runs as plain Python, so plugin logic is unit-tested with pytest; see
:mod:`switchyard.testing`.

Contract: ``switchyard:plugin@0.3.1`` (the ``wit/`` folder of this package).
"""

from ._config import Config, ConfigError
from ._hash import fnv1a_32
from ._host import IN_ROUTER, Level, default_target, log, partition_count
from ._message import Message, json_field
from ._output import ORIGINAL, Append, Header, Output, Replace, RouteError
from ._plugin import Plugin, plugin, route
from ._schema import encode

#: The plugin contract this SDK builds for.
CONTRACT_VERSION = "0.3.1"

__all__ = [
    "CONTRACT_VERSION",
    "IN_ROUTER",
    "ORIGINAL",
    "Append",
    "Config",
    "ConfigError",
    "Header",
    "Level",
    "Message",
    "Output",
    "Plugin",
    "Replace",
    "RouteError",
    "default_target",
    "encode",
    "fnv1a_32",
    "json_field",
    "log",
    "partition_count",
    "plugin",
    "route",
]
