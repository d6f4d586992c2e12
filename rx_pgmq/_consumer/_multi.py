"""``read_queues``: several PGMQ queues as one Observable sharing one demand window."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, Literal

from psycopg_pool import ConnectionPool
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import Disposable

from rx_pgmq._consumer._facade import Consumer
from rx_pgmq._consumer._iterate import iterate
from rx_pgmq._consumer._source import ControlledSource, QueueSource, read_queue
from rx_pgmq._core._demand import Demand
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
    databases = {_key(c) for c, _, _ in entries}
    if isinstance(listener, Listener) and len(databases) > 1:
        raise InvalidArgument(
            "listener",
            "a Listener instance serves one database, but the queues are on "
            f"{len(databases)}; pass listener=True (one shared listener per database)",
        )
    if listener is not None and not isinstance(listener, bool | Listener):
        raise InvalidArgument(
            "listener", f"must be None, True or an rx_pgmq.Listener, got {listener!r}"
        )
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
    return MultiQueueSource(sources, [w for _, _, w in entries], window, listener, scheduler)


def _key(conninfo: Conninfo) -> object:
    return conninfo if isinstance(conninfo, str) else id(conninfo)


def _entries(queues: object, conninfo_or_pool: object) -> list[Entry]:
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
        raw: list[Any] = [(conninfo_or_pool, q, w) for q, w in queues.items()]
    elif isinstance(queues, Sequence) and not isinstance(queues, str | bytes):
        if conninfo_or_pool is not None:
            raise InvalidArgument(
                "conninfo_or_pool",
                "must be None when queues is a list of (conninfo, queue, weight)",
            )
        raw = list(queues)
    else:
        raise InvalidArgument(
            "queues",
            "must be a {queue: weight} mapping or a list of (conninfo, queue, weight), got "
            f"{type(queues).__name__}",
        )
    if not raw:
        raise InvalidArgument("queues", "must name at least one queue")
    entries: list[Entry] = []
    seen: set[tuple[object, str]] = set()
    for item in raw:
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
        if (_key(conninfo), queue) in seen:
            raise InvalidArgument("queues", f"queue {queue!r} is named twice on one database")
        seen.add((_key(conninfo), queue))
        entries.append((conninfo, queue, weight))
    return entries


class MultiQueueSource(Observable[Message]):
    """The Observable ``read_queues`` returns: each subscription reads every queue."""

    def __init__(
        self,
        sources: list[QueueSource],
        weights: list[int],
        window: int,
        listener: Listener | bool | None,
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        super().__init__()
        self._sources = sources
        self._weights = weights
        self._window = window
        self._listener = listener
        self._scheduler = scheduler
        self._recorders = [StatsRecorder() for _ in sources]
        self._lock = threading.Lock()
        self._runs: list[_Run] = []

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
        return [s.queue for s in self._sources]

    @property
    def weights(self) -> list[int]:
        """Each queue's weight, in the order of :attr:`queues`."""
        return list(self._weights)

    def __aiter__(self) -> AsyncGenerator[Message, None]:
        """``async for message in source``: see :func:`rx_pgmq.aio.iterate`."""
        return iterate(self)

    def _subscribe_core(
        self,
        observer: abc.ObserverBase[Message],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        if self._scheduler is not None:
            inner: Observable[Message] = Observable(self._subscribe_direct)
            return inner.pipe(ops.observe_on(self._scheduler)).subscribe(
                observer, scheduler=scheduler
            )
        return self._subscribe_direct(observer, scheduler)

    def _subscribe_direct(
        self,
        observer: abc.ObserverBase[Message],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        run = _Run(self._sources, self._weights, self._window, self._listener, observer)
        run.recorders = self._recorders
        with self._lock:
            self._runs.append(run)

        def dispose() -> None:
            run.dispose()
            with self._lock:
                if run in self._runs:
                    self._runs.remove(run)

        run.start()
        return Disposable(dispose)


class _Watch:
    """The :class:`~rx_pgmq._core._demand.DemandWatcher` of queue ``index`` in a :class:`_Run`."""

    def __init__(self, run: _Run, index: int) -> None:
        self._run = run
        self._index = index

    def read_done(self, demand: Demand, asked: int, got: int) -> None:
        self._run.read_done(self._index, demand, asked, got)

    def settled(self, demand: Demand, n: int) -> None:
        self._run.settled(self._index, demand, n)


class _FairSource(ControlledSource):
    """A controlled source whose consumers report to a :class:`_Run`."""

    def __init__(self, source: QueueSource, run: _Run, index: int) -> None:
        super().__init__(replace(source.config, controlled=True), None)
        self._run = run
        self._index = index

    def _subscribe_direct(
        self,
        observer: abc.ObserverBase[Message],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        self._stats = self._run.recorders[self._index]  # the MultiQueueSource's counters
        return super()._subscribe_direct(observer, scheduler)

    def _on_new_consumer(self, consumer: Consumer) -> None:
        self._run.attach(self._index, consumer)


class _Run:
    """One subscription of a :class:`MultiQueueSource`.

    Locks: a consumer's lock may be held when this object's lock is taken (its demand
    reports under it), never the other way: credit for other queues is handed out by the
    granter thread, with no lock held.
    """

    def __init__(
        self,
        sources: list[QueueSource],
        weights: list[int],
        window: int,
        listener: Listener | bool | None,
        observer: abc.ObserverBase[Message],
    ) -> None:
        self._observer = observer
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._emit_lock = threading.RLock()
        self._share = FairShare(weights, window)
        self._pending = [0] * len(sources)
        self._consumers: list[Consumer | None] = [None] * len(sources)
        self._stopped = False
        self._done = False
        self._owned: list[Listener] = []
        self.recorders: list[StatsRecorder] = [StatsRecorder() for _ in sources]
        self._subs: list[abc.DisposableBase] = []
        listeners: dict[object, Listener] = {}
        self._sources: list[_FairSource] = []
        for i, src in enumerate(sources):
            if listener is True:  # one shared listener per database, for this subscription
                conninfo = src.config.conninfo
                key = _key(conninfo)
                if key not in listeners:
                    dsn = conninfo if isinstance(conninfo, str) else str(conninfo.conninfo)
                    listeners[key] = Listener(dsn)
                    self._owned.append(listeners[key])
                src = QueueSource(replace(src.config, listener=listeners[key]))
            self._sources.append(_FairSource(src, self, i))
        self._granter = threading.Thread(target=self._grant_loop, name="rx_pgmq-read_queues")
        self._granter.daemon = True

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        for src in self._sources:
            sub = src.subscribe(on_next=self._on_next, on_error=self._on_error)
            with self._cond:
                stopped = self._stopped  # an error of a queue started before disposed all
                if not stopped:
                    self._subs.append(sub)
            if stopped:
                sub.dispose()
        with self._cond:
            self._add(self._share.grants())
        self._granter.start()

    def dispose(self) -> None:
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            self._cond.notify_all()
            subs = list(self._subs)
        threads = [threading.Thread(target=sub.dispose, daemon=True) for sub in subs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for listener in self._owned:
            listener.close()

    def in_flight(self, index: int) -> int:
        """Messages of queue ``index`` emitted and not yet settled, now."""
        consumer = self._consumers[index]
        return 0 if consumer is None or consumer.closed else consumer.demand.in_flight

    def attach(self, index: int, consumer: Consumer) -> None:
        """A consumer of queue ``index`` is about to start (before its first read)."""
        with self._cond:
            self._consumers[index] = consumer
            consumer.demand.watcher = _Watch(self, index)
            self._cond.notify_all()

    # -- observer calls (serialized) -----------------------------------------------------

    def _on_next(self, message: Message) -> None:
        with self._emit_lock:
            if not self._done:
                self._observer.on_next(message)

    def _on_error(self, error: Exception) -> None:
        with self._emit_lock:
            if self._done:
                return
            self._done = True
            self._observer.on_error(error)
        threading.Thread(target=self.dispose, daemon=True).start()

    # -- demand (under the reporting consumer's lock) ------------------------------------

    def read_done(self, index: int, demand: Demand, asked: int, got: int) -> None:
        with self._cond:
            share = self._share
            excess = share.on_read(index, asked, got)
            if excess:
                cancelled = min(excess, self._pending[index])
                self._pending[index] -= cancelled
                share.withdrawn(index, cancelled + demand.withdraw(excess - cancelled))
            self._add(share.grants(), index, demand)

    def settled(self, index: int, demand: Demand, n: int) -> None:
        with self._cond:
            self._share.on_settled(index, n)
            self._add(self._share.grants(), index, demand)

    def _add(self, grants: list[int], index: int = -1, demand: Demand | None = None) -> None:
        """Queue ``grants`` for the granter (lock held); the reporting queue's own credit
        goes straight to its ``demand``: its consumer reads next anyway."""
        wake = False
        for q, n in enumerate(grants):
            if not n:
                continue
            if q == index and demand is not None and not self._pending[q]:
                demand.request(n)
            else:
                self._pending[q] += n
                wake = True
        if wake:
            self._cond.notify_all()

    def _grant_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._ready():
                    self._cond.wait()
                if self._stopped:
                    return
                work: list[tuple[Consumer, int]] = []
                for q, n in enumerate(self._pending):
                    consumer = self._consumers[q]
                    if n and consumer is not None:
                        work.append((consumer, n))
                        self._pending[q] = 0
            for consumer, n in work:
                consumer.request(n)

    def _ready(self) -> bool:
        return any(n and c is not None for n, c in zip(self._pending, self._consumers, strict=True))
