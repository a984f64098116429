import pytest

from switchyard import Config, ConfigError, Message, Output, RouteError, fnv1a_32, testing

from app import TenantPartitioner


@pytest.fixture(autouse=True)
def six_partitions():
    testing.set_partition_count("output", 6)
    yield
    testing.reset()


def partition_of(plugin, msg):
    (out,) = plugin.route(msg)
    return out.partition


def test_partition_is_fnv1a_of_the_tenant_modulo_the_partition_count():
    plugin = TenantPartitioner(Config())
    for tenant in ["acme", "globex", "initech", "umbrella"]:
        msg = Message(headers={"tenant-id": tenant})
        assert partition_of(plugin, msg) == fnv1a_32(tenant) % 6


def test_known_vector_for_six_partitions():
    assert fnv1a_32("acme") == 0x45FD71AF
    assert partition_of(TenantPartitioner(Config()), Message(headers={"tenant-id": "acme"})) == 1


def test_the_output_is_the_original_record():
    (out,) = TenantPartitioner(Config()).route(Message(headers={"tenant-id": "acme"}, value="v"))
    assert out == Output.forward(partition=1)
    assert out.is_forward()


def test_an_empty_tenant_falls_back_to_the_key_then_to_the_empty_string():
    plugin = TenantPartitioner(Config())
    assert partition_of(plugin, Message(key="k", headers={"tenant-id": ""})) == fnv1a_32("k") % 6
    assert partition_of(plugin, Message()) == fnv1a_32(b"") % 6


def test_keyless_reject_refuses_records_with_neither_tenant_nor_key():
    plugin = TenantPartitioner(Config({"keyless": "reject"}))
    with pytest.raises(RouteError) as refused:
        plugin.route(Message())
    assert refused.value.kind == "reject"


def test_an_unknown_partition_count_asks_for_a_retry():
    testing.reset()
    with pytest.raises(RouteError) as refused:
        TenantPartitioner(Config()).route(Message(key="k"))
    assert refused.value.kind == "retry"


def test_unknown_config_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown config key 'heder'"):
        TenantPartitioner(Config({"heder": "x"}))
