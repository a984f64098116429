"""Turning a plugin (a class or a function) into the component's exports."""

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from . import _host
from ._config import Config
from ._message import Message, _Call
from ._output import ORIGINAL, Append, Output, RouteError, _Original


class Plugin:
    """Base of a plugin with state: ``__init__(config)`` runs once per
    instance (raise to refuse the configuration), ``route(msg)`` once per
    record. Decorate the class with :func:`plugin`."""

    def __init__(self, config: Config) -> None:
        config.deny_unknown([])

    def route(self, msg: Message) -> Sequence[Output]:
        """The outputs for ``msg`` (an empty list drops it); raise
        :class:`RouteError` if it cannot be routed."""
        raise NotImplementedError


P = TypeVar("P", bound=type)
F = TypeVar("F", bound=Callable)


def plugin(cls: P) -> P:
    """Makes the decorated :class:`Plugin` class the component's plugin.

    Build the module it is defined in with ``switchyard build`` (or
    componentize-py's ``componentize`` with that module's name)."""
    _export(cls.__module__, lambda config: cls(config).route)
    return cls


def route(fn: F) -> F:
    """Makes the decorated function ``route(msg) -> list[Output]`` the
    component's plugin (one that takes no configuration)."""

    def start(config: Config) -> Callable:
        config.deny_unknown([])
        return fn

    _export(fn.__module__, start)
    return fn


def _export(module: str, start: Callable[[Config], Callable]) -> None:
    """Defines ``WitWorld``, the class componentize-py exports, in
    ``module``. componentize-py makes a new ``WitWorld`` for every call, so
    the started plugin lives here, one per instance."""
    if not _host.IN_ROUTER:
        # Natively there is nothing to export, and no generated bindings to
        # import: the plugin's logic is tested directly.
        return
    from componentize_py_types import Err, Ok
    from wit_world.imports import types as wit

    routed: Callable | None = None

    class WitWorld:
        def init(self, config: list[tuple[str, str]]) -> None:
            nonlocal routed
            try:
                routed = start(Config(config))
            except Exception as e:  # noqa: BLE001 (any error refuses the configuration)
                raise Err(str(e) or type(e).__name__) from None

        def route(self, records, count: int, context) -> list:
            _host._call_partitions = context.default_target_partitions
            spans = context.header_spans
            call = _Call(records, spans, context.header_bytes, len(spans) // count if count else 0)
            fn = routed
            if fn is None:
                return [Err(wit.RouteError_Reject("plugin called before init"))] * count
            from_host = Message._from_host
            answers = []
            for i in range(count):
                try:
                    outputs = fn(from_host(call, i))
                except RouteError as e:
                    error = wit.RouteError_Retry if e.kind == "retry" else wit.RouteError_Reject
                    answers.append(Err(error(e.reason)))
                    continue
                answers.append(_answer(outputs, wit, Ok))
            return answers

    setattr(sys.modules[module], "WitWorld", WitWorld)


#: The answers of unchanged records, by (topic, partition), kept and
#: reused: most records of a router or a partitioner get one of a few.
_forwards: dict = {}
_MAX_FORWARDS = 4096


def _answer(outputs, wit, ok):
    """A lone unchanged output travels as ``forward`` (nothing copied);
    anything else as a list."""
    if type(outputs) is list and len(outputs) == 1:
        only = outputs[0]
        # Output.is_forward, inlined: this runs for nearly every record.
        if (
            type(only) is Output
            and only.key is ORIGINAL
            and only.value is ORIGINAL
            and only.headers is ORIGINAL
            and only.timestamp_ms is None
        ):
            return _forward(only, wit, ok)
    if isinstance(outputs, Output):
        outputs = [outputs]
    elif not isinstance(outputs, (list, tuple)):
        raise TypeError(
            f"route returned {type(outputs).__name__}: return a list of outputs ([] drops the record)"
        )
    if len(outputs) == 1 and isinstance(outputs[0], Output) and outputs[0].is_forward():
        return _forward(outputs[0], wit, ok)
    return ok(wit.Routing_Outputs([_to_wit(out, wit) for out in outputs]))


def _forward(only: Output, wit, ok):
    """The ``forward`` answer to ``only``'s place, built once per place."""
    place = (only.topic, only.partition)
    answer = _forwards.get(place)
    if answer is None:
        answer = ok(wit.Routing_Forward(wit.Placement(*place)))
        if len(_forwards) < _MAX_FORWARDS:
            _forwards[place] = answer
    return answer


def _to_wit(out: Output, wit):
    def data(d):
        if isinstance(d, _Original):
            return wit.Data_Original()
        if d is None:
            return wit.Data_Null()
        return wit.Data_Bytes(d)

    if isinstance(out.headers, _Original):
        headers = wit.OutputHeaders_Original()
    else:
        listed = [wit.Header(h.key, h.value) for h in out.headers]
        if isinstance(out.headers, Append):
            headers = wit.OutputHeaders_Append(listed)
        else:
            headers = wit.OutputHeaders_Replace(listed)
    return wit.Output(out.topic, out.partition, data(out.key), data(out.value), headers, out.timestamp_ms)
