"""Connections that break or cannot be made, against a real PostgreSQL (issue 14, items 9, 11).

The client's pooled connections are killed with ``pg_terminate_backend`` (found through
``pg_stat_activity``: the client tags them ``application_name = 'rx_pgmq.client'``).
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _support import WAIT, Conn, Sink, count, wait_until
from psycopg import sql
from psycopg.conninfo import make_conninfo

import rx_pgmq
from rx_pgmq import Message
from rx_pgmq._pg._dberrors import is_transient, translate
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import (
    AuthenticationFailed,
    CannotConnect,
    ConnectionLost,
    DatabaseNotFound,
    InvalidArgument,
    InvalidConninfo,
    RoleNotFound,
    RxPgmqError,
)

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


# -- item 9: a bad DSN reaches on_error --------------------------------------------------


def _first_error(conninfo: str, **kwargs: Any) -> tuple[Exception, float, rx_pgmq.QueueSource]:
    """Subscribe a consumer of queue ``orders``; its first error and how long it took."""
    kwargs.setdefault("visibility_timeout", 30)
    source = rx_pgmq.read_queue(conninfo, "orders", **kwargs)
    sink: Sink[Message] = Sink()
    started = time.monotonic()
    sink.subscription = source.subscribe(sink)
    try:
        assert sink.wait_error(WAIT + 30), "no error reached on_error"
        elapsed = time.monotonic() - started
    finally:
        sink.subscription.dispose()
    return sink.errors[0], elapsed, source


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"dbname": "rx_no_such_database"}, DatabaseNotFound),
        ({"user": "rx_no_such_role"}, RoleNotFound),
        ({"port": "not-a-port"}, InvalidConninfo),
    ],
    ids=["unknown database", "unknown role", "bad port value"],
)
def test_a_dsn_no_retry_can_fix_reaches_on_error_at_once(
    pgmq_dsn: str, change: dict[str, str], expected: type[CannotConnect]
) -> None:
    """#14 item 9: an unknown database or role, or an invalid conninfo value, ends the
    subscription with a named CannotConnect error on its first attempt (no retries).

    Before, the consumer retried forever with WARNING logs.
    """
    error, elapsed, source = _first_error(make_conninfo(pgmq_dsn, **change))
    assert type(error) is expected, repr(error)
    assert isinstance(error, RxPgmqError)
    assert elapsed < 10.0, elapsed  # first attempt: well under a second when idle
    assert source.stats.reconnects == 0


@pytest.mark.parametrize("conninfo", ["host=localhost bogus", "host=localhost nosuch=1"])
def test_a_malformed_conninfo_reaches_on_error_as_invalid_conninfo(conninfo: str) -> None:
    """#14 item 9: a conninfo libpq cannot parse ends the subscription with InvalidConninfo
    (a CannotConnect and a ValueError) at once."""
    error, elapsed, _source = _first_error(conninfo)
    assert isinstance(error, InvalidConninfo) and isinstance(error, ValueError), repr(error)
    assert elapsed < 10.0, elapsed


@pytest.fixture
def password_role(db: Conn) -> Iterator[str]:
    """A LOGIN role whose password the server checks (scram-sha-256), dropped after.

    The embedded test server trusts every login (initdb --auth=trust), so lines for this
    role alone go first in its pg_hba.conf (restored after). A server whose pg_hba.conf
    this process cannot edit (e.g. --pgmq-dsn elsewhere) skips the test.
    """
    role = f"rx_pw_{uuid.uuid4().hex[:10]}"
    row = db.execute("SHOW hba_file").fetchone()
    hba = Path(str(row[0])) if row else None
    if hba is None or not hba.is_file() or not os.access(hba, os.W_OK):
        pytest.skip("cannot edit the test server's pg_hba.conf")
    original = hba.read_text(encoding="utf-8")
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(uuid.uuid4().hex)
        )
    )
    try:
        hba.write_text(
            f"local all {role} scram-sha-256\nhost all {role} all scram-sha-256\n{original}",
            encoding="utf-8",
        )
        db.execute("SELECT pg_reload_conf()")
        yield role
    finally:
        hba.write_text(original, encoding="utf-8")
        db.execute("SELECT pg_reload_conf()")
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_wrong_password_reaches_on_error_as_authentication_failed(
    pgmq_dsn: str, password_role: str
) -> None:
    """#14 item 9: a wrong password ends the subscription with AuthenticationFailed at once
    (the server checks this role's password: see ``password_role``).

    Before, the consumer retried forever with WARNING logs.
    """
    wrong = make_conninfo(pgmq_dsn, user=password_role, password="wrong")

    def refused() -> bool:  # the reload is asynchronous: wait until it applies
        try:
            psycopg.connect(wrong).close()
        except psycopg.OperationalError as exc:
            return "password authentication failed" in str(exc)
        return False

    assert wait_until(refused, 10.0), "the server still accepts the wrong password"
    error, elapsed, source = _first_error(wrong)
    assert isinstance(error, AuthenticationFailed), repr(error)
    assert password_role in str(error)
    assert elapsed < 10.0, elapsed
    assert source.stats.reconnects == 0


def _closed_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_server_is_retried_until_connect_timeout_then_connection_lost() -> None:
    """#14 item 9: connection refused is transient: retried (counted in stats.reconnects)
    until connect_timeout passes without a first connection, then on_error(ConnectionLost)
    naming connect_timeout.

    Before, the consumer retried forever.
    """
    conninfo = f"host=127.0.0.1 port={_closed_port()} dbname=postgres user=postgres"
    error, elapsed, source = _first_error(conninfo, connect_timeout=1)
    assert isinstance(error, ConnectionLost), repr(error)
    assert "connect_timeout=1s" in str(error)
    assert 1.0 <= elapsed < 15.0, elapsed  # ~1.6 s: the last backoff step passes the second
    assert source.stats.reconnects >= 1


@pytest.mark.parametrize("bad", [0, -1, "5", True, float("inf")])
def test_connect_timeout_is_validated(pgmq_dsn: str, bad: object) -> None:
    """#14 item 9: connect_timeout must be a positive duration (InvalidArgument naming it)."""
    with pytest.raises(InvalidArgument) as info:
        rx_pgmq.read_queue(pgmq_dsn, "orders", visibility_timeout=30, connect_timeout=bad)  # type: ignore[arg-type]
    assert info.value.argument == "connect_timeout"


def test_other_entry_points_name_the_connect_failure_too(pgmq_dsn: str) -> None:
    """#14 item 9: install_pgmq with an unknown database raises DatabaseNotFound (the same
    mapping), not a raw psycopg OperationalError."""
    with pytest.raises(DatabaseNotFound):
        rx_pgmq.install_pgmq(make_conninfo(pgmq_dsn, dbname="rx_no_such_database"))


@pytest.mark.parametrize(
    "text",
    [
        'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  '
        'password authentication failed for user "app"',
        'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
        "fe_sendauth: no password supplied",
        'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  '
        'no pg_hba.conf entry for host "10.0.0.9", user "app", database "app", no encryption',
    ],
    ids=["wrong password", "no password", "no pg_hba entry"],
)
def test_libpq_authentication_failures_are_named_and_not_transient(text: str) -> None:
    """#14 item 9: the messages libpq gives for refused logins (as psycopg raises them, with
    no SQLSTATE) map to AuthenticationFailed and are not retried; the trusting test server
    cannot produce them, so the mapping is checked on the texts themselves."""
    exc = psycopg.OperationalError(text)
    assert not is_transient(exc)
    named = translate(exc, "orders")
    assert isinstance(named, AuthenticationFailed) and "refused the login" in str(named)
    refused = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5 failed: Connection '
        "refused\n\tIs the server running on that host and accepting TCP/IP connections?"
    )
    assert is_transient(refused) and isinstance(translate(refused), ConnectionLost)
    starting = psycopg.OperationalError(
        'connection failed: connection to server on socket "/tmp/.s.PGSQL.5432" failed: '
        "FATAL:  the database system is starting up"
    )
    assert is_transient(starting)


