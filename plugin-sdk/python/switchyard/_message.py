"""A consumed record, read lazily."""

import json
from collections.abc import Iterable
from typing import Any

from . import _host
from ._host import _given
from ._output import Header, RouteError, _bytes, _headers

_UNSET: Any = object()


class _Call:
    """What the records of one router call share: the batch and the
    headers handed over with it (``given`` per record)."""

    __slots__ = ("batch", "spans", "bytes", "given")

    def __init__(self, batch, spans, data: bytes, given: int) -> None:
        self.batch = batch
        self.spans = spans
        self.bytes = data
        self.given = given


class Message:
    """A consumed Kafka record.

    Inside the router each field is fetched the first time it is read and
    kept, so a plugin pays only for what it reads: a partitioner that looks
    at one header never copies the value. Build one for unit tests with
    the constructor (``str`` keys, values and header values are encoded as
    UTF-8)::

        Message(key="order-1", value='{"total": 10}', headers={"tenant-id": "acme"})
    """

    # No __slots__: a field not read yet is the class's `_UNSET`, so a
    # record of the router's call starts with two attributes set and reads
    # the rest when first asked for.
    _topic: Any = _UNSET
    _partition: Any = _UNSET
    _offset: Any = _UNSET
    _timestamp_ms: Any = _UNSET
    _key: Any = _UNSET
    _value: Any = _UNSET
    _headers: Any = _UNSET

    def __init__(
        self,
        *,
        topic: str = "input",
        partition: int = 0,
        offset: int = 0,
        timestamp_ms: int | None = None,
        key: bytes | str | None = None,
        value: bytes | str | None = None,
        headers: Iterable[tuple[str, bytes | str]] | dict = (),
    ) -> None:
        self._call = None
        self._index = 0
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._timestamp_ms = timestamp_ms
        self._key = None if key is None else _bytes(key)
        self._value = None if value is None else _bytes(value)
        self._headers = _headers(headers)

    @classmethod
    def _from_host(cls, call: "_Call", index: int) -> "Message":
        """Record ``index`` of the router's ``call``. Its fields are left
        unset, each read from the router when first asked for."""
        msg = cls.__new__(cls)
        msg._call = call
        msg._index = index
        return msg

    @property
    def topic(self) -> str:
        """The topic the record was consumed from."""
        if self._topic is _UNSET:
            self._topic = self._call.batch.topic(self._index)
        return self._topic

    @property
    def partition(self) -> int:
        """The partition the record was consumed from."""
        if self._partition is _UNSET:
            self._partition = self._call.batch.partition(self._index)
        return self._partition

    @property
    def offset(self) -> int:
        """The record's offset in its partition."""
        if self._offset is _UNSET:
            self._offset = self._call.batch.offset(self._index)
        return self._offset

    @property
    def timestamp_ms(self) -> int | None:
        """The record's timestamp (ms since the Unix epoch), if it has one."""
        if self._timestamp_ms is _UNSET:
            self._timestamp_ms = self._call.batch.timestamp_ms(self._index)
        return self._timestamp_ms

    @property
    def key(self) -> bytes | None:
        """The key; ``None`` for a null key."""
        if self._key is _UNSET:
            self._key = self._call.batch.key(self._index)
        return self._key

    @property
    def value(self) -> bytes | None:
        """The value; ``None`` for a null value (a tombstone)."""
        if self._value is _UNSET:
            self._value = self._call.batch.value(self._index)
        return self._value

    def value_str(self) -> str | None:
        """The value as UTF-8 text; ``None`` if it is null or not UTF-8."""
        value = self.value
        if value is None:
            return None
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None

    @property
    def headers(self) -> list[Header]:
        """Every header, in order, duplicates included."""
        if self._headers is _UNSET:
            self._headers = [Header(h.key, h.value) for h in self._call.batch.headers(self._index)]
        return self._headers

    def header(self, name: str) -> bytes | None:
        """The value of the first header named ``name`` (case-sensitive).

        Inside the router this fetches just that header unless
        :attr:`headers` was read already; and from the second call on, the
        router hands the headers a plugin reads over with the call, so
        reading one costs no call into the router.
        """
        call = self._call
        if call is not None and self._headers is _UNSET:
            j = _given.get(name)
            if j is None:
                j = _host._given_index(name)
            if j is not None and j < call.given:
                span = call.spans[self._index * call.given + j]
                if span is None:
                    return None
                return call.bytes[span.start : span.start + span.len]
            return call.batch.header(self._index, name)
        for header in self.headers:
            if header.key == name:
                return header.value
        return None

    def header_str(self, name: str) -> str | None:
        """The first header named ``name`` as UTF-8 text, if present and
        valid."""
        value = self.header(name)
        if value is None:
            return None
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None

    def json(self) -> Any:
        """The value parsed as JSON. A null value or malformed JSON raises
        :meth:`RouteError.reject` saying what is wrong."""
        value = self.value
        if value is None:
            raise RouteError.reject("value is null, expected JSON")
        try:
            text = value.decode()
        except UnicodeDecodeError as e:
            raise RouteError.reject(f"value is not valid JSON: not UTF-8: {e}") from None
        try:
            return json.loads(text)
        except ValueError as e:
            raise RouteError.reject(f"value is not valid JSON: {e}") from None

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, partition={self.partition}, offset={self.offset})"


def json_field(doc: Any, path: str) -> Any:
    """The field at a dotted ``path`` (``"customer.address.city"``) of a
    JSON document, array elements by index (``"items.0.sku"``); ``None`` if
    there is none."""
    node = doc
    for part in path.split("."):
        if isinstance(node, dict):
            if part not in node:
                return None
            node = node[part]
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return None
            node = node[int(part)]
        else:
            return None
    return node
