"""Connections that break or cannot be made, against a real PostgreSQL (issue 14, items 9, 11).

The client's pooled connections are killed with ``pg_terminate_backend`` (found through
``pg_stat_activity``: the client tags them ``application_name = 'rx_pgmq.client'``).
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable

from _support import WAIT, Conn, count, wait_until

from rx_pgmq.client import PGMQ
from rx_pgmq.errors import ConnectionLost

CLIENT_APP = "rx_pgmq.client"


def _client_pids(db: Conn) -> set[int]:
    """Backends of every PGMQ client of this server now."""
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (CLIENT_APP,)
    ).fetchall()
    return {int(r[0]) for r in rows}


def _kill(db: Conn, pids: set[int]) -> None:
    """pg_terminate_backend each pid, and wait until they are gone."""
    assert pids
    for pid in pids:
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert wait_until(lambda: not (_client_pids(db) & pids))


# -- item 11: the client survives a killed backend ------------------------------------------


def test_the_first_call_after_a_backend_kill_succeeds(
    pgmq_dsn: str, pgmq_queue: str, db: Conn
) -> None:
    """#14 item 11: a PGMQ client made from a conninfo string whose pooled connection was
    terminated (pg_terminate_backend) runs its next call, send included, on a new
    connection: the statement never reached the dead one, so it is simply retried.

    Before, the first call after the kill raised ConnectionLost.
    """
    before = _client_pids(db)
    with PGMQ(pgmq_dsn) as client:
        client.send(pgmq_queue, {"n": 0})
        calls: list[Callable[[], object]] = [
            lambda: client.send(pgmq_queue, {"n": 1}),
            lambda: client.send_batch(pgmq_queue, [{"n": 2}, {"n": 3}]),
            lambda: client.read(pgmq_queue, 0, qty=10),
            lambda: client.metrics(pgmq_queue),
        ]
        for call in calls:
            _kill(db, _client_pids(db) - before)
            call()
        assert count(db, pgmq_queue) == 4


def test_a_connection_lost_while_a_statement_runs_says_it_did_not_take_effect(
    pgmq_dsn: str, pgmq_queue: str, db: Conn
) -> None:
    """#14 item 11: killing the backend while a statement runs (a long poll) raises
    ConnectionLost with may_have_run=False (the transaction was never committed), and the
    next call works."""
    before = _client_pids(db)
    with PGMQ(pgmq_dsn) as client:
        client.queue_exists(pgmq_queue)
        errors: list[BaseException] = []

        def poll() -> None:
            try:
                client.read_with_poll(pgmq_queue, 30, max_poll_seconds=10)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=poll)
        thread.start()

        def polling() -> set[int]:
            rows = db.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                "AND state = 'active' AND query LIKE %s",
                (CLIENT_APP, "%read_with_poll%"),
            ).fetchall()
            return {int(r[0]) for r in rows} - before

        assert wait_until(lambda: bool(polling()))
        _kill(db, polling())
        thread.join(WAIT)
        assert not thread.is_alive()
        (error,) = errors
        assert isinstance(error, ConnectionLost), repr(error)
        assert error.may_have_run is False
        assert "did not take effect" in str(error)
        client.send(pgmq_queue, {"after": True})
    assert count(db, pgmq_queue) == 1


def test_a_connection_lost_error_pickles_with_its_flag() -> None:
    """#14 item 11: ConnectionLost keeps may_have_run (None unless a call set it)."""
    error = ConnectionLost("lost", may_have_run=True)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.may_have_run) == (ConnectionLost, "lost", True)
    assert ConnectionLost("x").may_have_run is None
