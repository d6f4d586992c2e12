"""Typed consumers (#18 item 4): ``read_queue(..., body_type=T)`` decodes each body into
``T`` in the consumer, and a body that does not fit is a per-message failure.

On a real PostgreSQL: a dataclass, a TypedDict, a msgspec.Struct and a pydantic model; a
body that does not fit arrives with ``decode_error`` a ``BodyMismatch`` (a ``DecodeError``)
and ``body`` None, fails without calling the handler and is archived by default, while the
good messages of the same batch are processed. ``test_types_survive_the_pipeline`` runs
mypy on ``tests/typecheck/typed_pipeline.py``, a user's typed pipeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict, assert_type

import msgspec
import pydantic
import pytest
from _support import Conn, Subscribe, source_of, table
from psycopg import sql

from rx_pgmq import PGMQ, Message, ReadOptions, read_queue
from rx_pgmq import operators as pgops
from rx_pgmq._pg._sql import messages_from_rows
from rx_pgmq._values._bodytype import decoder, text_decoder
from rx_pgmq.actions import Archive, Delete, MoveTo
from rx_pgmq.aio import AsyncPGMQ
from rx_pgmq.errors import BodyMismatch, DecodeError, InvalidArgument
from rx_pgmq.headers import MOVED


@dataclass(frozen=True)
class OrderDC:
    id: int
    item: str


class OrderTD(TypedDict):
    id: int
    item: str


class OrderStruct(msgspec.Struct, frozen=True):
    id: int
    item: str


class OrderModel(pydantic.BaseModel):
    id: int
    item: str


KINDS: list[type[Any]] = [OrderDC, OrderTD, OrderStruct, OrderModel]
IDS = ["dataclass", "typeddict", "msgspec", "pydantic"]


def _stored(db: Conn, queue: str, prefix: str = "q") -> dict[int, str]:
    """msg_id -> body text of every row of a queue (``q``) or its archive (``a``)."""
    query = sql.SQL("SELECT msg_id, message::text FROM {}").format(
        table(queue, "a" if prefix == "a" else "q")
    )
    return {int(r[0]): r[1] for r in db.execute(query).fetchall()}


@pytest.fixture
def dlq(pgmq: PGMQ, pgmq_queue: str) -> Iterator[str]:
    """A second fresh queue for MoveTo, dropped after the test."""
    name = f"{pgmq_queue}_dlq"
    pgmq.create_queue(name)
    yield name
    pgmq.drop_queue(name)


@pytest.mark.parametrize("body_type", KINDS, ids=IDS)
def test_a_typed_consumer_decodes_bodies_and_fails_only_those_that_do_not_fit(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn, subscribe: Subscribe, body_type: Any
) -> None:
    """#18 item 4: read_queue(..., body_type=T) emits Message[T] whose body is a T; in the
    same batch, a body that does not fit T (a string id, a missing field) arrives with
    body None and decode_error a BodyMismatch (a DecodeError) naming the message and the
    type, fails without calling the handler and is archived; the good ones are handled
    and deleted, and the stream goes on."""
    good1 = pgmq.send(pgmq_queue, {"id": 1, "item": "tea"}, headers={"h": 1})
    wrong = pgmq.send(pgmq_queue, {"id": "one", "item": "tea"}, headers={"h": 2})
    missing = pgmq.send(pgmq_queue, {"id": 3})
    good2 = pgmq.send(pgmq_queue, {"id": 4, "item": "jam", "extra": True})
    handled: dict[int, Any] = {}

    def handle(message: Message[Any]) -> str:
        handled[message.msg_id] = message.body
        return "done"

    source = source_of(pgmq_dsn, pgmq_queue, batch_size=10, body_type=body_type)
    sink = subscribe(source.pipe(pgops.process(handle), pgops.ack()))
    records = {r.message.msg_id: r for r in sink.collect(4)}
    decode = decoder(body_type)
    assert handled == {
        good1: decode({"id": 1, "item": "tea"}),
        good2: decode({"id": 4, "item": "jam"}),
    }
    if body_type is not OrderTD:
        assert all(isinstance(body, body_type) for body in handled.values())
    assert records[good1].message.headers == {"h": 1}
    assert all(records[i].ok and records[i].action == Delete() for i in (good1, good2))
    for msg_id, field in ((wrong, "id"), (missing, "item")):
        record = records[msg_id]
        assert not record.ok and record.action == Archive() and record.acked
        error = record.error
        assert isinstance(error, BodyMismatch) and isinstance(error, DecodeError)
        assert record.message.decode_error is error and record.message.body is None
        assert (error.msg_id, error.queue, error.part) == (msg_id, pgmq_queue, "body")
        assert body_type.__name__ in str(error) and field in str(error)
    assert records[wrong].message.headers is None
    assert _stored(db, pgmq_queue) == {}
    assert set(_stored(db, pgmq_queue, "a")) == {wrong, missing}
    assert not sink.errors


def test_a_body_that_does_not_fit_moves_exactly_as_stored(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn, subscribe: Subscribe, dlq: str
) -> None:
    """#18 item 4: on_failure=MoveTo(dlq) copies a body that does not fit the body type as
    stored (BodyMismatch keeps its text), with its headers and the x-rx-pgmq-moved record
    naming the mismatch."""
    bad = pgmq.send(pgmq_queue, {"id": [1, 2], "item": None}, headers={"trace": "t1"})
    sink = subscribe(
        source_of(pgmq_dsn, pgmq_queue, body_type=OrderStruct).pipe(
            pgops.process(lambda m: None), pgops.ack(on_failure=MoveTo(dlq))
        )
    )
    (record,) = sink.collect(1)
    assert record.message.msg_id == bad and record.acked and not record.ok
    (copy,) = pgmq.read(dlq, 30)
    assert copy.body == {"id": [1, 2], "item": None}
    assert copy.headers is not None and copy.headers["trace"] == "t1"
    assert copy.headers[MOVED]["from"] == pgmq_queue
    assert "OrderStruct" in copy.headers[MOVED]["reason"]
    assert _stored(db, pgmq_queue) == {}


def test_a_typed_pop_consumer_emits_a_mismatch_as_a_failure(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """#18 item 4: with delete_on_read, a body that does not fit arrives as a failure too
    (it is already popped; the stream goes on to the next message)."""
    bad = pgmq.send(pgmq_queue, {"id": "x", "item": "tea"})
    good = pgmq.send(pgmq_queue, {"id": 2, "item": "tea"})
    source = source_of(
        pgmq_dsn,
        pgmq_queue,
        body_type=OrderDC,
        read_options=ReadOptions(delete_on_read=True),
    )
    sink = subscribe(source.pipe(pgops.process(lambda m: m.body.item)))
    outcomes = {o.message.msg_id: o for o in sink.collect(2)}
    assert outcomes[good].ok and outcomes[good].value == "tea"
    assert isinstance(outcomes[bad].error, BodyMismatch)


def test_rows_decode_into_the_body_type_one_message_at_a_time() -> None:
    """#18 item 4 (pure, no I/O): messages_from_rows(..., body_loads=text_decoder(T))
    decodes bodies into T and headers with loads; a body that does not fit gets a
    BodyMismatch with the message's id, queue and stored texts, headers that are not an
    object a plain DecodeError, and the other messages are unaffected."""
    now = datetime.now(UTC)
    rows = [
        (1, 1, now, None, now, '{"id":1,"item":"tea"}', '{"h":1}'),
        (2, 1, now, None, now, '{"id":"two"}', '{"h":2}'),
        (3, 1, now, None, now, '{"id":3,"item":"jam"}', "[1]"),
        (4, 1, now, None, now, '{"id":4,"item":"cake"}', None),
    ]
    one, two, three, four = messages_from_rows(
        rows, "q", None, json.loads, body_loads=text_decoder(OrderStruct)
    )
    assert (one.body, one.headers, one.decode_error) == (OrderStruct(1, "tea"), {"h": 1}, None)
    assert (four.body, four.headers, four.decode_error) == (OrderStruct(4, "cake"), None, None)
    error = two.decode_error
    assert isinstance(error, BodyMismatch) and (two.body, two.headers) == (None, None)
    assert (error.msg_id, error.queue, error.part) == (2, "q", "body")
    assert (error.body_text, error.headers_text) == ('{"id":"two"}', '{"h":2}')
    assert "OrderStruct" in str(error) and "message 2 of 'q'" in str(error)
    bad_headers = three.decode_error
    assert isinstance(bad_headers, DecodeError) and not isinstance(bad_headers, BodyMismatch)
    assert bad_headers.part == "headers" and three.body is None


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: rx_pgmq bridges to asyncio."""
    return "asyncio"


