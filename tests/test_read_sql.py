"""The consumer's read statements on a real PostgreSQL: inline reads behave like
``pgmq.read``, and non-durable reads turn ``synchronous_commit`` off for their own
transaction only."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg
import pytest
from _support import WAIT, Conn, Sink, Subscribe, count, source_of, table, wait_until, watch
from psycopg import sql
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

import rx_pgmq
from rx_pgmq._pg import _sql
from rx_pgmq._values._options import ReadOptions
from rx_pgmq.errors import InvalidArgument

VT = 30


def _read_fn(db: Conn, queue: str, qty: int) -> list[tuple[Any, ...]]:
    return db.execute(_sql.READ, (queue, VT, qty, "{}")).fetchall()


def _read_inline(
    db: Conn, queue: str, qty: int, *, durable: bool, literal: bool = False
) -> list[tuple[Any, ...]]:
    if literal:  # the batch-size form: size and timeout written into the statement
        stmt = _sql.read_inline(queue, durable=durable, qty=qty, vt=VT)
        return db.execute(stmt).fetchall()
    return db.execute(_sql.read_inline(queue, durable=durable), (qty, VT)).fetchall()


def _synchronous_commit(db: Conn) -> str:
    row = db.execute("SHOW synchronous_commit").fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("literal", [False, True], ids=["parameters", "literals"])
@pytest.mark.parametrize("durable", [True, False])
def test_inline_read_takes_the_oldest_visible_messages_like_pgmq_read(
    db: Conn, pgmq: rx_pgmq.PGMQ, pgmq_queue: str, durable: bool, literal: bool
) -> None:
    """Inline reads (with size and timeout as parameters or written in) return the lowest
    visible msg_ids, bump read_ct and vt like pgmq.read, and leave hidden messages alone;
    the function and the inline read alternate."""
    ids = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(7)])
    hidden = pgmq.send(pgmq_queue, {"i": "later"}, delay=60)
    first = _read_inline(db, pgmq_queue, 3, durable=durable, literal=literal)
    second = _read_fn(db, pgmq_queue, 2)
    third = _read_inline(db, pgmq_queue, 10, durable=durable, literal=literal)
    assert sorted(r[0] for r in first) == ids[:3]
    assert sorted(r[0] for r in second) == ids[3:5]
    assert sorted(r[0] for r in third) == ids[5:]  # not the delayed one
    for row in first + third:
        assert row[1] == 1  # read_ct
        assert row[3] is not None  # last_read_at
        assert 25 < (row[4] - row[3]).total_seconds() <= VT + 1  # vt = now + VT
        assert json.loads(row[5]) == {"i": ids.index(row[0])} and row[6] is None  # JSON text
        assert len(row) == (7 if durable else 8)
    assert _read_inline(db, pgmq_queue, 10, durable=durable) == []
    hidden_row = db.execute(
        "SELECT read_ct FROM pgmq.q_" + pgmq_queue + " WHERE msg_id = %s", (hidden,)
    ).fetchone()
    assert hidden_row == (0,)


def test_inline_read_skips_messages_locked_by_another_transaction(
    pgmq_dsn: str, db: Conn, pgmq: rx_pgmq.PGMQ, pgmq_queue: str
) -> None:
    """Like pgmq.read (FOR UPDATE SKIP LOCKED), an inline read passes over rows another
    transaction holds instead of waiting for it."""
    ids = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(4)])
    with psycopg.connect(pgmq_dsn) as other:  # a transaction holding the first two rows
        other.execute(
            "SELECT msg_id FROM pgmq.q_" + pgmq_queue + " WHERE msg_id = ANY(%s) FOR UPDATE",
            (ids[:2],),
        )
        db.execute("SET lock_timeout = '2s'")  # would fail instead of skipping
        got = _read_inline(db, pgmq_queue, 10, durable=False)
        other.rollback()
    assert sorted(r[0] for r in got) == ids[2:]


def test_non_durable_read_commits_with_synchronous_commit_off_for_that_transaction_only(
    db: Conn, pgmq: rx_pgmq.PGMQ, pgmq_queue: str
) -> None:
    """Each row of a non-durable read reports synchronous_commit switched off inside its
    transaction; the session keeps its own setting afterwards; durable reads change nothing."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(4)])
    db.execute("SET synchronous_commit = 'remote_apply'")  # whatever the server's default
    before = _synchronous_commit(db)
    assert before == "remote_apply"
    rows = _read_inline(db, pgmq_queue, 2, durable=False)
    assert [r[7] for r in rows] == ["off", "off"]
    assert _synchronous_commit(db) == before
    stmt = _sql.select_messages(_sql.READ_CALL, durable=False)
    rows = db.execute(stmt, (pgmq_queue, VT, 1, "{}")).fetchall()
    assert [r[7] for r in rows] == ["off"]
    assert _synchronous_commit(db) == before
    durable = _read_inline(db, pgmq_queue, 1, durable=True)
    assert len(durable) == 1 and len(durable[0]) == 7
    assert _synchronous_commit(db) == before


