"""One subscription of a ``read_queue`` source: the reader loop and its acknowledger.

Threads: the reader thread blocks in reads and delivers messages; the acknowledger thread
flushes batched settle requests on its own connection, so reads and acks overlap. With
``listener=True`` the reader connection also LISTENs, and the idle reader thread waits on
its socket and the consumer's condition at once (:mod:`rx_pgmq._wakeup`). All
decisions (how much to read, when, when to flush) live in :mod:`rx_pgmq._demand`,
:mod:`rx_pgmq._planner` and :mod:`rx_pgmq._ackbatch`; this module only does the I/O and
the locking around them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, cast

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool
from reactivex import abc

from rx_pgmq import _sql
from rx_pgmq._ackbatch import AckBatcher, Backoff, Batch, Pending
from rx_pgmq._dberrors import is_transient, translate
from rx_pgmq._demand import Demand
from rx_pgmq._ledger import Ledger
from rx_pgmq._link import Link
from rx_pgmq._listener import Listener, ListenerEvent, channel_name
from rx_pgmq._options import ReadOptions
from rx_pgmq._planner import ReadNow, ReadPlanner
from rx_pgmq._stats import StatsRecorder
from rx_pgmq._wakeup import SocketCondition
from rx_pgmq.actions import AckStatus, Action
from rx_pgmq.errors import ConnectionLost, QueueNotFound
from rx_pgmq.message import Message

__all__ = ["MOVED_HEADER", "Config", "Consumer"]

_log = logging.getLogger("rx_pgmq")

MOVED_HEADER = "x-rx-pgmq-moved"
"""Header added to a message moved by ``MoveTo``: source queue, reason, attempts."""

_FENCED_DELETE = "DELETE FROM {table} WHERE msg_id = %s AND read_ct = %s RETURNING msg_id"
_FENCED_ARCHIVE = (
    "WITH moved AS (DELETE FROM {table} WHERE msg_id = %s AND read_ct = %s"
    " RETURNING msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)"
    " INSERT INTO {archive} (msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)"
    " SELECT msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers FROM moved"
    " RETURNING msg_id"
)
_FENCED_LOCK = "SELECT 1 FROM {table} WHERE msg_id = %s AND read_ct = %s FOR UPDATE"
_FENCED_SET_VT = (
    "UPDATE {table} SET vt = clock_timestamp() + make_interval(secs => %s)"
    " WHERE msg_id = %s AND read_ct = %s RETURNING msg_id"
)


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


_Token = Future[AckStatus] | Callable[[AckStatus], None]
"""What a settle request reports its status to: a ``Future``, or a callback."""


def _report(token: object, status: AckStatus) -> None:
    """Report ``status`` to one settle request: a ``Future`` gets it, a callback is called."""
    if isinstance(token, Future):
        if not token.done():
            token.set_result(status)
        return
    try:
        # A string type: ``Callable[[...], None]`` would build a generic alias per call.
        cast("Callable[[AckStatus], None]", token)(status)
    except Exception:  # like a Future's done-callback: logged, never raised into our threads
        _log.exception("a settle callback raised")


_new_tuple = tuple.__new__


def _resolve(tokens: list[tuple[object, AckStatus]]) -> None:
    for token, status in tokens:
        _report(token, status)


class Consumer:
    """The state of one subscription. Created and started by the source."""

    def __init__(
        self,
        config: Config,
        observer: abc.ObserverBase[Message],
        stats: StatsRecorder,
        on_closed: Callable[[Consumer], None],
    ) -> None:
        self.config = config
        self._observer = observer
        self.stats = stats
        self._on_closed = on_closed
        # The hot paths take the lock itself (``with self._lock``), skipping the
        # Condition's Python-level __enter__/__exit__; the condition waits on the same lock.
        self._lock = threading.RLock()
        # listener=True: the reader connection LISTENs itself and the reader thread waits
        # on its socket and this condition at once (no listener thread or connection).
        self._socket_cond = SocketCondition(self._lock) if config.listener is True else None
        self._cond = self._socket_cond or threading.Condition(self._lock)
        self._heard = 0  # notifications psycopg read during the reader's statements
        window = min(config.window or config.max_in_flight, config.max_in_flight)
        self.demand = Demand(window, config.batch_size, controlled=config.controlled)
        self.ledger = Ledger(self.demand)
        self._batcher = AckBatcher(max_batch=config.ack_batch_size, max_age=config.ack_max_age)
        self._closing = False
        self._failure: Exception | None = None
        self._flushing = False
        self._closed = threading.Event()
        self._reader = Link(config.conninfo, "reader")
        self._acker = Link(config.conninfo, "acker")
        if self._socket_cond is not None:
            self._reader.listen(channel_name(config.queue), self._on_heard)
        self._listen_sub: abc.DisposableBase | None = None
        self._planner: ReadPlanner | None = None
        self._reading = False
        self._ignored_warned = False
        read_stmt, self._read_params, full_stmt = self._read_statement()
        # Rendered once: psycopg would render a Composed again on every execute (~14 us
        # for the read). Queue names are ASCII, so no connection's encoding is needed.
        self._read_sql = _sql.rendered(read_stmt)
        self._read_full_sql = None if full_stmt is None else _sql.rendered(full_stmt)
        self._delete_sql = _sql.rendered(_sql.delete_inline(config.queue))
        self._reader_thread = threading.Thread(
            target=self._run_reader, name=f"rx_pgmq-reader-{config.queue}", daemon=True
        )
        self._acker_thread = threading.Thread(
            target=self._run_acker, name=f"rx_pgmq-acker-{config.queue}", daemon=True
        )

    # -- public surface used by the source and by messages ------------------------------

    def start(self) -> None:
        """Start the reader and acknowledger threads."""
        self.stats.add("consumers")
        self._acker_thread.start()
        self._reader_thread.start()

    @property
    def closed(self) -> bool:
        """Whether the consumer has finished closing."""
        return self._closed.is_set()

    @property
    def closing(self) -> bool:
        """Whether the consumer stopped reading (disposed or failed; it may still flush)."""
        return self._closing

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until closing finished (acks flushed, unsettled messages released)."""
        return self._closed.wait(timeout)

    def reader_backend_pid(self) -> int | None:
        """The reader connection's server pid (for fault-injection tests)."""
        return self._reader.backend_pid()

    def acker_backend_pid(self) -> int | None:
        """The acknowledger connection's server pid (for fault-injection tests)."""
        return self._acker.backend_pid()

    def request(self, n: int) -> None:
        """Grant ``n`` more messages of credit (controlled sources)."""
        with self._cond:
            self.demand.request(n)
            self._wake_for_demand()

    def set_paused(self, paused: bool) -> None:
        """Pause or resume reading (``pausable``)."""
        with self._cond:
            if paused:
                self.demand.pause()
            else:
                self.demand.resume()
                self._wake_for_demand()

    def fail(self, error: Exception) -> None:
        """Stop like :meth:`dispose`, then report ``error`` to the subscriber.

        Used when something the consumer depends on fails (e.g. a ``pausable`` pauser).
        """
        with self._cond:
            if self._failure is None:
                self._failure = error
            self._closing = True
            self._cond.notify_all()

    def dispose(self) -> None:
        """Stop reading at once; flush acks and release unsettled messages (bounded wait)."""
        with self._cond:
            if self._closing:
                already = True
            else:
                already = False
                self._closing = True
                self._cond.notify_all()
        if not already and self.config.options.long_poll is not None:
            self._cancel_long_poll()
        current = threading.current_thread()
        if current is not self._reader_thread and current is not self._acker_thread:
            self._closed.wait(self.config.close_timeout + 5.0)

    def _cancel_long_poll(self) -> None:
        """Cancel a long poll in progress so dispose does not wait for it to time out.

        A cancel that reaches the server before the statement starts is lost, so it is
        repeated while the read runs. Each cancel is sent under the lock, and the reader
        marks the read finished under the same lock: no cancel can hit a later statement
        (such as the release), and one landing on an idle backend is ignored by PostgreSQL.
        """
        for _ in range(50):
            with self._cond:
                if not self._reading:
                    return
                self._reader.cancel()
            if self._closed.wait(0.1):
                return

    def settle(
        self, message: Message, action: Action, reason: str | None = None
    ) -> Future[AckStatus]:
        """Queue ``action`` for ``message``; resolved once it committed (acknowledger)."""
        fut: Future[AckStatus] = Future()
        status = self._enqueue(message, action, reason, fut)
        if status is not None:
            fut.set_result(status)
        return fut

    def settle_callback(
        self,
        message: Message,
        action: Action,
        reason: str | None,
        callback: Callable[[AckStatus], None],
    ) -> None:
        """Like :meth:`settle` without a ``Future``: ``callback(status)`` once it committed.

        The ack operators use it (a ``Future`` per message costs more than the rest of the
        settle path). ``callback`` runs on the acknowledger thread, or at once on the
        caller's thread if the request is not queued; like a ``Future``'s done-callback, an
        exception it raises is logged, not propagated.
        """
        status = self._enqueue(message, action, reason, callback)
        if status is not None:
            _report(callback, status)

    def _enqueue(
        self, message: Message, action: Action, reason: str | None, token: _Token
    ) -> AckStatus | None:
        """Queue a settle request; return its status at once if it is not queued."""
        if self.config.options.delete_on_read:
            with self._cond:
                warn, self._ignored_warned = not self._ignored_warned, True
            if warn:
                _log.warning(
                    "queue %r is read with delete_on_read: messages are deleted on read, so "
                    "acks (%s) are ignored",
                    self.config.queue,
                    action.name,
                )
            return "ignored"
        msg_id, read_ct = message.msg_id, message.read_ct
        with self._lock:
            status = self.ledger.settle_requested((msg_id, read_ct))
            if status is not None:
                return status
            batcher = self._batcher
            # tuple.__new__: a named tuple's own __new__ is one more Python call
            item = _new_tuple(Pending, (msg_id, read_ct, action, reason, token, message))
            pending = batcher.add(item, time.monotonic())
            # Wake the acknowledger only when its plan changes: the first request starts
            # the max_age timer, the max_batch-th makes the batch due. Waking it for every
            # request would make it compete with this thread for the GIL once per message.
            if pending == 1 or pending == batcher.max_batch:
                self._cond.notify_all()
        return None

    # -- reader -------------------------------------------------------------------------

    def _wake_for_demand(self) -> None:
        if self._planner is not None:
            self._planner.on_demand(time.monotonic())
        self._cond.notify_all()

    def _on_listener_event(self, event: ListenerEvent) -> None:
        with self._cond:
            if self._planner is None:
                return
            if event.kind == "notify":
                self._notified(1, event.at)
            else:
                self._planner.on_reconnected(event.at)
            self._cond.notify_all()

    def _on_heard(self, _notify: psycopg.Notify) -> None:
        """A notification psycopg read during a reader statement (on the reader thread)."""
        self._heard += 1

    def _wait_listening(self, cond: SocketCondition, timeout: float | None) -> None:
        """Wait like ``cond.wait(timeout)``, and for a notification on the reader
        connection (the lock is held once, by ``_run_reader``).

        Raises:
            psycopg.OperationalError: If the reader connection broke meanwhile.
        """
        conn = self._reader.connected
        if conn is None or conn.closed:  # dropped: the next read reconnects and LISTENs
            cond.wait(timeout)
            return
        heard = self._reader.take_notifications(read=False)
        if not heard and cond.wait_readable(conn.fileno(), timeout):
            heard = self._reader.take_notifications()
        if heard:
            self._notified(heard, time.monotonic())

    def _notified(self, count: int, at: float) -> None:
        """Tell the planner about ``count`` insert notifications received at ``at`` (lock
        held)."""
        assert self._planner is not None
        self.stats.add("notifications", count)
        self._planner.on_notification(at)

    def _setup(self) -> None:
        cfg = self.config
        conn = self._reader.get()
        row = conn.execute(_sql.QUEUE_EXISTS, (cfg.queue,)).fetchone()
        if not row or not row[0]:
            raise QueueNotFound(cfg.queue)
        throttle = 0.0
        listening = cfg.listener is not None
        if listening:
            trow = conn.execute(_sql.NOTIFY_THROTTLE, (cfg.queue,)).fetchone()
            if trow is None:
                _log.warning(
                    "queue %r has no insert notifications enabled; the consumer will not be "
                    "woken by inserts. Call PGMQ.enable_notify(%r)",
                    cfg.queue,
                    cfg.queue,
                )
            else:
                throttle = trow[0] / 1000.0
        interval = cfg.read_interval
        if cfg.options.long_poll is not None:
            interval = 1e-3  # the server waits; ask again as soon as a long poll ends empty
        planner = ReadPlanner(read_interval=interval, listening=listening, throttle=throttle)
        if isinstance(cfg.listener, Listener):
            self._listen_sub = cfg.listener.subscribe(cfg.queue, self._on_listener_event)
        with self._cond:
            self._planner = planner
            planner.on_start(time.monotonic())

    def _read_statement(
        self,
    ) -> tuple[str | sql.Composed, Callable[[int], tuple[Any, ...]], sql.Composed | None]:
        """The consumer's read statement, a function from read size to its parameters, and
        the statement of a whole batch when it has one of its own.

        A plain read (no pop, conditional, long poll or FIFO grouping) runs PGMQ's read
        query inline; the others call PGMQ's functions. A plain read of a whole batch has
        the size and timeout written in, so the server plans it once (see
        ``_sql.read_inline``). Reads other than pops commit without waiting for the WAL
        flush unless ``ReadOptions.durable_reads``.
        """
        cfg, opts = self.config, self.config.options
        q, vt, durable = cfg.queue, cfg.vt, opts.durable_reads
        if opts.delete_on_read:
            return _sql.select_messages(_sql.POP_CALL), lambda n: (q, n), None
        lp = opts.long_poll
        if opts.fifo is not None:
            stmt = _sql.read_grouped(opts.fifo, poll=lp is not None, durable=durable)
            if lp is not None:
                max_s, every_ms = lp.max_seconds, lp.interval_ms
                return stmt, lambda n: (q, vt, n, max_s, every_ms), None
            return stmt, lambda n: (q, vt, n), None
        cond = opts.conditional_json
        if lp is not None:
            max_s, every_ms = lp.max_seconds, lp.interval_ms
            stmt = _sql.select_messages(_sql.READ_WITH_POLL_CALL, durable=durable)
            return stmt, lambda n: (q, vt, n, max_s, every_ms, cond), None
        if opts.conditional:
            stmt = _sql.select_messages(_sql.READ_CALL, durable=durable)
            return stmt, lambda n: (q, vt, n, cond), None
        full = _sql.read_inline(q, durable=durable, qty=self.demand.batch_size, vt=vt)
        return _sql.read_inline(q, durable=durable), lambda n: (n, vt), full

    def _read(self, n: int) -> list[Message]:
        conn = self._reader.get()
        if n == self.demand.batch_size and self._read_full_sql is not None:
            cur = conn.execute(self._read_full_sql, prepare=True, binary=True)
        else:
            cur = conn.execute(self._read_sql, self._read_params(n), prepare=True, binary=True)
        rows = cur.fetchall()
        return _sql.messages_from_rows(rows, self.config.queue, self, _sql.json_loads(conn))

    def _next_read_size(self) -> int:
        """Wait under the lock until a read is due; return its size (0 when closing)."""
        assert self._planner is not None
        while not self._closing:
            now = time.monotonic()
            size = self.demand.read_size()
            plan = self._planner.next(now, size > 0)
            if isinstance(plan, ReadNow):
                return size
            if self.demand.starved and len(self._batcher):
                self._cond.notify_all()  # starved: the acknowledger flushes at once
            timeout = None if plan.deadline is None else max(0.0, plan.deadline - now)
            if self._socket_cond is not None:
                self._wait_listening(self._socket_cond, timeout)
            else:
                self._cond.wait(timeout)
        return 0

    def _run_reader(self) -> None:
        backoff = Backoff(initial=0.05, maximum=5.0)
        error: BaseException | None = None
        try:
            while True:
                try:
                    self._setup()
                    break
                except (psycopg.Error, ConnectionLost) as exc:
                    if not is_transient(exc):
                        raise translate(exc, self.config.queue) from exc
                    if not self._retry_wait(backoff, "reader", exc):
                        return
            backoff.reset()
            while True:
                try:
                    with self._cond:
                        size = self._next_read_size()
                        if size == 0:
                            break
                        self._reading = True
                    msgs = self._read(size)
                except psycopg.Error as exc:  # the read, or the LISTEN connection while idle
                    with self._cond:
                        self._reading = False
                        assert self._planner is not None
                        self._planner.on_read_failed(time.monotonic())
                    if self._closing:
                        break
                    if not is_transient(exc):
                        raise translate(exc, self.config.queue) from exc
                    if not self._retry_wait(backoff, "reader", exc):
                        break
                    continue
                backoff.reset()
                self._deliver(size, msgs)
        except BaseException as exc:
            error = exc
        finally:
            self._shutdown(error if error is not None else self._failure)

    def _retry_wait(self, backoff: Backoff, role: str, exc: BaseException) -> bool:
        """Log, drop the connection and wait out the backoff; False if closing meanwhile."""
        link = self._reader if role == "reader" else self._acker
        link.drop()
        self.stats.add("reconnects")
        delay = backoff.next_delay() or 5.0
        _log.warning(
            "rx_pgmq %s of queue %r lost its connection (%s); reconnecting in %.2fs",
            role,
            self.config.queue,
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            delay,
        )
        deadline = time.monotonic() + delay
        with self._cond:
            while not (self._closing if role == "reader" else self.ledger.stopped):
                left = deadline - time.monotonic()
                if left <= 0:
                    if role == "reader" and self._planner is not None:
                        self._planner.on_reconnected(time.monotonic())
                    return True
                self._cond.wait(left)
        return False

    def _deliver(self, asked: int, msgs: list[Message]) -> None:
        now = time.monotonic()
        held, empty = 0, not msgs
        with self._cond:
            self._reading = False
            assert self._planner is not None
            if self._heard:  # heard during the read: the insert may be after its snapshot
                heard, self._heard = self._heard, 0
                self._notified(heard, now)
            self._planner.on_read(now, asked, len(msgs))
            if self.config.options.delete_on_read:
                self.ledger.emitted_deleted(len(msgs))
            else:
                got = len(msgs)
                msgs = self.ledger.emitted(msgs, now)
                held = got - len(msgs)
        self.stats.add("reads")
        if held:
            self.stats.add("held_rereads", held)
            _log.info(
                "queue %r: %d messages read again with the read_ct of a delivery this "
                "consumer still holds (the server forgot a read in a crash); the held "
                "delivery settles them",
                self.config.queue,
                held,
            )
        if empty:
            self.stats.add("empty_reads")
        if not msgs:
            return
        pop = self.config.options.delete_on_read
        on_next = self._observer.on_next
        emitted = 0
        try:
            for m in msgs:
                if self._closing:
                    break  # not emitted: released on shutdown like any unsettled message
                emitted += 1
                on_next(m)
                if pop:
                    with self._cond:
                        self.ledger.delivered_deleted(1)
                        self._wake_for_demand()
                    self.stats.settled("pop")
        finally:
            self.stats.add("messages", emitted)

    def _shutdown(self, error: BaseException | None) -> None:
        """Stop everything; flush acks, release what is unsettled, then report."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._listen_sub is not None:
            self._listen_sub.dispose()
        # Let pending acks flush (bounded), then stop the acknowledger.
        deadline = time.monotonic() + self.config.close_timeout
        with self._cond:
            while (len(self._batcher) or self._flushing) and self._acker_thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self.ledger.begin_shutdown()
            self._cond.notify_all()
        if threading.current_thread() is not self._acker_thread:
            self._acker_thread.join(self.config.close_timeout)
        with self._cond:
            if len(self._batcher):
                rest = self._batcher.take()
                leftovers = [*rest.items, *rest.duplicates]
            else:
                leftovers = []
            unsettled = self.ledger.to_release((p.msg_id, p.read_ct) for p in leftovers)
        _resolve([(p.token, "unacked") for p in leftovers])
        if unsettled and self.config.on_dispose == "release":
            self._release(unsettled)
        self._reader.close()  # the acknowledger closes its own connection when it exits
        if self._socket_cond is not None:
            self._socket_cond.close()  # no thread waits on the reader connection any more
        with self._cond:
            self.ledger.close()
        self._closed.set()
        self._on_closed(self)
        if error is not None and not isinstance(error, GeneratorExit):
            if isinstance(error, psycopg.Error):
                error = translate(error, self.config.queue)
            _log.error("rx_pgmq consumer of queue %r failed: %s", self.config.queue, error)
            try:
                self._observer.on_error(error if isinstance(error, Exception) else Exception(error))
            except Exception as exc:  # the observer itself failed while reporting
                _log.error("on_error of a subscriber raised: %s", exc)

    def _release(self, ids: list[int]) -> None:
        backoff = Backoff(initial=0.05, maximum=1.0, max_attempts=4)
        while True:
            try:
                conn = self._reader.get()
                params = (self.config.queue, _sql.id_array(ids), 0)
                conn.execute(_sql.SET_VT_MANY, params).fetchall()
                self.stats.settled("release", len(ids))
                return
            except psycopg.Error as exc:
                self._reader.drop()
                delay = backoff.next_delay()
                if delay is None or not is_transient(exc):
                    _log.warning(
                        "could not release %d unsettled messages of queue %r (%s); they "
                        "reappear when their visibility timeout ends",
                        len(ids),
                        self.config.queue,
                        exc,
                    )
                    return
                time.sleep(delay)

    # -- acknowledger -------------------------------------------------------------------

    def _run_acker(self) -> None:
        try:
            self._acker_loop()
        finally:
            # Only this thread uses the acknowledger's connection, so only it closes it
            # (shutdown may stop waiting for it after close_timeout while a flush runs).
            self._acker.close()

    def _acker_loop(self) -> None:
        backoff = Backoff(initial=0.05, maximum=2.0, max_attempts=8)
        heartbeat = self.config.vt / 2.0 if self.config.extend_visibility else None
        next_beat = time.monotonic() + heartbeat if heartbeat else None
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    closing = self._closing
                    if self.ledger.stopped:
                        return
                    if len(self._batcher) and self._batcher.due(now, self.demand.starved, closing):
                        break
                    if next_beat is not None and now >= next_beat:
                        break
                    deadlines = [d for d in (self._batcher.deadline(), next_beat) if d]
                    timeout = max(0.0, min(deadlines) - now) if deadlines else None
                    self._cond.wait(timeout)
                batch = self._batcher.take() if len(self._batcher) else None
                self._flushing = batch is not None
                beat_ids: list[int] = []
                if batch is None and next_beat is not None and heartbeat is not None:
                    beat_ids = self.ledger.lease_expiring(now - heartbeat)
                    next_beat = now + heartbeat / 2.0
            if batch is not None:
                self._flush(batch, backoff)
            elif beat_ids:
                self._extend(beat_ids)

    def _extend(self, ids: list[int]) -> None:
        try:
            conn = self._acker.get()
            conn.execute(
                _sql.SET_VT_MANY, (self.config.queue, _sql.id_array(ids), self.config.vt)
            ).fetchall()
        except psycopg.Error as exc:
            self._acker.drop()
            _log.warning("visibility heartbeat of queue %r failed: %s", self.config.queue, exc)
            return
        with self._cond:
            self.ledger.lease_extended(ids, time.monotonic())
        self.stats.add("extended", len(ids))

    def _flush(self, batch: Batch, backoff: Backoff) -> None:
        try:
            lost, skipped = self._execute(batch) if batch.sql_needed else (set(), set())
        except psycopg.Error as exc:
            delay = backoff.next_delay() if is_transient(exc) else None
            self._acker.drop()
            if delay is not None and not self.ledger.stopped:
                self.stats.add("reconnects")
                _log.warning(
                    "ack flush for queue %r failed (%s); retrying in %.2fs",
                    self.config.queue,
                    str(exc).strip().splitlines()[0],
                    delay,
                )
                with self._cond:
                    now = time.monotonic()
                    self._batcher.requeue(batch, now, retry_at=now + delay)
                    self._flushing = False
                    self._cond.notify_all()
                return
            _log.error(
                "could not acknowledge %d messages of queue %r (%s); they stay unsettled "
                "and reappear after their visibility timeout",
                len(batch.items),
                self.config.queue,
                translate(exc, self.config.queue),  # named errors carry a hint
            )
            backoff.reset()
            self._finish(batch, lost=set(), failed={p.msg_id for p in batch.items})
            return
        backoff.reset()
        self.stats.add("ack_flushes")
        self._finish(batch, lost=lost, failed=skipped)

    def _finish(self, batch: Batch, *, lost: set[int], failed: set[int]) -> None:
        """Record a flushed batch: credit back, counters, then report each request's status.

        ``failed`` ids were not applied (flush failed, or a move had nowhere to go): they
        stay hidden until their timeout and are reported ``unacked``. Their credit returns
        too, since this consumer no longer holds them.
        """
        results: list[tuple[object, AckStatus]] = []
        with self._cond:
            self.ledger.settled(batch.items)
            counts: dict[str, int] = {}  # settled per action name, counted once per batch
            failures = 0
            for p in batch.items:
                msg_id = p.msg_id
                if failed and msg_id in failed:
                    status: AckStatus = "unacked"
                    failures += 1
                elif lost and msg_id in lost:
                    status = "lost_lease"
                    counts["lost_lease"] = counts.get("lost_lease", 0) + 1
                else:
                    status = "acked"
                    action_name = p.action.name
                    counts[action_name] = counts.get(action_name, 0) + 1
                results.append((p.token, status))
            for name, k in counts.items():
                self.stats.settled(name, k)
            if failures:
                self.stats.add("ack_failures", failures)
            for p in batch.duplicates:
                # Another delivery of a message in this batch (one SQL action per msg_id
                # and flush): it goes into the next flush, if there is one.
                if self.ledger.stopped:
                    results.append((p.token, "unacked"))
                else:
                    self._batcher.add(p, time.monotonic())
            self._flushing = False
            self._wake_for_demand()
        _resolve(results)

    def _moves(
        self, conn: psycopg.Connection[Any], batch: Batch
    ) -> tuple[dict[str, list[tuple[Pending, Message]]], set[int]]:
        """The moves of a batch with their messages, and the ids that cannot move.

        A destination queue that does not exist fails only its own moves (logged), not
        the rest of the batch.
        """
        if not batch.move:
            return {}, set()
        with self._cond:  # a delivery no longer held (closed meanwhile) does not move
            held = self.ledger
            wanted = {
                dest: [(p, p.message if (p.msg_id, p.read_ct) in held else None) for p in items]
                for dest, items in batch.move.items()
            }
        rows = conn.execute(_sql.QUEUES_EXISTING, (list(wanted),)).fetchall()
        existing = {r[0] for r in rows}
        moves: dict[str, list[tuple[Pending, Message]]] = {}
        skipped: set[int] = set()
        for dest, pairs in wanted.items():
            for p, m in pairs:
                if m is None or dest not in existing:
                    skipped.add(p.msg_id)
                else:
                    moves.setdefault(dest, []).append((p, m))
            if dest not in existing:
                _log.error(
                    "MoveTo(%r): queue %r does not exist; %d messages of queue %r stay and "
                    "reappear after their visibility timeout",
                    dest,
                    dest,
                    len(pairs),
                    self.config.queue,
                )
        return moves, skipped

    def _execute(self, batch: Batch) -> tuple[set[int], set[int]]:
        """Apply one batch in one transaction; return (lost-lease ids, ids not applied)."""
        q = self.config.queue
        conn = self._acker.get()
        moves, skipped = self._moves(conn, batch)
        if self.config.fenced:
            return self._execute_fenced(conn, batch, moves), skipped
        if batch.delete and not (batch.archive or batch.set_vt or moves):
            # One statement is atomic on its own: no BEGIN/COMMIT round trips.
            deleted = _sql.id_array(batch.delete)
            conn.execute(self._delete_sql, (deleted,), prepare=True).fetchall()
            return set(), skipped
        # BEGIN and COMMIT ride in the pipeline: one round trip for the whole batch (a
        # move's send and delete stay in that one transaction).
        with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
            if batch.delete:
                cur.execute(self._delete_sql, (_sql.id_array(batch.delete),), prepare=True)
            if batch.archive:
                cur.execute(_sql.ARCHIVE_MANY, (q, _sql.id_array(batch.archive)), prepare=True)
            for vt, ids in batch.set_vt.items():
                cur.execute(_sql.SET_VT_MANY, (q, _sql.id_array(ids), vt), prepare=True)
            for dest, pairs in moves.items():
                self._move(cur, dest, pairs)
        return set(), skipped

    def _move(
        self, cur: psycopg.Cursor[Any], dest: str, pairs: list[tuple[Pending, Message]]
    ) -> None:
        """Copy messages to ``dest`` and delete exactly those here (caller's transaction)."""
        q = self.config.queue
        bodies, heads = [], []
        for p, m in pairs:
            headers = dict(m.headers or {})
            headers[MOVED_HEADER] = {"from": q, "reason": p.reason, "attempts": m.read_ct}
            bodies.append(json.dumps(m.body))
            heads.append(json.dumps(headers))
        if bodies:
            cur.execute(_sql.SEND_BATCH, (dest, bodies, heads, 0))
            cur.execute(self._delete_sql, (_sql.id_array([p.msg_id for p, _m in pairs]),))

    def _execute_fenced(
        self,
        conn: psycopg.Connection[Any],
        batch: Batch,
        moves: dict[str, list[tuple[Pending, Message]]],
    ) -> set[int]:
        """Acks that only touch a message still holding the read_ct this consumer saw."""
        q = self.config.queue
        table, archive = _sql.queue_table(q), _sql.queue_table(q, "a")
        movable = {p.msg_id: (dest, p, m) for dest, pairs in moves.items() for p, m in pairs}
        lost: set[int] = set()
        with conn.transaction(), conn.cursor() as cur:
            for p in batch.items:
                action = p.action
                if action.name == "nothing":
                    continue
                if action.name == "move":
                    if p.msg_id not in movable:
                        continue  # skipped: destination missing
                    row = cur.execute(
                        sql.SQL(_FENCED_LOCK).format(table=table), (p.msg_id, p.read_ct)
                    ).fetchone()
                    if row is None:
                        lost.add(p.msg_id)
                    else:
                        dest, pending, message = movable[p.msg_id]
                        self._move(cur, dest, [(pending, message)])
                    continue
                if action.name == "delete":
                    stmt = sql.SQL(_FENCED_DELETE).format(table=table)
                    params: tuple[Any, ...] = (p.msg_id, p.read_ct)
                elif action.name == "archive":
                    stmt = sql.SQL(_FENCED_ARCHIVE).format(table=table, archive=archive)
                    params = (p.msg_id, p.read_ct)
                else:
                    assert action.name == "set_vt"
                    stmt = sql.SQL(_FENCED_SET_VT).format(table=table)
                    params = (action.vt, p.msg_id, p.read_ct)
                if cur.execute(stmt, params).fetchone() is None:
                    lost.add(p.msg_id)
        return lost
