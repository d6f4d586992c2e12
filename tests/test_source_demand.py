"""read_queue demand: max_in_flight, read sizes, credit on settle, competing consumers.

Every claim is checked on the database too: a message read and not yet settled has
``read_ct >= 1`` and a visibility timeout in the future.
"""

from __future__ import annotations

import time

from _support import (
    WAIT,
    Conn,
    Subscribe,
    count,
    leased,
    source_of,
    table,
    unread,
    wait_until,
    watch,
)
from psycopg import sql

from rx_pgmq.actions import Archive
from rx_pgmq.client import PGMQ

# -- helpers ----------------------------------------------------------------------------


def read_sizes(db: Conn, queue: str) -> list[int]:
    """Sizes of the reads that claimed the messages still in the table, in read order.

    Each ``pgmq.read`` runs in its own transaction, so the rows one read claimed share
    the ``xmin`` of that transaction.
    """
    rows = db.execute(
        sql.SQL(
            "SELECT count(*) FROM {} WHERE read_ct >= 1 GROUP BY xmin::text::bigint"
            " ORDER BY xmin::text::bigint"
        ).format(table(queue))
    ).fetchall()
    return [int(r[0]) for r in rows]


# -- the demand window ------------------------------------------------------------------


def test_max_in_flight_5_leaves_exactly_5_messages_read_in_the_database_and_never_over_reads(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """max_in_flight=5, 20 queued, nothing settled: exactly 5 are read (hidden, read_ct 1)
    and it stays 5 while polling every 0.05 s; settling 2 lets exactly 2 more be read."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(20)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=5)
    sink = subscribe(source)
    assert sink.wait_for(5)
    watch()
    assert len(sink.messages) == 5
    assert leased(db, pgmq_queue) == 5
    assert unread(db, pgmq_queue) == 15
    assert all(m.read_ct == 1 for m in sink.messages)
    assert source.stats.in_flight == 5

    for m in sink.messages[:2]:
        assert m.settle().result(WAIT) == "acked"
    assert sink.wait_for(7)
    watch()
    assert len(sink.messages) == 7
    assert leased(db, pgmq_queue) == 5
    assert unread(db, pgmq_queue) == 13
    assert len(set(sink.ids)) == 7
    assert source.stats.in_flight == 5
    assert sink.errors == []


def test_each_read_asks_for_min_of_batch_size_and_free_room(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """batch_size=3, max_in_flight=7: the reads claim 3, 3, then 1 (the room left), then
    nothing while the window is full; after 2 settle, the next reads claim at most 2."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(20)])
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=3, max_in_flight=7)
    sink = subscribe(source)
    assert sink.wait_for(7)
    watch()
    assert read_sizes(db, pgmq_queue) == [3, 3, 1]
    assert source.stats.reads == 3, "read while the window was full"

    first = sink.messages[:2]
    for m in first:
        m.settle(Archive())
    assert sink.wait_for(9)
    watch()
    # The two archived messages left the table: the first read's group shrank to 1.
    assert read_sizes(db, pgmq_queue) in ([1, 3, 1, 2], [1, 3, 1, 1, 1])
    new_reads = source.stats.reads - 3
    assert new_reads in (1, 2), new_reads  # [2] or [1, 1]: never more than the room
    assert len(sink.messages) == 9
    assert sink.errors == []


def test_settling_reads_at_once_without_waiting_for_the_poll_interval(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """Poll mode reads when demand arrives: with max_in_flight=1 and read_interval=30 s,
    settling the first message makes the consumer read the second one at once."""
    pgmq.send_batch(pgmq_queue, [{"n": 1}, {"n": 2}])
    source = source_of(pgmq_dsn, pgmq_queue, read_interval=30.0, max_in_flight=1)
    sink = subscribe(source)
    assert sink.wait_for(1)
    watch(0.3)
    assert len(sink.messages) == 1
    settled_at = time.monotonic()
    sink.messages[0].settle()
    assert sink.wait_for(2, timeout=5.0)
    assert time.monotonic() - settled_at < 2.0
    assert [m.body["n"] for m in sink.messages] == [1, 2]


def test_release_gives_credit_back_and_the_message_is_read_again(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """message.release() makes the message visible at once and frees its room, so the
    consumer reads it again (read_ct 2)."""
    (msg_id,) = pgmq.send_batch(pgmq_queue, [{"only": True}])
    source = source_of(pgmq_dsn, pgmq_queue, read_interval=0.1, max_in_flight=1)
    sink = subscribe(source)
    assert sink.wait_for(1)
    assert sink.messages[0].release().result(WAIT) == "acked"
    assert sink.wait_for(2)
    again = sink.messages[1]
    assert (again.msg_id, again.read_ct) == (msg_id, 2)
    assert leased(db, pgmq_queue) == 1
    assert source.stats.settled.get("set_vt") == 1


# -- competing consumers ----------------------------------------------------------------


def test_two_subscriptions_are_independent_consumers_each_with_its_own_window(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """Two subscriptions of one source, max_in_flight=5, 12 queued, nothing settled: each
    holds exactly 5 distinct messages (10 leased in the database, 2 left unread)."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(12)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=5)
    a, b = subscribe(source), subscribe(source)
    assert a.wait_for(5) and b.wait_for(5)
    watch()
    assert len(a.messages) == 5 and len(b.messages) == 5
    assert not set(a.ids) & set(b.ids)
    assert leased(db, pgmq_queue) == 10
    assert unread(db, pgmq_queue) == 2
    assert len(source.consumers) == 2
    assert source.stats.in_flight == 10


def test_two_settling_subscriptions_share_a_queue_without_double_delivery(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """Two subscriptions that settle (delete) what they get: all 60 messages are delivered
    exactly once across both, and the queue ends empty."""
    ids = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(60)])
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=4, max_in_flight=6)
    a = subscribe(source, on_message=lambda m: m.settle())
    b = subscribe(source, on_message=lambda m: m.settle())
    assert wait_until(lambda: len(a.messages) + len(b.messages) >= 60)
    watch(0.3)
    got = a.ids + b.ids
    assert len(got) == 60
    assert sorted(got) == sorted(ids)
    assert wait_until(lambda: source.stats.settled.get("delete", 0) == 60)
    assert count(db, pgmq_queue) == 0
