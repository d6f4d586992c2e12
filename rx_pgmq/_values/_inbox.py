"""Results from other threads to asyncio futures, one loop wake-up per burst (no I/O).

``loop.call_soon_threadsafe`` wakes the loop (a write to its self-pipe) every time; an
acknowledger resolving a batch of 100 settles would wake it 100 times. An inbox per loop
collects the results and wakes the loop once for all of those that arrive before it runs.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

__all__ = ["post", "post_settled"]


class _Inbox:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []

    def post(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        with self._lock:
            self._items.append((future, result, error))
            wake = len(self._items) == 1
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: nobody awaits these any more
                with self._lock:
                    self._items.clear()

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for future, result, error in items:
            _set(future, result, error)


_INBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _set(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled by whoever awaited it
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def post(future: asyncio.Future[Any], result: Any, error: BaseException | None = None) -> None:
    """Set ``future``'s result (or ``error``) on its loop, from any thread (at once on the
    loop's own)."""
    loop = future.get_loop()
    if asyncio._get_running_loop() is loop:  # a public low-level API
        _set(future, result, error)
        return
    inbox = _INBOXES.get(loop)
    if inbox is None:
        with _LOCK:
            inbox = _INBOXES.setdefault(loop, _Inbox(loop))
    inbox.post(future, result, error)


def post_settled(future: asyncio.Future[Any], value: Any) -> None:
    """A settle callback for ``future``: ``value`` is the status, or the exception the
    acknowledger failed the request with (raised by ``await future``)."""
    if isinstance(value, BaseException):
        post(future, None, value)
    else:
        post(future, value)
