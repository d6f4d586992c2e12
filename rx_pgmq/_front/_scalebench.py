"""The scaled drain: queues of messages drained by several consumer processes at once.

:func:`scaled_drain` starts ``consumers`` processes (``spawn``: no state shared with the
caller), lets each open its connections, then starts the clock and lets them all go at
once. Each process runs a *worker* (:func:`rx_worker`: ``read_queue -> process -> ack``
over every queue; benchmarks add others) that reports every message it handled to its
:class:`Tally`. The drain ends when the tallies add up to the messages sent; the result
says how long it took, how many messages were handled twice (duplicates) and how many were
never handled (lost). ``rx-pgmq bench --consumers N`` and ``benchmarks/scale.py`` use it.

Time is ``time.monotonic`` in every process (one system-wide clock on Linux and macOS): the
drain's duration is from the go signal to the last settle any process saw.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import queue as queue_module
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import reactivex
from psycopg_pool import ConnectionPool

from rx_pgmq import operators as pgops
from rx_pgmq._consumer._source import read_queue
from rx_pgmq._values._outcome import Settled
from rx_pgmq.actions import Delete
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import RxPgmqError
from rx_pgmq.message import Message

__all__ = [
    "DrainResult",
    "ScaleError",
    "Tally",
    "WorkerSpec",
    "bench_queue",
    "rx_worker",
    "scaled_drain",
]

_QUEUE_BITS = 40  # a message is counted as queue_index << 40 | msg_id (msg_ids < 2**40)


class ScaleError(RxPgmqError):
    """A scaled drain could not finish: a process failed (its error is in the message: fix
    the DSN, the grants or the server's ``max_connections``), or it ran out of time (give a
    larger ``timeout`` or fewer messages)."""


@dataclass(frozen=True)
class WorkerSpec:
    """What one consumer process drains, and how (picklable: sent to the child).

    Attributes:
        dsn: The PostgreSQL conninfo.
        queues: The queues to drain (every consumer serves every queue).
        batch_size: Messages per read.
        max_in_flight: rx_pgmq's demand window per queue.
        visibility_timeout: Seconds a read message stays invisible to the others.
        index: This consumer's number, 0-based.
        options: Anything a benchmark's own worker needs.
    """

    dsn: str
    queues: tuple[str, ...]
    batch_size: int = 100
    max_in_flight: int = 400
    visibility_timeout: int = 60
    index: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def key(self, queue: str, msg_id: int) -> int:
        """The number a message is counted under (unique across ``queues``)."""
        return self.queues.index(queue) << _QUEUE_BITS | msg_id


Worker = Callable[[WorkerSpec, "Tally"], None]
"""A consumer: opens its connections, calls ``tally.go()``, drains until ``tally.stopping``."""


class Tally:
    """A consumer process's side of the drain: the start signal, the count, the stop signal.

    Thread-safe: a worker may call :meth:`add` from any thread.
    """

    def __init__(
        self,
        index: int,
        ready: Any,
        go: multiprocessing.synchronize.Event,
        stop: multiprocessing.synchronize.Event,
        progress: Any,
    ) -> None:
        self._index = index
        self._ready = ready
        self._go = go
        self._stop = stop
        self._progress = progress
        self._lock = threading.Lock()
        self.handled: list[int] = []
        self.last = 0.0  # time.monotonic() of the last add

    def go(self) -> None:
        """Say this consumer is ready (connections open), then wait for the start."""
        self._ready.put(self._index)
        self._go.wait()

    @property
    def stopping(self) -> bool:
        """Whether the drain is over (every message was counted) or abandoned."""
        return self._stop.is_set()

    def wait_stop(self, timeout: float | None = None) -> bool:
        """Block until the drain is over; return whether it is."""
        return self._stop.wait(timeout)

    def add(self, keys: Sequence[int]) -> None:
        """Count messages handled and settled (by :meth:`WorkerSpec.key`)."""
        now = time.monotonic()
        with self._lock:
            self.handled.extend(keys)
            self.last = now
            self._progress[self._index] = len(self.handled)


def rx_worker(spec: WorkerSpec, tally: Tally) -> None:
    """rx_pgmq's consumer: per queue ``read_queue -> process(no-op) -> ack(Delete)``, the
    queues' settles merged into one stream; counts each acked message."""
    pool = ConnectionPool(
        spec.dsn,
        min_size=2 * len(spec.queues),
        max_size=2 * len(spec.queues),
        kwargs={"autocommit": True},
        open=True,
        name=f"rx_pgmq-scale-{spec.index}",
    )
    try:
        pool.wait(timeout=60)
        sources = [
            read_queue(
                pool,
                q,
                visibility_timeout=spec.visibility_timeout,
                batch_size=spec.batch_size,
                max_in_flight=spec.max_in_flight,
                read_interval=0.05,
            )
            for q in spec.queues
        ]
        errors: list[Exception] = []

        def settled(record: Settled) -> None:
            if record.status == "acked":
                tally.add((spec.key(record.message.queue, record.message.msg_id),))

        def noop(_message: Message) -> None:
            return None

        tally.go()
        subscription = reactivex.merge(
            *(s.pipe(pgops.process(noop), pgops.ack(on_success=Delete())) for s in sources)
        ).subscribe(settled, errors.append)
        while not tally.wait_stop(0.1) and not errors:  # a failed pipeline ends this process
            pass
        subscription.dispose()
        if errors:
            raise ScaleError(f"consumer {spec.index}: {errors[0]!r}")
    finally:
        pool.close()


