"""Any Observable as an async iterator on the running event loop (bounded hand-over)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

from reactivex import Observable, abc
from reactivex import operators as ops

from rx_pgmq._values._loop import on_loop
from rx_pgmq._values._validate import check_positive_int
from rx_pgmq.errors import InvalidArgument

__all__ = ["SourceBase", "iterate"]

T = TypeVar("T")

_EMPTY = object()  # no value waits (_Handover.take)


class _Handover(abc.ObserverBase[T], Generic[T]):
    """Values from the observer's threads to the loop's iterator, at most ``limit`` at once.

    A producer on another thread waits while ``limit`` values wait (so a source with
    demand stops reading); one on the loop's own thread cannot wait and appends anyway (a
    synchronous source subscribed on the loop delivers everything while subscribing).

    A plain lock guards the fields (a ``Condition``'s own ``with`` is two Python calls per
    value); ``_room`` shares it, for producers waiting for room.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._items: deque[T] = deque()
        self._end: BaseException | None = None
        self._ended = False
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    # -- the observer (any thread) --------------------------------------------------------

    def on_next(self, value: T) -> None:
        with self._lock:
            if len(self._items) >= self._limit and not on_loop(self._loop):
                while len(self._items) >= self._limit and not self._closed:
                    self._room.wait()
            if self._closed or self._ended:
                return  # the iterator is gone: disposing releases what it held
            self._items.append(value)
            waiter = self._waiter
            if waiter is None:  # the iterator is not waiting: it takes this one in turn
                return
            self._waiter = None
        self._wake(waiter)

    def on_error(self, error: BaseException) -> None:  # fatal ones too
        self._finish(error)

    def on_completed(self) -> None:
        self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended, self._end = True, error
            waiter, self._waiter = self._waiter, None
        self._wake(waiter)

    def _wake(self, waiter: asyncio.Future[None] | None) -> None:
        if waiter is None:
            return
        if on_loop(self._loop):
            _set(waiter)
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody iterates any more
            self._loop.call_soon_threadsafe(_set, waiter)

    # -- the iterator (on the loop) ---------------------------------------------------------

    def take(self) -> T | object:
        """The next value if one waits, else :data:`_EMPTY` (no await: the usual case)."""
        with self._lock:
            items = self._items
            if not items:
                return _EMPTY
            if len(items) == self._limit:
                self._room.notify_all()  # a producer may wait for room
            return items.popleft()

    async def get(self) -> tuple[bool, T | None]:
        """The next value as ``(True, value)``, or ``(False, None)`` once completed.

        Raises:
            BaseException: The error the observable ended with (after its values).
        """
        while True:
            with self._lock:
                if self._items:
                    if len(self._items) == self._limit:
                        self._room.notify_all()  # a producer may wait for room
                    return True, self._items.popleft()
                if self._ended:
                    if self._end is not None:
                        raise self._end
                    return False, None
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def close(self) -> None:
        """Drop what waits and free any producer waiting for room."""
        with self._lock:
            self._closed = True
            self._items.clear()
            self._room.notify_all()


def _set(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def iterate(observable: Observable[T], *, max_buffer: int = 1000) -> AsyncGenerator[T, None]:
    """Iterate over an Observable with ``async for`` on the running event loop.

    Subscribes when iteration starts. Values are handed over to the loop through a buffer
    of at most ``max_buffer`` values: a producer on another thread (a consumer's reader
    thread) waits while it is full. For a ``read_queue`` source the consumer's
    ``max_in_flight`` already bounds it: a message keeps its room until it is settled
    (``await message.asettle()``). An ``on_error`` is raised by the loop after the values
    delivered before it; ``on_completed`` ends it.

    Leaving the loop (``break``, an exception, the task being cancelled) disposes the
    subscription, on a thread of its own so the event loop never blocks: a consumer then
    releases the messages not settled. After a ``break`` that happens when the iterator is
    garbage-collected, at once in CPython; ``contextlib.aclosing`` makes it explicit.

    Args:
        observable: Any Observable, e.g. ``read_queue(...)`` or a pipeline.
        max_buffer: Most values waiting for the loop (>= 1).

    Returns:
        An async iterator of the observable's values.

    Raises:
        InvalidArgument: If ``observable`` is not an Observable or ``max_buffer`` < 1.

    Example:
        >>> async for message in iterate(source.pipe(ops.filter(wanted))):  # doctest: +SKIP
        ...     await handle(message.body)
        ...     await message.asettle()
    """
    if not isinstance(observable, Observable):
        raise InvalidArgument("observable", f"must be a reactivex Observable, got {observable!r}")
    limit = check_positive_int(max_buffer, "max_buffer")
    handover: _Handover[T] = _Handover(asyncio.get_running_loop(), limit)
    subscription = observable.subscribe(handover)
    take = handover.take
    try:
        while True:
            value = take()  # a value waiting is taken without a coroutine for get()
            if value is _EMPTY:
                more, value = await handover.get()
                if not more:
                    return
            yield value  # type: ignore[misc]  # a T: only None when more is False
    finally:
        handover.close()
        # Dispose waits for the consumer to release; never on the loop's thread.
        threading.Thread(
            target=subscription.dispose, name="rx_pgmq-aio-dispose", daemon=False
        ).start()


class SourceBase(Observable[T]):
    """An Observable that delivers on its ``scheduler`` (if any) and works with ``async for``.

    The sources of ``read_queue`` and ``read_queues`` subclass it: they set ``_scheduler``
    and subscribe in :meth:`_subscribe_direct`; with a scheduler, the subscription is moved
    behind ``observe_on`` so observer calls leave the consumers' threads.
    """

    _scheduler: abc.SchedulerBase | None = None

    def __aiter__(self) -> AsyncGenerator[T, None]:
        """``async for message in source``: see :func:`rx_pgmq.aio.iterate`."""
        return iterate(self)

    def _subscribe_core(
        self,
        observer: abc.ObserverBase[T],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        if self._scheduler is not None:
            inner: Observable[T] = Observable(self._subscribe_direct)
            return inner.pipe(ops.observe_on(self._scheduler)).subscribe(
                observer, scheduler=scheduler
            )
        return self._subscribe_direct(observer, scheduler)

    def _subscribe_direct(
        self,
        observer: abc.ObserverBase[T],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        """Subscribe ``observer`` on the consumers' threads (no scheduler hop)."""
        raise NotImplementedError