def test_non_durable_function_reads_keep_conditional_and_fifo_semantics(
    db: Conn, pgmq: rx_pgmq.PGMQ, pgmq_queue: str
) -> None:
    """A conditional read wrapped non-durably still filters; a grouped FIFO read still
    returns one group's head first."""
    pgmq.send_batch(pgmq_queue, [{"kind": "a"}, {"kind": "b"}, {"kind": "a"}])
    stmt = _sql.select_messages(_sql.READ_CALL, durable=False)
    rows = db.execute(stmt, (pgmq_queue, VT, 10, '{"kind": "b"}')).fetchall()
    assert [json.loads(r[5]) for r in rows] == [{"kind": "b"}]
    fifo = _sql.read_grouped("grouped", poll=False, durable=False)
    rows = db.execute(fifo, (pgmq_queue, VT, 10)).fetchall()
    assert [json.loads(r[5]) for r in rows] == [{"kind": "a"}, {"kind": "a"}]
    assert all(r[7] == "off" for r in rows)


def test_durable_reads_must_be_a_bool() -> None:
    """ReadOptions(durable_reads=...) refuses anything but a bool, naming the argument."""
    with pytest.raises(InvalidArgument, match="durable_reads"):
        ReadOptions(durable_reads="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "inline", "waits"),
    [
        (ReadOptions(), True, False),
        (ReadOptions(durable_reads=True), True, True),
        (ReadOptions(conditional={"k": 1}), False, False),
        (ReadOptions(fifo="grouped_rr"), False, False),
        (ReadOptions(delete_on_read=True), False, True),
        (ReadOptions(delete_on_read=True, durable_reads=False), False, True),
    ],
)
def test_consumer_picks_inline_reads_and_never_skips_the_flush_for_pops(
    pgmq_dsn: str,
    pgmq_queue: str,
    subscribe: Subscribe,
    options: ReadOptions,
    inline: bool,
    waits: bool,
) -> None:
    """Plain reads run inline; reads skip the WAL-flush wait unless durable_reads, and pops
    always wait; whichever statement is chosen, the consumer delivers a sent message."""
    with rx_pgmq.PGMQ(pgmq_dsn) as client:
        client.send(pgmq_queue, {"k": 1})
    source = source_of(pgmq_dsn, pgmq_queue, read_options=options)
    sink: Sink[rx_pgmq.Message] = subscribe(source, lambda m: m.settle())
    assert [m.body for m in sink.collect(1)] == [{"k": 1}]
    consumers = source.consumers
    assert len(consumers) == 1
    rendered = consumers[0].reader.statement.query.decode()  # the statement is internal
    assert ("UPDATE" in rendered) == inline
    assert ("synchronous_commit" not in rendered) == waits


