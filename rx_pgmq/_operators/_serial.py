"""One observer called from many threads, one call at a time, with no lock held while calling.

The pipeline operators emit from whatever thread finished the work (a pool, a timer, an
event loop, the acknowledger). Holding a lock while calling the observer serializes the
calls, but then one slow or failing subscriber stalls every thread that emits: an
``on_error`` that disposes the chain (RxPY's auto-detach does) waits for the consumer to
close while the lock is held, and the acknowledger thread, which emits ``Settled``
records, waits for that lock (issue 14 item 3). :class:`Serial` queues the calls instead:
the thread that finds the observer idle delivers what is queued, the others return at once.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar, cast

from reactivex import abc

from rx_pgmq._values._fatal import FATAL, propagate

__all__ = ["Serial"]

_T = TypeVar("_T")
_NEXT, _MANY, _ERROR, _COMPLETED = 0, 1, 2, 3
_NOTHING = object()  # no value handed to _drain


class Serial(Generic[_T]):
    """Serialize calls to ``observer`` from any thread, never holding a lock while calling.

    Values are delivered in the order they were queued. The first terminal event wins:
    an error drops values still queued (their messages are released by their consumer),
    a completion is delivered after them. After a terminal event, or :meth:`dispose`,
    nothing more is delivered. A subscriber raising in ``on_next`` ends the stream with
    ``on_error`` carrying that exception; ``KeyboardInterrupt``, ``SystemExit`` and
    ``GeneratorExit`` do too, then :func:`~rx_pgmq._values._fatal.propagate` lets them go on.

    Args:
        observer: The downstream observer.
    """

    __slots__ = ("_busy", "_halted", "_lock", "_observer", "_queue", "_stopped")

    def __init__(self, observer: abc.ObserverBase[_T]) -> None:
        self._observer = observer
        self._lock = threading.Lock()  # guards the fields below; never held while calling
        # (kind, value); a run of values from on_next_many is one entry (_MANY, list)
        self._queue: deque[tuple[int, object]] = deque()
        self._busy = False  # a thread is delivering the queue
        self._stopped = False  # a terminal event was queued, or disposed
        # An error was queued, or disposed: values taken out of the queue already are
        # dropped too (a plain flag, read without the lock between values of a run).
        self._halted = False

    @property
    def stopped(self) -> bool:
        """Whether a terminal event was queued (or delivered), or the stream was disposed."""
        return self._stopped

    def on_next(self, value: _T) -> None:
        """Queue ``value`` (dropped once stopped) and deliver the queue if idle."""
        with self._lock:
            if self._stopped:
                return
            if self._busy:
                self._queue.append((_NEXT, value))
                return
            self._busy = True  # idle means nothing is queued: deliver ``value`` first
        self._drain(_NEXT, value)

    def on_next_many(self, values: list[_T]) -> None:
        """Queue ``values`` in order (dropped once stopped) and deliver the queue if idle:
        one lock acquisition for all of them."""
        if not values:
            return
        with self._lock:
            if self._stopped:
                return
            if self._busy:
                self._queue.append((_MANY, values))
                return
            self._busy = True
        self._drain(_MANY, values)

    def terminal(self, error: BaseException | None) -> bool:
        """Queue ``on_error(error)`` (or ``on_completed()`` for ``None``) unless stopped.

        Returns:
            Whether this call ended the stream (False if it had ended already).
        """
        with self._lock:
            if self._stopped:
                return False
            self._stopped = True
            if error is not None:
                self._halted = True
                self._queue.clear()
                self._queue.append((_ERROR, error))
            else:
                self._queue.append((_COMPLETED, None))
            if self._busy:
                return True
            self._busy = True
        self._drain()
        return True

    def dispose(self) -> None:
        """Deliver nothing more (values and terminal events still queued are dropped)."""
        with self._lock:
            self._stopped = self._halted = True
            self._queue.clear()

    def _drain(self, kind: int = _NEXT, value: object = _NOTHING) -> None:
        """Deliver ``(kind, value)`` (if given), then the queue until it is empty (this
        thread holds the ``_busy`` role): one lock acquisition per entry, a run of values
        being one entry."""
        observer, queue, lock = self._observer, self._queue, self._lock
        fatal: BaseException | None = None
        try:
            while True:
                if value is _NOTHING:
                    with lock:
                        if not queue:
                            self._busy = False
                            break
                        kind, value = queue.popleft()
                if kind <= _MANY:  # _NEXT or _MANY
                    for v in cast("list[_T]", value) if kind == _MANY else (value,):
                        if self._halted:
                            break  # an error or a dispose came meanwhile
                        try:
                            observer.on_next(v)  # type: ignore[arg-type]
                        except Exception as exc:  # the subscriber failed: as at the source
                            self._fail(exc)
                        except FATAL as exc:  # the subscriber was interrupted or exits
                            self._fail(exc)
                            fatal = exc
                elif kind == _ERROR:
                    observer.on_error(value)  # type: ignore[arg-type]  # fatal ones too
                else:
                    observer.on_completed()
                value = _NOTHING
        except BaseException:
            with lock:  # on_error/on_completed raised: nothing may follow a terminal
                self._queue.clear()
                self._busy = False
            raise
        if fatal is not None:
            propagate(fatal)

    def _fail(self, error: BaseException) -> None:
        """``on_next`` raised: replace whatever is queued by ``on_error(error)``."""
        with self._lock:
            self._halted = True  # the values after the failed one are dropped
            if self._stopped and not any(kind == _COMPLETED for kind, _v in self._queue):
                return  # an error is on its way already (or the stream was disposed)
            self._stopped = True
            self._queue.clear()
            self._queue.append((_ERROR, error))
