"""Event loops for async handlers: checking a scheduler, and a loop thread of our own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from asyncio import _get_running_loop  # a public low-level API

from reactivex import abc
from reactivex.scheduler.eventloop import AsyncIOScheduler, AsyncIOThreadSafeScheduler

from rx_pgmq.errors import InvalidArgument

__all__ = ["LoopThread", "check_scheduler", "loop_of", "on_loop", "user_loop"]

CANCEL_WAIT = 5.0
"""Longest wait (seconds) for cancelled tasks to finish when a loop thread closes."""


def check_scheduler(scheduler: object, argument: str = "scheduler") -> abc.SchedulerBase | None:
    """Return ``scheduler`` if it is ``None`` or a reactivex scheduler safe to call from
    any thread.

    Raises:
        InvalidArgument: If it is not a scheduler, or is RxPY's plain ``AsyncIOScheduler``,
            whose ``schedule`` must be called on the loop's own thread (messages arrive on
            the reader thread).
    """
    if scheduler is None:
        return None
    if not isinstance(scheduler, abc.SchedulerBase):
        raise InvalidArgument(argument, f"must be a reactivex scheduler, got {scheduler!r}")
    if isinstance(scheduler, AsyncIOScheduler) and not isinstance(
        scheduler, AsyncIOThreadSafeScheduler
    ):
        raise InvalidArgument(
            argument,
            "is an AsyncIOScheduler, which may only be called on its loop's thread, but "
            "messages arrive from other threads; use "
            "reactivex.scheduler.eventloop.AsyncIOThreadSafeScheduler(loop)",
        )
    return scheduler


def loop_of(scheduler: abc.SchedulerBase | None) -> asyncio.AbstractEventLoop | None:
    """The event loop of an ``AsyncIOThreadSafeScheduler`` (``None`` for other schedulers)."""
    if isinstance(scheduler, AsyncIOThreadSafeScheduler):
        return scheduler._loop  # RxPY keeps the loop it was given here
    return None


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is running ``loop``."""
    return _get_running_loop() is loop


_PRIVATE: dict[int, weakref.ref[asyncio.AbstractEventLoop]] = {}
"""The loops of :class:`LoopThread` objects (rx_pgmq's own, closed with their subscription),
by ``id``: the ack operator asks :func:`user_loop` once per message, and a dict look-up is
cheaper than a ``WeakSet``'s (a Python-level ``__contains__``)."""


def _private(loop: asyncio.AbstractEventLoop) -> None:
    """Count ``loop`` among rx_pgmq's own until it is garbage-collected."""
    key = id(loop)
    _PRIVATE[key] = weakref.ref(loop, lambda _ref: _PRIVATE.pop(key, None))


def user_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on the calling thread, unless it is one of rx_pgmq's own."""
    loop = _get_running_loop()
    if loop is None:
        return None
    own = _PRIVATE.get(id(loop))
    return loop if own is None or own() is not loop else None


class LoopThread:
    """An event loop running on a thread of its own, until :meth:`close`.

    The thread is not a daemon: on close it cancels the tasks still running and waits up
    to :data:`CANCEL_WAIT` for them (a cancelled handler releases its message), so a
    program that ends right after disposing still lets that happen.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        _private(self.loop)
        self._thread = threading.Thread(target=self._run, name=name, daemon=False)
        self._thread.start()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            loop.run_until_complete(self._cancel_all())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _cancel_all(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT)

    def close(self) -> None:
        """Stop the loop (from any thread; returns at once). Running tasks are cancelled."""
        with contextlib.suppress(RuntimeError):  # closed already
            self.loop.call_soon_threadsafe(self.loop.stop)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
