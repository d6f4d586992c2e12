"""A condition variable whose waiter can also wait for a socket to become readable.

A consumer in notification mode LISTENs on its reader connection: its reader thread must
wake up either when another thread notifies the consumer's condition (new demand, dispose,
an ack flush) or when a notification arrives on the connection's socket. A plain
:class:`threading.Condition` cannot wait for a socket, so :class:`SocketCondition` adds a
wake-up socket pair: while a thread waits in :meth:`SocketCondition.wait_readable`,
``notify``/``notify_all`` also write one byte to it.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

__all__ = ["SocketCondition", "WakeSocket"]


class WakeSocket:
    """A socket pair that one thread selects on and any thread pokes to wake it.

    Register :attr:`reader` with a selector beside the sockets the thread waits for; any
    thread calls :meth:`poke`; the woken thread calls :meth:`drain`. A poke sent while
    nobody waits is not lost: the byte stays until drained.
    """

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)
        self._lock = threading.Lock()
        self._closed = False

    def poke(self) -> None:
        """Wake the thread selecting on :attr:`reader` (never blocks, never raises)."""
        with contextlib.suppress(OSError):  # full (already poked) or closed
            self._writer.send(b"\0")

    def drain(self) -> None:
        """Read every pending wake-up byte."""
        with contextlib.suppress(OSError):  # BlockingIOError: empty
            while self.reader.recv(4096):
                pass

    def close(self) -> None:
        """Close both sockets (idempotent, any thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.reader.close()
        self._writer.close()


class SocketCondition(threading.Condition):
    """A :class:`threading.Condition` whose waiter may also wait for a socket.

    Waiters of :meth:`wait` behave as with any condition. One thread at a time may call
    :meth:`wait_readable`; ``notify`` and ``notify_all`` wake it too. Call :meth:`close`
    when no thread waits any more.

    Args:
        lock: The lock of the condition. :meth:`wait_readable` releases it once, so the
            caller must hold it exactly once (not recursively).
    """

    def __init__(self, lock: threading.Lock | threading.RLock) -> None:
        super().__init__(lock)
        self._wake = WakeSocket()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake.reader, selectors.EVENT_READ)
        # True while a thread waits in wait_readable; read and written under the lock.
        self._selecting = False

    def notify(self, n: int = 1) -> None:
        """Wake up ``n`` waiters of :meth:`wait`, and the thread in :meth:`wait_readable`."""
        super().notify(n)
        self._poke()

    def notify_all(self) -> None:
        """Wake up every waiter, including the thread in :meth:`wait_readable`."""
        super().notify_all()
        self._poke()

    def _poke(self) -> None:
        if self._selecting:
            self._selecting = False  # one byte is enough until the waiter waits again
            self._wake.poke()

    def wait_readable(self, fileno: int, timeout: float | None) -> bool:
        """Wait until notified, ``fileno`` is readable or ``timeout`` seconds passed.

        The lock is released while waiting and held again on return, as with
        :meth:`wait`. A notification sent after the caller took the lock and before it
        calls this method is not lost: the wake-up byte stays in the socket pair.

        Args:
            fileno: A socket (e.g. ``conn.fileno()`` of a psycopg connection).
            timeout: Seconds to wait at most; ``None`` waits until woken.

        Returns:
            Whether ``fileno`` is readable (it may also be, but not be reported, when the
            wait ended for a notification).
        """
        self._selecting = True
        self.release()
        try:
            self._selector.register(fileno, selectors.EVENT_READ)
            try:
                events = self._selector.select(timeout)
            finally:
                self._selector.unregister(fileno)
        finally:
            self.acquire()
            self._selecting = False
        readable = False
        for key, _ in events:
            if key.fileobj is self._wake.reader:
                self._wake.drain()
            else:
                readable = True
        return readable

    def close(self) -> None:
        """Close the wake-up sockets; ``notify`` keeps working for :meth:`wait` waiters."""
        self._selecting = False
        self._selector.close()
        self._wake.close()