@pytest.mark.anyio
async def test_async_client_reads_decode_bodies_into_the_body_type(
    apgmq: AsyncPGMQ, pgmq_queue: str, db: Conn
) -> None:
    """#18 item 4: AsyncPGMQ.read and pop take body_type like PGMQ's (send encodes an
    instance); a body that does not fit raises BodyMismatch and the read is rolled back."""
    first = await apgmq.send(pgmq_queue, OrderStruct(1, "tea"))
    await apgmq.send_batch(pgmq_queue, [OrderDC(2, "jam")])
    read = await apgmq.read(pgmq_queue, 30, body_type=OrderStruct)
    assert_type(read, list[Message[OrderStruct]])
    assert [(m.msg_id, m.body) for m in read] == [(first, OrderStruct(1, "tea"))]
    (popped,) = await apgmq.pop(pgmq_queue, body_type=OrderModel)
    assert popped.body == OrderModel(id=2, item="jam")
    bad = await apgmq.send(pgmq_queue, {"id": "x", "item": "tea"})
    with pytest.raises(BodyMismatch) as info:
        await apgmq.read(pgmq_queue, 30, qty=5, body_type=OrderDC)
    assert (info.value.msg_id, info.value.queue) == (bad, pgmq_queue)
    read_ct = db.execute(
        sql.SQL("SELECT read_ct FROM {} WHERE msg_id = %s").format(table(pgmq_queue)), (bad,)
    ).fetchone()
    assert read_ct == (0,)
    with pytest.raises(InvalidArgument, match="body_type"):
        await apgmq.pop(pgmq_queue, body_type=int)


@pytest.mark.parametrize("bad", [int, dict, "Order", OrderDC(1, "x")])
def test_read_queue_refuses_a_bad_body_type_at_once(pgmq_dsn: str, bad: Any) -> None:
    """#18 item 4: body_type must be one of the four kinds: InvalidArgument naming
    body_type when read_queue is called, before any subscription."""
    with pytest.raises(InvalidArgument) as info:
        read_queue(pgmq_dsn, "orders", visibility_timeout=30, body_type=bad)
    assert info.value.argument == "body_type"


@pytest.mark.slow
def test_types_survive_the_pipeline() -> None:
    """#18 item 4: `mypy --strict` on a user's pipeline (tests/typecheck/typed_pipeline.py)
    knows message.body is an Order in a handler taking Message[Order], and that
    read_queue(..., body_type=Order), async for, process, windowed, failures, ack and
    ack_with keep Order down to Settled.message.body; its deliberately wrong lines are
    errors (an unused `type: ignore` fails the run when a type is lost to Any)."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MYPYPATH": str(root)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-executable",
            sys.executable,
            "tests/typecheck/typed_pipeline.py",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout
