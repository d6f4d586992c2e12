"""Ack operators end to end on a real PostgreSQL with PGMQ (the seed's producer scenarios).

Each test runs ``read_queue(...).pipe(process(fn), ack(...))`` against the session's test
database and checks the queue table ``pgmq.q_<queue>`` and the archive ``pgmq.a_<queue>``
directly. ``Settled`` records are emitted only after the acknowledgement committed, so the
tables can be checked as soon as the records arrived.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import psycopg
import pytest
from _support import WAIT, Sink, Subscribe, source_of, table, wait_until
from psycopg import sql
from psycopg.conninfo import make_conninfo
from reactivex import operators as ops

import rx_pgmq
from rx_pgmq import Message, Outcome, ReadOptions, Settled, failed
from rx_pgmq import operators as pgops
from rx_pgmq.actions import Archive, Delete, MoveTo, Nothing, SetVisibilityTimeout
from rx_pgmq.client import PGMQ

MOVED = "x-rx-pgmq-moved"


# -- helpers ----------------------------------------------------------------------------


def source(dsn: str, queue: str, **kwargs: Any) -> rx_pgmq.QueueSource:
    """A consumer polling every 100 ms (30 s visibility timeout) unless told otherwise."""
    kwargs.setdefault("read_interval", 0.1)
    return source_of(dsn, queue, **kwargs)


def rows(dsn: str, queue: str, prefix: Literal["q", "a"] = "q") -> list[dict[str, Any]]:
    """Every row of the queue table or its archive, visible or not, by msg_id."""
    query = sql.SQL("SELECT msg_id, read_ct, message, headers FROM {} ORDER BY msg_id").format(
        table(queue, prefix)
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            {"msg_id": r[0], "read_ct": r[1], "body": r[2], "headers": r[3]}
            for r in conn.execute(query).fetchall()
        ]


def always_fail(message: Message) -> None:
    raise ValueError(f"cannot handle {message.body}")


@pytest.fixture
def other_queue(pgmq: PGMQ) -> Iterator[str]:
    """A second fresh queue (e.g. a dead-letter queue), dropped after the test."""
    name = f"t_dlq_{uuid.uuid4().hex[:10]}"
    pgmq.create_queue(name)
    yield name
    pgmq.drop_queue(name)


# -- the seed's scenarios ------------------------------------------------------------------


def test_a_success_is_deleted_and_not_archived(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """ack() deletes a successfully processed message; nothing reaches the archive."""
    msg_id = pgmq.send(pgmq_queue, {"id": 1})
    records = subscribe(
        source(pgmq_dsn, pgmq_queue).pipe(pgops.process(lambda m: "ok"), pgops.ack())
    )
    (record,) = records.collect(1)
    assert (record.message.msg_id, record.ok, record.action, record.status) == (
        msg_id,
        True,
        Delete(),
        "acked",
    )
    assert rows(pgmq_dsn, pgmq_queue) == [] and rows(pgmq_dsn, pgmq_queue, "a") == []


def test_a_success_overridden_to_archive_ends_in_the_archive(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """outcome.with_ack(Archive()) wins over on_success=Delete(): the row is archived."""
    msg_id = pgmq.send(pgmq_queue, {"id": 2})

    def archive_it(outcome: Outcome) -> Outcome:
        return outcome.with_ack(Archive())

    pipeline = source(pgmq_dsn, pgmq_queue).pipe(
        pgops.process(lambda m: None),
        ops.map(archive_it),
        pgops.ack(on_success=Delete()),
    )
    (record,) = subscribe(pipeline).collect(1)
    assert record.ok and record.action == Archive() and record.acked
    assert rows(pgmq_dsn, pgmq_queue) == []
    assert [r["msg_id"] for r in rows(pgmq_dsn, pgmq_queue, "a")] == [msg_id]


def test_a_failure_with_the_defaults_is_archived(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """A handler exception becomes a failure, archived by ack()'s default on_failure."""
    msg_id = pgmq.send(pgmq_queue, {"id": 3})
    records = subscribe(source(pgmq_dsn, pgmq_queue).pipe(pgops.process(always_fail), pgops.ack()))
    (record,) = records.collect(1)
    assert not record.ok and isinstance(record.error, ValueError)
    assert record.action == Archive() and record.acked
    assert rows(pgmq_dsn, pgmq_queue) == []
    archived = rows(pgmq_dsn, pgmq_queue, "a")
    assert [(r["msg_id"], r["read_ct"], r["body"]) for r in archived] == [(msg_id, 1, {"id": 3})]


