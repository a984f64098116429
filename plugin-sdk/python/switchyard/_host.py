"""Calls into the router. Natively (in a plugin's unit tests) they are
served by :mod:`switchyard.testing` instead."""

import sys
from enum import IntEnum

#: Whether this code runs inside the router (a WebAssembly component built
#: by componentize-py), rather than natively in tests.
IN_ROUTER = sys.platform == "wasi"

if IN_ROUTER:
    from wit_world.imports import host as _wit_host


class Level(IntEnum):
    """Severity of a log line."""

    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


#: Header names this instance asked the router to hand over with every
#: call, with their index in the call's context. Bounded: a plugin reading
#: many different names fetches the rest one by one.
_MAX_GIVEN = 8
_given: dict[str, int] = {}
#: The default target's partition count handed over with the current call
#: (0: not handed over).
_call_partitions = 0
_target: str | None = None

# The stand-ins of native runs (see switchyard.testing).
_test_partitions: dict[str, int] = {}
_test_target = "output"


def log(level: Level, message: str) -> None:
    """Writes ``message`` to the router's log, tagged with the plugin's
    name. Natively it goes to standard error."""
    if IN_ROUTER:
        _wit_host.log(_wit_host.Level(int(level)), message)
    else:
        print(f"[{Level(level).name}] {message}", file=sys.stderr)


def default_target() -> str:
    """The route's default target topic: where an output without a topic
    goes. Natively: ``output``, unless :func:`switchyard.testing.set_default_target`
    said otherwise."""
    global _target
    if not IN_ROUTER:
        return _test_target
    if _target is None:
        # Constant for the life of an instance: ask the router once.
        _target = _wit_host.default_target()
    return _target


def partition_count(topic: str) -> int | None:
    """The number of partitions of ``topic``, if the router knows it and the
    route may write to it. Natively the answer comes from
    :func:`switchyard.testing.set_partition_count`."""
    if not IN_ROUTER:
        return _test_partitions.get(topic)
    if _call_partitions > 0 and topic == _target:
        return _call_partitions
    # Asking for the default target's makes the router hand it over with
    # the next calls.
    return _wit_host.partition_count(topic)


def _given_index(name: str) -> int | None:
    """Where the router hands header ``name`` over in the call's context;
    asks for it (from the next call on) the first time."""
    index = _given.get(name)
    if index is not None:
        return index
    if len(_given) < _MAX_GIVEN:
        _given[name] = _wit_host.want_header(name)
    # Not in this call's context yet.
    return None
