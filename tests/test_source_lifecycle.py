"""read_queue lifecycle: dispose (release / keep / from inside on_next / ack flush), errors
and reconnects, against a real PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest
from _support import WAIT, Conn, Subscribe, source_of, table, terminate, wait_until, watch
from psycopg import sql
from reactivex import operators as ops

import rx_pgmq
from rx_pgmq.actions import AckStatus
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import InvalidArgument, QueueNotFound
from rx_pgmq.message import Message

UNREACHABLE = "host=/nonexistent/rx_pgmq dbname=nothing connect_timeout=2"


# -- helpers ----------------------------------------------------------------------------


def rows(db: Conn, queue: str) -> dict[int, tuple[int, float]]:
    """msg_id -> (read_ct, seconds until visible; <= 0 means visible now)."""
    found = db.execute(
        sql.SQL(
            "SELECT msg_id, read_ct, extract(epoch FROM vt - clock_timestamp())::float8"
            " FROM {} ORDER BY msg_id"
        ).format(table(queue))
    ).fetchall()
    return {int(r[0]): (int(r[1]), float(r[2])) for r in found}


# -- dispose ----------------------------------------------------------------------------


def test_dispose_releases_unsettled_messages_and_stops_reading_at_once(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """Disposing with 5 unsettled messages returns at once; once closed (the subscriber
    still holds them: they may settle for close_timeout) their vt is back to now (read_ct
    unchanged, so others read them at once) and no read happens afterwards."""
    ids = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(10)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=5, close_timeout=0.5)
    sink = subscribe(source)
    assert sink.wait_for(5)
    held = {m.msg_id for m in sink.messages}
    assert all(rows(db, pgmq_queue)[i][1] > 20 for i in held)

    started = time.monotonic()
    sink.subscription.dispose()
    took = time.monotonic() - started
    assert took < 2.0, f"dispose took {took:.2f} s"
    assert source.wait_closed(WAIT)
    reads = source.stats.reads
    state = rows(db, pgmq_queue)
    for i in held:
        read_ct, until_visible = state[i]
        assert read_ct == 1
        assert -5.0 < until_visible <= 0.0, "vt not back to now"
    assert all(state[i][0] == 0 for i in ids if i not in held)
    assert source.stats.settled.get("release") == 5
    assert source.stats.in_flight == 0
    assert source.consumers == []

    pgmq.send(pgmq_queue, {"after": "dispose"})
    watch()
    assert source.stats.reads == reads, "read after dispose"
    assert len(sink.messages) == 5
    assert len(pgmq.read(pgmq_queue, vt=30, qty=20)) == 11  # released ones are visible


def test_dispose_with_on_dispose_keep_leaves_unsettled_messages_hidden(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """on_dispose="keep": unsettled messages stay hidden until their visibility timeout."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(3)])
    source = source_of(pgmq_dsn, pgmq_queue, on_dispose="keep")
    sink = subscribe(source)
    assert sink.wait_for(3)
    sink.subscription.dispose()
    state = rows(db, pgmq_queue)
    assert len(state) == 3
    assert all(read_ct == 1 and until > 20 for read_ct, until in state.values())
    assert "release" not in source.stats.settled
    assert pgmq.read(pgmq_queue, vt=30, qty=10) == []


