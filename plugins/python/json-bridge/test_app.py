import json

import pytest

from switchyard import Append, Config, ConfigError, Header, Message, RouteError, testing

from app import JsonBridge


def bridge(**pairs):
    return JsonBridge(Config(pairs))


def test_decoded_values_become_json_text_with_a_content_type():
    order = {"id": 7, "customer": {"region": "eu"}, "tags": ["a"]}
    (out,) = bridge(direction="to-json").route(Message(decoded=order, key="o-7"))
    assert json.loads(out.value) == order
    assert out.headers == Append([Header("content-type", b"application/json")])


def test_json_values_are_written_with_the_subject_s_schema():
    testing.set_subject_id("orders-value", 4)
    (out,) = bridge(direction="from-json", subject="orders-value").route(Message(value='{"id":7}'))
    # Outside the router, encode frames the JSON behind the ID.
    assert out.value == b"\x00\x00\x00\x00\x04" + b'{"id":7}'


def test_json_values_are_written_with_a_schema_of_its_own_under_the_subject():
    testing.set_subject_id("orders-value", 9)
    schema = '{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}'
    (out,) = bridge(direction="from-json", subject="orders-value", schema=schema).route(
        Message(value='{"id":7}'))
    assert out.value == b"\x00\x00\x00\x00\x09" + b'{"id":7}'


def test_json_that_is_not_json_is_rejected():
    testing.set_subject_id("orders-value", 4)
    with pytest.raises(RouteError) as e:
        bridge(direction="from-json", subject="orders-value").route(Message(value="{"))
    assert str(e.value).startswith("value is not valid JSON")


@pytest.mark.parametrize("bad", [
    {"direction": "sideways"},
    {"direction": "from-json"},
    {"direction": "to-json", "subject": "x"},
    {"direction": "to-json", "schema": "{}"},
    {"direction": "from-json", "subject": "x", "schema_format": "avro"},
    {"direction": "from-json", "subject": "x", "schema": "{}", "schema_format": "xml"},
    {},
])
def test_the_configuration_is_checked(bad):
    with pytest.raises(ConfigError):
        JsonBridge(Config(bad))
