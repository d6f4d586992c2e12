"""One subscription of a ``read_queue`` source: the facade over its reader and acknowledger.

The :class:`Consumer` holds the lock and the core objects of one subscription
(:class:`~rx_pgmq._core._demand.Demand`, :class:`~rx_pgmq._core._ledger.Ledger`,
:class:`~rx_pgmq._core._ackbatch.AckBatcher`), starts the reader loop
(:mod:`rx_pgmq._consumer._reader`) and the acknowledger loop (:mod:`rx_pgmq._consumer._acker`)
on threads of their own, and takes settle requests from messages; its
:class:`~rx_pgmq._consumer._closing.Closer` sequences the shutdown. Every method reads the
same way: take the lock, ask the core, do the I/O without the lock, tell the core.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg_pool import ConnectionPool
from reactivex import abc

from rx_pgmq._consumer._acker import Acker
from rx_pgmq._consumer._closing import Closer, Detached, track
from rx_pgmq._consumer._reader import Reader, set_on_drop
from rx_pgmq._core._ackbatch import AckBatcher, Pending
from rx_pgmq._core._demand import Demand
from rx_pgmq._core._ledger import Ledger
from rx_pgmq._core._settle import Token, report, resolve
from rx_pgmq._core._stats import StatsRecorder
from rx_pgmq._pg._consumer_sql import MOVED_HEADER
from rx_pgmq._pg._listener import Listener
from rx_pgmq._pg._wakeup import SocketCondition
from rx_pgmq._values import _telemetry
from rx_pgmq._values._options import ReadOptions
from rx_pgmq._values._slots import new_tuple
from rx_pgmq.actions import AckStatus, Action, SetVisibilityTimeout
from rx_pgmq.message import Message

__all__ = ["MOVED_HEADER", "Config", "Consumer", "SettleRequest", "wait_closing"]

_log = logging.getLogger("rx_pgmq")

_RELEASE = SetVisibilityTimeout(0)

SettleRequest = tuple[Message, Action, "str | None", Callable[[AckStatus], None]]
"""One request of :meth:`Consumer.settle_many`: message, action, reason, callback."""


def _no_report(_status: AckStatus) -> None:
    """The token of a release nobody waits for (a dropped message)."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a subscription needs; built and validated by ``read_queue``."""

    conninfo: str | ConnectionPool
    queue: str
    vt: int
    read_interval: float | None
    listener: Listener | Literal[True] | None
    batch_size: int
    max_in_flight: int
    options: ReadOptions
    on_dispose: Literal["release", "keep"]
    extend_visibility: bool
    fenced: bool
    ack_batch_size: int
    ack_max_age: float
    close_timeout: float
    window: int | None = None
    controlled: bool = False
    connect_timeout: float = 30.0
    body_type: Any = None  # decode bodies into this type (read_queue checked it)


