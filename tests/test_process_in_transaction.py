"""``pgops.process_in_transaction``: the handler's writes and the ack commit together
(issue #19 item 1), against a real PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _support import Subscribe, count, source_of, table, wait_until
from psycopg import sql
from psycopg_pool import ConnectionPool
from reactivex.subject import Subject

from rx_pgmq import Message, Outcome, ReadOptions, Settled, failed
from rx_pgmq import operators as pgops
from rx_pgmq.actions import Archive, MoveTo, SetVisibilityTimeout
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import InvalidArgument, NotAcknowledgeable
from rx_pgmq.testing import make_message

Conn = psycopg.Connection[Any]


@pytest.fixture
def effects(pgmq_dsn: str) -> Iterator[sql.Identifier]:
    """A user table ``(msg_id bigint, n int)`` the handlers write into, dropped after."""
    name = sql.Identifier(f"effects_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (msg_id bigint, n int)").format(name))
    yield name
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(name))


def _rows(dsn: str, table: sql.Identifier) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(sql.SQL("SELECT msg_id FROM {} ORDER BY msg_id").format(table))
        return [r[0] for r in rows.fetchall()]


def _writer(table: sql.Identifier, fail_on: set[int] | None = None) -> Any:
    def write(message: Message, conn: Conn) -> int:
        n = int(message.body["n"])
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table), (message.msg_id, n))
        if fail_on and n in fail_on:
            raise ValueError(f"message {n} fails after writing")
        return n

    return write


def test_commit_writes_the_effect_and_deletes_the_message_and_ack_reports_it_acked(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, effects: sql.Identifier, subscribe: Subscribe
) -> None:
    """#19 item 1: each success writes one row and deletes its message in one transaction;
    pgops.ack downstream reports acked (action Delete) without settling it a second time,
    and the consumer's window gets the room back (max_in_flight 2 < 20 messages)."""
    ids = pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(20)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=2, batch_size=2)
    sink = subscribe(
        source.pipe(pgops.process_in_transaction(_writer(effects)), pgops.ack(on_success=Archive()))
    )
    records: list[Settled] = sink.collect(20)
    assert sorted(r.message.msg_id for r in records) == sorted(ids)
    assert {(r.status, r.action.name, r.ok) for r in records} == {("acked", "delete", True)}
    assert _rows(pgmq_dsn, effects) == sorted(ids)
    with psycopg.connect(pgmq_dsn) as db:
        assert count(db, pgmq_queue) == 0
        assert count(db, pgmq_queue, prefix="a") == 0  # ack's on_success=Archive() was not applied
    assert wait_until(lambda: source.stats.settled.get("delete") == 20)
    assert source.stats.in_flight == 0


def test_a_raising_handler_rolls_back_its_writes_and_the_failure_policy_settles_it(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, effects: sql.Identifier, subscribe: Subscribe
) -> None:
    """#19 item 1: a handler that wrote then raised leaves no row; its failed Outcome goes
    to pgops.ack's failure policy (Archive), the others commit."""
    ids = pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(6)])
    source = source_of(pgmq_dsn, pgmq_queue)
    sink = subscribe(
        source.pipe(
            pgops.process_in_transaction(_writer(effects, fail_on={1, 4})),
            pgops.ack(on_failure=Archive()),
        )
    )
    records: list[Settled] = sink.collect(6)
    failed_ids = {ids[1], ids[4]}
    assert {r.message.msg_id for r in records if not r.ok} == failed_ids
    assert all(r.status == "acked" for r in records)
    assert _rows(pgmq_dsn, effects) == sorted(set(ids) - failed_ids)
    with psycopg.connect(pgmq_dsn) as db:
        assert count(db, pgmq_queue) == 0
        assert count(db, pgmq_queue, prefix="a") == 2


