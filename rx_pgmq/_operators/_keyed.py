"""Per-key scheduling: tasks of one key run one at a time in order, keys in parallel (no I/O).

:class:`KeyedQueue` decides which submitted task may start; it runs nothing itself and has
no threads or locks (the operator that owns it calls it under its own lock and starts the
tasks it hands back). At most ``limit`` tasks run at once; two tasks with the same key
never run at once, and tasks of one key start in submission order. When a slot frees, the
key that has waited longest for one goes first, so a busy key cannot starve the others.

Without a key function every task gets a key of its own (:data:`UNKEYED`), and the queue is
a plain FIFO of at most ``limit`` running tasks.

Example:
    >>> q: KeyedQueue[str] = KeyedQueue(2)
    >>> q.submit("a", "a1"), q.submit("a", "a2"), q.submit("b", "b1"), q.submit("c", "c1")
    ('a1', None, 'b1', None)
    >>> q.done("a")  # a2 waited for its key, c1 for a slot: c1 waited longer for a slot
    ['c1']
    >>> q.done("b")
    ['a2']
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from rx_pgmq._values._validate import check_positive_int

__all__ = ["UNKEYED", "KeyedQueue"]

T = TypeVar("T")


class _Unkeyed:
    """The key of a task that shares its key with no other task."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKEYED"


UNKEYED: Hashable = _Unkeyed()
"""Pass as the key of a task that may run beside any other (no per-key order)."""


class KeyedQueue(Generic[T]):
    """Which tasks may start: at most ``limit`` at once, one per key, each key in order.

    Args:
        limit: Most tasks running at once, >= 1.

    Attributes:
        limit: Most tasks running at once.
        running: Tasks started and not yet reported done.

    Raises:
        InvalidArgument: If ``limit`` is not an int >= 1.
    """

    __slots__ = ("_busy", "_pending", "_ready", "_unkeyed", "limit", "running")

    def __init__(self, limit: int) -> None:
        self.limit = check_positive_int(limit, "max_concurrency")
        self.running = 0
        self._busy: set[Hashable] = set()  # keys with a running task
        self._pending: dict[Hashable, deque[T]] = {}  # tasks not started, per key, in order
        self._ready: deque[Hashable] = deque()  # keys not busy with pending tasks: wait a slot
        self._unkeyed: deque[T] = deque()  # unkeyed tasks waiting for a slot (in _ready too)

    def __len__(self) -> int:
        """Tasks submitted and not yet started."""
        return sum(len(d) for d in self._pending.values()) + len(self._unkeyed)

    @property
    def idle(self) -> bool:
        """Whether nothing runs and nothing waits."""
        return self.running == 0 and not self._ready and not self._pending

    def submit(self, key: Hashable, task: T) -> T | None:
        """Add ``task`` for ``key``; return it if it may start now (the caller starts it).

        A task returned counts as running until :meth:`done` is called with its key.
        """
        if key is UNKEYED:
            if self.running < self.limit:
                self.running += 1
                return task
            self._unkeyed.append(task)
            self._ready.append(UNKEYED)
            return None
        waiting = self._pending.get(key)
        if waiting is not None:  # earlier tasks of this key wait: keep the order
            waiting.append(task)
            return None
        if key in self._busy:
            self._pending[key] = deque((task,))
            return None
        if self.running < self.limit:
            self.running += 1
            self._busy.add(key)
            return task
        self._pending[key] = deque((task,))
        self._ready.append(key)
        return None

    def done(self, key: Hashable) -> list[T]:
        """Record that the running task of ``key`` finished; return the tasks to start now.

        Raises:
            KeyError: If no task of ``key`` is running.
        """
        if self.running <= 0 or (key is not UNKEYED and key not in self._busy):
            raise KeyError(f"no task of key {key!r} is running")
        self.running -= 1
        if key is not UNKEYED:
            self._busy.remove(key)
            if key in self._pending:
                self._ready.append(key)  # behind the keys that already wait for a slot
        started: list[T] = []
        while self.running < self.limit and self._ready:
            ready = self._ready.popleft()
            if ready is UNKEYED:
                task = self._unkeyed.popleft()
            else:
                waiting = self._pending[ready]
                task = waiting.popleft()
                if not waiting:
                    del self._pending[ready]
                self._busy.add(ready)
            self.running += 1
            started.append(task)
        return started

    def clear(self) -> list[T]:
        """Forget every task not yet started and return them in submission order per key
        (running tasks still count until :meth:`done`)."""
        dropped = list(self._unkeyed)
        for waiting in self._pending.values():
            dropped.extend(waiting)
        self._unkeyed.clear()
        self._pending.clear()
        self._ready.clear()
        return dropped