class Consumer:
    """The state of one subscription. Created and started by the source.

    Attributes:
        closing: Whether the consumer stopped reading (disposed or failed; it may still
            flush). A plain attribute: the reader reads it once per emitted message.
    """

    def __init__(
        self,
        config: Config,
        observer: abc.ObserverBase[Message],
        stats: StatsRecorder,
        on_closed: Callable[[Consumer], None],
    ) -> None:
        self.config = config
        self.observer = observer
        self.stats = stats
        # The hot paths take the lock itself (``with self._lock``), skipping the
        # Condition's Python-level __enter__/__exit__; the condition waits on the same lock.
        self._lock = threading.RLock()
        # listener=True: the reader thread waits on its connection's socket too.
        self.socket_cond = SocketCondition(self._lock) if config.listener is True else None
        self.cond = self.socket_cond or threading.Condition(self._lock)
        window = min(config.window or config.max_in_flight, config.max_in_flight)
        self.demand = Demand(window, config.batch_size, controlled=config.controlled)
        self.ledger = Ledger(self.demand)
        self.batcher = AckBatcher(max_batch=config.ack_batch_size, max_age=config.ack_max_age)
        self.closing = False
        self._failure: Exception | None = None
        self._ignored_warned = False
        self._drop_warned = False
        self._close_thread: threading.Thread | None = None
        # The hook the reader sets on each message it emits (one bound method for all):
        # the message calls it when it is freed before a settle of it was queued.
        self.on_drop = self._dropped
        self.reader = Reader(self)
        self.acker = Acker(self)
        self._reader_thread = threading.Thread(
            target=self._run_reader, name=f"rx_pgmq-reader-{config.queue}", daemon=True
        )
        self._acker_thread = threading.Thread(
            target=self.acker.run, name=f"rx_pgmq-acker-{config.queue}", daemon=True
        )
        self._closer = Closer(self, self._acker_thread, on_closed)

    # -- public surface used by the source and by messages ------------------------------

    def start(self) -> None:
        """Start the reader and acknowledger threads."""
        self.stats.add("consumers")
        track(self)
        self._acker_thread.start()
        self._reader_thread.start()

    @property
    def closed(self) -> bool:
        """Whether the consumer has finished closing."""
        return self._closer.closed.is_set()

    def reader_backend_pid(self) -> int | None:
        """The reader connection's server pid (for fault-injection tests)."""
        return self.reader.link.backend_pid()

    def acker_backend_pid(self) -> int | None:
        """The acknowledger connection's server pid (for fault-injection tests)."""
        return self.acker.link.backend_pid()

    def acks_pending(self) -> bool:
        """Whether settle requests wait for a flush (lock held)."""
        return len(self.batcher) > 0

    def request(self, n: int) -> None:
        """Grant ``n`` more messages of credit (controlled sources)."""
        with self.cond:
            self.demand.request(n)
            self.reader.on_demand()

    def set_paused(self, paused: bool) -> None:
        """Pause or resume reading (``pausable``)."""
        with self.cond:
            if paused:
                self.demand.pause()
            else:
                self.demand.resume()
                self.reader.on_demand()

    def fail(self, error: Exception) -> None:
        """Stop like :meth:`dispose`, then report ``error`` to the subscriber.

        Used when something the consumer depends on fails (e.g. a ``pausable`` pauser).
        """
        with self.cond:
            if self._failure is None:
                self._failure = error
            self.closing = True
            self.cond.notify_all()

    def dispose(self) -> None:
        """Stop reading at once and return; the consumer closes in the background.

        Closing (the reader thread's :meth:`Closer.shutdown`) lets messages still held downstream
        settle and pending acks flush for up to ``close_timeout``, then releases the rest.
        A non-daemon thread waits for it, so a program that ends right after disposing
        still releases its messages (#14 item 4). :meth:`wait_closed` waits for it too.
        """
        with self.cond:
            already, self.closing = self.closing, True
            self.cond.notify_all()
            if already or self._closer.closed.is_set():
                return
            if self._failure is None:
                self.observer = Detached()  # the subscriber left (see Detached)
            self._close_thread = closer = threading.Thread(
                target=self._closer.await_close, name=f"rx_pgmq-close-{self.config.queue}"
            )
        closer.start()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the consumer finished closing; return whether it did in time."""
        return self._closer.closed.wait(timeout)

    # -- dropped messages (#14 item 1) ----------------------------------------------------

    def _dropped(self, message: Message) -> None:
        """An emitted message was freed unsettled (its finalizer, any thread): release it.

        Must not raise. Once the consumer is closing, a dropped message is expected (the
        subscriber left): the close releases it with the rest, without a warning.
        """
        key = (message.msg_id, message.read_ct)
        with self._lock:
            if self.closing:  # the subscriber left: the close releases it, no warning
                self.ledger.gone((key,))
                self.cond.notify_all()  # the close may wait for this message
                return
            if not self.ledger.dropped(key):
                return
            item = new_tuple(Pending, (key[0], key[1], _RELEASE, None, _no_report, None))
            self.batcher.add(item, time.monotonic())
            self.cond.notify_all()
            warn, self._drop_warned = not self._drop_warned, True
        self.stats.add("dropped")
        if warn:
            _log.warning(
                "queue %r: message %d (read_ct %d) was dropped by the pipeline without "
                "being settled; it is released (visible again now). Settle every message "
                "(pgops.ack(), message.settle()) or drop messages with pgops.skip(predicate), "
                "which settles them. Only the first dropped message is logged.",
                self.config.queue,
                key[0],
                key[1],
            )

    def abandon_grace(self) -> None:
        """The pipeline ended with an error: nothing downstream settles any more, so a close
        releases what is unsettled at once instead of waiting for messages still referenced
        (an exception's traceback may hold one for as long as the user keeps it; #14 item 3).
        """
        with self.cond:
            self._closer.grace = False
            self.cond.notify_all()

    def alive_unsettled(self) -> int:
        """Held deliveries whose messages may still be settled downstream (lock held): a
        closing consumer waits for them."""
        return self.ledger.unsettled_alive()

    def never_emitted(self, messages: list[Message]) -> None:
        """The reader stopped before emitting ``messages`` (closing, or a subscriber
        raised): nothing downstream holds them, the close releases them at once."""
        with self._lock:
            self.ledger.gone([(m.msg_id, m.read_ct) for m in messages])

    def settle(
        self, message: Message, action: Action, reason: str | None = None
    ) -> Future[AckStatus]:
        """Queue ``action`` for ``message``; resolved once it committed (acknowledger)."""
        fut: Future[AckStatus] = Future()
        self.settle_callback(message, action, reason, fut)
        return fut

    def settle_callback(
        self,
        message: Message,
        action: Action,
        reason: str | None,
        callback: Token,
    ) -> None:
        """Like :meth:`settle` without a ``Future``: ``callback(status)`` once it committed.

        The ack operators use it: a ``Future`` per message costs more than the rest of the
        settle path (see :mod:`rx_pgmq._values._slots`). ``callback`` runs on the acknowledger
        thread, or at once on the caller's thread if the request is not queued; like a
        ``Future``'s done-callback, an exception it raises is logged, not propagated.
        :meth:`settle` passes its ``Future`` as ``callback``.
        """
        if self.config.options.delete_on_read:
            report(callback, self._ignored(action))
            return
        msg_id, read_ct = message.msg_id, message.read_ct
        with self._lock:
            status = self.ledger.settle_requested((msg_id, read_ct))
            if status is None:
                set_on_drop(message, None)  # settling: no longer a drop when freed
                batcher = self.batcher
                item = new_tuple(Pending, (msg_id, read_ct, action, reason, callback, message))
                pending = batcher.add(item, time.monotonic())
                # Wake the acknowledger only when its plan changes: the first request
                # starts the max_age timer, the max_batch-th makes the batch due. Waking it
                # for every request would make it compete with this thread for the GIL once
                # per message.
                if pending == 1 or pending == batcher.max_batch:
                    self.cond.notify_all()
                return
        report(callback, status)

    def settle_many(self, requests: list[SettleRequest]) -> None:
        """:meth:`settle_callback` for each ``(message, action, reason, callback)``, in
        order, with one lock acquisition and one batcher add for all of them (the ack
        operator settles a ``process_batch`` group so)."""
        if self.config.options.delete_on_read:
            resolve([(r[3], self._ignored(r[1])) for r in requests])
            return
        now_reports: list[tuple[object, AckStatus]] = []
        items: list[Pending] = []
        with self._lock:
            settle_requested, batcher = self.ledger.settle_requested, self.batcher
            for message, action, reason, callback in requests:
                msg_id, read_ct = message.msg_id, message.read_ct
                status = settle_requested((msg_id, read_ct))
                if status is not None:
                    now_reports.append((callback, status))
                    continue
                set_on_drop(message, None)  # settling: no longer a drop when freed
                items.append(
                    new_tuple(Pending, (msg_id, read_ct, action, reason, callback, message))
                )
            if items:
                before = len(batcher)
                pending = batcher.add_many(items, time.monotonic())
                # Wake the acknowledger when its plan changes (as in settle_callback): the first
                # request starts the max_age timer, reaching max_batch makes it due.
                if before == 0 or before < batcher.max_batch <= pending:
                    self.cond.notify_all()
        resolve(now_reports)

    def committed(self, message: Message, action: Action | None) -> None:
        """``message`` was settled in another transaction (``process_in_transaction``).

        Its delivery ends (its room returns) without any SQL from this consumer; ``action``
        is counted in the stats (``None``: the lease was lost, nothing was applied).
        """
        set_on_drop(message, None)
        with self._lock:
            ended = self.ledger.settled((message,))
            if ended:
                self.reader.on_demand()
        if ended and action is not None:
            self.stats.settled(action.name)
        hooks = _telemetry.hooks
        if ended and hooks is not None:
            hooks.committed(self.config.queue, action)

    @contextmanager
    def fencing(self, message: Message) -> Iterator[datetime]:
        """Hold off the heartbeat for ``message`` while the block runs; give its lease ``vt``.

        The ``vt`` this consumer last set for the delivery (its read's, or its heartbeat's
        since), for the fence of ``process_in_transaction`` to compare; a heartbeat already
        extending it is waited for (up to ``visibility_timeout``).
        """
        key = (message.msg_id, message.read_ct)
        with self.cond:
            deadline = time.monotonic() + self.config.vt
            while self.ledger.fence_started(key) and (left := deadline - time.monotonic()) > 0:
                self.cond.wait(left)
            vt = self.ledger.lease_vt(key, message.vt)
        try:
            yield vt
        finally:
            with self._lock:
                self.ledger.fence_ended(key)

    def _ignored(self, action: Action) -> AckStatus:
        """A settle request of a delete-on-read consumer: warn once, ignore."""
        with self._lock:
            warn, self._ignored_warned = not self._ignored_warned, True
        if warn:
            _log.warning(
                "queue %r is read with delete_on_read: messages are deleted on read, so "
                "acks (%s) are ignored",
                self.config.queue,
                action.name,
            )
        return "ignored"

    # -- shutdown (on the reader thread, once its loop ended: see _closing) -------------

    def _run_reader(self) -> None:
        error = self.reader.run()
        self._closer.shutdown(error if error is not None else self._failure)


def wait_closing(consumers: Iterable[Consumer], timeout: float | None) -> bool:
    """Wait until each of ``consumers`` that is closing has closed (running ones are not
    waited for); False if ``timeout`` seconds (``None``: no limit) passed first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for consumer in consumers:
        if not consumer.closing:
            continue
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not consumer.wait_closed(left):
            return False
    return True