def test_a_lost_lease_rolls_back_and_reports_lost_lease(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, effects: sql.Identifier, subscribe: Subscribe
) -> None:
    """#19 item 1: when another reader takes the message while the handler runs (vt ran
    out), the fence finds a newer read_ct: the handler's row is rolled back, the outcome
    fails with LeaseLost, ack reports lost_lease, and the message stays for its new
    holder."""
    (msg_id,) = pgmq.send_batch(pgmq_queue, [{"n": 0}])
    write = _writer(effects)

    def slow(message: Message, conn: Conn) -> int:
        result = write(message, conn)
        with PGMQ(pgmq_dsn) as other:  # the lease was lost: another consumer reads it
            pgmq.set_vt(pgmq_queue, message.msg_id, 0)
            assert [m.msg_id for m in other.read(pgmq_queue, vt=30, qty=1)] == [msg_id]
        return int(result)

    sink = subscribe(
        source_of(pgmq_dsn, pgmq_queue).pipe(pgops.process_in_transaction(slow), pgops.ack())
    )
    (record,) = sink.collect(1)
    assert record.status == "lost_lease" and not record.ok
    assert isinstance(record.error, pgops.LeaseLost)
    assert _rows(pgmq_dsn, effects) == []
    with psycopg.connect(pgmq_dsn) as db:
        assert count(db, pgmq_queue) == 1


def _queue_row(dsn: str, queue: str, msg_id: int) -> tuple[int, Any] | None:
    """The message's ``(read_ct, vt)`` in the queue table, or None once it is gone."""
    with psycopg.connect(dsn) as db:
        row = db.execute(
            sql.SQL("SELECT read_ct, vt FROM {} WHERE msg_id = %s").format(table(queue)),
            (msg_id,),
        ).fetchone()
    return None if row is None else (int(row[0]), row[1])


def test_another_clients_set_vt_while_the_handler_runs_fails_the_fence(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, effects: sql.Identifier, subscribe: Subscribe
) -> None:
    """#19 item 1 (the vt half of the fence): another client moves the message's vt with
    set_vt while the handler runs, nobody reads it again (read_ct unchanged). The consumer
    no longer holds the lease it was given, so the fence fails: the handler's row is rolled
    back, ack reports lost_lease, and the message stays in the queue with the other
    client's vt."""
    (msg_id,) = pgmq.send_batch(pgmq_queue, [{"n": 0}])
    write = _writer(effects)
    moved: list[Any] = []

    def handle(message: Message, conn: Conn) -> int:
        result = int(write(message, conn))
        with PGMQ(pgmq_dsn) as other:
            m = other.set_vt(pgmq_queue, message.msg_id, 120)
        assert m is not None and m.read_ct == message.read_ct and m.vt != message.vt
        moved.append(m.vt)
        return result

    sink = subscribe(
        source_of(pgmq_dsn, pgmq_queue).pipe(pgops.process_in_transaction(handle), pgops.ack())
    )
    (record,) = sink.collect(1)
    assert record.status == "lost_lease" and not record.ok
    assert isinstance(record.error, pgops.LeaseLost)
    assert _rows(pgmq_dsn, effects) == []
    assert _queue_row(pgmq_dsn, pgmq_queue, msg_id) == (1, moved[0])


def test_a_handler_outliving_its_first_lease_commits_once_across_heartbeat_extensions(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, effects: sql.Identifier, subscribe: Subscribe
) -> None:
    """#19 item 1: with extend_visibility the consumer's own heartbeat moves vt while the
    handler runs; the fence compares the vt that heartbeat set (not the read's), so a
    handler that runs past its first visibility timeout (2 s) still commits, exactly
    once."""
    (msg_id,) = pgmq.send_batch(pgmq_queue, [{"n": 0}])
    write = _writer(effects)
    source = source_of(pgmq_dsn, pgmq_queue, visibility_timeout=2, extend_visibility=True)
    seen: list[Any] = []

    def first_lease_over(message: Message) -> bool:
        with psycopg.connect(pgmq_dsn) as db:
            row = db.execute("SELECT clock_timestamp() > %s", (message.vt,)).fetchone()
        return bool(row and row[0])

    def slow(message: Message, conn: Conn) -> int:
        result = int(write(message, conn))
        assert wait_until(lambda: first_lease_over(message), timeout=30, step=0.1)
        assert wait_until(lambda: source.stats.extended >= 1, timeout=30)
        seen.append(_queue_row(pgmq_dsn, pgmq_queue, message.msg_id))
        seen.append(message.vt)
        return result

    sink = subscribe(source.pipe(pgops.process_in_transaction(slow), pgops.ack()))
    (record,) = sink.collect(1, timeout=60)
    assert (record.status, record.ok) == ("acked", True), record.reason
    (read_ct, vt_then), read_vt = seen
    assert read_ct == 1 and vt_then > read_vt  # the heartbeat extended the lease
    assert _rows(pgmq_dsn, effects) == [msg_id]
    with psycopg.connect(pgmq_dsn) as db:
        assert count(db, pgmq_queue) == 0


