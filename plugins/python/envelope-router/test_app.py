import pytest

from switchyard import Config, ConfigError, Message, Output, RouteError

from app import EnvelopeRouter


@pytest.fixture
def router():
    return EnvelopeRouter(Config({"order.created": "orders.created", "order.paid": "orders.paid"}))


def reject_reason(router, value):
    with pytest.raises(RouteError) as refused:
        router.route(Message(value=value))
    assert refused.value.kind == "reject"
    return refused.value.reason


def test_each_type_goes_to_its_topic_unchanged(router):
    value = '{"type":"order.paid","version":1,"timestamp":"2026-01-01T00:00:00Z","payload":{"id":7}}'
    assert router.route(Message(value=value)) == [Output.forward(topic="orders.paid")]


def test_unknown_type_is_rejected_with_its_name(router):
    value = '{"type":"order.lost","version":1,"timestamp":0,"payload":{}}'
    assert reject_reason(router, value) == "unknown envelope type 'order.lost'"


def test_malformed_json_is_rejected_saying_so(router):
    assert reject_reason(router, '{"type":"order.paid"').startswith("value is not valid JSON: ")


def test_envelope_without_type_or_payload_is_rejected(router):
    assert reject_reason(router, '{"payload":{}}') == "envelope has no string field 'type'"
    assert reject_reason(router, '{"type":7,"payload":{}}') == "envelope has no string field 'type'"
    assert reject_reason(router, '{"type":"order.paid"}') == "envelope has no field 'payload'"
    assert reject_reason(router, '["order.paid",{}]') == "envelope is not a JSON object"


def test_empty_or_null_value_is_rejected(router):
    assert reject_reason(router, "").startswith("value is not valid JSON: ")
    assert reject_reason(router, None) == "value is null, expected JSON"


def test_empty_configuration_or_topic_is_refused():
    with pytest.raises(ConfigError, match="no envelope types configured"):
        EnvelopeRouter(Config())
    with pytest.raises(ConfigError, match="maps to an empty topic name"):
        EnvelopeRouter(Config({"order.paid": ""}))
