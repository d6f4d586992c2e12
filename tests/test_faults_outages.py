"""Outages: a database restart and killed backends (issue 7, scenarios 3 and 4).

The restart runs on a private embedded PostgreSQL in a temporary folder (stopped and
started under a running consumer); the backend kills use the session's database and
``pg_terminate_backend``. Each test prints its figures (``FIGURE ...``).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from faults import (
    Records,
    Run,
    figure,
    query,
    queue_rows,
    running,
    send_numbered,
    table,
    terminate,
    wait_until,
)
from psycopg import sql

import rx_pgmq
from rx_pgmq import Message, ReadOptions, embedded
from rx_pgmq import operators as pgops
from rx_pgmq.client import PGMQ

pytestmark = pytest.mark.faults

WAIT = 20.0


@pytest.fixture
def run() -> Iterator[Run]:
    yield from running()


def own_server(*, durable: bool) -> Iterator[embedded.EmbeddedServer]:
    """An embedded PostgreSQL of the test's own in a temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="rxf"))  # short: the server's socket lives in it
    try:
        yield embedded.start(folder / "pg", durable=durable)
    finally:
        embedded.stop(folder / "pg")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def private_server() -> Iterator[embedded.EmbeddedServer]:
    """A throwaway embedded PostgreSQL of its own (this test stops and starts it)."""
    yield from own_server(durable=False)


@pytest.fixture
def durable_server() -> Iterator[embedded.EmbeddedServer]:
    """A private embedded PostgreSQL that syncs its WAL (fsync on, synchronous_commit on)."""
    yield from own_server(durable=True)


def numbered_queue(dsn: str, queue: str, n: int) -> dict[int, int]:
    """Create ``queue`` and send ``{"n": 0..n-1}``; return msg_id -> n."""
    with PGMQ(dsn) as client:
        client.create_queue(queue)
        return send_numbered(client, queue, n)


def settled_at(records: Records, msg_id: int, timeout: float = WAIT) -> tuple[float, str]:
    """Wait for the Settled record of ``msg_id``; return (when it arrived, its status)."""
    assert records.wait(lambda rs: any(r.message.msg_id == msg_id for r in rs), timeout), (
        f"message {msg_id} was not settled within {timeout}s"
    )
    with records.cond:
        return next((t, s.status) for t, s in records.settled if s.message.msg_id == msg_id)


def test_database_restart_under_a_running_consumer_loses_nothing_and_retries_pending_acks(
    private_server: embedded.EmbeddedServer, run: Run
) -> None:
    """The server is stopped (fast shutdown) while a consumer has acks pending, and started
    again 1 s later. The consumer reconnects by itself: reads resume and 200 more messages
    are processed within 5 s of the restart, the pending acks are retried and commit
    (status acked), every message is processed and acked exactly once, the queue ends
    empty."""
    dsn = private_server.dsn
    queue, n_messages, gate_at = "restart_q", 4000, 700
    ids = numbered_queue(dsn, queue, n_messages)
    processed: list[tuple[float, int]] = []
    at_gate, go = threading.Event(), threading.Event()

    def handle(message: Message) -> None:
        if message.body["n"] == gate_at:
            at_gate.set()
            assert go.wait(WAIT)
        time.sleep(0.0005)
        processed.append((time.monotonic(), message.msg_id))

    source = rx_pgmq.read_queue(
        dsn,
        queue,
        visibility_timeout=30,
        batch_size=20,
        max_in_flight=1000,
        read_interval=0.2,
        ack_batch_size=10_000,  # acks wait (up to 3 s): some are pending at the stop
        ack_max_age=3.0,
    )
    records, _ = run(source.pipe(pgops.process(handle), pgops.ack()))
    assert at_gate.wait(60.0)
    pending_at_stop = len(processed) - records.count()
    went_down, back = restart(private_server, then=go.set, down=1.0)
    settled_before = sum(1 for t, _s in records.settled if t < went_down)
    assert records.wait_count(n_messages, 60.0), f"{records.count()} of {n_messages} settled"

    after = [t for t, _id in processed if t > back]
    first_read = after[0] - back
    throughput_back = after[199] - back
    acks_after = [t for t, _s in records.settled if t > back]
    statuses = Counter(s.status for s in records.records())
    per_msg = Counter(i for _t, i in processed)
    figure(
        "database_restart",
        messages=n_messages,
        acks_pending_at_stop=pending_at_stop,
        settled_before_stop=settled_before,
        downtime=back - went_down,
        first_message_after_restart=first_read,
        msgs_200_after_restart=throughput_back,
        first_ack_after_restart=acks_after[0] - back,
        reconnects=source.stats.reconnects,
        statuses=dict(statuses),
        duplicates=sum(per_msg.values()) - len(per_msg),
    )
    assert pending_at_stop >= 1
    assert first_read <= 5.0 and throughput_back <= 5.0
    assert acks_after and acks_after[0] - back <= 5.0
    assert source.stats.reconnects >= 2  # the reader and the acknowledger
    assert statuses == {"acked": n_messages}
    assert set(per_msg) == set(ids) and set(per_msg.values()) == {1}
    assert queue_rows(dsn, queue) == {}