def test_a_release_at_shutdown_while_the_handler_runs_fails_the_fence(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, effects: sql.Identifier, subscribe: Subscribe
) -> None:
    """#19 item 1: the consumer is disposed while the handler runs (on a pool thread) and
    its shutdown releases the message (set_vt 0: visible to every reader again). The
    consumer gave up the lease, so the fence fails: rolled back, LeaseLost, the message
    stays in the queue with read_ct 1."""
    (msg_id,) = pgmq.send_batch(pgmq_queue, [{"n": 0}])
    write = _writer(effects)
    source = source_of(pgmq_dsn, pgmq_queue, close_timeout=0.2)
    messages: Subject[Message] = Subject()
    started = threading.Event()

    def released(message: Message) -> bool:
        row = _queue_row(pgmq_dsn, pgmq_queue, message.msg_id)
        return row is not None and row[1] != message.vt

    def handle(message: Message, conn: Conn) -> int:
        result = int(write(message, conn))
        started.set()
        assert wait_until(lambda: released(message), timeout=30, step=0.05)
        return result

    sink = subscribe(messages.pipe(pgops.process_in_transaction(handle, max_concurrency=2)))
    reading = source.subscribe(messages)
    try:
        assert started.wait(30)
    finally:
        reading.dispose()  # the consumer stops and releases what it holds
    (outcome,) = sink.collect(1)
    assert not outcome.ok and isinstance(outcome.error, pgops.LeaseLost)
    assert _rows(pgmq_dsn, effects) == []
    row = _queue_row(pgmq_dsn, pgmq_queue, msg_id)
    assert row is not None and row[0] == 1
    assert source.wait_closed(30)


def _heartbeat_blocked(dsn: str) -> bool:
    """Whether a ``pgmq.set_vt`` (the consumer's heartbeat) waits for a row lock."""
    with psycopg.connect(dsn) as db:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE %s AND pid <> pg_backend_pid()",
            ("%pgmq.set_vt(%",),
        ).fetchone()
    return bool(row and row[0])


def test_a_fence_waits_for_a_heartbeat_extension_in_flight_and_commits(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, effects: sql.Identifier, subscribe: Subscribe
) -> None:
    """#19 item 1: the fence starts while the consumer's heartbeat is extending the
    message's lease (its set_vt is held up by another session's row lock, released 1 s
    later). The fence waits for that extension and compares the vt it set, instead of
    locking the row right after the extension moved vt and reporting its own heartbeat
    as a lost lease: the handler commits once."""
    (msg_id,) = pgmq.send_batch(pgmq_queue, [{"n": 0}])
    write = _writer(effects)
    source = source_of(pgmq_dsn, pgmq_queue, visibility_timeout=2, extend_visibility=True)
    blocker = psycopg.connect(pgmq_dsn)
    release = threading.Timer(1.0, blocker.rollback)

    def handle(message: Message, conn: Conn) -> int:
        result = int(write(message, conn))
        blocker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE msg_id = %s FOR UPDATE").format(table(pgmq_queue)),
            (message.msg_id,),
        )
        assert wait_until(lambda: _heartbeat_blocked(pgmq_dsn), timeout=30, step=0.05)
        release.start()  # the heartbeat's set_vt goes on once the fence has started
        return result

    try:
        sink = subscribe(source.pipe(pgops.process_in_transaction(handle), pgops.ack()))
        (record,) = sink.collect(1, timeout=60)
    finally:
        if release.is_alive():
            release.join()
        blocker.close()
    assert (record.status, record.ok) == ("acked", True), record.reason
    assert source.stats.extended >= 1
    assert _rows(pgmq_dsn, effects) == [msg_id]
    with psycopg.connect(pgmq_dsn) as db:
        assert count(db, pgmq_queue) == 0


