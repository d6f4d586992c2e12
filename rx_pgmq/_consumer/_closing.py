"""How one consumer closes: the close sequence, the closer thread of a dispose, the exit hook.

The close runs on the consumer's reader thread once its loop ended
(:meth:`Closer.shutdown`): stop reading, let messages still held downstream settle and
pending acks flush (up to ``close_timeout``), release what is unsettled with one
``set_vt 0``, then report the error, if any. ``dispose`` starts a non-daemon thread
(:meth:`Closer.await_close`) that cancels a long poll and waits for the close, and at
interpreter exit every consumer still open is disposed and waited for.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
from reactivex import abc

from rx_pgmq._core._backoff import Backoff
from rx_pgmq._core._settle import resolve
from rx_pgmq._pg import _sql
from rx_pgmq._pg._dberrors import is_transient, translate
from rx_pgmq.message import Message

if TYPE_CHECKING:
    from rx_pgmq._consumer._facade import Consumer

__all__ = ["Closer", "Detached", "track"]

_log = logging.getLogger("rx_pgmq")

_live: weakref.WeakSet[Consumer] = weakref.WeakSet()
"""Consumers started and not closed: closed at interpreter exit (:func:`_close_at_exit`)."""
_exit_hook = threading.Lock()
_exit_hooked = False


def _close_at_exit() -> None:
    """At interpreter exit (before non-daemon threads are joined): dispose every consumer
    still open and wait for each to close, bounded by its ``close_timeout``.

    The reader and acknowledger are daemon threads, killed once the interpreter ends: a
    program that returns right after ``.run()`` (whose ``take`` disposes upstream only
    after ``run`` woke up), or never disposes, would leave its messages hidden until
    their visibility timeout (#14 item 4).
    """
    consumers = list(_live)
    for consumer in consumers:
        consumer.dispose()
    for consumer in consumers:
        consumer.wait_closed(2 * consumer.config.close_timeout + 5.0)


def _hook_exit() -> None:
    """Register :func:`_close_at_exit` once, with ``threading``'s exit hooks (run before
    the interpreter joins non-daemon threads; ``concurrent.futures`` uses them too)."""
    global _exit_hooked
    with _exit_hook:
        if _exit_hooked:
            return
        _exit_hooked = True
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(_close_at_exit)
        else:  # pragma: no cover - every supported CPython has it
            atexit.register(_close_at_exit)
    except RuntimeError:  # the interpreter is already shutting down
        pass


def track(consumer: Consumer) -> None:
    """Close ``consumer`` at interpreter exit unless it closed before (it is starting)."""
    _hook_exit()
    _live.add(consumer)


class Detached(abc.ObserverBase[Message]):
    """The observer of a disposed consumer: the subscriber left, nothing goes to it.

    Dropping the real one frees what the pipeline's operators still hold (e.g. the last
    value ``.run()`` or ``last()`` keeps), so those messages are released at once instead
    of holding the close for ``close_timeout``.
    """

    def on_next(self, value: Message) -> None:
        """Ignore ``value``."""

    def on_error(self, error: Exception) -> None:
        """Ignore ``error``."""

    def on_completed(self) -> None:
        """Ignore completion."""


class Closer:
    """How ``consumer`` closes (one per subscription).

    Attributes:
        grace: Whether a close waits for messages still held downstream (``False`` once
            the pipeline failed: nothing downstream settles any more).
        closed: Set once the consumer finished closing.
    """

    def __init__(
        self,
        consumer: Consumer,
        acker_thread: threading.Thread,
        on_closed: Callable[[Consumer], None],
    ) -> None:
        self._consumer = consumer
        self._acker_thread = acker_thread
        self._on_closed = on_closed
        self.grace = True
        self.closed = threading.Event()

    def await_close(self) -> None:
        """The closer thread: cancel a long poll, then wait (bounded) for the close."""
        config = self._consumer.config
        if config.options.long_poll is not None:
            self._cancel_long_poll()
        # drain (close_timeout) + acknowledger join (close_timeout) + release retries
        self.closed.wait(2 * config.close_timeout + 5.0)

    def _cancel_long_poll(self) -> None:
        """Cancel a long poll in progress so dispose does not wait for it to time out.

        A cancel that reaches the server before the statement starts is lost, so it is
        repeated while the read runs. Each cancel is sent under the lock, and the reader
        marks the read finished under the same lock: no cancel can hit a later statement
        (such as the release), and one landing on an idle backend is ignored by PostgreSQL.
        """
        c = self._consumer
        for _ in range(50):
            with c.cond:
                if not c.reader.reading:
                    return
                c.reader.link.cancel()
            if self.closed.wait(0.1):
                return

    def shutdown(self, error: BaseException | None) -> None:
        """Stop everything; flush acks, release what is unsettled, then report."""
        c = self._consumer
        with c.cond:
            c.closing = True
            if error is not None:  # the stream fails: nothing downstream settles any more
                self.grace = False
            c.cond.notify_all()
        c.reader.stop_listening()
        self._drain_acks()
        with c.cond:
            if len(c.batcher):
                rest = c.batcher.take()
                leftovers = [*rest.items, *rest.duplicates]
            else:
                leftovers = []
            unsettled = c.ledger.to_release((p.msg_id, p.read_ct) for p in leftovers)
        resolve([(p.token, "unacked") for p in leftovers])
        if unsettled and c.config.on_dispose == "release":
            self._release(unsettled)
        c.reader.link.close()  # the acknowledger closes its own connection when it exits
        if c.socket_cond is not None:
            c.socket_cond.close()  # no thread waits on the reader connection any more
        with c.cond:
            c.ledger.close()
        self.closed.set()
        _live.discard(c)
        self._on_closed(c)
        if error is not None and not isinstance(error, GeneratorExit):
            self._report_error(error)

    def _drain_acks(self) -> None:
        """Let messages still held downstream settle and pending acks flush (up to
        ``close_timeout`` in all), then stop the acknowledger (#14 item 2)."""
        c = self._consumer
        deadline = time.monotonic() + c.config.close_timeout
        with c.cond:
            while self._acker_thread.is_alive() and (
                len(c.batcher) or c.acker.flushing or (self.grace and c.alive_unsettled())
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                # A settle request wakes this wait; a message dying does too. The cap
                # re-checks the messages still referenced (no event for a handler ending).
                c.cond.wait(min(left, 0.05))
            c.ledger.begin_shutdown()
            c.cond.notify_all()
        if threading.current_thread() is not self._acker_thread:
            self._acker_thread.join(c.config.close_timeout)

    def _report_error(self, error: BaseException) -> None:
        c = self._consumer
        if isinstance(error, psycopg.Error):
            error = translate(error, c.config.queue)
        _log.error("rx_pgmq consumer of queue %r failed: %s", c.config.queue, error)
        try:
            c.observer.on_error(error if isinstance(error, Exception) else Exception(error))
        except Exception as exc:  # the observer itself failed while reporting
            _log.error("on_error of a subscriber raised: %s", exc)

    def _release(self, ids: list[int]) -> None:
        c = self._consumer
        backoff = Backoff(initial=0.05, maximum=1.0, max_attempts=4)
        link = c.reader.link
        while True:
            try:
                conn = link.get()
                params = (c.config.queue, _sql.id_array(ids), 0)
                conn.execute(_sql.SET_VT_MANY, params).fetchall()
                c.stats.settled("release", len(ids))
                return
            except psycopg.Error as exc:
                link.drop()
                delay = backoff.next_delay()
                if delay is None or not is_transient(exc):
                    _log.warning(
                        "could not release %d unsettled messages of queue %r (%s); they "
                        "reappear when their visibility timeout ends",
                        len(ids),
                        c.config.queue,
                        exc,
                    )
                    return
                time.sleep(delay)
