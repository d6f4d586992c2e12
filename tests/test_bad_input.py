"""Bad arguments and bad data against a real PostgreSQL (issue 14, items 6, 7 and 8).

Arguments are refused with ``InvalidArgument`` naming them when the pipeline is built or
the call is made, before any SQL; data PostgreSQL accepts but Python cannot decode fails
one message at a time, never the stream.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
from _support import WAIT, Conn, Subscribe, count, source_of, table, wait_until
from psycopg import sql
from reactivex.subject import Subject

from rx_pgmq import Message, install_pgmq
from rx_pgmq import operators as pgops
from rx_pgmq.actions import Archive, Delete, MoveTo, Nothing, SetVisibilityTimeout
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import DecodeError, InvalidArgument
from rx_pgmq.jupyter import peek_messages

MOVED = "x-rx-pgmq-moved"

JSONB_LIMIT = 268_435_455  # bytes: PostgreSQL's largest jsonb value (JENTRY_OFFLENMASK)

# -- item 6: policies are checked when the pipeline is built ---------------------------


@pytest.mark.parametrize("cls", [Delete, Archive, Nothing, SetVisibilityTimeout, MoveTo])
@pytest.mark.parametrize("argument", ["on_success", "on_failure"])
def test_an_action_class_is_refused_when_the_pipeline_is_built(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn, cls: type, argument: str
) -> None:
    """#14 item 6: ack(on_success=Delete) (the class) raises InvalidArgument at pipe time.

    Before, a class passed as callable: the stream ended later with a TypeError. The
    message stays unread: nothing was read or settled.
    """
    pgmq.send(pgmq_queue, {"id": 1})
    source = source_of(pgmq_dsn, pgmq_queue)
    with pytest.raises(InvalidArgument) as info:
        source.pipe(pgops.process(lambda m: None), pgops.ack(**{argument: cls}))
    assert info.value.argument == argument
    assert f"{cls.__name__}()" in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        pgops.ack_with(cls)
    assert info.value.argument == "policy"
    with pytest.raises(InvalidArgument) as info:
        pgops.max_attempts(3, then=cls)
    assert info.value.argument == "then"
    assert count(db, pgmq_queue, "read_ct = 0") == 1


def _no_argument() -> Delete:
    return Delete()


def _two_arguments(a: object, b: object) -> Delete:
    return Delete()


@pytest.mark.parametrize("policy", [_no_argument, _two_arguments, lambda: Archive()])
def test_a_function_that_cannot_take_an_outcome_is_refused(policy: Any) -> None:
    """#14 item 6: a callable that cannot be called with one outcome is not a policy."""
    with pytest.raises(InvalidArgument) as info:
        pgops.ack(on_failure=policy)
    assert info.value.argument == "on_failure"
    assert "one outcome" in str(info.value)


def test_settling_with_an_action_class_is_refused_at_call_time(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn, subscribe: Subscribe
) -> None:
    """#14 item 6: message.settle(Delete) raises InvalidArgument; the consumer goes on.

    Before, the class was queued and broke the acknowledger's flush later.
    """
    pgmq.send(pgmq_queue, {"id": 1})
    sink = subscribe(source_of(pgmq_dsn, pgmq_queue))
    (message,) = sink.collect(1)
    assert isinstance(message, Message)
    with pytest.raises(InvalidArgument) as info:
        message.settle(Delete)  # type: ignore[arg-type]
    assert info.value.argument == "action"
    assert message.settle(Delete()).result(WAIT) == "acked"
    assert count(db, pgmq_queue) == 0
    assert not sink.errors


# -- item 8: input checks before any SQL ------------------------------------------------


