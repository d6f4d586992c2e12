"""SocketCondition: one thread waits for a notify or a readable socket, whichever is first."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from rx_pgmq._pg._wakeup import SocketCondition


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected socket pair: the test waits on the first, writes to the second."""
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def cond() -> Iterator[SocketCondition]:
    c = SocketCondition(threading.RLock())
    yield c
    c.close()


def _later(delay: float, action: object) -> threading.Thread:
    def run() -> None:
        threading.Event().wait(delay)
        assert callable(action)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_readable_returns_true_when_the_socket_gets_data(
    cond: SocketCondition, pair: tuple[socket.socket, socket.socket]
) -> None:
    """Data written to the socket ends the wait at once (long before the 10 s timeout),
    reported as readable, with the lock held again."""
    a, b = pair
    _later(0.05, lambda: b.send(b"x"))
    with cond:
        started = time.monotonic()
        assert cond.wait_readable(a.fileno(), 10.0) is True
        assert time.monotonic() - started < 5.0
        assert cond._is_owned()  # type: ignore[attr-defined]


def test_notify_all_from_another_thread_ends_the_wait_as_not_readable(
    cond: SocketCondition, pair: tuple[socket.socket, socket.socket]
) -> None:
    """notify_all (under the lock, from another thread) wakes a thread waiting in
    wait_readable with no timeout; the socket had no data, so it reports False."""
    a, _ = pair

    def notify() -> None:
        with cond:
            cond.notify_all()

    thread = _later(0.05, notify)
    with cond:
        assert cond.wait_readable(a.fileno(), None) is False
    thread.join(5.0)


def test_a_notify_sent_before_the_select_starts_is_not_lost(
    cond: SocketCondition, pair: tuple[socket.socket, socket.socket]
) -> None:
    """A notify that arrives after the waiter released the lock but before it selects
    leaves its wake-up byte in the socket pair: the wait returns at once; the next wait
    (with the byte drained) runs to its timeout."""
    a, _ = pair
    with cond:
        cond._selecting = True  # as wait_readable sets it just before releasing the lock
        cond.notify_all()
        started = time.monotonic()
        assert cond.wait_readable(a.fileno(), 10.0) is False
        assert time.monotonic() - started < 5.0
        started = time.monotonic()
        assert cond.wait_readable(a.fileno(), 0.2) is False
        assert time.monotonic() - started >= 0.15, "a stale wake-up byte ended the wait"


def test_notify_without_a_socket_waiter_writes_nothing_and_plain_waiters_still_wake(
    cond: SocketCondition, pair: tuple[socket.socket, socket.socket]
) -> None:
    """With nobody in wait_readable, notify_all only wakes ``wait`` waiters (no byte is
    left behind to end a later wait_readable early)."""
    a, _ = pair
    woke = threading.Event()

    def waiter() -> None:
        with cond:
            cond.wait(10.0)
            woke.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5.0
    while not cond._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        threading.Event().wait(0.01)
    with cond:
        cond.notify_all()
    assert woke.wait(5.0)
    thread.join(5.0)
    with cond:
        started = time.monotonic()
        assert cond.wait_readable(a.fileno(), 0.2) is False
        assert time.monotonic() - started >= 0.15


def test_wait_readable_honours_its_timeout(
    cond: SocketCondition, pair: tuple[socket.socket, socket.socket]
) -> None:
    """Nothing happens: the wait ends after about the timeout, not readable."""
    a, _ = pair
    with cond:
        started = time.monotonic()
        assert cond.wait_readable(a.fileno(), 0.1) is False
        assert 0.08 <= time.monotonic() - started < 5.0