def test_dispose_from_inside_on_next_flushes_acks_and_releases_the_rest_of_the_batch(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """take(3) disposes the subscription from on_next (the reader thread) in the middle of
    a 10-message batch: the 3 settled messages are deleted, the 7 never emitted are
    released (visible, read_ct 1), and the subscription completes without error."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(10)])
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=10)

    def settle(m: Message) -> None:
        m.settle()

    sink = subscribe(source.pipe(ops.do_action(settle), ops.take(3)))
    assert sink.wait_for(3)
    assert sink.wait_completed()
    assert wait_until(lambda: source.consumers == []), "consumer did not close"
    state = rows(db, pgmq_queue)
    emitted = {m.msg_id for m in sink.messages}
    assert len(sink.messages) == 3
    assert emitted.isdisjoint(state), "settled messages were not deleted"
    assert len(state) == 7
    assert all(read_ct == 1 and until <= 0 for read_ct, until in state.values())
    assert source.stats.settled == {"delete": 3, "release": 7}
    assert sink.errors == []


def test_dispose_flushes_pending_acks_before_releasing(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """Acks held back by the batcher (ack_max_age=60 s) are committed by dispose, before
    the remaining unsettled messages are released."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(5)])
    source = source_of(pgmq_dsn, pgmq_queue, ack_batch_size=100, ack_max_age=60, close_timeout=0.5)
    sink = subscribe(source)
    assert sink.wait_for(5)
    futures: list[Future[AckStatus]] = [m.settle() for m in sink.messages[:3]]
    watch(0.3)
    assert not any(f.done() for f in futures), "acks flushed before they were due"
    assert len(rows(db, pgmq_queue)) == 5

    sink.subscription.dispose()
    assert source.wait_closed(WAIT)
    assert [f.result(0) for f in futures] == ["acked"] * 3
    state = rows(db, pgmq_queue)
    assert sorted(state) == sorted(m.msg_id for m in sink.messages[3:])
    assert all(read_ct == 1 and until <= 0 for read_ct, until in state.values())
    assert source.stats.settled == {"delete": 3, "release": 2}


def test_settle_after_dispose_is_refused_without_sql(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """Settling a message after its subscription closed resolves "unacked" and does not
    touch the (already released) message."""
    pgmq.send(pgmq_queue, {"x": 1})
    source = source_of(pgmq_dsn, pgmq_queue, close_timeout=0.2)
    sink = subscribe(source)
    assert sink.wait_for(1)
    sink.subscription.dispose()
    assert source.wait_closed(WAIT)
    assert sink.messages[0].settle().result(WAIT) == "unacked"
    assert len(rows(db, pgmq_queue)) == 1


def test_an_exception_in_on_next_ends_the_subscription_with_on_error_and_releases(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn
) -> None:
    """An on_next that raises ends the subscription: the exception goes to on_error (not
    up the reader thread) and every unsettled message of the batch is released."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(5)])
    source = source_of(pgmq_dsn, pgmq_queue)
    got: list[Message] = []
    errors: list[Exception] = []
    failed = threading.Event()

    def on_next(m: Message) -> None:
        got.append(m)
        if len(got) == 2:
            raise RuntimeError("handler failed")

    def on_error(e: Exception) -> None:
        errors.append(e)
        failed.set()

    sub = source.subscribe(on_next=on_next, on_error=on_error)
    try:
        assert failed.wait(WAIT)
        assert [str(e) for e in errors] == ["handler failed"]
        assert len(got) == 2
        assert wait_until(lambda: source.consumers == [])
        state = rows(db, pgmq_queue)
        assert all(read_ct == 1 and until <= 0 for read_ct, until in state.values())
        assert source.stats.settled == {"release": 5}
    finally:
        sub.dispose()


# -- errors -----------------------------------------------------------------------------


def test_missing_queue_is_reported_to_on_error_as_queue_not_found(
    pgmq_dsn: str, subscribe: Subscribe
) -> None:
    """Subscribing to a queue that does not exist sends QueueNotFound to on_error (no
    thread crash, no retry loop)."""
    source = rx_pgmq.read_queue(
        pgmq_dsn, "no_such_queue_rx_pgmq", visibility_timeout=30, read_interval=0.1
    )
    sink = subscribe(source)
    assert sink.wait_error()
    (error,) = sink.errors
    assert isinstance(error, QueueNotFound)
    assert error.queue == "no_such_queue_rx_pgmq"
    assert "create_queue" in str(error)
    assert wait_until(lambda: source.consumers == [])
    assert source.stats.reconnects == 0


def test_queue_dropped_while_consuming_is_reported_as_queue_not_found(
    pgmq_dsn: str, pgmq: PGMQ, subscribe: Subscribe
) -> None:
    """A queue dropped under a polling consumer ends the subscription with QueueNotFound."""
    queue = f"t_drop_{time.monotonic_ns() % 10**9}"
    pgmq.create_queue(queue)
    try:
        source = source_of(pgmq_dsn, queue)
        sink = subscribe(source)
        assert wait_until(lambda: source.stats.reads >= 1)
    finally:
        pgmq.drop_queue(queue)
    assert sink.wait_error()
    assert isinstance(sink.errors[0], QueueNotFound)


def test_terminated_reader_connection_reconnects_logs_a_warning_and_keeps_delivering(
    pgmq_dsn: str,
    pgmq: PGMQ,
    pgmq_queue: str,
    subscribe: Subscribe,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pg_terminate_backend on the reader connection: the consumer reconnects
    (stats.reconnects >= 1), logs a WARNING, and delivers the next message."""
    source = source_of(pgmq_dsn, pgmq_queue)
    sink = subscribe(source)
    pgmq.send(pgmq_queue, {"n": 1})
    assert sink.wait_for(1)
    (consumer,) = source.consumers
    pid = consumer.reader_backend_pid()
    assert pid is not None
    with caplog.at_level(logging.WARNING, logger="rx_pgmq"):
        terminate(pgmq_dsn, pid)
        assert wait_until(lambda: source.stats.reconnects >= 1)
        pgmq.send(pgmq_queue, {"n": 2})
        assert sink.wait_for(2)
    assert consumer.reader_backend_pid() not in (None, pid)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("reader" in r.getMessage() and "reconnect" in r.getMessage() for r in warnings)
    assert [m.body["n"] for m in sink.messages] == [1, 2]
    assert sink.errors == []


def test_terminated_acknowledger_connection_is_retried_and_the_ack_commits(
    pgmq_dsn: str,
    pgmq: PGMQ,
    pgmq_queue: str,
    subscribe: Subscribe,
    db: Conn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pg_terminate_backend on the acknowledger connection: the next ack is retried on a
    new connection and commits; the subscription stays alive."""
    pgmq.send_batch(pgmq_queue, [{"n": 1}, {"n": 2}])
    source = source_of(pgmq_dsn, pgmq_queue)
    sink = subscribe(source)
    assert sink.wait_for(2)
    assert sink.messages[0].settle().result(WAIT) == "acked"
    (consumer,) = source.consumers
    pid = consumer.acker_backend_pid()
    assert pid is not None
    with caplog.at_level(logging.WARNING, logger="rx_pgmq"):
        terminate(pgmq_dsn, pid)
        assert sink.messages[1].settle().result(WAIT) == "acked"
    assert rows(db, pgmq_queue) == {}
    assert source.stats.reconnects >= 1
    assert source.consumers == [consumer]
    assert sink.errors == []


BAD_ARGUMENTS: dict[str, dict[str, Any]] = {
    "queue": {"queue": "Bad-Name"},
    "visibility_timeout": {"visibility_timeout": 0},
    "visibility_timeout_type": {"visibility_timeout": "30"},
    "read_interval": {"read_interval": 0},
    "read_interval_negative": {"read_interval": -1.0},
    "no_polling_no_listener": {"read_interval": None},
    "batch_size": {"batch_size": 0},
    "max_in_flight": {"max_in_flight": -1},
    "listener": {"listener": "yes"},
    "read_options": {"read_options": {"delete_on_read": True}},
    "on_dispose": {"on_dispose": "drop"},
    "scheduler": {"scheduler": object()},
    "conninfo_empty": {"conninfo_or_pool": ""},
    "conninfo_type": {"conninfo_or_pool": 42},
    "ack_batch_size": {"ack_batch_size": 0},
    "close_timeout": {"close_timeout": -1},
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_bad_arguments_to_read_queue_raise_invalid_argument_before_connecting(case: str) -> None:
    """read_queue rejects bad arguments with InvalidArgument at call time, without
    connecting (the conninfo points nowhere) or starting a thread."""
    kwargs: dict[str, Any] = {
        "conninfo_or_pool": UNREACHABLE,
        "queue": "orders",
        "visibility_timeout": 30,
    }
    kwargs.update(BAD_ARGUMENTS[case])
    threads = set(threading.enumerate())  # an earlier test's closer thread may still end
    with pytest.raises(InvalidArgument):
        rx_pgmq.read_queue(**kwargs)
    assert set(threading.enumerate()) - threads == set()  # no thread started
