"""``listener=True``: the consumer LISTENs on its own reader connection.

Its reader thread waits on that connection's socket and on the consumer's condition at
once, so a notification wakes the thread that reads (no listener thread, no third
connection). These tests run consumers against a real PostgreSQL: the connection count,
a reader backend terminated while idle, a pooled connection handed back, and every
notification accounted for while the reader is busy.
"""

from __future__ import annotations

import threading
import time

import psycopg
from _support import WAIT, Conn, Sink, Subscribe, source_of, terminate, wait_until
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

import rx_pgmq
from rx_pgmq._pg._listener import APPLICATION_NAME
from rx_pgmq.client import PGMQ
from rx_pgmq.message import Message


def _backends(db: Conn, application_name: str) -> set[int]:
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
    ).fetchall()
    return {int(r[0]) for r in rows}


def _notified(
    pgmq: PGMQ, dsn: str, queue: str, subscribe: Subscribe
) -> tuple[rx_pgmq.QueueSource, Sink[Message], int]:
    """Subscribe a notification-only consumer (listener=True, no polling) and wait for its
    first read; return its source, sink and reader backend pid."""
    pgmq.enable_notify(queue, throttle_ms=0)
    source = source_of(dsn, queue, read_interval=None, listener=True)
    sink = subscribe(source)
    assert wait_until(lambda: source.stats.reads >= 1)
    (consumer,) = source.consumers
    reader = consumer.reader_backend_pid()
    assert reader is not None
    return source, sink, reader


def test_private_listener_uses_the_reader_connection_and_opens_no_listener_connection(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """With listener=True and polling off, a sent message is delivered by its notification,
    yet no backend with the listener's application_name exists: the consumer holds two
    connections (reader and, once it acks, acknowledger), not three."""
    source, sink, reader = _notified(pgmq, pgmq_dsn, pgmq_queue, subscribe)
    assert reader in _backends(db, "rx_pgmq.reader")

    threading.Event().wait(0.3)
    reads = source.stats.reads
    pgmq.send(pgmq_queue, {"n": 1})
    assert sink.wait_for(1, timeout=5.0), "the notification did not wake the reader"
    assert source.stats.notifications >= 1
    assert source.stats.reads == reads + 1, "delivered by one read, on the notification"
    assert _backends(db, APPLICATION_NAME) == set()
    assert sink.errors == []


def test_private_listener_reconnects_and_listens_again_after_its_idle_reader_backend_dies(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """The reader backend of an idle notification-only consumer is terminated while the
    reader waits on its socket: the consumer notices at once (no statement is running),
    reconnects, LISTENs again and reads; a message sent afterwards is delivered by its
    notification (polling is off), and nothing reaches on_error."""
    source, sink, old = _notified(pgmq, pgmq_dsn, pgmq_queue, subscribe)
    (consumer,) = source.consumers
    threading.Event().wait(0.2)  # the reader is waiting on its socket now

    terminate(pgmq_dsn, old)
    assert wait_until(lambda: source.stats.reconnects >= 1, 5.0), "the broken socket went unseen"
    assert wait_until(lambda: consumer.reader_backend_pid() not in (None, old), 5.0)
    assert wait_until(lambda: source.stats.reads >= 2, 5.0), "no read after the reconnect"

    threading.Event().wait(0.3)
    reads, heard = source.stats.reads, source.stats.notifications
    sent = time.monotonic()
    pgmq.send(pgmq_queue, {"after": "reconnect"})
    assert sink.wait_for(1, timeout=5.0), "the new connection does not LISTEN"
    assert sink.arrived[0] - sent < 2.0
    assert source.stats.notifications > heard
    assert source.stats.reads == reads + 1
    assert sink.errors == []


def test_private_listener_on_a_pooled_connection_unlistens_before_giving_it_back(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """read_queue(pool, listener=True): the reader LISTENs on the connection it borrows, a
    message arrives by notification, and after dispose every connection of the pool
    LISTENs on nothing, so the pool's next user gets no notifications of ours."""
    pgmq.enable_notify(pgmq_queue, throttle_ms=0)
    with ConnectionPool(pgmq_dsn, min_size=2, max_size=2, timeout=5.0) as pool:
        source = source_of(pool, pgmq_queue, read_interval=None, listener=True)
        sink = subscribe(source)
        assert wait_until(lambda: source.stats.reads >= 1)
        pgmq.send(pgmq_queue, {"n": 1})
        assert sink.wait_for(1, timeout=5.0)
        assert source.stats.notifications >= 1
        sink.messages[0].settle()
        assert sink.subscription is not None
        sink.subscription.dispose()
        assert wait_until(lambda: pool.get_stats()["pool_available"] == 2, 5.0)

        conns = [pool.getconn(timeout=5.0) for _ in range(2)]
        try:
            for conn in conns:
                row = conn.execute("SELECT count(*) FROM pg_listening_channels()").fetchone()
                assert row == (0,), "a pooled connection still LISTENs for the consumer"
        finally:
            for conn in conns:
                if not conn.autocommit:
                    conn.rollback()
                pool.putconn(conn)
    assert sink.errors == []


def test_private_listener_counts_every_notification_while_the_reader_is_busy(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """200 messages sent one by one while the consumer reads and processes: the server
    hands notifications to the reader connection along with read results and between
    reads; every one is taken (and counted), all 200 messages arrive once, and psycopg is
    left holding none of them."""
    pgmq.enable_notify(pgmq_queue, throttle_ms=0)
    source = source_of(pgmq_dsn, pgmq_queue, read_interval=None, listener=True)
    sink = subscribe(source, lambda m: m.settle(), work=0.0005)
    assert wait_until(lambda: source.stats.reads >= 1)
    with psycopg.connect(pgmq_dsn, autocommit=True) as producer:
        for i in range(200):
            producer.execute("SELECT pgmq.send(%s, %s::jsonb)", (pgmq_queue, f'{{"i": {i}}}'))
    assert sink.wait_for(200, timeout=WAIT)
    assert wait_until(lambda: source.stats.notifications == 200, 5.0), (
        f"{source.stats.notifications} of 200 notifications taken"
    )
    assert sorted(m.body["i"] for m in sink.messages) == list(range(200))
    (consumer,) = source.consumers
    conn = consumer.reader.link.connected  # private: what psycopg kept aside is asserted
    assert conn is not None
    assert not conn._notifies_backlog
    assert sink.errors == []


def test_private_listener_reader_connection_gets_tcp_keepalives_unless_the_conninfo_sets_them(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """A reader that may only wait for notifications has no traffic of its own, so its
    connection asks for TCP keepalives (idle 30 s), as the shared Listener's does; a value
    given in the conninfo wins."""

    def reader_options(conninfo: str) -> dict[str, str]:
        source = source_of(conninfo, pgmq_queue, read_interval=None, listener=True)
        sink = subscribe(source)
        assert wait_until(lambda: source.stats.reads >= 1)
        (consumer,) = source.consumers
        conn = consumer.reader.link.connected  # private: the options libpq connected with
        assert conn is not None
        options = {
            o.keyword.decode(): (o.val or b"").decode()
            for o in conn.pgconn.info
            if o.keyword.startswith(b"keepalives")
        }
        assert sink.subscription is not None
        sink.subscription.dispose()
        return options

    assert reader_options(pgmq_dsn) == {
        "keepalives": "1",
        "keepalives_idle": "30",
        "keepalives_interval": "10",
        "keepalives_count": "3",
    }
    given = make_conninfo(pgmq_dsn, keepalives_idle=7)
    assert reader_options(given)["keepalives_idle"] == "7"