@pytest.mark.parametrize("durable_reads", [False, True], ids=["async-reads", "durable-reads"])
def test_server_crash_forgetting_non_durable_reads_loses_nothing_and_processes_once(
    durable_server: embedded.EmbeddedServer, run: Run, durable_reads: bool
) -> None:
    """A read that did not wait for its WAL flush is forgotten by a server crash. Here the
    WAL writer is slowed to 10 s (wal_writer_delay) so that the read of the first batch is
    still only in memory when the server crashes (immediate shutdown, SIGQUIT: crash
    recovery on start). Those messages come back with their earlier read_ct; the consumer,
    which still holds them (its acks wait up to 2 s), reconnects by itself, reads them
    again without emitting them (counted in held_rereads), and every message is processed
    exactly once and acked; the queue ends empty. With ReadOptions(durable_reads=True)
    the crash forgets no read."""
    server = durable_server
    dsn = server.dsn
    query(dsn, "ALTER SYSTEM SET wal_writer_delay = '10s'")
    query(dsn, "SELECT pg_reload_conf()")
    queue, n_messages, batch = "crash_q", 300, 50
    ids = numbered_queue(dsn, queue, n_messages)
    processed: list[tuple[int, int]] = []
    at_gate, go = threading.Event(), threading.Event()

    def handle(message: Message) -> None:
        if not at_gate.is_set():
            at_gate.set()
            assert go.wait(WAIT)
        processed.append((message.msg_id, message.read_ct))

    source = rx_pgmq.read_queue(
        dsn,
        queue,
        visibility_timeout=60,
        batch_size=batch,
        max_in_flight=n_messages,
        read_interval=0.2,
        ack_batch_size=10_000,  # acks wait up to 2 s: the first batch is still held when
        ack_max_age=2.0,  # the reader, reconnected, reads its messages again
        read_options=ReadOptions(durable_reads=durable_reads),
    )
    records, _ = run(source.pipe(pgops.process(handle), pgops.ack()))
    assert at_gate.wait(WAIT)  # one batch read (not durable yet), its first message held
    assert source.stats.reads == 1
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGQUIT)  # immediate shutdown: no checkpoint, WAL in memory lost
    assert wait_until(lambda: not process_alive(pid), WAIT), "the server did not go down"
    embedded.stop(server.data_dir)  # forget the crashed server's handle
    again = embedded.start(server.data_dir)  # crash recovery
    assert again.dsn == dsn
    rows = queue_rows(dsn, queue)
    forgotten = sum(1 for read_ct in rows.values() if read_ct == 0) - (n_messages - batch)
    go.set()
    assert records.wait_count(n_messages, 60.0), f"{records.count()} of {n_messages} settled"
    statuses = Counter(s.status for s in records.records())
    per_msg = Counter(i for i, _rc in processed)
    figure(
        "server_crash_non_durable_reads",
        durable_reads=durable_reads,
        messages=n_messages,
        first_batch=batch,
        reads_forgotten=forgotten,
        held_rereads=source.stats.held_rereads,
        reconnects=source.stats.reconnects,
        statuses=dict(statuses),
        duplicates=sum(per_msg.values()) - len(per_msg),
    )
    assert 0 <= forgotten <= batch
    if durable_reads:
        assert forgotten == 0
    assert statuses == {"acked": n_messages}
    assert set(per_msg) == set(ids) and set(per_msg.values()) == {1}
    assert source.stats.held_rereads == forgotten
    assert queue_rows(dsn, queue) == {}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (a crashed postmaster takes a moment to exit)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def restart(
    server: embedded.EmbeddedServer, *, then: Callable[[], None], down: float
) -> tuple[float, float]:
    """Stop the server (fast shutdown: sessions are cut), call ``then``, and start the
    server again ``down`` seconds after it went down.

    Returns:
        (when it went down, when it accepted connections again), monotonic.
    """
    server.stop()
    went_down = time.monotonic()
    then()
    threading.Event().wait(down)
    again = embedded.start(server.data_dir)
    assert again.dsn == server.dsn, "the server came back at another address"
    return went_down, time.monotonic()