@dataclass(frozen=True)
class DrainResult:
    """What a scaled drain measured.

    Attributes:
        consumers: Consumer processes.
        sent: Messages in the queues at the start.
        seconds: From the go signal to the last settle.
        handled: Messages handled (a message handled twice counts twice).
        duplicates: ``handled`` minus the distinct messages handled.
        lost: Messages sent and never handled.
        per_consumer: Messages each consumer handled.
        pids: The consumer processes' ids (for CPU accounting while they run).
    """

    consumers: int
    sent: int
    seconds: float
    handled: int
    duplicates: int
    lost: int
    per_consumer: tuple[int, ...]
    pids: tuple[int, ...]

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.sent / self.seconds if self.seconds > 0 else float("nan")


def _child(
    worker: Worker, spec: WorkerSpec, ready: Any, go: Any, stop: Any, progress: Any, results: Any
) -> None:
    """A consumer process: run ``worker``, then send what it counted (or its error)."""
    tally = Tally(spec.index, ready, go, stop, progress)
    try:
        worker(spec, tally)
    except BaseException as exc:
        results.put((spec.index, None, 0.0, f"{type(exc).__name__}: {exc}"))
        ready.put(-1 - spec.index)  # a consumer that fails before go() must not hang the rest
        return
    results.put((spec.index, tally.handled, tally.last, None))


