"""The reader loop of one consumer: wait until a read is due, read, emit.

It runs on the consumer's reader thread: under the consumer's lock it asks the core
(:class:`~rx_pgmq._core._demand.Demand`, :class:`~rx_pgmq._core._planner.ReadPlanner`,
:class:`~rx_pgmq._core._ledger.Ledger`) what to do, releases the lock for the read, then tells
the core what came back and emits the fresh messages. With ``listener=True`` the reader
connection LISTENs and the idle thread waits on its socket and the lock's condition at
once (:mod:`rx_pgmq._pg._wakeup`).
"""

from __future__ import annotations

import gc
import logging
import time
from functools import partial
from typing import TYPE_CHECKING

import psycopg
from reactivex import abc

from rx_pgmq._core._backoff import Backoff
from rx_pgmq._core._planner import ReadNow, ReadPlanner
from rx_pgmq._pg import _sql
from rx_pgmq._pg._consumer_sql import read_statement
from rx_pgmq._pg._dberrors import first_line, is_transient, translate
from rx_pgmq._pg._link import Link
from rx_pgmq._pg._listener import Listener
from rx_pgmq._pg._queues import check_queue_exists
from rx_pgmq._pg._wakeup import SocketCondition
from rx_pgmq._values import _telemetry
from rx_pgmq._values._bodytype import text_decoder
from rx_pgmq._values._channels import ListenerEvent, channel_name
from rx_pgmq._values._slots import slot_setter
from rx_pgmq.errors import ConnectionLost
from rx_pgmq.message import Message

if TYPE_CHECKING:
    from rx_pgmq._consumer._facade import Config, Consumer

__all__ = ["Reader", "set_on_drop"]

_log = logging.getLogger("rx_pgmq")

_COLLECT_AFTER = 0.5
"""Seconds a full window with nothing settled waits before the reader runs the garbage
collector once (messages dropped inside reference cycles are released then)."""


def _never_connected(config: Config, exc: BaseException) -> ConnectionLost:
    """The error of a consumer that could not connect within its ``connect_timeout``."""
    return ConnectionLost(
        f"could not connect to read queue {config.queue!r} within connect_timeout="
        f"{config.connect_timeout:g}s (last error: {first_line(exc)}); check that the server "
        "runs and is reachable, or raise connect_timeout"
    )


set_on_drop = slot_setter(Message, "_on_drop")
"""``set_on_drop(message, hook)``: watch an emitted message (see ``Message``), or stop."""