def test_a_read_the_server_forgot_does_not_deliver_a_held_message_twice(
    pgmq_dsn: str, db: Conn, pgmq: rx_pgmq.PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """After a crash that loses a non-durable read, the row has its earlier read_ct and vt
    again (made here by hand), so the consumer reads the message it still holds with the
    same read_ct. That copy is counted, not emitted; settling the held delivery deletes
    the message and gives its credit back."""
    (msg_id,) = pgmq.send_batch(pgmq_queue, [{"n": 1}])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=5)
    sink: Sink[rx_pgmq.Message] = subscribe(source)  # holds what it gets, settles nothing
    (held,) = sink.collect(1)
    assert (held.msg_id, held.read_ct) == (msg_id, 1)
    db.execute(  # the state a crash leaves when the read's commit never reached the disk
        sql.SQL(
            "UPDATE {} SET read_ct = read_ct - 1, vt = clock_timestamp() WHERE msg_id = %s"
        ).format(table(pgmq_queue)),
        (msg_id,),
    )
    assert wait_until(lambda: source.stats.held_rereads == 1)
    row = db.execute(
        sql.SQL("SELECT read_ct FROM {} WHERE msg_id = %s").format(table(pgmq_queue)), (msg_id,)
    ).fetchone()
    assert row == (1,)  # read again: the same delivery as the one held
    watch()
    assert len(sink.messages) == 1 and source.stats.messages == 1
    assert held.settle().result(WAIT) == "acked"
    assert count(db, pgmq_queue) == 0
    assert wait_until(lambda: source.stats.in_flight == 0)
    (next_id,) = pgmq.send_batch(pgmq_queue, [{"n": 2}])
    assert [m.msg_id for m in sink.collect(2)][1] == next_id


