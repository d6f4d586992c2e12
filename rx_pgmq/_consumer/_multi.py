"""``read_queues``: several PGMQ queues as one Observable sharing one demand window."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from psycopg_pool import ConnectionPool
from reactivex import abc
from reactivex.disposable import Disposable

from rx_pgmq._consumer._facade import wait_closing
from rx_pgmq._consumer._iterate import SourceBase
from rx_pgmq._consumer._multirun import Plan, Run, database_key
from rx_pgmq._consumer._source import check_listener, read_queue
from rx_pgmq._core._fairshare import FairShare
from rx_pgmq._core._stats import ConsumerStats, StatsRecorder
from rx_pgmq._pg._listener import Listener
from rx_pgmq._values._loop import check_scheduler
from rx_pgmq._values._options import ReadOptions
from rx_pgmq._values._validate import check_positive_int
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import Message

__all__ = ["MultiQueueSource", "read_queues"]

Conninfo = str | ConnectionPool
Entry = tuple[Conninfo, str, int]


def read_queues(
    queues: Mapping[str, int] | Sequence[Entry],
    conninfo_or_pool: Conninfo | None = None,
    *,
    visibility_timeout: int | timedelta,
    read_interval: float | timedelta | None = 5.0,
    listener: Listener | bool | None = None,
    batch_size: int = 10,
    max_in_flight: int = 100,
    read_options: ReadOptions | None = None,
    scheduler: abc.SchedulerBase | None = None,
    on_dispose: Literal["release", "keep"] = "release",
    extend_visibility: bool = False,
    fenced: bool = False,
    ack_batch_size: int | None = None,
    ack_max_age: float | timedelta = 0.005,
    close_timeout: float | timedelta = 5.0,
    connect_timeout: float | timedelta = 30.0,
) -> MultiQueueSource:
    """Several PGMQ queues as one ``Observable[Message]`` sharing one ``max_in_flight``.

    Each subscription runs one consumer per queue (a reader and an acknowledger
    connection each, as :func:`rx_pgmq.read_queue`) and shares one window between them by
    weight: while every queue has a backlog, deliveries follow the weights (3:1 gives
    three ``orders_high`` messages for each ``orders_low`` one); a read that comes back
    short (no backlog) hands its queue's share to the others at once, except one place
    the idle queue keeps to notice new messages (its poll or notification reads ask for
    one message). Every queue with a backlog gets its turn: none starves.

    Each message keeps its ``queue`` and settles (acks) on its own queue, through its
    own consumer. Modes are ``read_queue``'s: poll, notification (a listener and
    ``read_interval=None``) and hybrid. ``listener=True`` opens one shared
    :class:`rx_pgmq.Listener` per database for the subscription (one LISTEN connection
    for all its queues, closed on dispose); a ``Listener`` instance is used as given
    (queues of one database only). Observer calls are serialized. Disposing disposes
    every consumer (each flushes its acks and releases what is unsettled).

    Args:
        queues: ``{queue: weight}`` on ``conninfo_or_pool``, or a list of
            ``(conninfo_or_pool, queue, weight)`` for queues on several databases.
            Weights are ints >= 1.
        conninfo_or_pool: The database of a ``{queue: weight}`` mapping (must be None
            with a list).
        visibility_timeout: As :func:`rx_pgmq.read_queue`.
        read_interval: As :func:`rx_pgmq.read_queue`.
        listener: ``None``, ``True`` (one shared listener per database) or a
            :class:`rx_pgmq.Listener` (one database).
        batch_size: Most messages per read of each queue.
        max_in_flight: Most messages emitted and not yet settled over all queues; at
            least the number of queues.
        read_options: As :func:`rx_pgmq.read_queue`, for every queue.
        scheduler: Deliver messages on this scheduler (after the merge).
        on_dispose: As :func:`rx_pgmq.read_queue`.
        extend_visibility: As :func:`rx_pgmq.read_queue`.
        fenced: As :func:`rx_pgmq.read_queue`.
        ack_batch_size: As :func:`rx_pgmq.read_queue`.
        ack_max_age: As :func:`rx_pgmq.read_queue`.
        close_timeout: As :func:`rx_pgmq.read_queue`.
        connect_timeout: As :func:`rx_pgmq.read_queue`.

    Returns:
        A :class:`MultiQueueSource` (an ``Observable[Message]``).

    Raises:
        InvalidArgument: For a bad ``queues`` (empty, a weight that is not an int >= 1,
            a queue named twice on one database), a ``max_in_flight`` below the number of
            queues, a ``Listener`` with queues on several databases, or any argument
            ``read_queue`` rejects.

    Example:
        >>> source = read_queues({"orders_high": 3, "orders_low": 1}, dsn,  # doctest: +SKIP
        ...                      visibility_timeout=30, listener=True)
        >>> source.pipe(pgops.process(handle), pgops.ack()).subscribe(print)  # doctest: +SKIP
    """
    entries = _entries(queues, conninfo_or_pool)
    window = check_positive_int(max_in_flight, "max_in_flight")
    FairShare([w for _, _, w in entries], window)  # checks the window against the queues
    databases = {database_key(c) for c, _, _ in entries}
    if isinstance(listener, Listener) and len(databases) > 1:
        raise InvalidArgument(
            "listener",
            "a Listener instance serves one database, but the queues are on "
            f"{len(databases)}; pass listener=True (one shared listener per database)",
        )
    check_listener(listener)
    check_scheduler(scheduler)
    sources = [
        read_queue(
            conninfo,
            queue,
            visibility_timeout=visibility_timeout,
            read_interval=read_interval,
            listener=listener,
            batch_size=batch_size,
            max_in_flight=window,
            read_options=read_options,
            on_dispose=on_dispose,
            extend_visibility=extend_visibility,
            fenced=fenced,
            ack_batch_size=ack_batch_size,
            ack_max_age=ack_max_age,
            close_timeout=close_timeout,
            connect_timeout=connect_timeout,
        )
        for conninfo, queue, _ in entries
    ]
    weights = tuple(w for _, _, w in entries)
    return MultiQueueSource(Plan(tuple(sources), weights, window, listener), scheduler)


def _entries(queues: object, conninfo_or_pool: object) -> list[Entry]:
    """``queues`` as ``(conninfo, queue, weight)`` entries, checked."""
    raw = _raw_entries(queues, conninfo_or_pool)
    if not raw:
        raise InvalidArgument("queues", "must name at least one queue")
    entries: list[Entry] = []
    seen: set[tuple[object, str]] = set()
    for item in raw:
        entry = _entry(item)
        where = (database_key(entry[0]), entry[1])
        if where in seen:
            raise InvalidArgument("queues", f"queue {entry[1]!r} is named twice on one database")
        seen.add(where)
        entries.append(entry)
    return entries


def _raw_entries(queues: object, conninfo_or_pool: object) -> list[Any]:
    """The entries of a ``{queue: weight}`` mapping on ``conninfo_or_pool`` or of a list."""
    if isinstance(queues, Mapping):
        if conninfo_or_pool is None:
            raise InvalidArgument(
                "conninfo_or_pool",
                "is needed with a {queue: weight} mapping (or pass a list of "
                "(conninfo, queue, weight))",
            )
        if not isinstance(conninfo_or_pool, str | ConnectionPool):
            raise InvalidArgument(
                "conninfo_or_pool",
                "must be a conninfo string or a psycopg_pool.ConnectionPool, got "
                f"{type(conninfo_or_pool).__name__}",
            )
        return [(conninfo_or_pool, q, w) for q, w in queues.items()]
    if isinstance(queues, Sequence) and not isinstance(queues, str | bytes):
        if conninfo_or_pool is not None:
            raise InvalidArgument(
                "conninfo_or_pool",
                "must be None when queues is a list of (conninfo, queue, weight)",
            )
        return list(queues)
    raise InvalidArgument(
        "queues",
        "must be a {queue: weight} mapping or a list of (conninfo, queue, weight), got "
        f"{type(queues).__name__}",
    )


def _entry(item: object) -> Entry:
    """One ``(conninfo, queue, weight)`` entry, checked (not its conninfo: read_queue does)."""
    if not isinstance(item, tuple) or len(item) != 3:
        raise InvalidArgument(
            "queues", f"each entry must be a (conninfo, queue, weight) tuple, got {item!r}"
        )
    conninfo, queue, weight = item
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
        raise InvalidArgument(
            "queues", f"the weight of queue {queue!r} must be an int >= 1, got {weight!r}"
        )
    if not isinstance(queue, str):
        raise InvalidArgument("queues", f"queue names must be strings, got {queue!r}")
    return (conninfo, queue, weight)


class MultiQueueSource(SourceBase[Message]):
    """The Observable ``read_queues`` returns: each subscription reads every queue."""

    def __init__(self, plan: Plan, scheduler: abc.SchedulerBase | None) -> None:
        super().__init__()
        self._plan = plan
        self._scheduler = scheduler
        self._recorders = [StatsRecorder() for _ in plan.sources]
        self._lock = threading.Lock()
        self._runs: list[Run] = []
        self._disposed: list[Run] = []  # disposed runs whose consumers may still be closing

    @property
    def queue_stats(self) -> list[ConsumerStats]:
        """Counters per queue, in the order of :attr:`queues`, over every subscription."""
        with self._lock:
            runs = list(self._runs)
        return [
            recorder.snapshot(sum(run.in_flight(i) for run in runs))
            for i, recorder in enumerate(self._recorders)
        ]

    @property
    def stats(self) -> ConsumerStats:
        """Counters over every queue and subscription (``in_flight`` is current)."""
        parts = self.queue_stats
        settled: dict[str, int] = {}
        for part in parts:
            for action, n in part.settled.items():
                settled[action] = settled.get(action, 0) + n
        return ConsumerStats(
            **{
                name: sum(getattr(part, name) for part in parts)
                for name in ConsumerStats.__dataclass_fields__
                if name != "settled"
            },
            settled=settled,
        )

    @property
    def queues(self) -> list[str]:
        """The queues this source reads, in order."""
        return [s.queue for s in self._plan.sources]

    @property
    def weights(self) -> list[int]:
        """Each queue's weight, in the order of :attr:`queues`."""
        return list(self._plan.weights)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until every subscription of this source that is closing has closed.

        As :meth:`rx_pgmq.QueueSource.wait_closed`: ``dispose()`` returns at once and each
        queue's consumer closes in the background (held messages may settle for up to
        ``close_timeout``, the rest is released).

        Args:
            timeout: Most seconds to wait (``None``: no limit).

        Returns:
            True if no subscription is left closing, False if ``timeout`` passed first.

        Example:
            >>> subscription.dispose()  # doctest: +SKIP
            >>> source.wait_closed(10)  # doctest: +SKIP
            True
        """
        with self._lock:
            runs = [*self._runs, *self._disposed]
        return wait_closing([c for run in runs for c in run.consumers], timeout)

    def _subscribe_direct(
        self,
        observer: abc.ObserverBase[Message],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        run = Run(self._plan, observer)
        run.recorders = self._recorders
        with self._lock:
            self._runs.append(run)

        def dispose() -> None:
            run.dispose()
            with self._lock:
                if run in self._runs:
                    self._runs.remove(run)
                    self._disposed = [r for r in self._disposed if not _closed(r)]
                    self._disposed.append(run)

        run.start()
        return Disposable(dispose)


def _closed(run: Run) -> bool:
    """Whether every consumer of a disposed ``run`` has closed."""
    return all(c.closed for c in run.consumers)