def test_nothing_lets_the_message_reappear_after_its_visibility_timeout(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """on_failure=Nothing() leaves the message; it is read again after vt=1 with read_ct 2."""
    msg_id = pgmq.send(pgmq_queue, {"id": 4})
    seen: list[tuple[int, float]] = []

    def handle(m: Message) -> None:
        seen.append((m.read_ct, time.monotonic()))
        raise RuntimeError("try again later")

    pipeline = source(pgmq_dsn, pgmq_queue, visibility_timeout=1).pipe(
        pgops.process(handle), pgops.ack(on_failure=Nothing())
    )
    first, second = subscribe(pipeline).collect(2)[:2]
    assert first.action == Nothing() and first.acked
    assert (second.message.msg_id, second.message.read_ct) == (msg_id, 2)
    assert [r for r, _ in seen[:2]] == [1, 2]
    assert seen[1][1] - seen[0][1] >= 0.8  # not before the 1 s visibility timeout
    assert rows(pgmq_dsn, pgmq_queue, "a") == []


def test_set_visibility_timeout_retries_after_that_many_seconds(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """SetVisibilityTimeout(2) hides a failed message ~2 s (not < 1.5 s), then it is retried;
    the retry succeeds and is deleted."""
    pgmq.send(pgmq_queue, {"id": 5})
    seen: list[float] = []

    def handle(m: Message) -> str:
        seen.append(time.monotonic())
        if m.read_ct == 1:
            raise RuntimeError("flaky")
        return "done"

    pipeline = source(pgmq_dsn, pgmq_queue).pipe(
        pgops.process(handle), pgops.ack(on_failure=SetVisibilityTimeout(2))
    )
    first, second = subscribe(pipeline).collect(2)[:2]
    assert (first.ok, first.action, first.status) == (False, SetVisibilityTimeout(2), "acked")
    assert (second.ok, second.message.read_ct, second.action) == (True, 2, Delete())
    assert 1.5 <= seen[1] - seen[0] <= 2.0 + 6.0  # generous upper margin for a busy machine
    assert rows(pgmq_dsn, pgmq_queue) == []


def test_max_attempts_archives_on_the_third_failure(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """max_attempts(3): Nothing after reads 1 and 2, Archive after read 3 (read_ct 3 kept)."""
    msg_id = pgmq.send(pgmq_queue, {"id": 6})
    pipeline = source(pgmq_dsn, pgmq_queue, visibility_timeout=1).pipe(
        pgops.process(always_fail), pgops.ack(on_failure=pgops.max_attempts(3))
    )
    records = subscribe(pipeline).collect(3)[:3]
    assert [(r.message.read_ct, r.action) for r in records] == [
        (1, Nothing()),
        (2, Nothing()),
        (3, Archive()),
    ]
    assert rows(pgmq_dsn, pgmq_queue) == []
    assert [(r["msg_id"], r["read_ct"]) for r in rows(pgmq_dsn, pgmq_queue, "a")] == [(msg_id, 3)]


def test_move_to_sends_to_the_destination_with_the_reason_and_deletes_here(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, other_queue: str, subscribe: Subscribe
) -> None:
    """MoveTo(dlq): the copy keeps body and headers and gains x-rx-pgmq-moved (source,
    reason, attempts); the source queue and its archive are empty."""
    pgmq.send(pgmq_queue, {"id": 7}, headers={"trace": "abc"})

    def handle(m: Message) -> None:
        raise ValueError("card declined")

    pipeline = source(pgmq_dsn, pgmq_queue).pipe(
        pgops.process(handle), pgops.ack(on_failure=MoveTo(other_queue))
    )
    (record,) = subscribe(pipeline).collect(1)
    assert record.action == MoveTo(other_queue) and record.acked
    (moved,) = rows(pgmq_dsn, other_queue)
    assert moved["body"] == {"id": 7}
    assert moved["headers"] == {
        "trace": "abc",
        MOVED: {"from": pgmq_queue, "reason": "card declined", "attempts": 1},
    }
    assert rows(pgmq_dsn, pgmq_queue) == [] and rows(pgmq_dsn, pgmq_queue, "a") == []


def test_a_move_to_a_missing_queue_fails_alone(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, other_queue: str, subscribe: Subscribe
) -> None:
    """Two moves in one flush, the second to a queue that does not exist: the first lands
    in its destination and leaves the source; the second stays in the source queue, is
    not copied anywhere, and is reported "unacked"."""
    ids = pgmq.send_batch(pgmq_queue, [{"to": "dlq"}, {"to": "missing"}])
    missing = f"t_missing_{uuid.uuid4().hex[:8]}"

    def handle(m: Message) -> Outcome:
        dest = other_queue if m.body["to"] == "dlq" else missing
        return failed(m, "route").with_ack(MoveTo(dest))

    # Both settle requests land in one flush: batch by size 2, never by age or starvation.
    src = source(pgmq_dsn, pgmq_queue, batch_size=2, ack_batch_size=2, ack_max_age=5.0)
    records = subscribe(src.pipe(pgops.process(handle), pgops.ack())).collect(2)
    assert sorted((r.message.msg_id, r.status) for r in records) == [
        (ids[0], "acked"),
        (ids[1], "unacked"),
    ]
    assert [r["body"] for r in rows(pgmq_dsn, other_queue)] == [{"to": "dlq"}]
    assert [r["msg_id"] for r in rows(pgmq_dsn, pgmq_queue)] == [ids[1]]
    assert rows(pgmq_dsn, pgmq_queue, "a") == []


def test_a_move_whose_send_fails_applies_nothing_of_its_flush(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, other_queue: str, subscribe: Subscribe
) -> None:
    """Send and delete of a move are one transaction with the rest of the flush: when the
    insert into the destination fails inside the transaction (a trigger raises), the
    message is not deleted from the source, the other ack of the flush (a delete) is
    rolled back too, and both are reported "unacked"."""
    target = table(other_queue)
    fn = sql.Identifier("pgmq", f"poison_{other_queue}")
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.message ? 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; "
                "RETURN NEW; END $$"
            ).format(fn=fn)
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER poison BEFORE INSERT ON {target}"
                " FOR EACH ROW EXECUTE FUNCTION {fn}()"
            ).format(target=target, fn=fn)
        )
    try:
        ids = pgmq.send_batch(pgmq_queue, [{"poison": True}, {"ok": True}])

        def handle(m: Message) -> Outcome:
            if "poison" in m.body:
                return failed(m, "route").with_ack(MoveTo(other_queue))
            return rx_pgmq.succeeded(m)

        src = source(pgmq_dsn, pgmq_queue, batch_size=2, ack_batch_size=2, ack_max_age=5.0)
        records = subscribe(src.pipe(pgops.process(handle), pgops.ack())).collect(2)
        assert sorted((r.message.msg_id, r.status) for r in records) == [
            (ids[0], "unacked"),
            (ids[1], "unacked"),
        ]
        assert rows(pgmq_dsn, other_queue) == []
        assert [r["msg_id"] for r in rows(pgmq_dsn, pgmq_queue)] == ids
    finally:
        with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS poison ON {}").format(target))
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(fn))


