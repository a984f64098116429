"""What a plugin answers: outputs to produce, or why a record cannot be
routed."""

from collections.abc import Iterable
from typing import NamedTuple


class Header(NamedTuple):
    """One Kafka record header. Keys need not be unique; order is kept."""

    key: str
    value: bytes


class _Original:
    """The consumed record's own key, value or headers, unchanged (nothing
    is copied across the sandbox boundary)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ORIGINAL"


#: The consumed record's own key, value or headers, unchanged.
ORIGINAL = _Original()


class Append(list):
    """An output's headers: the consumed record's, followed by these."""

    __slots__ = ()


class Replace(list):
    """An output's headers: only these (none at all if empty)."""

    __slots__ = ()


def _bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def _header(key: str, value: bytes | str) -> Header:
    return Header(str(key), _bytes(value))


def _headers(headers: Iterable[tuple[str, bytes | str]] | dict) -> list[Header]:
    items = headers.items() if isinstance(headers, dict) else headers
    return [_header(k, v) for k, v in items]


class Output:
    """A record for the router to produce.

    ``key`` and ``value`` are :data:`ORIGINAL`, ``None`` (null) or bytes;
    ``headers`` is :data:`ORIGINAL`, :class:`Append` or :class:`Replace`;
    ``topic`` ``None`` is the route's default target, ``partition`` ``None``
    lets the producer choose from the key, ``timestamp_ms`` ``None`` keeps the
    consumed record's. Build one with :meth:`forward` or :meth:`new`, then
    change it with the ``to_*``/``with_*`` methods, which return it.
    """

    # No __slots__: a field left as it is stays the class's default, so an
    # output that forwards the record sets one or two attributes.
    _FIELDS = ("topic", "partition", "key", "value", "headers", "timestamp_ms")
    topic: str | None = None
    partition: int | None = None
    key: "bytes | None | _Original" = ORIGINAL
    value: "bytes | None | _Original" = ORIGINAL
    headers: "Append | Replace | _Original" = ORIGINAL
    timestamp_ms: int | None = None

    @classmethod
    def forward(cls, *, topic: str | None = None, partition: int | None = None) -> "Output":
        """The consumed record unchanged (key, value, headers, timestamp),
        for ``topic`` (default: the route's default target) and
        ``partition`` (default: the key's)."""
        out = cls()
        if topic is not None:
            out.topic = topic
        if partition is not None:
            out.partition = partition
        return out

    @classmethod
    def new(
        cls,
        *,
        topic: str | None = None,
        partition: int | None = None,
        key: bytes | str | None = None,
        value: bytes | str | None = None,
        headers: Iterable[tuple[str, bytes | str]] | dict = (),
        timestamp_ms: int | None = None,
    ) -> "Output":
        """A new record: null key and value and no headers unless given
        (``str`` is encoded as UTF-8)."""
        out = cls.forward(topic=topic, partition=partition)
        out.key = None if key is None else _bytes(key)
        out.value = None if value is None else _bytes(value)
        out.headers = Replace(_headers(headers))
        out.timestamp_ms = timestamp_ms
        return out

    def to_topic(self, topic: str) -> "Output":
        """Sends the output to ``topic`` instead of the default target."""
        self.topic = topic
        return self

    def to_partition(self, partition: int) -> "Output":
        """Puts the output on an explicit partition."""
        self.partition = partition
        return self

    def with_key(self, key: bytes | str) -> "Output":
        """Replaces the key."""
        self.key = _bytes(key)
        return self

    def with_null_key(self) -> "Output":
        """Makes the key null."""
        self.key = None
        return self

    def with_value(self, value: bytes | str) -> "Output":
        """Replaces the value."""
        self.value = _bytes(value)
        return self

    def with_null_value(self) -> "Output":
        """Makes the value null (a tombstone)."""
        self.value = None
        return self

    def with_header(self, key: str, value: bytes | str) -> "Output":
        """Adds a header after the others (after the consumed record's, if
        the output keeps them)."""
        if isinstance(self.headers, _Original):
            self.headers = Append()
        self.headers.append(_header(key, value))
        return self

    def with_headers(self, headers: Iterable[tuple[str, bytes | str]] | dict) -> "Output":
        """Replaces every header with ``headers``."""
        self.headers = Replace(_headers(headers))
        return self

    def with_timestamp_ms(self, timestamp_ms: int) -> "Output":
        """Sets the timestamp (ms since the Unix epoch)."""
        self.timestamp_ms = timestamp_ms
        return self

    def is_forward(self) -> bool:
        """Whether this is the consumed record unchanged (only its place
        may differ)."""
        return (
            self.key is ORIGINAL
            and self.value is ORIGINAL
            and self.headers is ORIGINAL
            and self.timestamp_ms is None
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"Output({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Output):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)


class RouteError(Exception):
    """Why a record could not be routed: raise it from ``route``.

    :meth:`retry` if the same record may succeed later (the router retries
    with backoff), :meth:`reject` if redelivery cannot help (the record
    goes to the dead-letter destination). Any other exception is a bug of
    the plugin: the call traps, as a Rust panic does.
    """

    def __init__(self, kind: str, reason: str) -> None:
        if kind not in ("retry", "reject"):
            raise ValueError(f"kind must be 'retry' or 'reject', not {kind!r}")
        super().__init__(reason)
        self.kind = kind
        self.reason = reason

    @classmethod
    def retry(cls, reason: str) -> "RouteError":
        """A transient failure: routing the record again later may work."""
        return cls("retry", reason)

    @classmethod
    def reject(cls, reason: str) -> "RouteError":
        """A permanent failure: redelivery cannot help."""
        return cls("reject", reason)

    def __repr__(self) -> str:
        return f"RouteError.{self.kind}({self.reason!r})"