def test_database_restart_under_an_idle_notification_only_consumer_listening_itself(
    private_server: embedded.EmbeddedServer, run: Run
) -> None:
    """A notification-only consumer (listener=True: its reader connection LISTENs, no
    polling) waits on an empty queue while the server is stopped and started again 1 s
    later. A message sent right after the restart is read when the reader is back (within
    5 s of the restart); then a message sent after the reconnect is delivered by its
    notification alone, so the new connection LISTENs again. Both are acked once, nothing
    reaches on_error."""
    dsn = private_server.dsn
    queue = "relisten_q"
    numbered_queue(dsn, queue, 0)
    with PGMQ(dsn) as client:
        client.enable_notify(queue, throttle_ms=0)
    source = rx_pgmq.read_queue(
        dsn, queue, visibility_timeout=30, read_interval=None, listener=True
    )
    reads_seen: dict[str, int] = {}  # step -> reads counted when it was processed

    def handle(message: Message) -> None:
        reads_seen[message.body["step"]] = source.stats.reads

    records, _ = run(source.pipe(pgops.process(handle), pgops.ack()))
    assert wait_until(lambda: source.stats.reads >= 1, WAIT)
    (consumer,) = source.consumers
    old_pid = consumer.reader_backend_pid()
    went_down, back = restart(private_server, then=lambda: None, down=1.0)
    with PGMQ(dsn) as client:  # the reader may still be waiting out its backoff
        first = client.send(queue, {"step": "sent right after the restart"})
    at, status = settled_at(records, first)
    assert status == "acked"
    assert at - back <= 5.0, "the reader did not come back by itself"
    assert wait_until(lambda: consumer.reader_backend_pid() not in (None, old_pid), WAIT)

    threading.Event().wait(0.3)
    reads, heard = source.stats.reads, source.stats.notifications
    with PGMQ(dsn) as client:
        sent_at = time.monotonic()
        second = client.send(queue, {"step": "after the reconnect"})
    at, status = settled_at(records, second)
    figure(
        "restart_own_listen",
        downtime=back - went_down,
        after_reconnect_s=at - sent_at,
        reconnects=source.stats.reconnects,
        notifications=source.stats.notifications,
    )
    assert status == "acked"
    assert at - sent_at <= 2.0
    assert source.stats.notifications > heard, "not woken by the notification"
    # Delivered by the one read after the notification (the ack's returned credit may
    # start another, empty read afterwards).
    assert reads_seen["after the reconnect"] == reads + 1
    assert source.stats.reconnects >= 1
    assert Counter(s.status for s in records.records()) == {"acked": 2}
    assert queue_rows(dsn, queue) == {}