def test_consumer_decodes_bodies_with_the_json_loads_set_for_its_connections(
    pgmq_dsn: str, pgmq: rx_pgmq.PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """The consumer reads bodies and headers as JSON text and decodes them itself, with the
    loads function psycopg's set_json_loads set for its connections (here a pool whose
    connections parse floats as Decimal), else like psycopg's default (json.loads)."""
    text = 'é\u2028 back\\slash "quote"'
    body = {"price": 1.10, "big": 2**70, "text": text, "none": None, "list": [1, 2.5]}
    pgmq.send(pgmq_queue, body, headers={"h": 0.5})
    pgmq.send(pgmq_queue, body, headers=None)
    plain: Sink[rx_pgmq.Message] = subscribe(
        source_of(pgmq_dsn, pgmq_queue, visibility_timeout=1), lambda m: m.release()
    )
    first, second = plain.collect(2)
    assert first.body == body and first.headers == {"h": 0.5}
    assert second.body == body and second.headers is None
    plain.subscription.dispose()

    def decimal_floats(conn: psycopg.Connection[Any]) -> None:
        set_json_loads(partial(json.loads, parse_float=Decimal), conn)

    with ConnectionPool(
        pgmq_dsn, min_size=2, max_size=2, configure=decimal_floats, open=True
    ) as pool:
        decimals: Sink[rx_pgmq.Message] = subscribe(
            source_of(pool, pgmq_queue), lambda m: m.settle()
        )
        got = decimals.collect(2)
        decimals.subscription.dispose()
    assert got[0].body["price"] == Decimal("1.10") and isinstance(got[0].body["price"], Decimal)
    assert got[0].body["big"] == 2**70 and got[0].body["text"] == body["text"]
    assert got[0].body["list"] == [1, Decimal("2.5")]
    assert got[0].headers == {"h": Decimal("0.5")}


@pytest.mark.parametrize("ids", [[1], [3, 1, 2], [2**63 - 1, 1], list(range(1, 1001)), []])
def test_id_array_is_the_bigint_array_postgresql_reads_back(db: Conn, ids: list[int]) -> None:
    """The acknowledger's id literal casts to exactly these bigints, in order, up to the
    largest msg_id."""
    row = db.execute("SELECT %s::bigint[]", (_sql.id_array(ids),)).fetchone()
    assert row == (ids,)


@pytest.mark.parametrize(
    "stmt",
    [
        _sql.read_inline("q_1", durable=False),
        _sql.delete_inline("orders_2"),
        _sql.select_messages(_sql.POP_CALL),
        _sql.READ,
    ],
    ids=["read_inline", "delete_inline", "pop", "plain str"],
)
def test_rendered_statements_are_the_bytes_a_connection_renders(
    db: Conn, stmt: str | sql.Composed
) -> None:
    """Statements rendered once without a connection (the consumer's hot path) are the
    same bytes psycopg renders for a live connection on every execute."""
    on_conn = stmt.encode() if isinstance(stmt, str) else stmt.as_bytes(db)
    assert _sql.rendered(stmt) == on_conn


JSON_VALUES = [
    {"order": 12345, "customer": "c-000042", "items": [1, 2, 3], "note": "x" * 40},
    {"big": 2**70, "neg": -(2**63), "float": 1.5e300, "tiny": 5e-324, "zero": -0.0},
    {"text": 'quote " backslash \\ tab \t newline \n nul-free \u00e9 \u2603 \U0001f600'},
    [None, True, False, [], {}, "", [[{"deep": [1]}]]],
    "just a string",
    42,
    None,
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=lambda v: type(v).__name__)
def test_jsonb_text_from_the_server_decodes_like_json_loads(db: Conn, value: Any) -> None:
    """The consumer's default decoder reads what PostgreSQL prints for a jsonb value (no
    surrounding whitespace: it calls the scanner directly) exactly like json.loads."""
    (text,) = db.execute("SELECT %s::jsonb::text", (json.dumps(value),)).fetchone() or (None,)
    assert isinstance(text, str)
    loads = _sql.json_loads(db)
    assert loads(text) == json.loads(text)
    assert json.dumps(loads(text), sort_keys=True) == json.dumps(json.loads(text), sort_keys=True)


@pytest.mark.parametrize("text", ['  {"a": 1}', '{"a": 1}  ', "[1] [2]", "", "{", "nul"])
def test_the_default_decoder_treats_other_text_like_json_loads(db: Conn, text: str) -> None:
    """Text the server never prints (whitespace around, trailing data, invalid) is decoded
    or rejected exactly as json.loads does, with the same JSONDecodeError."""
    loads = _sql.json_loads(db)
    try:
        expected = json.loads(text)
    except json.JSONDecodeError as exc:
        with pytest.raises(json.JSONDecodeError) as info:
            loads(text)
        assert (info.value.msg, info.value.pos) == (exc.msg, exc.pos)
    else:
        assert loads(text) == expected


def test_read_inline_takes_size_and_timeout_together() -> None:
    """Writing only one of size and timeout into the statement is refused."""
    with pytest.raises(ValueError, match="both"):
        _sql.read_inline("q", durable=True, qty=10)


def test_the_full_batch_read_is_planned_once_and_partial_reads_use_parameters(
    pgmq_dsn: str, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """A plain consumer reads whole batches with the size and timeout written into its
    statement, and reads that the window cuts short with the parameter form; both deliver
    the oldest messages with the consumer's visibility timeout. PostgreSQL reuses one plan
    for the written-in form (a generic plan); whether it re-plans the parameter form on
    every read depends on the table (on a large queue it does), so that is not checked."""
    with rx_pgmq.PGMQ(pgmq_dsn) as client:
        ids = client.send_batch(pgmq_queue, [{"n": i} for i in range(7)])
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=5, max_in_flight=7)
    sink: Sink[rx_pgmq.Message] = subscribe(source)  # holds what it gets
    got = sink.collect(7)
    assert sorted(m.msg_id for m in got) == ids
    for m in got:
        assert m.last_read_at is not None
        assert 25 < (m.vt - m.last_read_at).total_seconds() <= VT + 1
    (consumer,) = source.consumers
    full = consumer.reader.statement.full_query  # internal: the statement of a whole batch
    assert full is not None and b"LIMIT 5\n" in full and b"secs => 30)" in full
    assert b"%s" not in full and b"%s" in consumer.reader.statement.query
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        stmt = _sql.read_inline(pgmq_queue, durable=False, qty=5, vt=VT).as_bytes(conn)
        for _ in range(7):
            conn.execute(stmt, prepare=True).fetchall()
        plans = conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE 'WITH cte AS%%'"
        ).fetchall()
    assert plans == [(7, 0)], "the written-in read reuses one plan, never re-planned"
