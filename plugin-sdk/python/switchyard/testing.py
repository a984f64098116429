"""Stand-ins for the router when plugin code runs natively, in tests.

Each setter changes what :func:`switchyard.partition_count` and
:func:`switchyard.default_target` answer outside the router; :func:`reset`
puts the defaults back (``output``, no partition counts)."""

from . import _host


def set_partition_count(topic: str, count: int) -> None:
    """Makes :func:`switchyard.partition_count` answer ``count`` for
    ``topic``."""
    _host._test_partitions[topic] = count


def set_default_target(topic: str) -> None:
    """Makes :func:`switchyard.default_target` answer ``topic``."""
    _host._test_target = topic


def reset() -> None:
    """Forgets what the setters said."""
    _host._test_partitions.clear()
    _host._test_target = "output"