class Reader:
    """The reader loop of ``consumer`` (one per subscription)."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = c = consumer
        cfg = c.config
        self._queue = cfg.queue
        self._cond, self._stats, self._ledger = c.cond, c.stats, c.ledger
        self.demand = c.demand
        self.link = Link(cfg.conninfo, "reader", cfg.connect_timeout)
        # listener=True: the reader connection LISTENs itself and the reader thread waits
        # on its socket and the condition at once (no listener thread or connection).
        self._socket_cond = c.socket_cond
        if self._socket_cond is not None:
            self.link.listen(channel_name(cfg.queue), self._on_heard)
        self._heard = 0  # notifications psycopg read during the reader's statements
        self._listen_sub: abc.DisposableBase | None = None
        self.planner: ReadPlanner | None = None
        self.reading = False  # a read runs (its long poll may be cancelled)
        self.statement = read_statement(cfg.queue, cfg.vt, c.demand.batch_size, cfg.options)
        self._fifo = cfg.options.fifo is not None
        # body_type: bodies decoded straight from their JSON text (read_queue checked it)
        self._body_loads = None if cfg.body_type is None else text_decoder(cfg.body_type)
        # A full window with nothing settled for a visibility timeout (#14 item 1): the
        # time it was first seen full, the ledger's ``ended`` count then, warned yet.
        self._full_since: float | None = None
        self._full_ended = 0
        self._stall_warned = cfg.options.delete_on_read
        self._collected = cfg.options.delete_on_read  # gc ran during this full window
        self._idle = False  # the last read came back empty

    # -- events (any thread, lock held or taken) -----------------------------------------

    def on_demand(self) -> None:
        """Room or credit appeared: read once (lock held)."""
        if self.planner is not None:
            self.planner.on_demand(time.monotonic())
        self._cond.notify_all()

    def _on_listener_event(self, event: ListenerEvent) -> None:
        with self._cond:
            if self.planner is None:
                return
            if event.kind == "notify":
                self._notified(1, event.at)
            else:
                self.planner.on_reconnected(event.at)
            self._cond.notify_all()

    def _on_heard(self, _notify: psycopg.Notify) -> None:
        """A notification psycopg read during a reader statement (on the reader thread)."""
        self._heard += 1

    def _notified(self, count: int, at: float) -> None:
        """Tell the planner about ``count`` insert notifications received at ``at`` (lock
        held)."""
        assert self.planner is not None
        self._stats.add("notifications", count)
        self.planner.on_notification(at)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> BaseException | None:
        """Set up, then read until the consumer closes; return the error that stopped it."""
        backoff = Backoff(initial=0.05, maximum=5.0)
        try:
            give_up = time.monotonic() + self._consumer.config.connect_timeout
            while True:
                try:
                    self._setup()
                    break
                except (psycopg.Error, ConnectionLost) as exc:
                    if not is_transient(exc):  # e.g. AuthenticationFailed: at once
                        raise translate(exc, self._queue) from exc
                    if time.monotonic() >= give_up:  # never connected (#14 item 9)
                        raise _never_connected(self._consumer.config, exc) from exc
                    if not self._retry_wait(backoff, exc):
                        return None
            backoff.reset()
            self._loop(backoff)
        except BaseException as exc:
            return exc
        return None

    def _loop(self, backoff: Backoff) -> None:
        consumer = self._consumer
        while True:
            try:
                with self._cond:
                    size = self._next_read_size()
                    if size == 0:
                        return
                    self.reading = True
                hooks = _telemetry.hooks
                if hooks is None:
                    msgs = self._read(size)
                else:
                    msgs = hooks.read(self._queue, self._consumer, partial(self._read, size))
            except psycopg.Error as exc:  # the read, or the LISTEN connection while idle
                with self._cond:
                    self.reading = False
                    assert self.planner is not None
                    self.planner.on_read_failed(time.monotonic())
                if consumer.closing:
                    return
                if not is_transient(exc):
                    raise translate(exc, self._queue) from exc
                if not self._retry_wait(backoff, exc):
                    return
                continue
            backoff.reset()
            self._deliver(size, msgs)
            del msgs  # the messages live on only downstream (a dropped one is released)

    def _setup(self) -> None:
        cfg = self._consumer.config
        conn = self.link.get()
        check_queue_exists(conn, cfg.queue)
        throttle = 0.0
        listening = cfg.listener is not None
        if listening:
            row = conn.execute(_sql.NOTIFY_THROTTLE, (cfg.queue,)).fetchone()
            if row is None:
                _log.warning(
                    "queue %r has no insert notifications enabled; the consumer will not be "
                    "woken by inserts. Call PGMQ.enable_notify(%r)",
                    cfg.queue,
                    cfg.queue,
                )
            else:
                throttle = row[0] / 1000.0
        interval = cfg.read_interval
        if cfg.options.long_poll is not None:
            interval = 1e-3  # the server waits; ask again as soon as a long poll ends empty
        planner = ReadPlanner(read_interval=interval, listening=listening, throttle=throttle)
        if isinstance(cfg.listener, Listener):
            self._listen_sub = cfg.listener.subscribe(cfg.queue, self._on_listener_event)
        with self._cond:
            self.planner = planner
            planner.on_start(time.monotonic())

    def _next_read_size(self) -> int:
        """Wait under the lock until a read is due; return its size (0 when closing)."""
        assert self.planner is not None
        consumer = self._consumer
        while not consumer.closing:
            now = time.monotonic()
            size = self.demand.read_size()
            plan = self.planner.next(now, size > 0)
            if isinstance(plan, ReadNow):
                return size
            if self.demand.starved and consumer.acks_pending():
                self._cond.notify_all()  # starved: the acknowledger flushes at once
            timeout = None if plan.deadline is None else max(0.0, plan.deadline - now)
            stall = self._stall_check(now, size)
            if stall is not None:
                timeout = stall - now if timeout is None else min(timeout, stall - now)
            if self._socket_cond is not None:
                self._wait_listening(self._socket_cond, timeout)
            else:
                self._cond.wait(timeout)
        return 0

    def _stall_check(self, now: float, size: int) -> float | None:
        """Watch a window that stays full (or a queue read empty while messages are held)
        with nothing settled; return when to look again.

        After :data:`_COLLECT_AFTER` seconds the garbage collector runs once: a message
        dropped inside a reference cycle (e.g. held by an exception's traceback) is only
        freed, and so released, by it. After a visibility timeout it warns once (a
        pipeline without ``ack``). Lock held.
        """
        demand = self.demand
        full = not size and not demand.paused and not demand.room()
        if not full and not (self._idle and len(self._ledger)):
            self._full_since = None
            return None
        ended = self._ledger.ended
        if self._full_since is None or ended != self._full_ended:
            self._full_since, self._full_ended, self._collected = now, ended, False
        collect_at = self._full_since + _COLLECT_AFTER
        if not self._collected:
            if now < collect_at:
                return collect_at
            self._collected = True
            gc.collect()  # a dropped message's finalizer queues its release
        if self._stall_warned or not full:
            return None
        due = self._full_since + self._consumer.config.vt
        if now < due:
            return due
        self._stall_warned = True
        _log.warning(
            "queue %r: all %d messages of the window (max_in_flight) were emitted and none "
            "was settled for %ds (visibility_timeout), so nothing more is read. Settle each "
            "message: end the pipeline with pgops.ack() (or call message.settle()).",
            self._queue,
            demand.window,
            self._consumer.config.vt,
        )
        return None

    def _wait_listening(self, cond: SocketCondition, timeout: float | None) -> None:
        """Wait like ``cond.wait(timeout)``, and for a notification on the reader
        connection (the lock is held once, by the loop).

        Raises:
            psycopg.OperationalError: If the reader connection broke meanwhile.
        """
        conn = self.link.connected
        if conn is None or conn.closed:  # dropped: the next read reconnects and LISTENs
            cond.wait(timeout)
            return
        heard = self.link.take_notifications(read=False)
        if not heard and cond.wait_readable(conn.fileno(), timeout):
            heard = self.link.take_notifications()
        if heard:
            self._notified(heard, time.monotonic())

    def _read(self, n: int) -> list[Message]:
        conn = self.link.get()
        rows = self.statement.rows(conn, n)
        return _sql.messages_from_rows(
            rows,
            self._queue,
            self._consumer,
            _sql.json_loads(conn),
            in_order=self._fifo,  # FIFO reads: the server's order across groups
            body_loads=self._body_loads,
        )

    def _retry_wait(self, backoff: Backoff, exc: BaseException) -> bool:
        """Log, drop the connection and wait out the backoff; False if closing meanwhile."""
        self.link.drop()
        self._stats.add("reconnects")
        delay = backoff.next_delay() or 5.0
        _log.warning(
            "rx_pgmq reader of queue %r lost its connection (%s); reconnecting in %.2fs",
            self._queue,
            first_line(exc),
            delay,
        )
        deadline = time.monotonic() + delay
        consumer = self._consumer
        with self._cond:
            while not consumer.closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    if self.planner is not None:
                        self.planner.on_reconnected(time.monotonic())
                    return True
                self._cond.wait(left)
        return False

    def _deliver(self, asked: int, msgs: list[Message]) -> None:
        """Tell the core what a read returned, then emit the fresh messages."""
        now = time.monotonic()
        held, empty = 0, not msgs
        pop = self._consumer.config.options.delete_on_read
        with self._cond:
            self.reading = False
            assert self.planner is not None
            if self._heard:  # heard during the read: the insert may be after its snapshot
                heard, self._heard = self._heard, 0
                self._notified(heard, now)
            self.planner.on_read(now, asked, len(msgs))
            if pop:
                self._ledger.emitted_deleted(len(msgs))
            else:
                got = len(msgs)
                msgs = self._ledger.emitted(msgs, now)
                held = got - len(msgs)
        self._stats.add("reads")
        if held:
            self._stats.add("held_rereads", held)
            _log.info(
                "queue %r: %d messages read again with the read_ct of a delivery this "
                "consumer still holds (the server forgot a read in a crash); the held "
                "delivery settles them",
                self._queue,
                held,
            )
        self._idle = empty
        if empty:
            self._stats.add("empty_reads")
        if msgs:
            self._emit(msgs, pop)

    def _emit(self, msgs: list[Message], pop: bool) -> None:
        consumer = self._consumer
        on_next = consumer.observer.on_next
        on_drop = None if pop else consumer.on_drop
        emitted = 0
        try:
            for m in msgs:
                if consumer.closing:
                    break  # not emitted: released on shutdown like any unsettled message
                emitted += 1
                if on_drop is not None:
                    set_on_drop(m, on_drop)  # released once dropped unsettled (#14 item 1)
                on_next(m)
                if pop:
                    with self._cond:
                        self._ledger.delivered_deleted(1)
                        self.on_demand()
                    self._stats.settled("pop")
        finally:
            self._stats.add("messages", emitted)
            if emitted < len(msgs) and not pop:
                consumer.never_emitted(msgs[emitted:])

    # -- closing -------------------------------------------------------------------------

    def stop_listening(self) -> None:
        """Stop hearing a shared listener's events."""
        sub, self._listen_sub = self._listen_sub, None
        if sub is not None:
            sub.dispose()