def test_archive_and_move_run_in_the_transaction_and_an_outcome_ack_overrides(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, effects: sql.Identifier, subscribe: Subscribe
) -> None:
    """#19 item 1: on_success=Archive() archives in the handler's transaction; a handler
    returning succeeded(m).with_ack(MoveTo(q)) moves that message instead; a handler
    returning a failed Outcome rolls back its writes."""
    other = f"t_{uuid.uuid4().hex[:12]}"
    pgmq.create_queue(other)
    try:
        ids = pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(3)])
        write = _writer(effects)

        def handle(message: Message, conn: Conn) -> Any:
            n = write(message, conn)
            if n == 1:
                return Outcome(message, True, n).with_ack(MoveTo(other))
            if n == 2:
                return failed(message, "rejected")
            return n

        sink = subscribe(
            source_of(pgmq_dsn, pgmq_queue).pipe(
                pgops.process_in_transaction(handle, on_success=Archive()),
                pgops.ack(on_failure=SetVisibilityTimeout(60)),
            )
        )
        records: list[Settled] = sink.collect(3)
        by_id = {r.message.msg_id: r for r in records}
        assert by_id[ids[0]].action == Archive() and by_id[ids[0]].status == "acked"
        assert by_id[ids[1]].action == MoveTo(other) and by_id[ids[1]].status == "acked"
        assert by_id[ids[2]].reason == "rejected"
        assert _rows(pgmq_dsn, effects) == sorted(ids[:2])
        with psycopg.connect(pgmq_dsn) as db:
            assert count(db, pgmq_queue) == 1  # the rejected one waits for its vt
            assert count(db, pgmq_queue, prefix="a") == 1
            assert count(db, other) == 1
    finally:
        pgmq.drop_queue(other)


def test_the_pool_given_to_read_queue_serves_the_transactions(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, effects: sql.Identifier, subscribe: Subscribe
) -> None:
    """#19 item 1: with a ConnectionPool given to read_queue, fn's connection comes from it
    (same pool object, no pool of the operator's own)."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(4)])
    pooled: set[int] = set()
    with ConnectionPool(
        pgmq_dsn, min_size=1, max_size=6, open=True, configure=lambda c: pooled.add(id(c))
    ) as pool:
        used: list[int] = []
        write = _writer(effects)

        def handle(message: Message, conn: Conn) -> int:
            used.append(id(conn))
            return int(write(message, conn))

        sink = subscribe(
            source_of(pool, pgmq_queue).pipe(
                pgops.process_in_transaction(handle, max_concurrency=2), pgops.ack()
            )
        )
        records: list[Settled] = sink.collect(4)
        assert {r.status for r in records} == {"acked"}
        assert len(_rows(pgmq_dsn, effects)) == 4
        assert len(used) == 4 and set(used) <= pooled


def test_bad_arguments_and_messages_without_a_consumer_are_refused() -> None:
    """#19 item 1: on_success must end the message, fn must not be async; a message not
    from read_queue fails (NotAcknowledgeable) instead of running fn."""
    with pytest.raises(InvalidArgument, match="on_success"):
        pgops.process_in_transaction(lambda m, c: None, on_success=SetVisibilityTimeout(5))
    with pytest.raises(InvalidArgument, match="max_concurrency"):
        pgops.process_in_transaction(lambda m, c: None, max_concurrency=0)

    async def later(message: Message, conn: Conn) -> None:
        return None

    with pytest.raises(InvalidArgument, match="plain function"):
        pgops.process_in_transaction(later)
    from reactivex import of

    outcomes: list[Outcome] = []
    of(make_message(body={"n": 1})).pipe(pgops.process_in_transaction(lambda m, c: None)).subscribe(
        outcomes.append
    )
    assert len(outcomes) == 1 and not outcomes[0].ok
    assert "read_queue" in str(outcomes[0].reason)


def test_a_delete_on_read_source_fails_each_message_instead_of_losing_its_effect(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, effects: sql.Identifier, subscribe: Subscribe
) -> None:
    """#19 item 1: with delete_on_read the message is gone before fn runs, so no fence can
    hold: each message fails with NotAcknowledgeable (naming delete_on_read) and fn is not
    called, rather than every effect being rolled back as a lost lease."""
    pgmq.send_batch(pgmq_queue, [{"n": 1}])
    calls: list[int] = []

    def handle(message: Message, conn: Conn) -> None:
        calls.append(message.msg_id)

    source = source_of(pgmq_dsn, pgmq_queue, read_options=ReadOptions(delete_on_read=True))
    sink = subscribe(source.pipe(pgops.process_in_transaction(handle)))
    (outcome,) = sink.collect(1)
    assert not outcome.ok and isinstance(outcome.error, NotAcknowledgeable)
    assert "delete_on_read" in str(outcome.reason)
    assert calls == []