def test_killed_reader_acknowledger_and_listener_backends_each_recover_by_themselves(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, run: Run
) -> None:
    """A hybrid consumer (shared Listener, read_interval 3 s). pg_terminate_backend on its
    reader, then its acknowledger, then the listener: each reconnects by itself (new
    backend pid) and the next message is delivered and acked. A message whose notification
    was lost is delivered within read_interval; once the listener has reconnected the
    consumer reads at once, well before its next poll."""
    interval = 3.0
    pgmq.enable_notify(pgmq_queue, throttle_ms=0)
    listener = rx_pgmq.Listener(pgmq_dsn)
    try:
        source = rx_pgmq.read_queue(
            pgmq_dsn, pgmq_queue, visibility_timeout=30, read_interval=interval, listener=listener
        )
        records, _ = run(source.pipe(pgops.process(lambda m: None), pgops.ack()))
        (consumer,) = source.consumers
        figures: dict[str, float] = {}

        def deliver(label: str, *, notify: bool = True) -> float:
            """Send one message (without its notification if not ``notify``); return how
            long until its ack committed."""
            if not notify:
                pgmq.disable_notify(pgmq_queue)
            sent = time.monotonic()
            msg_id = pgmq.send(pgmq_queue, {"step": label})
            if not notify:
                pgmq.enable_notify(pgmq_queue, throttle_ms=0)
            at, status = settled_at(records, msg_id)
            assert status == "acked", (label, status)
            figures[label] = at - sent
            return at - sent

        deliver("baseline")
        assert wait_until(lambda: consumer.reader_backend_pid() is not None, 5.0)

        reader = consumer.reader_backend_pid()
        assert reader is not None
        terminate(pgmq_dsn, reader)
        assert deliver("after_reader_kill") <= 5.0
        assert consumer.reader_backend_pid() not in (None, reader)

        acker = consumer.acker_backend_pid()
        assert acker is not None
        terminate(pgmq_dsn, acker)
        assert deliver("after_acker_kill") <= 5.0
        assert consumer.acker_backend_pid() not in (None, acker)

        lost = deliver("lost_notification", notify=False)
        assert lost <= interval + 1.5

        threading.Event().wait(0.3)  # the read after the last ack is done: next poll in ~2.7 s
        before = listener.reconnects
        old_pid = listener.backend_pid
        assert old_pid is not None
        pgmq.disable_notify(pgmq_queue)  # this message's notification is never sent
        msg_id = pgmq.send(pgmq_queue, {"step": "listener_kill"})
        pgmq.enable_notify(pgmq_queue, throttle_ms=0)
        killed = time.monotonic()
        terminate(pgmq_dsn, old_pid)
        at, status = settled_at(records, msg_id)
        figures["after_listener_kill"] = at - killed
        assert status == "acked"
        assert at - killed <= 1.5, "the consumer waited for its poll instead of reading at once"
        assert listener.reconnects == before + 1
        assert listener.backend_pid not in (None, old_pid)

        deliver("notified_after_all_kills")
        figure(
            "backend_kills",
            read_interval=interval,
            **{f"{k}_s": v for k, v in figures.items()},
            reconnects=source.stats.reconnects,
            listener_reconnects=listener.reconnects,
        )
        assert source.stats.reconnects >= 2
        assert queue_rows(pgmq_dsn, pgmq_queue) == {}
    finally:
        listener.close()


def test_dispose_while_an_ack_is_blocked_past_close_timeout_lets_it_finish_on_its_connection(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str
) -> None:
    """Regression: an ack flush blocked in the database (another transaction holds the
    row lock) outlives close_timeout. dispose() returns after close_timeout without
    touching the acknowledger's connection (before, the reader thread closed it under the
    running flush: "connection socket closed", status unacked, and a connection the
    acknowledger reopened leaked); once the lock goes, the ack commits ("acked") and the
    acknowledger closes its own connection."""
    msg_id = pgmq.send(pgmq_queue, {"n": 1})
    source = rx_pgmq.read_queue(pgmq_dsn, pgmq_queue, visibility_timeout=30, close_timeout=0.3)
    delivered: list[Message] = []
    arrived = threading.Event()

    def on_next(message: Message) -> None:
        delivered.append(message)
        arrived.set()

    sub = source.subscribe(on_next=on_next)
    assert arrived.wait(WAIT)
    (consumer,) = source.consumers
    with psycopg.connect(pgmq_dsn) as blocker:  # a transaction holding the row lock
        blocker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE msg_id = %s FOR UPDATE").format(table(pgmq_queue)),
            (msg_id,),
        )
        ack = delivered[0].settle()
        assert wait_until(lambda: consumer.acker_backend_pid() is not None, 10.0)
        acker_pid = consumer.acker_backend_pid()
        assert wait_until(lambda: waiting_on_lock(pgmq_dsn, acker_pid), 10.0)
        began = time.monotonic()
        sub.dispose()
        disposed_in = time.monotonic() - began
        assert not ack.done()  # still blocked: nothing cut it off
        blocker.rollback()
    status = ack.result(WAIT)
    assert wait_until(lambda: not backend_alive(pgmq_dsn, acker_pid), 10.0)
    figure("dispose_with_blocked_ack", close_timeout=0.3, dispose_s=disposed_in, status=status)
    assert disposed_in < 0.3 + 2.0
    assert status == "acked"
    assert queue_rows(pgmq_dsn, pgmq_queue) == {}


def waiting_on_lock(dsn: str, pid: int | None) -> bool:
    rows = query(dsn, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    return rows == [("Lock",)]


def backend_alive(dsn: str, pid: int | None) -> bool:
    return bool(query(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))