def test_a_bool_flag_must_be_a_real_bool(pgmq: PGMQ, pgmq_dsn: str, pgmq_queue: str) -> None:
    """#14 item 8: create_queue(unlogged="false") raises InvalidArgument; nothing is created.

    Before, the truthy string created an UNLOGGED queue.
    """
    name = f"{pgmq_queue}_flag"
    with pytest.raises(InvalidArgument) as info:
        pgmq.create_queue(name, unlogged="false")  # type: ignore[arg-type]
    assert info.value.argument == "unlogged"
    assert not pgmq.queue_exists(name)
    with pytest.raises(InvalidArgument) as info:
        source_of(pgmq_dsn, pgmq_queue).pipe(
            pgops.pausable(Subject(), start_paused=1)  # type: ignore[arg-type]
        )
    assert info.value.argument == "start_paused"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"body": {1: "a", "1": "b"}}, "body"),
        ({"body": [{"ok": {None: 1}}]}, "body"),
        ({"body": {"x": {2.5: 1, True: 2}}}, "body"),
        ({"body": {}, "headers": {"trace": {7: "x"}}}, "headers"),
    ],
)
def test_dict_keys_that_are_not_str_are_refused(
    pgmq: PGMQ, pgmq_queue: str, db: Conn, kwargs: dict[str, Any], argument: str
) -> None:
    """#14 item 8: a non-str dict key raises InvalidArgument naming the argument; nothing sent.

    Before, JSON turned 1 into "1" and {1: 'a', '1': 'b'} was stored with one value.
    """
    with pytest.raises(InvalidArgument) as info:
        pgmq.send(pgmq_queue, **kwargs)
    assert info.value.argument == argument
    assert "keys must be str" in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        pgmq.send_batch(pgmq_queue, [{"fine": 1}, kwargs["body"]], [None, kwargs.get("headers")])
    assert info.value.argument in ("bodies[1]", "headers[1]")
    assert count(db, pgmq_queue) == 0


def test_string_keys_that_look_like_numbers_are_kept(pgmq: PGMQ, pgmq_queue: str) -> None:
    """#14 item 8: str keys such as "1", "true" or "null" are fine and stored as given."""
    body = {"1": "a", "true": [{"null": 2.5}], "x": '"1":'}
    pgmq.send(pgmq_queue, body, headers={"2": "h"})
    (message,) = pgmq.read(pgmq_queue, 30)
    assert (message.body, message.headers) == (body, {"2": "h"})


def test_a_body_over_the_jsonb_limit_is_refused_before_sending(
    pgmq: PGMQ, pgmq_queue: str, db: Conn
) -> None:
    """#14 item 8: a body over jsonb's 255 MB is refused with InvalidArgument before sending.

    Before, the client sent it for many seconds and got a raw psycopg error.
    """
    body = "x" * JSONB_LIMIT  # plus its two quotes: 2 bytes over the limit
    started = time.monotonic()
    with pytest.raises(InvalidArgument) as info:
        pgmq.send(pgmq_queue, body)
    elapsed = time.monotonic() - started
    assert info.value.argument == "body"
    assert "255 MB" in str(info.value)
    assert elapsed < 10.0, elapsed  # encoding only, no transfer (under 2 s when idle)
    assert count(db, pgmq_queue) == 0


def test_install_pgmq_of_none_is_an_invalid_argument() -> None:
    """#14 item 8: install_pgmq(None) raises InvalidArgument, not AttributeError."""
    for bad in (None, "", 42):
        with pytest.raises(InvalidArgument) as info:
            install_pgmq(bad)  # type: ignore[arg-type]
        assert info.value.argument == "conninfo"


# -- item 7: undecodable messages fail one at a time -------------------------------------

DEEP = "[" * 5000 + "]" * 5000  # valid jsonb, deeper than Python's recursion limit
LONG = "1" * 5001  # valid jsonb, more digits than Python's int conversion allows


