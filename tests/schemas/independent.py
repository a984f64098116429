"""Records in the schema-registry wire format, written by encoders that are
not Switchyard's: confluent-kafka's AvroSerializer, ProtobufSerializer and
JSONSerializer (against its in-process mock registry) and fastavro.

    python independent.py encode DIR   writes DIR/schemas/<id>.json (each
                                       schema as the registry answers for
                                       its subject's version) and prints one
                                       JSON line per record: {"case",
                                       "subject", "bytes" (hex), "value"}
    python independent.py decode DIR   reads {"subject", "bytes"} lines on
                                       stdin (written by Switchyard), prints
                                       each decoded by the same library

The mock registry lives in this process, so `decode` registers the same
schemas in the same order first: the IDs come out the same.
"""

import io
import json
import sys
from pathlib import Path

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.json_format import ParseDict

MONEY = {
    "type": "record",
    "name": "Money",
    "namespace": "shop.common",
    "fields": [
        {"name": "currency", "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD", "JPY"]}},
        {"name": "cents", "type": "long"},
    ],
}

ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": {
            "type": "record", "name": "Customer", "fields": [
                {"name": "name", "type": "string"},
                {"name": "region", "type": ["null", "string"], "default": None},
            ],
        }},
        {"name": "total", "type": "shop.common.Money"},
        {"name": "lines", "type": {"type": "array", "items": {
            "type": "record", "name": "Line", "fields": [
                {"name": "sku", "type": "string"},
                {"name": "quantity", "type": "int"},
                {"name": "weight", "type": "double"},
            ],
        }}},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "note", "type": ["null", "string", "long"], "default": None},
        {"name": "paid", "type": "boolean"},
        {"name": "raw", "type": "bytes"},
    ],
}

ORDERS = [
    {
        "id": 1,
        "customer": {"name": "Ada", "region": "eu-west"},
        "total": {"currency": "EUR", "cents": 1999},
        "lines": [{"sku": "A-1", "quantity": 2, "weight": 0.5}, {"sku": "B-2", "quantity": 1, "weight": 1.25}],
        "tags": {"channel": "web"},
        "digest": b"\x00\x01\xfe\xff",
        "note": None,
        "paid": True,
        "raw": b"\x00\x80\xff",
    },
    {
        "id": -(2**40),
        "customer": {"name": "Grace", "region": None},
        "total": {"currency": "JPY", "cents": 0},
        "lines": [],
        "tags": {},
        "digest": b"abcd",
        "note": 42,
        "paid": False,
        "raw": b"",
    },
]

# A Protobuf file importing another, with a nested message: the
# serializer registers the import as a reference of its own.
def protobuf_files():
    common = descriptor_pb2.FileDescriptorProto(name="shop/common.proto", package="shop.common", syntax="proto3")
    money = common.message_type.add(name="Money")
    money.field.add(name="currency", number=1, type=9, label=1)  # string
    money.field.add(name="cents", number=2, type=3, label=1)  # int64

    shipment = descriptor_pb2.FileDescriptorProto(
        name="shop/shipment.proto", package="shop", syntax="proto3", dependency=["shop/common.proto"]
    )
    # A first message, so that the one routed on has index 1.
    shipment.message_type.add(name="Ping").field.add(name="at", number=1, type=3, label=1)
    ship = shipment.message_type.add(name="Shipment")
    ship.field.add(name="order_id", number=1, type=3, label=1)
    ship.field.add(name="region", number=2, type=9, label=1)
    ship.field.add(name="value", number=3, type=11, label=1, type_name=".shop.common.Money")
    ship.field.add(name="parcels", number=4, type=11, label=3, type_name=".shop.Shipment.Parcel")
    parcel = ship.nested_type.add(name="Parcel")
    parcel.field.add(name="weight_grams", number=1, type=5, label=1)  # int32
    parcel.field.add(name="fragile", number=2, type=8, label=1)  # bool

    pool = descriptor_pool.DescriptorPool()
    pool.Add(common)
    pool.Add(shipment)
    shipment_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Shipment"))
    parcel_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Shipment.Parcel"))
    return shipment_cls, parcel_cls


SHIPMENTS = [
    {"order_id": 7, "region": "eu-west", "value": {"currency": "EUR", "cents": 1250},
     "parcels": [{"weight_grams": 300, "fragile": True}, {"weight_grams": 1200, "fragile": False}]},
    {"order_id": 8, "region": "", "value": {"currency": "USD", "cents": 0}, "parcels": []},
]
PARCELS = [{"weight_grams": 5, "fragile": True}]

EVENT_SCHEMA = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Event",
    "type": "object",
    "properties": {"kind": {"type": "string"}, "tenant": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["kind", "tenant"],
})
EVENTS = [{"kind": "signup", "tenant": "acme", "count": 3}, {"kind": "login", "tenant": "globex"}]


class Registry:
    """The mock registry with every schema of the cases registered, in a
    fixed order (so the IDs are the same in every process)."""

    def __init__(self):
        self.client = SchemaRegistryClient.new_client({"url": "mock://"})
        self.client.register_schema("shop-common-money", Schema(json.dumps(MONEY), "AVRO"))
        order = Schema(json.dumps(ORDER), "AVRO", [SchemaReference("shop.common.Money", "shop-common-money", 1)])
        self.client.register_schema("orders-value", order)
        self.shipment_cls, self.parcel_cls = protobuf_files()
        conf = {"use.deprecated.format": False}
        self.protobuf = ProtobufSerializer(self.shipment_cls, self.client, conf)
        self.parcel_protobuf = ProtobufSerializer(self.parcel_cls, self.client, conf)
        self.avro = AvroSerializer(self.client, order, conf={"auto.register.schemas": False, "use.latest.version": True})
        self.json = JSONSerializer(EVENT_SCHEMA, self.client)
        # Serializers register their schemas on first use: once each, in
        # this order.
        self.protobuf(ParseDict(SHIPMENTS[0], self.shipment_cls()), ctx("shipments"))
        self.parcel_protobuf(ParseDict(PARCELS[0], self.parcel_cls()), ctx("parcels"))
        self.json(EVENTS[0], ctx("events"))

    def subjects(self):
        for subject in self.client.get_subjects():
            for version in self.client.get_versions(subject):
                yield self.client.get_version(subject, version)


def ctx(topic):
    return SerializationContext(topic, MessageField.VALUE)


def encode(out_dir):
    registry = Registry()
    lines = []
    for i, order in enumerate(ORDERS):
        lines.append({"case": f"avro {i}", "topic": "orders", "bytes": registry.avro(order, ctx("orders")), "value": order})
    # fastavro alone, framed by hand: the same bytes as the serializer's.
    schema_id = registry.client.get_latest_version("orders-value").schema_id
    parsed = fastavro.parse_schema(ORDER, named_schemas=_named())
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, ORDERS[0])
    lines.append({"case": "fastavro 0", "topic": "orders",
                  "bytes": b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue(), "value": ORDERS[0]})
    for i, shipment in enumerate(SHIPMENTS):
        msg = ParseDict(shipment, registry.shipment_cls())
        lines.append({"case": f"protobuf {i}", "topic": "shipments", "bytes": registry.protobuf(msg, ctx("shipments")), "value": shipment})
    for i, parcel in enumerate(PARCELS):
        msg = ParseDict(parcel, registry.parcel_cls())
        lines.append({"case": f"protobuf nested {i}", "topic": "parcels", "bytes": registry.parcel_protobuf(msg, ctx("parcels")), "value": parcel})
    for i, event in enumerate(EVENTS):
        lines.append({"case": f"json {i}", "topic": "events", "bytes": registry.json(event, ctx("events")), "value": event})

    schemas = Path(out_dir) / "schemas"
    schemas.mkdir(parents=True, exist_ok=True)
    for registered in registry.subjects():
        schema = registered.schema
        answer = {
            "subject": registered.subject,
            "version": registered.version,
            "id": registered.schema_id,
            "schemaType": schema.schema_type or "AVRO",
            "schema": schema.schema_str,
            "references": [
                {"name": r.name, "subject": r.subject, "version": r.version} for r in (schema.references or [])
            ],
        }
        (schemas / f"{registered.schema_id}.json").write_text(json.dumps(answer))
    for line in lines:
        line["bytes"] = line["bytes"].hex()
        print(json.dumps(line, default=_bytes_as_latin1))


def _named():
    named = {}
    fastavro.parse_schema(MONEY, named_schemas=named)
    return named


def _bytes_as_latin1(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError(type(value).__name__)


def plain(msg):
    """A message as a dict of its fields by name, every field present and
    integers as numbers (MessageToDict writes 64-bit ones as strings)."""
    out = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.is_repeated:
            out[field.name] = [plain(v) if field.message_type else v for v in value]
        elif field.message_type:
            out[field.name] = plain(value)
        else:
            out[field.name] = value
    return out


def decode(_out_dir):
    registry = Registry()
    avro = AvroDeserializer(registry.client)
    protobuf = ProtobufDeserializer(registry.shipment_cls, {"use.deprecated.format": False})
    parcel = ProtobufDeserializer(registry.parcel_cls, {"use.deprecated.format": False})
    events = JSONDeserializer(EVENT_SCHEMA, schema_registry_client=registry.client)
    for line in sys.stdin:
        line = json.loads(line)
        data = bytes.fromhex(line["bytes"])
        topic = line["topic"]
        if topic == "orders":
            value = avro(data, ctx(topic))
        elif topic == "shipments":
            value = plain(protobuf(data, ctx(topic)))
        elif topic == "parcels":
            value = plain(parcel(data, ctx(topic)))
        else:
            value = events(data, ctx(topic))
        print(json.dumps({"case": line["case"], "value": value}, default=_bytes_as_latin1))


if __name__ == "__main__":
    {"encode": encode, "decode": decode}[sys.argv[1]](sys.argv[2])
