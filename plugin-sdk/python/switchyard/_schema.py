"""Records in a schema registry's wire format (Avro, Protobuf, JSON
Schema): read decoded, written with a schema.

On a route with ``value_format = "schema-registry"`` (or ``key_format``)
the router checks every record against its schema before the plugin sees
it, and decodes it for the plugin: :meth:`Message.field`,
:meth:`Message.decoded`, :attr:`Message.schema_id`. :func:`encode` writes
a new value with a schema. Outside the router, ``Message(decoded=...)``
sets what the router would have decoded, and :func:`encode` frames the
value's JSON behind the schema ID without applying the schema.
"""

import json
from typing import Any

from . import _host
from ._output import RouteError

#: Subject -> schema ID, for :func:`encode` outside the router
#: (:func:`switchyard.testing.set_subject_id`).
_test_subjects: dict[str, int] = {}

KEY = 0
VALUE = 1
_PART_NAMES = ("key", "value")


def _from_field(field) -> Any:
    """A WIT ``field`` as a Python value."""
    name = type(field).__name__
    if name == "Field_Null":
        return None
    if name == "Field_Json":
        return json.loads(field.value)
    return field.value


def _lookup(doc: Any, path: str, default: Any) -> Any:
    """The part of ``doc`` at ``path`` (dotted), or ``default``."""
    if path == "":
        return doc
    node = doc
    for part in path.split("."):
        if isinstance(node, dict):
            if part not in node:
                return default
            node = node[part]
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return default
            node = node[int(part)]
        else:
            return default
    return node


def encode(value: Any, *, schema_id: int | None = None, subject: str | None = None,
           message: str | None = None, schema: str | None = None,
           schema_format: str = "avro") -> bytes:
    """``value`` (JSON-able: the JSON mapping of the plugin guide's
    "Schemas") written with the schema ``schema_id``, or the latest version
    of ``subject``, in the wire format: the bytes of an output's key or
    value. ``message`` names a Protobuf schema's message (default: its
    first).

    With ``schema`` (its text; ``schema_format`` ``"avro"``, ``"protobuf"``
    or ``"json"``), the value is written with that schema, registered
    under ``subject`` the first time the router meets it: only on a route
    with ``register_schemas = true``.

    Raises :meth:`RouteError.retry` while the schema is being fetched or
    registered (the record comes again once it is here),
    :meth:`RouteError.reject` when the schema does not exist or the value
    does not fit it."""
    if (schema_id is None) == (subject is None):
        raise TypeError("encode needs exactly one of schema_id= and subject=")
    if schema is not None and subject is None:
        raise TypeError("encode with schema= registers it under a subject: give subject=")
    if schema_format not in ("avro", "protobuf", "json"):
        raise TypeError(f"schema_format is '{schema_format}': use \"avro\", \"protobuf\" or \"json\"")
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if not _host.IN_ROUTER:
        if subject is not None:
            if subject not in _test_subjects:
                raise RouteError.reject(
                    f"no schema ID for subject '{subject}': call testing.set_subject_id first")
            schema_id = _test_subjects[subject]
        return b"\x00" + int(schema_id).to_bytes(4, "big") + text.encode()
    from componentize_py_types import Err
    from wit_world.imports import schemas

    if schema is not None:
        kind = {
            "avro": schemas.SchemaFormat.AVRO,
            "protobuf": schemas.SchemaFormat.PROTOBUF,
            "json": schemas.SchemaFormat.JSON,
        }[schema_format]
        ref = schemas.SchemaRef_Register(schemas.NewSchema(subject, kind, schema))
    elif subject is None:
        ref = schemas.SchemaRef_Id(schema_id)
    else:
        ref = schemas.SchemaRef_Subject(subject)
    try:
        return schemas.encode(ref, message, text)
    except Err as e:
        error = e.value
        if type(error).__name__ == "EncodeError_NotReady":
            raise RouteError.retry(error.value) from None
        raise RouteError.reject(error.value) from None
