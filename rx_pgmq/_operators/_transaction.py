"""``process_in_transaction``: a handler's writes and its message's ack in one transaction.

The queue lives in the user's PostgreSQL, so the handler's effects and the ack can commit
together: ``fn(message, conn)`` runs in a transaction, then, in that same transaction, a
fence locks the message's row (``FOR UPDATE``) if this consumer still holds it, and the
success action deletes, archives or moves it. Either both commit or neither does: a crash
anywhere before the commit leaves no effect and the message reappears after its visibility
timeout; a commit leaves the effect and no message.

The fence: the row is locked only if its ``read_ct`` is the delivery's and its ``vt`` is
the one this consumer last gave it, compared as ``timestamptz`` values PostgreSQL returned
(the ``vt`` of the read, or of the consumer's own heartbeat since: ``extend_visibility``;
the consumer's :class:`~rx_pgmq._core._ledger.Ledger` records it). Anything else that moved
the message fails the fence and is reported ``lost_lease``: a read by another consumer
(``read_ct`` changed), another client's ``set_vt``, a release at shutdown (``vt`` changed).

Why this is race-free: every write to the row (a read, ``set_vt``, a release) is an
``UPDATE`` that locks it, and a read skips locked rows (``FOR UPDATE SKIP LOCKED``). The
fence's ``SELECT ... FOR UPDATE`` waits for a writer that holds the row, then checks both
values on the row's newest version (PostgreSQL re-evaluates the ``WHERE`` of a locking
read after the wait). Once it holds the lock, nobody can change the row until the commit.
On this consumer's side, the heartbeat no longer extends a delivery being fenced
(:meth:`~rx_pgmq._consumer._facade.Consumer.fencing`), and a fence that starts while an
extension of its message is in flight waits for its new ``vt`` first: the ``vt`` it
compares is the row's as long as nobody else touched it.

The outcome of a committed message carries a :class:`Committed` acknowledger: the ack
operators downstream (``pgops.ack``) report it ``"acked"`` (``"lost_lease"`` when the fence
failed) without sending anything, and the consumer was told at commit that the delivery
ended (:meth:`rx_pgmq._consumer._facade.Consumer.committed`: its room in the window returns).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rx_pgmq._operators._process import _is_async, process
from rx_pgmq._pg import _sql
from rx_pgmq._values._moved import moved_json
from rx_pgmq._values._outcome import Outcome, check_action
from rx_pgmq._values._validate import check_positive_int
from rx_pgmq.actions import AckStatus, Action, Archive, Delete, MoveTo
from rx_pgmq.errors import InvalidArgument, NotAcknowledgeable, RxPgmqError
from rx_pgmq.message import Message, SettleCallback

__all__ = ["Committed", "LeaseLost", "process_in_transaction"]

_TxHandler = Callable[[Message, psycopg.Connection[Any]], Any]

_LOCK = "SELECT 1 FROM {table} WHERE msg_id = %s AND read_ct = %s AND vt = %s FOR UPDATE"
_DELETE = "DELETE FROM {table} WHERE msg_id = %s"
_ARCHIVE = (
    "WITH moved AS (DELETE FROM {table} WHERE msg_id = %s"
    " RETURNING msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)"
    " INSERT INTO {archive} (msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)"
    " SELECT msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers FROM moved"
)


class LeaseLost(RxPgmqError):
    """The consumer lost the message's lease while its handler ran: nothing was committed.

    Another consumer read the message, or something else changed its visibility timeout
    (another client's ``set_vt``, a release at shutdown). The handler's writes were rolled
    back; whoever holds the message now decides what happens to it. The ``Settled`` record
    of such an outcome has status ``"lost_lease"``.
    """

    __module__ = "rx_pgmq.operators"


class Committed:
    """The acknowledger of a message settled by ``process_in_transaction``.

    Settling it again sends nothing: it reports what the transaction did at once
    (``"acked"``, or ``"lost_lease"`` when the fence failed).

    Attributes:
        status: What the transaction did.
    """

    __slots__ = ("status",)

    def __init__(self, status: AckStatus) -> None:
        self.status: AckStatus = status

    def settle(
        self, message: Message, action: Action, reason: str | None = None
    ) -> Future[AckStatus]:
        """Report the status at once (no SQL)."""
        fut: Future[AckStatus] = Future()
        fut.set_result(self.status)
        return fut

    def settle_callback(
        self, message: Message, action: Action, reason: str | None, callback: SettleCallback
    ) -> None:
        """Call ``callback`` with the status at once (no SQL)."""
        callback(self.status)


class _Pools:
    """The connection pools of one subscription: the consumer's own pool when
    ``read_queue`` was given one, else one pool per conninfo, made on first use and closed
    with the subscription."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._own: dict[str, ConnectionPool] = {}
        self._lock = threading.Lock()
        self._closed = False

    def for_conninfo(self, conninfo: str | ConnectionPool) -> ConnectionPool:
        if isinstance(conninfo, ConnectionPool):
            return conninfo
        with self._lock:
            if self._closed:
                raise RxPgmqError("process_in_transaction: the subscription was disposed")
            pool = self._own.get(conninfo)
            if pool is None:
                pool = ConnectionPool(
                    conninfo,
                    min_size=1,
                    max_size=self._size,
                    open=True,
                    name="rx_pgmq-transactions",
                )
                self._own[conninfo] = pool
            return pool

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools, self._own = list(self._own.values()), {}
        for pool in pools:
            pool.close()


def _consumer_of(message: Message) -> Any:
    """The consumer that emitted ``message`` (it knows the database and ends deliveries)."""
    acker = message._acknowledger
    if acker is None or not all(hasattr(acker, a) for a in ("committed", "config", "fencing")):
        raise NotAcknowledgeable(
            "process_in_transaction needs messages emitted by rx_pgmq.read_queue(...) "
            f"(message {message.msg_id} has no consumer to settle it)"
        )
    return acker


def _settle_in(
    cur: psycopg.Cursor[Any], message: Message, action: Action, lease_vt: datetime
) -> bool:
    """Fence ``message`` and apply ``action`` in the caller's transaction; whether it held.

    ``lease_vt`` is the ``vt`` the consumer last gave the delivery (from PostgreSQL).
    """
    table = _sql.queue_table(message.queue)
    params = (message.msg_id, message.read_ct, lease_vt)
    locked = cur.execute(sql.SQL(_LOCK).format(table=table), params)
    if locked.fetchone() is None:
        return False
    if isinstance(action, Archive):
        archive = _sql.queue_table(message.queue, "a")
        cur.execute(sql.SQL(_ARCHIVE).format(table=table, archive=archive), (message.msg_id,))
        return True
    if isinstance(action, MoveTo):
        body, headers = moved_json(message, message.queue, None)
        cur.execute(_sql.SEND_BATCH, (action.queue, [body], [headers], 0))
    cur.execute(sql.SQL(_DELETE).format(table=table), (message.msg_id,))
    return True


class _Rollback(Exception):
    """Leaves the transaction block without committing.

    Attributes:
        outcome: The failed outcome ``fn`` returned, or ``None`` when the fence failed.
    """

    def __init__(self, outcome: Outcome | None) -> None:
        super().__init__()
        self.outcome = outcome


def _run_in_transaction(
    fn: _TxHandler, message: Message, pools: _Pools, on_success: Action
) -> Outcome:
    """Run ``fn`` and the success action in one transaction; return the outcome.

    Raises whatever ``fn`` raises (``process`` turns it into a failed outcome): the
    transaction was rolled back and the consumer still holds the message.
    """
    consumer = _consumer_of(message)
    if consumer.config.options.delete_on_read:
        raise NotAcknowledgeable(
            "process_in_transaction needs messages that stay in the queue until their "
            f"transaction deletes them; queue {message.queue!r} is read with delete_on_read "
            "(message already deleted): drop ReadOptions(delete_on_read=True)"
        )
    pool = pools.for_conninfo(consumer.config.conninfo)
    action = on_success
    with pool.connection() as conn, ExitStack() as fencing:
        try:
            with conn.transaction():
                result = fn(message, conn)
                if isinstance(result, Outcome):
                    if not result.ok:
                        raise _Rollback(result)
                    if result.ack is not None:
                        action = _check_success_action(result.ack, "the outcome's ack")
                    result = result.value
                # No heartbeat of the consumer moves vt from here to the commit.
                lease_vt = fencing.enter_context(consumer.fencing(message))
                with conn.cursor() as cur:
                    if not _settle_in(cur, message, action, lease_vt):
                        raise _Rollback(None)
        except _Rollback as rollback:
            if rollback.outcome is not None:
                return rollback.outcome
            consumer.committed(message, None)
            error = LeaseLost(
                f"message {message.msg_id} of queue {message.queue!r} is no longer held by "
                f"this consumer: another consumer read it (read_ct {message.read_ct} is not "
                "the current one) or something else changed its visibility timeout (a "
                "set_vt by another client, a release); the handler's writes were rolled back"
            )
            lost = replace(message, _acknowledger=Committed("lost_lease"))
            return Outcome(lost, False, error=error, ack=action)
        consumer.committed(message, action)
    settled = replace(message, _acknowledger=Committed("acked"))
    return Outcome(settled, True, result, ack=action)


def _check_success_action(value: object, argument: str) -> Action:
    action = check_action(value, argument)
    if not isinstance(action, Delete | Archive | MoveTo):
        raise InvalidArgument(
            argument,
            f"must be Delete(), Archive() or MoveTo(queue) (an action that ends the message "
            f"in the handler's transaction), got {action!r}",
        )
    return action


def process_in_transaction(
    fn: _TxHandler,
    *,
    on_success: Action = Delete(),  # noqa: B008 - actions are immutable values
    max_concurrency: int = 1,
) -> Callable[[Observable[Message]], Observable[Outcome]]:
    """Run ``fn(message, conn)`` and the message's ack in one database transaction.

    Exactly-once effects for effects in the queue's database: ``fn`` writes through
    ``conn`` (a connection to the consumer's database: from the pool given to
    ``read_queue``, or from a pool of ``max_concurrency`` connections this operator opens
    and closes with the subscription), and ``on_success`` runs in the same transaction
    after a fence that locks the message's row if this consumer still holds it (its
    ``read_ct`` and the ``vt`` this consumer last set unchanged: nobody else read it or
    moved its visibility timeout; the consumer's own ``extend_visibility`` heartbeat is
    fine). The commit makes the writes and the ack one fact: a crash
    before it leaves neither (the message reappears after its visibility timeout and is
    processed again from scratch); after it, both.

    Emits one :class:`~rx_pgmq.Outcome` per message, as ``process`` does:

    - committed: ``succeeded`` with ``fn``'s result and ``ack=on_success``; the message is
      already settled (the consumer's window got its room back), so ``pgops.ack``
      downstream reports it ``"acked"`` without sending anything again;
    - ``fn`` raised (or returned a failed ``Outcome``): rolled back, ``failed`` with the
      error; ``pgops.ack``'s failure policy settles it as usual;
    - the lease was lost (another consumer read the message meanwhile, or another client's
      ``set_vt`` or a release moved its ``vt``): rolled back, ``failed`` with
      :class:`LeaseLost`, reported ``"lost_lease"`` by ``pgops.ack``.

    Follow it with ``pgops.ack(...)`` so failures are settled. ``fn`` is a plain function
    (not ``async``); it may return an ``Outcome`` (e.g. ``succeeded(m).with_ack(Archive())``)
    and must not commit or roll back ``conn`` itself (savepoints through
    ``conn.transaction()`` are fine).

    Args:
        fn: ``fn(message, conn)``, run inside the transaction.
        on_success: ``Delete()`` (default), ``Archive()`` or ``MoveTo(queue)``.
        max_concurrency: How many transactions run at once (each on its own connection).

    Returns:
        An operator from ``Observable[Message]`` to ``Observable[Outcome]``.

    Raises:
        InvalidArgument: If ``on_success`` does not end the message or
            ``max_concurrency`` is not a positive int.

    Example:
        >>> def record(message, conn):  # doctest: +SKIP
        ...     conn.execute("INSERT INTO orders_done (id) VALUES (%s)", (message.body["id"],))
        >>> read_queue(dsn, "orders", visibility_timeout=30).pipe(  # doctest: +SKIP
        ...     pgops.process_in_transaction(record),
        ...     pgops.ack(on_failure=pgops.max_attempts(3)),
        ... ).subscribe()
    """
    action = _check_success_action(on_success, "on_success")
    size = check_positive_int(max_concurrency, "max_concurrency")
    if not callable(fn):
        raise InvalidArgument("fn", f"must be callable, got {fn!r}")
    if _is_async(fn):
        raise InvalidArgument(
            "fn",
            "must be a plain function fn(message, conn): it runs in a transaction on a "
            "(sync) psycopg connection; use pgops.process for async handlers",
        )

    def apply(source: Observable[Message]) -> Observable[Outcome]:
        def subscribe(
            observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            pools = _Pools(size)

            def handle(message: Message) -> Outcome:
                return _run_in_transaction(fn, message, pools, action)

            inner = source.pipe(process(handle, max_concurrency=size))
            sub = inner.subscribe(observer, scheduler=scheduler)
            return CompositeDisposable(sub, Disposable(pools.close))

        return Observable(subscribe)

    return apply