def scaled_drain(
    spec: WorkerSpec,
    sent: int,
    consumers: int,
    *,
    worker: Worker = rx_worker,
    timeout: float = 600.0,
    on_start: Callable[[Sequence[int]], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> DrainResult:
    """Drain ``spec.queues`` (holding ``sent`` messages in all) with ``consumers`` processes.

    Args:
        spec: The queues and settings; each process gets a copy with its own ``index``.
        sent: Messages in the queues (the drain ends when this many were counted).
        consumers: Processes, >= 1.
        worker: What each process runs (a module-level function: it is pickled).
        timeout: Seconds the whole drain may take, start-up included.
        on_start: Called with the processes' pids right before the clock starts.
        on_progress: Called about 10 times a second with the messages counted so far.
        on_done: Called once every message was counted, before the processes stop (their
            connections are still open).

    Returns:
        The duration, the duplicates and the messages lost.

    Raises:
        ScaleError: If a consumer failed or the drain did not finish within ``timeout``.
    """
    drain = _Drain(worker, spec, consumers)
    deadline = time.monotonic() + timeout
    try:
        drain.await_ready(deadline)
        if on_start is not None:
            on_start(drain.pids())
        start = time.monotonic()
        drain.go.set()
        drain.await_count(sent, deadline, timeout, on_progress)
        if on_done is not None:
            on_done()
        outcome = drain.outcome(deadline)
    except queue_module.Empty:
        raise ScaleError(f"the consumers did not answer within {timeout} s") from None
    finally:
        drain.end()
    return _result(outcome, sent, start, drain.pids())


def _result(outcome: list[Any], sent: int, start: float, pids: list[int]) -> DrainResult:
    """What the processes' reports ``(index, ids, last, error)`` add up to."""
    failures = [error for _i, _ids, _last, error in outcome if error is not None]
    if failures:
        raise ScaleError(f"a consumer failed: {failures[0]}")
    outcome.sort(key=lambda r: r[0])
    all_ids = [i for r in outcome for i in r[1]]
    distinct = len(set(all_ids))
    return DrainResult(
        consumers=len(outcome),
        sent=sent,
        seconds=max(r[2] for r in outcome) - start,
        handled=len(all_ids),
        duplicates=len(all_ids) - distinct,
        lost=sent - distinct,
        per_consumer=tuple(len(r[1]) for r in outcome),
        pids=tuple(pids),
    )


class _Drain:
    """The parent's side of a scaled drain: the consumer processes and what they share.

    Creating it starts the processes; :meth:`end` stops them (always call it).
    """

    def __init__(self, worker: Worker, spec: WorkerSpec, consumers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.ready = ctx.Queue()
        self.results = ctx.Queue()
        self.go, self.stop = ctx.Event(), ctx.Event()
        self.progress = ctx.Array("q", consumers, lock=False)
        shared = (self.ready, self.go, self.stop, self.progress, self.results)
        self.procs = [
            ctx.Process(
                target=_child,
                args=(worker, replace(spec, index=i), *shared),
                name=f"rx_pgmq-scale-{i}",
                daemon=True,
            )
            for i in range(consumers)
        ]
        for proc in self.procs:
            proc.start()

    def pids(self) -> list[int]:
        """The processes' ids."""
        return [p.pid or 0 for p in self.procs]

    def await_ready(self, deadline: float) -> None:
        """Wait until every process is ready; raise the error of one that failed first."""
        for _ in self.procs:
            index = self.ready.get(timeout=max(0.1, deadline - time.monotonic()))
            if index < 0:
                raise ScaleError(_failure(self.results, -1 - index))

    def await_count(
        self,
        sent: int,
        deadline: float,
        timeout: float,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        """Wait until the processes counted ``sent`` messages (reported to
        ``on_progress`` about 10 times a second)."""
        while (done := sum(self.progress)) < sent:
            if on_progress is not None:
                on_progress(done)
            if time.monotonic() > deadline:
                raise ScaleError(f"{done} of {sent} messages counted within {timeout} s")
            if not all(p.is_alive() for p in self.procs):
                raise ScaleError(_failure(self.results, None))
            time.sleep(0.1)
        if on_progress is not None:
            on_progress(done)

    def outcome(self, deadline: float) -> list[Any]:
        """Stop the drain; return each process's report ``(index, ids, last, error)``."""
        self.stop.set()
        return [self.results.get(timeout=max(1.0, deadline - time.monotonic())) for _ in self.procs]

    def end(self) -> None:
        """Stop the processes (killed if one does not end within 30 s)."""
        self.stop.set()
        self.go.set()
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def _failure(results: Any, index: int | None) -> str:
    """The error a failed consumer reported (``index``: that one's; ``None``: any)."""
    try:
        while True:
            i, _ids, _last, error = results.get(timeout=5)
            if error is not None and (index is None or i == index):
                return f"consumer {i} failed: {error}"
    except queue_module.Empty:
        return "a consumer process ended without a report"


def bench_queue(
    dsn: str,
    *,
    consumers: int,
    messages: int = 100_000,
    batch_size: int = 100,
    on_progress: Callable[[str, int], None] | None = None,
    timeout: float = 600.0,
) -> DrainResult:
    """Fill a scratch queue with ``messages`` and drain it with ``consumers`` rx_pgmq
    processes (``read_queue -> process(no-op) -> ack(Delete)``, window 4 x batch); the
    queue is dropped afterwards. What ``rx-pgmq bench --consumers N`` runs.

    Args:
        dsn: The PostgreSQL conninfo (PGMQ installed).
        consumers: Consumer processes, >= 1.
        messages: Messages to send, then drain.
        batch_size: Messages per read (and per send).
        on_progress: Called with ``("send", n)`` while filling and ``("drain", n)`` while
            draining, ``n`` the messages done so far.
        timeout: Seconds the drain may take.

    Returns:
        The drain's duration, duplicates and messages lost.

    Raises:
        ScaleError: If a consumer failed or the drain ran out of time.
    """
    client = PGMQ(dsn)
    queue = f"rx_pgmq_bench_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    client.create_queue(queue)
    try:
        body = {"order_id": 0, "sku": "SKU-0001", "qty": 1, "note": "x" * 64}
        for start in range(0, messages, 1000):
            size = min(1000, messages - start)
            client.send_batch(queue, [body] * size)
            if on_progress is not None:
                on_progress("send", start + size)
        spec = WorkerSpec(dsn, (queue,), batch_size=batch_size, max_in_flight=4 * batch_size)
        drain_progress = None if on_progress is None else lambda n: on_progress("drain", n)
        return scaled_drain(spec, messages, consumers, timeout=timeout, on_progress=drain_progress)
    finally:
        client.drop_queue(queue)
        client.close()
