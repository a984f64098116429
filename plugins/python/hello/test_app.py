from switchyard import Message, Output

from app import route


def test_forwards_the_record_unchanged():
    assert route(Message(key="k", value="v")) == [Output.forward()]
