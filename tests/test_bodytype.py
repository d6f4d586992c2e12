"""Typed bodies, the part that is done (#18 item 4): decoders for the four kinds of body
type, encoding typed bodies on send, and ``Message`` generic in its body's type.

``read_queue(..., body_type=T)`` / ``PGMQ.read(..., body_type=T)`` and the per-message
decode failure are not wired yet (they need #9's DecodeError path).
"""

from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict, assert_type

import msgspec
import pydantic
import pytest

from rx_pgmq import PGMQ, Message
from rx_pgmq._bodytype import BodyMismatch, body_kind, decoder, encode_body
from rx_pgmq.errors import InvalidArgument


@dataclass(frozen=True)
class OrderDC:
    id: int
    item: str = "none"


class OrderTD(TypedDict):
    id: int
    item: str


class OrderStruct(msgspec.Struct, frozen=True):
    id: int
    item: str = "none"


class OrderModel(pydantic.BaseModel):
    id: int
    item: str = "none"


KINDS: list[tuple[type[Any], str]] = [
    (OrderDC, "dataclass"),
    (OrderTD, "typeddict"),
    (OrderStruct, "msgspec"),
    (OrderModel, "pydantic"),
]


@pytest.mark.parametrize(("body_type", "kind"), KINDS, ids=[k for _, k in KINDS])
def test_decoder_builds_the_type_and_refuses_a_body_that_does_not_fit(
    body_type: type[Any], kind: str
) -> None:
    """#18 item 4: a decoder turns a parsed JSON body into a dataclass, TypedDict,
    msgspec.Struct or pydantic model, and raises BodyMismatch (naming the type and the
    field) for a body that does not fit."""
    assert body_kind(body_type) == kind
    decode = decoder(body_type)
    value = decode({"id": 1, "item": "tea"})
    if kind == "typeddict":
        assert value == {"id": 1, "item": "tea"}
    else:
        assert isinstance(value, body_type) and value.id == 1 and value.item == "tea"
    for bad in ({"id": "one", "item": "tea"}, {"item": "tea"}, [1, 2], "text"):
        with pytest.raises(BodyMismatch) as info:
            decode(bad)
        assert info.value.body_type == body_type.__name__
        assert body_type.__name__ in str(info.value)
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)


def test_dataclasses_decode_with_pydantic_when_msgspec_is_not_preferred() -> None:
    """#18 item 4: without msgspec, pydantic decodes dataclasses (same result, same error
    type); a typing.TypedDict it cannot take on Python < 3.12 is InvalidArgument saying to
    install msgspec."""
    decode = decoder(OrderDC, prefer=("pydantic",))
    assert decode({"id": 2}) == OrderDC(2)
    with pytest.raises(BodyMismatch, match="id"):
        decode({"id": [1]})
    if sys.version_info < (3, 12):
        with pytest.raises(InvalidArgument, match=r"rx-pgmq\[msgspec\]"):
            decoder(OrderTD, prefer=("pydantic",))


@pytest.mark.parametrize("bad", [int, dict, list[int], OrderDC(1), "OrderDC", None])
def test_only_the_four_kinds_are_body_types(bad: Any) -> None:
    """#18 item 4: anything but a dataclass, TypedDict, Struct or pydantic model class is
    InvalidArgument naming body_type."""
    with pytest.raises(InvalidArgument) as info:
        decoder(bad)
    assert info.value.argument == "body_type"


def test_encode_body_turns_typed_values_into_json_values() -> None:
    """#18 item 4: dataclass, Struct and pydantic instances become plain JSON values
    (datetimes as ISO text); plain JSON values pass through as the same object."""
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    @dataclass
    class Stamped:
        at: datetime

    assert encode_body(OrderDC(1, "tea")) == {"id": 1, "item": "tea"}
    assert encode_body(OrderStruct(2)) == {"id": 2, "item": "none"}
    assert encode_body(OrderModel(id=3)) == {"id": 3, "item": "none"}
    assert encode_body(Stamped(when)) == {"at": "2030-01-02T03:04:05Z"}
    plain = {"a": [1]}
    assert encode_body(plain) is plain


def test_send_accepts_typed_bodies_and_they_decode_back(pgmq: PGMQ, pgmq_queue: str) -> None:
    """#18 item 4: PGMQ.send / send_batch take typed bodies and store their JSON form; the
    stored body decodes back into the same value."""
    pgmq.send(pgmq_queue, OrderDC(1, "tea"))
    pgmq.send_batch(pgmq_queue, [OrderStruct(2, "cake"), OrderModel(id=3, item="jam")])
    got = pgmq.read(pgmq_queue, 30, 5)
    assert [m.body for m in got] == [
        {"id": 1, "item": "tea"},
        {"id": 2, "item": "cake"},
        {"id": 3, "item": "jam"},
    ]
    assert decoder(OrderDC)(got[0].body) == OrderDC(1, "tea")
    assert decoder(OrderStruct)(got[1].body) == OrderStruct(2, "cake")
    assert decoder(OrderModel)(got[2].body) == OrderModel(id=3, item="jam")


def test_message_is_generic_in_its_body_type() -> None:
    """#18 item 4: Message[T].body is a T for mypy (checked by `mypy --strict tests`),
    and a bare Message is Message[Any]."""
    now = datetime.now(UTC)
    typed = Message(1, 1, now, None, now, OrderDC(1), None, "q")
    assert_type(typed, Message[OrderDC])
    assert_type(typed.body, OrderDC)
    untyped: Message = Message(2, 1, now, None, now, {"id": 2}, None, "q")
    assert_type(untyped.body, Any)
    assert typed.body.id == 1
