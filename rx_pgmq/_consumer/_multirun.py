"""One subscription of ``read_queues``: a controlled consumer per queue, one shared window.

Each queue's :class:`~rx_pgmq._core._demand.Demand` reports its reads and settles to a
:class:`Run`, which asks the subscription's :class:`~rx_pgmq._core._fairshare.FairShare`
under its own lock (taken inside a consumer's lock, never around one) and hands credit to
the other consumers from a granter thread. Observer calls are serialized.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from psycopg_pool import ConnectionPool
from reactivex import abc

from rx_pgmq._consumer._facade import Consumer
from rx_pgmq._consumer._source import ControlledSource, QueueSource
from rx_pgmq._core._demand import Demand
from rx_pgmq._core._fairshare import FairShare
from rx_pgmq._core._stats import StatsRecorder
from rx_pgmq._pg._listener import Listener
from rx_pgmq.message import Message

__all__ = ["Plan", "Run", "database_key"]


@dataclass(frozen=True)
class Plan:
    """What every subscription of a ``read_queues`` source reads.

    Attributes:
        sources: One ``read_queue`` source per queue.
        weights: Each queue's weight, in the order of ``sources``.
        window: The shared ``max_in_flight``.
        listener: ``read_queues``' ``listener`` (``True``: one shared listener per
            database, opened by each subscription).
    """

    sources: tuple[QueueSource, ...]
    weights: tuple[int, ...]
    window: int
    listener: Listener | bool | None


def database_key(conninfo: str | ConnectionPool) -> object:
    """What names the database of ``conninfo`` (the string, or the pool itself)."""
    return conninfo if isinstance(conninfo, str) else id(conninfo)


class _Watch:
    """The :class:`~rx_pgmq._core._demand.DemandWatcher` of queue ``index`` in a :class:`Run`."""

    def __init__(self, run: Run, index: int) -> None:
        self._run = run
        self._index = index

    def read_done(self, demand: Demand, asked: int, got: int) -> None:
        self._run.read_done(self._index, demand, asked, got)

    def settled(self, demand: Demand, n: int) -> None:
        self._run.settled(self._index, demand, n)


class _FairSource(ControlledSource):
    """A controlled source whose consumers report to a :class:`Run`."""

    def __init__(self, source: QueueSource, run: Run, index: int) -> None:
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


class Run:
    """One subscription of a :class:`~rx_pgmq._consumer._multi.MultiQueueSource`.

    Locks: a consumer's lock may be held when this object's lock is taken (its demand
    reports under it), never the other way: credit for other queues is handed out by the
    granter thread, with no lock held.
    """

    def __init__(self, plan: Plan, observer: abc.ObserverBase[Message]) -> None:
        sources, listener = plan.sources, plan.listener
        self._observer = observer
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._emit_lock = threading.RLock()
        self._share = FairShare(list(plan.weights), plan.window)
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
                key = database_key(conninfo)
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

    @property
    def consumers(self) -> list[Consumer]:
        """This subscription's consumers started so far (one per queue)."""
        return [c for c in self._consumers if c is not None]

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
