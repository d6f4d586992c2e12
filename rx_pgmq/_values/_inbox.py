"""Results from other threads to asyncio futures, one loop wake-up per burst (no I/O).

``loop.call_soon_threadsafe`` wakes the loop (a write to its self-pipe) every time; an
acknowledger resolving a batch of 100 settles would wake it 100 times. An inbox per loop
collects the results and wakes the loop once for all of those that arrive before it runs.

``Message.asettle`` makes one settle callback per message: :func:`settle_callback` gives a
``partial`` of the loop's inbox (no Python frame to build it), which costs the acknowledger
one call per status, and the inbox is found without a ``WeakKeyDictionary`` look-up when it
is the last loop's (:func:`inbox_of`).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from asyncio import _get_running_loop  # a public low-level API
from functools import partial
from typing import Any

__all__ = ["Inbox", "inbox_of", "post", "post_settled", "settle_callback"]


class Inbox:
    """The results waiting for one loop, set on it together (see the module)."""

    __slots__ = ("__weakref__", "_items", "_lock", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # A weak reference: the inbox is the value of its loop in a WeakKeyDictionary.
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []

    def post(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        """Set ``future``'s result (or ``error``) on the loop, from another thread."""
        with self._lock:
            self._items.append((future, result, error))
            wake = len(self._items) == 1
        if wake:
            self._wake()

    def settled(self, future: asyncio.Future[Any], value: Any) -> None:
        """A settle callback (:func:`settle_callback`): ``value`` is the status, or the
        exception the acknowledger failed the request with; from any thread."""
        error = value if isinstance(value, BaseException) else None
        if _get_running_loop() is self._loop():  # on the loop: at once
            _set(future, None if error else value, error)
            return
        with self._lock:
            self._items.append((future, None if error else value, error))
            wake = len(self._items) == 1
        if wake:
            self._wake()

    def _wake(self) -> None:
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("the loop is gone")
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            with self._lock:
                self._items.clear()

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for future, result, error in items:
            _set(future, result, error)


_INBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Inbox] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], Inbox] | None = None
"""The last loop :func:`inbox_of` answered for, and its inbox (one loop is the usual case)."""


def inbox_of(loop: asyncio.AbstractEventLoop) -> Inbox:
    """The inbox of ``loop`` (made on first use; it goes with the loop)."""
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    inbox = _INBOXES.get(loop)
    if inbox is None:
        with _LOCK:
            inbox = _INBOXES.setdefault(loop, Inbox(loop))
    _last = (weakref.ref(loop), inbox)  # the inbox holds the loop: keep only a weak ref
    return inbox


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
    if _get_running_loop() is loop:
        _set(future, result, error)
        return
    inbox_of(loop).post(future, result, error)


def post_settled(future: asyncio.Future[Any], value: Any) -> None:
    """A settle callback for ``future``: ``value`` is the status, or the exception the
    acknowledger failed the request with (raised by ``await future``)."""
    inbox_of(future.get_loop()).settled(future, value)


def settle_callback(future: asyncio.Future[Any]) -> partial[None]:
    """:func:`post_settled` for ``future`` as a one-argument callback, without the extra call
    per status."""
    loop, last = future.get_loop(), _last
    inbox = last[1] if last is not None and last[0]() is loop else inbox_of(loop)
    return partial(inbox.settled, future)
