"""Helpers shared by the integration tests that run consumers on a real PostgreSQL.

The fixtures built on these (``db``, ``subscribe``) are in ``conftest.py``. Everything that
waits does so with a deadline: a condition variable for what an observer receives,
``wait_until`` for what only polling can see (the database, consumer statistics).
The virtual-time tests use ``notification`` and ``error_of`` to read what a
``TestScheduler`` recorded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool
from reactivex import Notification, Observable, abc
from reactivex.disposable import Disposable
from reactivex.notification import OnError
from reactivex.testing.recorded import Recorded

import rx_pgmq
from rx_pgmq.message import Message

WAIT = 15.0  # generous bound for things that normally take well under a second
SETTLE = 0.5  # how long to watch for reads that must not happen

Conn = psycopg.Connection[tuple[Any, ...]]

T = TypeVar("T")


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, step: float = 0.01) -> bool:
    """Poll ``predicate`` every ``step`` seconds until it holds or ``timeout`` passes.

    Returns:
        Whether ``predicate`` held before the deadline.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(step)
    return True


def watch(seconds: float = SETTLE) -> None:
    """Give the consumer time to do something it must not do."""
    threading.Event().wait(seconds)


# -- observing a subscription -------------------------------------------------------------


class Sink(abc.ObserverBase[T]):
    """Records what a subscription delivers, its errors and completion; waits with deadlines.

    Each value is recorded with its arrival time and the thread that delivered it.
    ``on_message`` runs inside ``on_next`` before the value is recorded (e.g. to settle);
    ``work`` seconds of busy time per call widen the window in which an overlapping call
    would be seen (counted in ``overlaps``). ``subscription`` is set by the ``subscribe``
    fixture.
    """

    def __init__(self, on_message: Callable[[T], object] | None = None, work: float = 0.0) -> None:
        self.cond = threading.Condition()
        self.messages: list[T] = []
        self.arrived: list[float] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[Exception] = []
        self.completed = False
        self.overlaps = 0
        self.subscription: abc.DisposableBase = Disposable()
        self._on_message = on_message
        self._work = work
        self._active = 0

    def _enter(self) -> None:
        with self.cond:
            self._active += 1
            if self._active > 1:
                self.overlaps += 1

    def _leave(self) -> None:
        with self.cond:
            self._active -= 1

    def on_next(self, value: T) -> None:
        self._enter()
        try:
            if self._on_message is not None:
                self._on_message(value)
            if self._work:
                threading.Event().wait(self._work)
            with self.cond:
                self.messages.append(value)
                self.arrived.append(time.monotonic())
                self.threads.append(threading.current_thread())
                self.cond.notify_all()
        finally:
            self._leave()

    def on_error(self, error: Exception) -> None:
        self._enter()
        with self.cond:
            self.errors.append(error)
            self.cond.notify_all()
        self._leave()

    def on_completed(self) -> None:
        with self.cond:
            self.completed = True
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = WAIT) -> bool:
        """Wait until ``n`` values arrived; whether they did in time."""
        with self.cond:
            return self.cond.wait_for(lambda: len(self.messages) >= n, timeout)

    def wait_error(self, timeout: float = WAIT) -> bool:
        """Wait until an error arrived; whether it did in time."""
        with self.cond:
            return self.cond.wait_for(lambda: bool(self.errors), timeout)

    def wait_completed(self, timeout: float = WAIT) -> bool:
        """Wait until the subscription completed; whether it did in time."""
        with self.cond:
            return self.cond.wait_for(lambda: self.completed, timeout)

    def collect(self, n: int, timeout: float = WAIT) -> list[T]:
        """Wait until ``n`` values arrived and return them; fail on an error or a timeout."""
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.messages) >= n or self.errors, timeout)
            assert not self.errors, self.errors
            assert ok, f"only {len(self.messages)} of {n} values after {timeout}s"
            return list(self.messages)

    @property
    def ids(self: Sink[Message]) -> list[int]:
        """msg_id of every message received so far, in arrival order."""
        with self.cond:
            return [m.msg_id for m in self.messages]


class Subscribe(Protocol):
    """The ``subscribe`` fixture: subscribes a new Sink, disposed after the test."""

    def __call__(
        self,
        source: Observable[T],
        on_message: Callable[[T], object] | None = None,
        *,
        work: float = 0.0,
    ) -> Sink[T]: ...


def source_of(conninfo: str | ConnectionPool, queue: str, **kwargs: Any) -> rx_pgmq.QueueSource:
    """``read_queue`` polling every 0.05 s with a 30 s visibility timeout unless told otherwise."""
    kwargs.setdefault("visibility_timeout", 30)
    kwargs.setdefault("read_interval", 0.05)
    return rx_pgmq.read_queue(conninfo, queue, **kwargs)


# -- virtual time: what a TestScheduler recorded -------------------------------------------


def notification(record: Recorded[T]) -> Notification[T]:
    """The notification of ``record`` (typed as possibly a predicate: assert it is not)."""
    assert isinstance(record.value, Notification), f"not a notification: {record.value!r}"
    return record.value


def error_of(record: Recorded[T]) -> Exception:
    """The exception of a recorded ``on_error``."""
    assert isinstance(record.value, OnError), f"not an on_error: {record.value!r}"
    return record.value.exception


# -- the database, seen directly ----------------------------------------------------------


def table(queue: str, prefix: Literal["q", "a"] = "q") -> sql.Identifier:
    """The queue table (``q``) or archive (``a``) of ``queue``."""
    return sql.Identifier("pgmq", f"{prefix}_{queue}")


def count(
    db: Conn,
    queue: str,
    where: str = "TRUE",
    params: tuple[Any, ...] = (),
    prefix: Literal["q", "a"] = "q",
) -> int:
    """Rows of the queue table (or archive) matching the SQL condition ``where``.

    ``where`` is SQL text written by the test; values go in ``params`` (``%s`` in ``where``).
    """
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table(queue, prefix), sql.SQL(where))
    row = db.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def leased(db: Conn, queue: str) -> int:
    """Messages read and hidden now (read, not settled, not released)."""
    return count(db, queue, "read_ct >= 1 AND vt > clock_timestamp()")


def unread(db: Conn, queue: str) -> int:
    """Messages never read."""
    return count(db, queue, "read_ct = 0")


def read_cts(db: Conn, queue: str) -> dict[int, int]:
    """msg_id -> read_ct of every message in the queue table."""
    found = db.execute(sql.SQL("SELECT msg_id, read_ct FROM {}").format(table(queue))).fetchall()
    return {int(r[0]): int(r[1]) for r in found}


def terminate(dsn: str, pid: int) -> None:
    """pg_terminate_backend(``pid``); fail if no such backend was terminated."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert row is not None and row[0], f"backend {pid} was not terminated"
