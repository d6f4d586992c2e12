"""Typed bodies (#18 item 4): decoders for the four kinds of body type, encoding typed
bodies on send, ``Message`` generic in its body's type, and the client's reads with
``body_type=T``. The typed consumer (``read_queue(..., body_type=T)``) is tested in
``test_typed_consumer.py``.
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

from rx_pgmq import PGMQ, Message, Outcome, failed, succeeded
from rx_pgmq._values._bodytype import body_kind, decoder, encode_body, text_decoder
from rx_pgmq.actions import Archive
from rx_pgmq.errors import BodyMismatch, InvalidArgument


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


@pytest.mark.parametrize(("body_type", "kind"), KINDS, ids=[k for _, k in KINDS])
def test_text_decoder_goes_from_json_text_to_the_type(body_type: type[Any], kind: str) -> None:
    """#18 item 4: the consumer's decoder takes the body's JSON text straight to the type
    (msgspec's typed decoder where msgspec handles it), with the same results and the same
    BodyMismatch as decoder(); text that is not JSON is an error, not a mismatch."""
    decode = text_decoder(body_type)
    assert decode('{"id":1,"item":"tea"}') == decoder(body_type)({"id": 1, "item": "tea"})
    with pytest.raises(BodyMismatch, match=body_type.__name__):
        decode('{"id":"one","item":"tea"}')
    with pytest.raises(ValueError) as info:
        decode("{not json")
    assert not isinstance(info.value, BodyMismatch)


def test_dataclasses_decode_with_pydantic_when_msgspec_is_not_preferred() -> None:
    """#18 item 4: without msgspec, pydantic decodes dataclasses (same result, same error
    type; from JSON text too, with validate_json); a typing.TypedDict it cannot take on
    Python < 3.12 is InvalidArgument saying to install msgspec."""
    decode = decoder(OrderDC, prefer=("pydantic",))
    assert decode({"id": 2}) == OrderDC(2)
    with pytest.raises(BodyMismatch, match="id"):
        decode({"id": [1]})
    from_text = text_decoder(OrderDC, prefer=())  # pydantic's validate_json
    assert from_text('{"id":2}') == OrderDC(2)
    with pytest.raises(BodyMismatch, match="id"):
        from_text('{"id":[1]}')
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


def test_send_accepts_typed_bodies_and_they_decode_back(client: PGMQ, pgmq_queue: str) -> None:
    """#18 item 4: PGMQ.send / send_batch take typed bodies and store their JSON form; the
    stored body decodes back into the same value."""
    client.send(pgmq_queue, OrderDC(1, "tea"))
    client.send_batch(pgmq_queue, [OrderStruct(2, "cake"), OrderModel(id=3, item="jam")])
    got = client.read(pgmq_queue, 30, 5)
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


def test_outcome_is_generic_in_its_message_body_type() -> None:
    """#18 item 4: the outcome of a Message[T] is an Outcome[T] (succeeded, failed,
    with_ack), so outcome.message.body is a T for mypy."""
    now = datetime.now(UTC)
    typed = Message(1, 1, now, None, now, OrderDC(1), None, "q")
    ok = succeeded(typed, 3)
    assert_type(ok, Outcome[OrderDC])
    bad = failed(typed, "no").with_ack(Archive())
    assert_type(bad, Outcome[OrderDC])
    assert_type(bad.message.body, OrderDC)
    assert (ok.ok, bad.ok, bad.message.body.id) == (True, False, 1)


# -- typed client reads ----------------------------------------------------------------------


def _read_cts(pgmq: PGMQ, queue: str) -> list[int]:
    return [m.read_ct for m in pgmq.peek(queue)]


@pytest.mark.parametrize(("body_type", "kind"), KINDS, ids=[k for _, k in KINDS])
def test_client_reads_decode_bodies_into_the_body_type(
    client: PGMQ, pgmq_queue: str, body_type: type[Any], kind: str
) -> None:
    """#18 item 4: PGMQ.read / read_with_poll / pop / read_grouped*(..., body_type=T)
    return messages whose body is a T (the rest of the message unchanged)."""
    groups = [{"x-pgmq-group": str(i)} for i in range(1, 6)]  # FIFO reads skip no group
    client.send_batch(pgmq_queue, [{"id": i, "item": "tea"} for i in range(1, 6)], groups)
    decode = decoder(body_type)
    got = [
        *client.read(pgmq_queue, 30, 1, body_type=body_type),
        *client.read_with_poll(pgmq_queue, 30, 1, max_poll_seconds=1, body_type=body_type),
        *client.read_grouped(pgmq_queue, 30, 1, body_type=body_type),
        *client.read_grouped_rr_with_poll(pgmq_queue, 30, 1, body_type=body_type),
        *client.pop(pgmq_queue, 1, body_type=body_type),
    ]
    assert [m.body for m in got] == [decode({"id": i, "item": "tea"}) for i in range(1, 6)]
    assert all(m.queue == pgmq_queue for m in got)
    assert [m.read_ct for m in got[:4]] == [1, 1, 1, 1]


@pytest.mark.parametrize("how", ["read", "read_grouped_head", "pop"])
def test_a_body_that_does_not_fit_rolls_the_read_back(
    client: PGMQ, pgmq_queue: str, how: str
) -> None:
    """#18 item 4: a body that does not fit body_type raises BodyMismatch naming the
    message and the field, and the whole read (or pop) is rolled back: nothing claimed or
    deleted, so it can be read again without body_type."""
    bad = client.send(pgmq_queue, {"id": "one"}, headers={"x-pgmq-group": "a"})
    good = client.send(pgmq_queue, {"id": 1}, headers={"x-pgmq-group": "b"})
    with pytest.raises(BodyMismatch) as info:
        getattr(client, how)(
            pgmq_queue, **({} if how == "pop" else {"vt": 30}), qty=2, body_type=OrderDC
        )
    assert info.value.msg_id == bad and info.value.queue == pgmq_queue
    assert f"message {bad}" in str(info.value) and "OrderDC" in str(info.value)
    assert [m.msg_id for m in client.peek(pgmq_queue)] == [bad, good]
    assert _read_cts(client, pgmq_queue) == [0, 0]


def test_client_reads_refuse_a_bad_body_type_before_sql(client: PGMQ, pgmq_queue: str) -> None:
    """#18 item 4: body_type must be one of the four kinds; anything else is
    InvalidArgument and nothing is claimed."""
    client.send(pgmq_queue, {"id": 1})
    with pytest.raises(InvalidArgument, match="body_type"):
        client.read(pgmq_queue, 30, body_type=int)
    with pytest.raises(InvalidArgument, match="body_type"):
        client.read_grouped_rr(pgmq_queue, 30, body_type=dict)
    assert _read_cts(client, pgmq_queue) == [0]


def test_typed_reads_are_typed_for_mypy(pgmq: PGMQ, pgmq_queue: str) -> None:
    """#18 item 4: `mypy --strict tests` sees read(..., body_type=T) as list[Message[T]]
    and a read without body_type as list[Message[Any]]."""
    pgmq.send(pgmq_queue, {"id": 1, "item": "tea"})
    typed = pgmq.read(pgmq_queue, 30, body_type=OrderStruct)
    assert_type(typed, list[Message[OrderStruct]])
    assert typed[0].body.item == "tea"
    assert_type(
        pgmq.read_grouped_head(pgmq_queue, 30, body_type=OrderModel), list[Message[OrderModel]]
    )
    assert_type(pgmq.pop(pgmq_queue), list[Message[Any]])