def _send_raw(db: Conn, queue: str, body: str, headers: str | None = None) -> int:
    """Send JSON text as is (the client refuses what it cannot encode itself)."""
    row = db.execute(
        "SELECT * FROM pgmq.send(%s, %s::jsonb, %s::jsonb)", (queue, body, headers)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _stored(
    db: Conn, queue: str, prefix: Literal["q", "a"] = "q"
) -> list[tuple[int, int, str, str | None]]:
    """(msg_id, read_ct, body text, headers text) of every row, by msg_id."""
    query = sql.SQL(
        "SELECT msg_id, read_ct, message::text, headers::text FROM {} ORDER BY msg_id"
    ).format(table(queue, prefix))
    return [(int(r[0]), int(r[1]), r[2], r[3]) for r in db.execute(query).fetchall()]


@pytest.fixture
def dlq(pgmq: PGMQ, pgmq_queue: str) -> Iterator[str]:
    """A second fresh queue for MoveTo, dropped after the test."""
    name = f"{pgmq_queue}_dlq"
    pgmq.create_queue(name)
    yield name
    pgmq.drop_queue(name)


def test_undecodable_messages_fail_alone_and_are_archived(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn, subscribe: Subscribe
) -> None:
    """#14 item 7: in one batch, a 5,000-deep array, a 5,001-digit number and headers that
    are not an object each become a failed Outcome with a DecodeError naming the message,
    without calling the handler; the default policy archives them, the good messages of
    the same batch are processed and deleted, and the stream goes on.

    Before, the read raised and the whole stream ended with a RecursionError.
    """
    good1 = pgmq.send(pgmq_queue, {"ok": 1})
    deep = _send_raw(db, pgmq_queue, DEEP)
    long = _send_raw(db, pgmq_queue, f'{{"n": {LONG}}}')
    heads = _send_raw(db, pgmq_queue, '{"ok": 2}', '["not", "an", "object"]')
    good2 = pgmq.send(pgmq_queue, {"ok": 3}, headers={"h": 1})
    handled: list[int] = []

    def handle(m: Message) -> str:
        handled.append(m.msg_id)
        return "done"

    sink = subscribe(
        source_of(pgmq_dsn, pgmq_queue, batch_size=10).pipe(pgops.process(handle), pgops.ack())
    )
    records = {r.message.msg_id: r for r in sink.collect(5)}
    assert sorted(handled) == [good1, good2]
    assert all(records[i].ok and records[i].action == Delete() for i in (good1, good2))
    for msg_id, part in ((deep, "body"), (long, "body"), (heads, "headers")):
        record = records[msg_id]
        assert not record.ok and record.action == Archive() and record.acked
        error = record.error
        assert isinstance(error, DecodeError) and record.message.decode_error is error
        assert (error.msg_id, error.queue, error.part) == (msg_id, pgmq_queue, part)
        assert str(msg_id) in str(error)
        assert record.message.body is None and record.message.headers is None
    assert "RecursionError" in records[deep].error.detail  # type: ignore[union-attr]
    assert "digits" in records[long].error.detail  # type: ignore[union-attr]
    assert "JSON object" in records[heads].error.detail  # type: ignore[union-attr]
    assert _stored(db, pgmq_queue) == []
    assert [r[0] for r in _stored(db, pgmq_queue, "a")] == [deep, long, heads]
    assert not sink.errors


def test_undecodable_messages_follow_max_attempts_and_move_intact(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, dlq: str, db: Conn, subscribe: Subscribe
) -> None:
    """#14 item 7: max_attempts(2, then=MoveTo(dlq)) applies to undecodable messages: the
    first read leaves them (Nothing), the second moves them; the copy holds the body exactly
    as stored, and headers that are not an object are kept under
    "x-rx-pgmq-original-headers" next to "x-rx-pgmq-moved".

    Before, the read failed the stream (and MoveTo with array headers killed the acker).
    """
    deep = _send_raw(db, pgmq_queue, DEEP, '{"trace": "t1"}')
    heads = _send_raw(db, pgmq_queue, '{"ok": 2}', "[1, 2]")
    sink = subscribe(
        source_of(pgmq_dsn, pgmq_queue, visibility_timeout=1).pipe(
            pgops.process(lambda m: None),
            pgops.ack(on_failure=pgops.max_attempts(2, then=MoveTo(dlq))),
        )
    )
    records = sink.collect(4, timeout=WAIT + 5)
    assert [(r.message.read_ct, type(r.action).__name__) for r in records] == [
        (1, "Nothing"),
        (1, "Nothing"),
        (2, "MoveTo"),
        (2, "MoveTo"),
    ]
    assert _stored(db, pgmq_queue) == []
    copies = _stored(db, dlq)
    assert sorted(r[2] for r in copies) == sorted([DEEP, '{"ok": 2}'])
    by_body = {r[2]: json.loads(r[3] or "null") for r in copies}
    reason = records[2].reason
    assert reason is not None and "cannot be decoded" in reason
    assert by_body[DEEP]["trace"] == "t1"
    assert by_body[DEEP][MOVED]["from"] == pgmq_queue
    assert by_body['{"ok": 2}']["x-rx-pgmq-original-headers"] == [1, 2]
    assert by_body['{"ok": 2}'][MOVED]["attempts"] == 2
    assert {deep, heads} == {r.message.msg_id for r in records}
    assert not sink.errors


def test_client_read_raises_a_decode_error_naming_the_message(
    pgmq: PGMQ, pgmq_queue: str, db: Conn
) -> None:
    """#14 item 7: PGMQ.read (and pop, set_vt to seconds or a datetime, the FIFO reads) raise
    DecodeError naming the msg_id, not a raw RecursionError/ValueError; the statement is
    rolled back, so nothing was claimed.
    """
    good = pgmq.send(pgmq_queue, {"ok": 1})
    bad = _send_raw(db, pgmq_queue, DEEP)
    calls: list[Callable[[], object]] = [
        lambda: pgmq.read(pgmq_queue, 30, qty=5),
        lambda: pgmq.pop(pgmq_queue, 5),
        lambda: pgmq.set_vt(pgmq_queue, [good, bad], 0),
        lambda: pgmq.set_vt(pgmq_queue, [good, bad], dt.datetime.now(dt.UTC)),
        lambda: pgmq.read_grouped(pgmq_queue, 30, qty=5),
        lambda: pgmq.read_grouped_rr(pgmq_queue, 30, qty=5),
    ]
    for call in calls:
        with pytest.raises(DecodeError) as info:
            call()
        assert (info.value.msg_id, info.value.part) == (bad, "body")
        assert f"message {bad} " in str(info.value)
        assert [r[:2] for r in _stored(db, pgmq_queue)] == [(good, 0), (bad, 0)]
    assert pgmq.archive(pgmq_queue, bad)
    assert [m.body for m in pgmq.read(pgmq_queue, 30, qty=5)] == [{"ok": 1}]


def test_an_error_in_the_acknowledger_ends_the_stream(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn, subscribe: Subscribe
) -> None:
    """#14 item 7: an unexpected exception in the acknowledger thread reaches on_error (the
    consumer stops and releases what it holds) instead of killing the thread in silence.

    The fault: a settle request with something that is not an action, made through the
    Acknowledger protocol directly (Message.settle refuses it).
    """
    pgmq.send_batch(pgmq_queue, [{"i": 1}, {"i": 2}])
    sink = subscribe(source_of(pgmq_dsn, pgmq_queue))
    first, _second = sink.collect(2)
    acknowledger = first._acknowledger
    assert acknowledger is not None
    acknowledger.settle(first, "delete")  # type: ignore[arg-type]
    assert sink.wait_error(), "the acknowledger's failure never reached on_error"
    assert isinstance(sink.errors[0], TypeError)
    assert wait_until(lambda: count(db, pgmq_queue, "vt <= clock_timestamp()") == 2)


def test_peek_shows_an_undecodable_message_instead_of_failing(
    pgmq: PGMQ, pgmq_queue: str, db: Conn
) -> None:
    """#14 item 7: jupyter.peek_messages shows an undecodable message with decode_error set
    (body None) next to the good ones, instead of raising RecursionError."""
    good = pgmq.send(pgmq_queue, {"ok": 1}, headers={"h": 1})
    bad = _send_raw(db, pgmq_queue, DEEP)
    first, second = peek_messages(pgmq, pgmq_queue)
    assert (first.msg_id, first.body, first.headers, first.decode_error) == (
        good,
        {"ok": 1},
        {"h": 1},
        None,
    )
    assert second.msg_id == bad and second.body is None
    assert isinstance(second.decode_error, DecodeError) and second.decode_error.msg_id == bad
