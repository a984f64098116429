"""Stand-ins for the router when plugin code runs natively, in tests.

Each setter changes what :func:`switchyard.partition_count` and
:func:`switchyard.default_target` answer outside the router (and which
schema :func:`switchyard.encode` writes a subject with); :func:`reset`
puts the defaults back (``output``, no partition counts, no subjects)."""

from . import _host, _schema


def set_partition_count(topic: str, count: int) -> None:
    """Makes :func:`switchyard.partition_count` answer ``count`` for
    ``topic``."""
    _host._test_partitions[topic] = count


def set_default_target(topic: str) -> None:
    """Makes :func:`switchyard.default_target` answer ``topic``."""
    _host._test_target = topic


def set_subject_id(subject: str, schema_id: int) -> None:
    """Makes :func:`switchyard.encode` with ``subject=subject`` write with
    schema ``schema_id``."""
    _schema._test_subjects[subject] = schema_id


def reset() -> None:
    """Forgets what the setters said."""
    _host._test_partitions.clear()
    _host._test_target = "output"
    _schema._test_subjects.clear()
