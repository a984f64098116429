from switchyard import Message, Output

from app import route


def test_a_record_is_forwarded_unchanged():
    assert route(Message(key="k", value="v")) == [Output.forward()]


def test_a_tombstone_is_dropped():
    assert route(Message(key="k")) == []