def test_a_server_that_never_answers_is_bounded_by_connect_timeout() -> None:
    """#14 item 9: a server that accepts TCP connections but never answers (a hung
    postmaster, here a listening socket nobody accepts from) ends in ConnectionLost soon
    after connect_timeout: each connection attempt is bounded by it too (at least libpq's
    2 s), not by a fixed 10 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = int(silent.getsockname()[1])
        conninfo = f"host=127.0.0.1 port={port} dbname=postgres user=postgres"
        error, elapsed, _source = _first_error(conninfo, connect_timeout=2)
    assert isinstance(error, ConnectionLost), repr(error)
    assert 2.0 <= elapsed < 8.0, elapsed  # one 2 s attempt; a fixed 10 s one took > 10 s


@pytest.mark.parametrize(
    ("change", "expected"),
    [({"dbname": "rx_no_such_database"}, DatabaseNotFound), ({"port": "x"}, InvalidConninfo)],
    ids=["unknown database", "bad port value"],
)
def test_the_client_names_a_dsn_no_retry_can_fix_at_once(
    pgmq_dsn: str, change: dict[str, str], expected: type[CannotConnect]
) -> None:
    """#14 item 9: a PGMQ client made from a conninfo no retry can fix raises the named
    error on its first call at once, instead of ConnectionLost after its pool's 30 s wait."""
    started = time.monotonic()
    with PGMQ(make_conninfo(pgmq_dsn, **change)) as client, pytest.raises(expected):
        client.list_queues()
    assert time.monotonic() - started < 10.0
