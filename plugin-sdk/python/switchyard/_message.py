"""A consumed record, read lazily."""

import json
from collections.abc import Iterable
from typing import Any

from . import _host, _schema
from ._host import _given
from ._output import Header, RouteError, _bytes, _headers

_UNSET: Any = object()


class _Call:
    """What the records of one router call share: the batch, the headers
    handed over with it (``given`` per record), and the decoded fields
    already fetched for all its records."""

    __slots__ = ("batch", "spans", "bytes", "given", "fields")

    def __init__(self, batch, spans, data: bytes, given: int) -> None:
        self.batch = batch
        self.spans = spans
        self.bytes = data
        self.given = given
        self.fields = None


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
    # Outside the router: what the router would have decoded, per part
    # (key, value), as (schema ID, value).
    _decoded: Any = (None, None)

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
        decoded: Any = _UNSET,
        schema_id: int = 1,
        decoded_key: Any = _UNSET,
        key_schema_id: int = 1,
    ) -> None:
        """``decoded`` (``decoded_key``) is what the router would decode
        the value (key) to on a route that reads it by schema, written with
        schema ``schema_id`` (``key_schema_id``)."""
        self._call = None
        self._index = 0
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._timestamp_ms = timestamp_ms
        self._key = None if key is None else _bytes(key)
        self._value = None if value is None else _bytes(value)
        self._headers = _headers(headers)
        self._decoded = (
            None if decoded_key is _UNSET else (key_schema_id, decoded_key),
            None if decoded is _UNSET else (schema_id, decoded),
        )

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

    @property
    def schema_id(self) -> int | None:
        """The ID of the schema the value was written with, on a route
        that reads values by schema; ``None`` otherwise, and for a null
        value."""
        return self._schema_id(_schema.VALUE)

    @property
    def key_schema_id(self) -> int | None:
        """The ID of the schema the key was written with (see
        :attr:`schema_id`)."""
        return self._schema_id(_schema.KEY)

    def field(self, path: str, default: Any = None) -> Any:
        """The field at ``path`` of the decoded value: field names, array
        indexes and map keys joined by dots (``"customer.region"``,
        ``"lines.0.sku"``), as a Python value (a record, map or array as a
        ``dict`` or ``list``); ``default`` when the path leads nowhere.

        Inside the router, the first read of a path fetches it for every
        record of the call at once. Raises :meth:`RouteError.reject` when
        the route does not read values by schema, or the value is null."""
        return self._field(_schema.VALUE, path, default)

    def key_field(self, path: str, default: Any = None) -> Any:
        """The field at ``path`` of the decoded key (see :meth:`field`)."""
        return self._field(_schema.KEY, path, default)

    def decoded(self) -> Any:
        """The whole decoded value (the JSON mapping of the plugin guide's
        "Schemas"). Raises :meth:`RouteError.reject` when the route does
        not read values by schema, or the value is null."""
        return self._whole(_schema.VALUE)

    def decoded_key(self) -> Any:
        """The whole decoded key (see :meth:`decoded`)."""
        return self._whole(_schema.KEY)

    def _detached(self, part: int) -> tuple[int, Any]:
        found = self._decoded[part]
        if found is None:
            name = _schema._PART_NAMES[part]
            arg = "decoded" if part == _schema.VALUE else "decoded_key"
            raise RouteError.reject(f"the test message has no decoded {name} (Message({arg}=...))")
        return found

    def _schema_id(self, part: int) -> int | None:
        call = self._call
        if call is None:
            found = self._decoded[part]
            return None if found is None else found[0]
        return call.batch.schema_id(self._index, _wit_part(part))

    def _field(self, part: int, path: str, default: Any) -> Any:
        call = self._call
        if call is None:
            return _schema._lookup(self._detached(part)[1], path, default)
        if call.fields is None:
            call.fields = {}
        results = call.fields.get((part, path))
        if results is None:
            results = call.fields[(part, path)] = call.batch.fields(_wit_part(part), path)
        result = results[self._index]
        if type(result).__name__ == "Err":
            raise RouteError.reject(result.value)
        if result.value is None:
            return default
        return _schema._from_field(result.value)

    def _whole(self, part: int) -> Any:
        call = self._call
        if call is None:
            return self._detached(part)[1]
        from componentize_py_types import Err

        try:
            return json.loads(call.batch.decoded(self._index, _wit_part(part)))
        except Err as e:
            raise RouteError.reject(e.value) from None

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, partition={self.partition}, offset={self.offset})"


def _wit_part(part: int):
    """The WIT ``part`` of a part number."""
    from wit_world.imports import types

    return types.Part.KEY if part == _schema.KEY else types.Part.VALUE


def json_field(doc: Any, path: str) -> Any:
    """The field at a dotted ``path`` (``"customer.address.city"``) of a
    JSON document, array elements by index (``"items.0.sku"``); ``None`` if
    there is none."""
    return _schema._lookup(doc, path, None)
