"""One LISTEN connection shared by many consumers: PGMQ insert notifications as events.

A :class:`Listener` owns one dedicated autocommit psycopg connection and one daemon
thread. This module is the facade (subscriptions, the lock, closing); the thread that
alone touches the connection is :mod:`rx_pgmq._pg._listener_thread`.

Notifications are a wake-up hint only: PGMQ throttles them (leading edge) and a broken
connection loses them. After every reconnect the listener LISTENs again and sends a
``"reconnected"`` event to every subscriber so consumers re-read their queue.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import reactivex
from psycopg.conninfo import conninfo_to_dict
from reactivex import abc
from reactivex.disposable import Disposable

from rx_pgmq._pg._closing import Closing
from rx_pgmq._pg._conn import KEEPALIVE_DEFAULTS
from rx_pgmq._pg._listener_thread import ListenerThread
from rx_pgmq._pg._wakeup import WakeSocket
from rx_pgmq._values._channels import (
    ListenerCallback,
    ListenerEvent,
    channel_name,
    queue_of_channel,
)
from rx_pgmq._values._validate import check_queue_name, seconds
from rx_pgmq.errors import ConnectionLost, InvalidArgument, RxPgmqError

__all__ = [
    "APPLICATION_NAME",
    "Listener",
    "ListenerCallback",
    "ListenerEvent",
    "channel_name",
    "queue_of_channel",
]

logger = logging.getLogger(__name__)

APPLICATION_NAME = "rx_pgmq.listener"
"""``application_name`` of the listener connection unless the conninfo sets one."""

_CLOSE_JOIN_TIMEOUT = 2.0


@dataclass(eq=False)
class _Subscription:
    queue: str
    callback: ListenerCallback
    on_close: Callable[[], None] | None = None
    active: bool = True


class Listener(Closing):
    """One LISTEN connection shared by any number of consumers and queues.

    Each :meth:`subscribe` registers a callback for a queue's insert notifications
    (``LISTEN "pgmq.q_<queue>.INSERT"``; enable them with
    ``PGMQ.enable_notify(queue)``). Callbacks run on the listener's daemon thread: keep
    them quick (set a flag, notify a condition); an exception from a callback is logged
    and ignored. When the connection breaks, the listener logs a WARNING, reconnects with
    exponential backoff, LISTENs again and sends a ``"reconnected"`` event to every
    callback, because notifications may have been missed.

    The connection and the thread start with the first subscription. ``subscribe``,
    disposing a subscription and :meth:`close` may be called from any thread.

    Args:
        conninfo: PostgreSQL conninfo string or URI. ``application_name`` defaults to
            ``"rx_pgmq.listener"``.
        reconnect_initial: Seconds to wait before the first reconnect attempt; doubles
            after every failed attempt.
        reconnect_max: Longest wait between reconnect attempts, in seconds.
        connect_timeout: Seconds one connection attempt may take, and how long
            :meth:`subscribe` waits for its LISTEN to become active. Durations are at most
            1,000,000 seconds.

    Raises:
        InvalidArgument: If an argument is malformed.

    Example:
        >>> with rx_pgmq.Listener(dsn) as listener:  # doctest: +SKIP
        ...     sub = listener.subscribe("orders", lambda event: wake.set())
        ...     listener.notifications("orders").subscribe(print)
    """

    def __init__(
        self,
        conninfo: str,
        *,
        reconnect_initial: float = 0.05,
        reconnect_max: float = 5.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if not isinstance(conninfo, str) or not conninfo.strip():
            raise InvalidArgument("conninfo", "must be a non-empty conninfo string or URI")
        try:
            params: dict[str, Any] = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise InvalidArgument("conninfo", f"is not a valid conninfo string: {exc}") from None
        self._reconnect_initial = seconds(reconnect_initial, "reconnect_initial", allow_zero=False)
        self._reconnect_max = seconds(reconnect_max, "reconnect_max", allow_zero=False)
        if self._reconnect_max < self._reconnect_initial:
            raise InvalidArgument(
                "reconnect_max", f"must be >= reconnect_initial ({reconnect_initial!r} seconds)"
            )
        self._connect_timeout = seconds(connect_timeout, "connect_timeout", allow_zero=False)

        params.setdefault("application_name", APPLICATION_NAME)
        for key, value in KEEPALIVE_DEFAULTS.items():
            params.setdefault(key, value)
        # libpq counts whole seconds, at least 2.
        params["connect_timeout"] = max(2, math.ceil(self._connect_timeout))
        params["autocommit"] = True
        self._params = params

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._subs: dict[str, list[_Subscription]] = {}
        self._active: set[str] = set()  # queues LISTENed on the current connection
        self._closed = False
        self._thread: threading.Thread | None = None
        self._connecting = False  # the thread is inside a (non-interruptible) connect
        self._wakeup = WakeSocket()
        self._reconnects = 0
        self._notifications_received = 0
        self._backend_pid: int | None = None
        self._last_error: BaseException | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def reconnects(self) -> int:
        """How many times the listener reconnected after losing its connection."""
        return self._reconnects

    @property
    def notifications_received(self) -> int:
        """How many notifications arrived on the connection (one per NOTIFY)."""
        return self._notifications_received

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend pid of the current connection, ``None`` if disconnected."""
        return self._backend_pid

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def queues(self) -> list[str]:
        """The queues with at least one subscriber, sorted."""
        with self._lock:
            return sorted(self._subs)

    def subscribe(self, queue: str, callback: ListenerCallback) -> abc.DisposableBase:
        """Call ``callback`` for every notification about ``queue`` (and after reconnects).

        Blocks until LISTEN on the queue's channel is active, so a message sent after
        this returns is notified. Several callbacks per queue are fine. Called from a
        listener callback (the listener thread), it cannot wait: the LISTEN then becomes
        active right after that callback returns.

        Args:
            queue: The queue name.
            callback: Called on the listener thread with each :class:`ListenerEvent`.

        Returns:
            A disposable; disposing it stops calls to ``callback`` (a call already
            running finishes) and UNLISTENs when the queue has no callback left.

        Raises:
            InvalidArgument: If the queue name or callback is invalid.
            ConnectionLost: If LISTEN is not active within ``connect_timeout`` seconds
                (database unreachable); retry later.
            RxPgmqError: If the listener is closed.
        """
        check_queue_name(queue)
        if not callable(callback):
            raise InvalidArgument("callback", f"must be callable, got {callback!r}")
        return self._add(_Subscription(queue, callback))

    def notifications(self, queue: str) -> reactivex.Observable[ListenerEvent]:
        """Return a hot Observable of the events about ``queue``.

        Each subscription registers with :meth:`subscribe` (so subscribing starts
        listening to the queue and blocks until the LISTEN is active) and receives the
        ``"notify"`` and ``"reconnected"`` events that arrive afterwards, on the
        listener thread (use ``ops.observe_on`` to move them). It completes when the
        listener closes; subscribing to a closed or unreachable listener sends
        ``on_error``.

        Args:
            queue: The queue name.

        Returns:
            An ``Observable[ListenerEvent]``.

        Raises:
            InvalidArgument: If the queue name is invalid (raised at once).

        Example:
            >>> listener.notifications("orders").subscribe(print)  # doctest: +SKIP
        """
        check_queue_name(queue)

        def subscribe(
            observer: abc.ObserverBase[ListenerEvent],
            scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            return self._add(_Subscription(queue, observer.on_next, observer.on_completed))

        return reactivex.create(subscribe)

    def close(self) -> None:
        """Stop the thread and close the connection; idempotent, never hangs.

        Waits for the thread to close the connection, but not for a connection attempt
        in progress (an unreachable server may take ``connect_timeout``): the thread then
        exits on its own when the attempt ends.
        Observables from :meth:`notifications` complete.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            self._wakeup.close()
            return
        self._wake()
        # A connection attempt cannot be interrupted: don't wait for it, the thread
        # closes what it gets and exits. Otherwise the thread stops within milliseconds.
        if thread is not threading.current_thread() and not self._connecting:
            thread.join(_CLOSE_JOIN_TIMEOUT)
            if thread.is_alive():
                logger.debug("listener thread still busy after close(); it exits on its own")

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"backend_pid={self._backend_pid}"
        return f"<rx_pgmq.Listener {state} queues={self.queues} reconnects={self._reconnects}>"

    # -- subscriptions (any thread) -------------------------------------------------------

    def _add(self, sub: _Subscription) -> abc.DisposableBase:
        queue = sub.queue
        with self._cond:
            if self._closed:
                raise RxPgmqError(
                    "this Listener is closed; create a new rx_pgmq.Listener(conninfo) "
                    "to receive notifications"
                )
            self._subs.setdefault(queue, []).append(sub)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=ListenerThread(self).run, name="rx_pgmq-listener", daemon=True
                )
                self._thread.start()
            on_listener_thread = self._thread is threading.current_thread()
            if not on_listener_thread and queue not in self._active:
                self._wake()
                self._cond.wait_for(
                    lambda: queue in self._active or self._closed, self._connect_timeout
                )
                if queue not in self._active:
                    self._discard(sub)
                    self._wake()
                    if self._closed:
                        raise RxPgmqError(
                            "the Listener was closed while subscribing; create a new "
                            "rx_pgmq.Listener(conninfo)"
                        )
                    raise ConnectionLost(
                        f"could not LISTEN for queue {queue!r} within "
                        f"{self._connect_timeout:g} s (last error: {self._last_error!r}); "
                        "check that the database is reachable, then subscribe again"
                    )
            elif on_listener_thread:
                self._wake()
        return Disposable(lambda: self._remove(sub))

    def _remove(self, sub: _Subscription) -> None:
        with self._lock:
            if self._discard(sub) and not self._closed:
                self._wake()

    def _discard(self, sub: _Subscription) -> bool:
        """Unregister ``sub`` (lock held); return True if its queue has no callback left."""
        if not sub.active:
            return False
        sub.active = False
        subs = self._subs.get(sub.queue)
        if subs is None:
            return False
        subs.remove(sub)
        if subs:
            return False
        del self._subs[sub.queue]
        return True

    def _wake(self) -> None:
        self._wakeup.poke()