# -- beyond the seed -----------------------------------------------------------------------


def test_thousand_successes_settle_in_about_n_over_batch_size_delete_statements(
    pgmq_dsn: str,
) -> None:
    """1,000 successes cost <= 1000/batch_size + 5 delete statements (counted by the server
    in pg_stat_statements), one per committed flush.

    Runs in a database of its own so no other client's statements are counted."""
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        row = conn.execute("SHOW shared_preload_libraries").fetchone()
        if row is None or "pg_stat_statements" not in row[0]:
            pytest.skip(f"needs pg_stat_statements preloaded to count statements (has {row})")
        name = f"rx_pgmq_rt_{uuid.uuid4().hex[:10]}"
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege as exc:
            pytest.skip(f"needs CREATEDB for an isolated database: {exc}")
    dsn = make_conninfo(pgmq_dsn, dbname=name)
    try:
        rx_pgmq.install_pgmq(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        _count_round_trips(dsn, name)
    finally:
        with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _delete_statements(conn: psycopg.Connection[Any], db: str) -> int:
    """Executions of a delete from queue ``rt`` in database ``db`` (the consumer's inline
    statement, or ``pgmq.delete``'s if it ever goes back to calling the function)."""
    row = conn.execute(
        "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s"
        " JOIN pg_database d ON d.oid = s.dbid"
        ' WHERE d.datname = %s AND (s.query LIKE \'DELETE FROM "pgmq"."q_rt"%%\''
        " OR s.query LIKE 'SELECT%%pgmq.delete(%%')",
        (db,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _count_round_trips(dsn: str, db: str) -> None:
    n, batch = 1000, 100
    with PGMQ(dsn) as client:
        client.create_queue("rt")
        for start in range(0, n, 250):
            client.send_batch("rt", [{"i": i} for i in range(start, start + 250)])
    src = source(dsn, "rt", batch_size=batch, max_in_flight=2 * batch)
    records = Sink[Settled]()
    sub = src.pipe(pgops.process(lambda m: None), pgops.ack()).subscribe(records)
    try:
        got = records.collect(n, timeout=60)
    finally:
        sub.dispose()
    assert len(got) == n and all(r.acked and r.action == Delete() for r in got)
    flushes = src.stats.ack_flushes
    with psycopg.connect(dsn, autocommit=True) as conn:
        deletes = _delete_statements(conn, db)
        left = conn.execute("SELECT count(*) FROM pgmq.q_rt").fetchone()
    print(f"1000 successes: {deletes} delete statements, {flushes} ack flushes")
    assert left == (0,)
    assert 1 <= deletes <= n // batch + 5
    assert deletes == flushes


def test_the_visibility_heartbeat_keeps_slow_work_from_other_consumers(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """extend_visibility=True with vt=2 and 5 s of work: a competing reader never gets the
    message, its read_ct stays 1, and the heartbeat extended it; then it is deleted."""
    msg_id = pgmq.send(pgmq_queue, {"id": 9})
    started, finish = threading.Event(), threading.Event()

    def handle(m: Message) -> str:
        started.set()
        finish.wait(WAIT)
        return "slow but done"

    src = source(pgmq_dsn, pgmq_queue, visibility_timeout=2, extend_visibility=True)
    records = subscribe(src.pipe(pgops.process(handle), pgops.ack()))
    assert started.wait(WAIT)
    stolen: list[Message] = []
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:  # a competing consumer polls every 250 ms for 5 s
        stolen += pgmq.read(pgmq_queue, vt=30, qty=1)
        threading.Event().wait(0.25)
    read_cts = [r["read_ct"] for r in rows(pgmq_dsn, pgmq_queue)]
    finish.set()
    (record,) = records.collect(1)
    assert stolen == []
    assert read_cts == [1]
    assert (record.message.msg_id, record.action, record.status) == (msg_id, Delete(), "acked")
    assert src.stats.extended >= 2
    assert rows(pgmq_dsn, pgmq_queue) == []


def test_delete_on_read_acks_are_ignored_with_one_warning_per_subscription(
    pgmq_dsn: str,
    pgmq: PGMQ,
    pgmq_queue: str,
    subscribe: Subscribe,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A delete-on-read consumer: ack() sends no SQL (no flush), every record is "ignored",
    and each subscription (two, one after the other) logs exactly one warning."""
    src = source(pgmq_dsn, pgmq_queue, read_options=ReadOptions(delete_on_read=True))
    with caplog.at_level(logging.WARNING, logger="rx_pgmq"):
        pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(3)])
        records = Sink[Settled]()
        sub = src.pipe(pgops.process(always_fail), pgops.ack()).subscribe(records)
        try:
            first = records.collect(3)
        finally:
            sub.dispose()  # else it would compete for the next messages
        pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(3, 5)])
        second = subscribe(src.pipe(pgops.process(lambda m: None), pgops.ack())).collect(2)
    assert [r.status for r in first + second] == ["ignored"] * 5
    assert [r.action for r in first] == [Archive()] * 3
    warnings = [
        r
        for r in caplog.records
        if r.name == "rx_pgmq" and r.levelno == logging.WARNING and "ignored" in r.getMessage()
    ]
    assert len(warnings) == 2, [w.getMessage() for w in warnings]
    assert src.stats.ack_flushes == 0
    assert rows(pgmq_dsn, pgmq_queue) == [] and rows(pgmq_dsn, pgmq_queue, "a") == []


def test_demand_bounds_concurrent_processing(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """process(max_concurrency=8) on a consumer with max_in_flight=3 never runs more than 3
    handlers at once (a message's room returns only once it is settled); all 12 are acked."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(12)])
    lock = threading.Lock()
    running = peak = 0

    def handle(m: Message) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        threading.Event().wait(0.05)
        with lock:
            running -= 1

    src = source(pgmq_dsn, pgmq_queue, max_in_flight=3)
    records = subscribe(src.pipe(pgops.process(handle, max_concurrency=8), pgops.ack())).collect(12)
    assert all(r.acked for r in records) and len({r.message.msg_id for r in records}) == 12
    assert 1 <= peak <= 3
    assert rows(pgmq_dsn, pgmq_queue) == []


def test_take_before_ack_completes_once_its_acks_committed(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str
) -> None:
    """take(2) upstream of ack(): on_completed comes after both Settled records (the acks
    are flushed as the consumer closes); the other messages read with them are released."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(6)])
    records = Sink[Settled]()
    completed = threading.Event()
    src = source(pgmq_dsn, pgmq_queue, batch_size=6)
    pipeline = src.pipe(ops.take(2), pgops.process(lambda m: None), pgops.ack())
    sub = pipeline.subscribe(records.on_next, records.on_error, completed.set)
    try:
        assert completed.wait(WAIT)
        assert [r.status for r in records.collect(2)] == ["acked", "acked"]
    finally:
        sub.dispose()
    assert [r["read_ct"] for r in rows(pgmq_dsn, pgmq_queue)] == [1] * 4
    # take() disposed the consumer from its own reader thread, so that dispose could not
    # wait: the release of the other 4 finishes on the reader thread right after.
    assert wait_until(lambda: pgmq.metrics(pgmq_queue).queue_visible_length == 4)
