import pytest

from switchyard import Config, ConfigError, Message, Output, RouteError

from app import FieldRouter


def topic(router, value):
    (out,) = router.route(Message(decoded=value))
    assert out.is_forward(), "never re-encoded"
    return out.topic


def test_routes_by_a_nested_field_with_a_prefix():
    router = FieldRouter(Config({"field": "customer.region", "topic_prefix": "orders-"}))
    assert topic(router, {"id": 1, "customer": {"name": "Ada", "region": "eu"}}) == "orders-eu"


def test_numbers_and_booleans_name_topics_as_written():
    router = FieldRouter(Config({"field": "shard"}))
    assert topic(router, {"shard": 7}) == "7"
    assert topic(router, {"shard": True}) == "true"


def test_missing_null_empty_or_unlisted_fields_go_to_the_default_target():
    router = FieldRouter(Config({"field": "region", "topic_prefix": "o-", "only": "eu, us"}))
    assert topic(router, {"region": "us"}) == "o-us"
    for value in [{}, {"region": None}, {"region": ""}, {"region": "apac"}, {"region": {"a": 1}}]:
        assert topic(router, value) is None, value


def test_a_record_not_read_by_schema_is_rejected_with_why():
    router = FieldRouter(Config({"field": "region"}))
    with pytest.raises(RouteError) as e:
        router.route(Message(value="{}"))
    assert "no decoded value" in e.value.reason


def test_a_bad_path_is_refused_at_init():
    for field in ["", "a..b", ".a"]:
        with pytest.raises(ConfigError):
            FieldRouter(Config({"field": field}))


def test_the_decoded_value_and_its_schema_id_are_there_for_tests():
    msg = Message(decoded={"a": [1, {"b": "c"}]}, schema_id=7)
    assert msg.schema_id == 7
    assert msg.field("a.1.b") == "c"
    assert msg.field("a.5", default="none") == "none"
    assert msg.decoded() == {"a": [1, {"b": "c"}]}
    assert Message().schema_id is None


def test_encode_frames_the_json_behind_the_schema_id_outside_the_router():
    import switchyard
    from switchyard import testing

    assert switchyard.encode({"a": 1}, schema_id=7) == b"\x00\x00\x00\x00\x07" + b'{"a":1}'
    with pytest.raises(RouteError) as e:
        switchyard.encode({"a": 1}, subject="orders-value")
    assert e.value.kind == "reject" and "set_subject_id" in e.value.reason
    testing.set_subject_id("orders-value", 3)
    try:
        assert switchyard.encode([], subject="orders-value") == b"\x00\x00\x00\x00\x03[]"
    finally:
        testing.reset()
    with pytest.raises(TypeError):
        switchyard.encode({}, schema_id=1, subject="x")
