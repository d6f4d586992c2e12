"""The thread of a :class:`~rx_pgmq.Listener`: connect, LISTEN, dispatch, reconnect.

The thread is the only code that touches the listener's connection: it waits with a
selector on the connection socket and on the listener's wake-up socket pair, so
LISTEN/UNLISTEN requests from other threads are applied at once (no lock is held while
waiting), and notifications are read the moment they arrive (``PQconsumeInput`` +
``PQnotifies``, no polling interval). The :class:`~rx_pgmq.Listener` facade owns the
subscriptions and the lock; this loop reads and updates them under that lock.
"""

from __future__ import annotations

import logging
import selectors
import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from rx_pgmq._core._backoff import Backoff
from rx_pgmq._pg._dberrors import first_line
from rx_pgmq._values._channels import ListenerEvent, channel_name, queue_of_channel

if TYPE_CHECKING:
    from rx_pgmq._pg._listener import Listener

__all__ = ["ListenerThread"]

logger = logging.getLogger("rx_pgmq._pg._listener")  # one logger for the listener and its thread


class ListenerThread:
    """The body of the listener's daemon thread (one per :class:`~rx_pgmq.Listener`)."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    def run(self) -> None:
        """Connect, LISTEN and dispatch until the listener closes; reconnect after a loss."""
        listener = self._listener
        backoff = Backoff(initial=listener._reconnect_initial, maximum=listener._reconnect_max)
        was_connected = False
        failures = 0
        try:
            while not listener._closed:
                conn = self._try_connect()
                if listener._closed:
                    if conn is not None:
                        conn.close()
                    break
                if conn is None:
                    failures += 1
                    delay = backoff.next_delay() or listener._reconnect_max
                    logger.log(
                        logging.WARNING if failures == 1 else logging.INFO,
                        "rx_pgmq listener cannot connect (attempt %d): %s; retrying in %.2f s",
                        failures,
                        first_line(listener._last_error or "?"),
                        delay,
                    )
                    self._pause(delay)
                    continue
                failures = 0
                backoff.reset()
                try:
                    self._serve(conn, reconnected=was_connected)
                except Exception as exc:
                    if listener._closed:
                        break
                    listener._last_error = exc
                    logger.warning(
                        "rx_pgmq listener lost its connection (%s: %s); reconnecting",
                        type(exc).__name__,
                        first_line(exc),
                        exc_info=not isinstance(exc, psycopg.Error | OSError),
                    )
                finally:
                    with listener._lock:
                        listener._active.clear()
                        listener._backend_pid = None
                    conn.close()
                was_connected = True
                if not listener._closed:
                    self._pause(backoff.next_delay() or listener._reconnect_max)
        finally:
            self._finish()

    def _try_connect(self) -> psycopg.Connection[Any] | None:
        """Open the listener connection, or return ``None`` (error in ``_last_error``)."""
        listener = self._listener
        listener._connecting = True
        try:
            return psycopg.Connection.connect(**listener._params)
        except Exception as exc:
            listener._last_error = exc
            return None
        finally:
            listener._connecting = False

    def _finish(self) -> None:
        """On thread exit: drop subscriptions, complete notification observables."""
        listener = self._listener
        with listener._cond:
            subs = [sub for subs in listener._subs.values() for sub in subs]
            listener._subs.clear()
            listener._active.clear()
            for sub in subs:
                sub.active = False
            listener._cond.notify_all()
        listener._wakeup.close()
        for sub in subs:
            if sub.on_close is not None:
                try:
                    sub.on_close()
                except Exception:
                    logger.exception("rx_pgmq listener: on_completed of %r failed", sub.queue)

    def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less if the listener is closed meanwhile."""
        listener = self._listener
        deadline = time.monotonic() + delay
        with selectors.DefaultSelector() as sel:
            sel.register(listener._wakeup.reader, selectors.EVENT_READ)
            while not listener._closed and (remaining := deadline - time.monotonic()) > 0:
                if sel.select(remaining):
                    listener._wakeup.drain()

    def _serve(self, conn: psycopg.Connection[Any], *, reconnected: bool) -> None:
        """Listen and dispatch on ``conn`` until it breaks (raises) or the listener closes."""
        listener = self._listener
        conn.add_notify_handler(lambda n: self._on_notify(n.channel))
        pgconn = conn.pgconn
        with listener._lock:
            listener._backend_pid = conn.info.backend_pid
        listening: set[str] = set()
        with selectors.DefaultSelector() as sel:
            sel.register(listener._wakeup.reader, selectors.EVENT_READ, "wake")
            sel.register(pgconn.socket, selectors.EVENT_READ, "db")
            self._reconcile(conn, listening)
            if reconnected:
                listener._reconnects += 1
                logger.info("rx_pgmq listener reconnected (backend pid %s)", listener._backend_pid)
                self._broadcast_reconnected()
            while not listener._closed:
                for key, _ in sel.select():
                    if key.data == "wake":
                        listener._wakeup.drain()
                if listener._closed:
                    return
                # Read whatever arrived (a no-op read if only the wake-up socket fired).
                pgconn.consume_input()
                while (pgn := pgconn.notifies()) is not None:
                    self._on_notify(pgn.relname.decode("utf-8", "replace"))
                self._reconcile(conn, listening)

    def _reconcile(self, conn: psycopg.Connection[Any], listening: set[str]) -> None:
        """LISTEN/UNLISTEN so the connection listens to exactly the subscribed queues."""
        listener = self._listener
        with listener._lock:
            wanted = set(listener._subs)
            to_listen = sorted(wanted - listening)
            to_unlisten = sorted(listening - wanted)
            listener._active.difference_update(to_unlisten)
        if not to_listen and not to_unlisten:
            return
        statements = [
            sql.SQL("UNLISTEN {}").format(sql.Identifier(channel_name(q))) for q in to_unlisten
        ] + [sql.SQL("LISTEN {}").format(sql.Identifier(channel_name(q))) for q in to_listen]
        conn.execute(sql.SQL("; ").join(statements))
        listening.difference_update(to_unlisten)
        listening.update(to_listen)
        with listener._cond:
            listener._active.update(to_listen)
            listener._cond.notify_all()

    def _on_notify(self, channel: str) -> None:
        listener = self._listener
        listener._notifications_received += 1
        queue = queue_of_channel(channel)
        if queue is not None:
            self._dispatch(ListenerEvent(queue, "notify", time.monotonic()))

    def _broadcast_reconnected(self) -> None:
        listener = self._listener
        with listener._lock:
            queues = list(listener._subs)
        at = time.monotonic()
        for queue in queues:
            self._dispatch(ListenerEvent(queue, "reconnected", at))

    def _dispatch(self, event: ListenerEvent) -> None:
        listener = self._listener
        with listener._lock:
            subs = list(listener._subs.get(event.queue, ()))
        for sub in subs:
            if not sub.active:
                continue
            try:
                sub.callback(event)
            except Exception:
                logger.exception(
                    "rx_pgmq listener callback for queue %r raised; ignored", event.queue
                )
