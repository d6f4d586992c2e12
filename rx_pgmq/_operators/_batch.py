"""``process_batch``: group messages, call a handler once per group, emit one Outcome each."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.scheduler import TimeoutScheduler

from rx_pgmq._core._demand import Demand
from rx_pgmq._operators._ack import settle_group
from rx_pgmq._operators._batchresult import outcomes_of
from rx_pgmq._operators._keyed import UNKEYED, KeyedQueue
from rx_pgmq._operators._serial import Serial
from rx_pgmq._values._outcome import NotAnOutcome, Outcome, ProcessOperator
from rx_pgmq._values._validate import check_positive_int, seconds
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import Message

__all__ = ["process_batch"]

_log = logging.getLogger("rx_pgmq")

BatchHandler = Callable[[list[Message]], Any]
"""A batch handler: the messages of one group, in read order -> results (see process_batch)."""

_Task = tuple[Hashable, list[Message]]
"""One call of the handler: its key (``UNKEYED`` without a key function) and its messages."""


def process_batch(
    fn: BatchHandler,
    *,
    max_size: int = 100,
    max_wait: float | timedelta = 0.1,
    max_concurrency: int = 1,
    key: Callable[[Message], Hashable] | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> ProcessOperator:
    """Call ``fn`` once per group of messages and emit one :class:`~rx_pgmq.Outcome` each.

    A group starts with the first message after the previous group was flushed, and is
    flushed (handed to ``fn``) when it holds ``max_size`` messages, when ``max_wait``
    seconds passed since its first message, when the source completes, or at once when
    the consumer cannot read another message until the group is handled: its demand
    window (``max_in_flight``, ``windowed(n)``), controlled credit or pause is used up and
    every message it has in flight sits in the group. A group therefore never waits for
    messages the window cannot admit, whatever ``max_size`` and ``max_in_flight`` are.
    (Messages that reach the operator through other operators that hold some of them back
    wait at most ``max_wait``.) For full groups and reads that overlap the handling, give
    the consumer ``max_in_flight >= max_size * (max_concurrency + 1)``; a smaller window
    still works, with groups of at most ``max_in_flight`` messages.

    What ``fn(messages)`` does decides each message's outcome:

    - raises an exception: every message fails with it (``ack`` archives the whole group
      with the default policy);
    - returns a ``list`` of the same length: one result per message, in order; a result
      that is an exception fails its message, an ``Outcome`` for that message is kept as
      is, anything else is a success with that value;
    - returns a ``Mapping`` of ``msg_id`` to result (the same rules per message): partial
      failure. A message of the group missing from the mapping **fails** (nothing is
      deleted unless ``fn`` said so) with :class:`InvalidBatchResult`; a mapping that names
      an id not in the group, or a list of another length, fails the whole group with
      :class:`InvalidBatchResult`;
    - returns anything else (e.g. ``None``): every message succeeds with that value.

    ``ack`` and every policy work on the outcomes unchanged. An exception that is not an
    ``Exception`` (``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``) is not turned
    into failures: the stream ends with ``on_error`` carrying it.

    With ``key``, a flushed group is split by ``key(message)`` into one call of ``fn`` per
    key, each with that key's messages in read order. Calls of one key run one at a time,
    in the order the groups were flushed, so messages with the same key are handled in
    read order; calls of different keys run in parallel up to ``max_concurrency``. For
    PGMQ's FIFO groups, read with ``ReadOptions(fifo=...)`` and key on the group header:
    ``key=lambda m: (m.headers or {}).get("x-pgmq-group")``. A ``key`` that raises fails
    that message alone.

    Where ``fn`` runs: with ``max_concurrency == 1`` and no ``scheduler``, on the thread
    that flushes the group (the consumer's reader thread, or the timer's thread after
    ``max_wait``), one group at a time; with ``max_concurrency > 1``, on a thread pool of
    that size (one per subscription, shut down when it ends); with a ``scheduler``, on it
    (at most ``max_concurrency`` calls at once). Outcomes are emitted one at a time, group
    by group. ``on_completed`` flushes the pending group and waits for every call;
    ``on_error`` from upstream passes through at once.

    Timers run on ``scheduler``, else on the scheduler the subscription gives, else on a
    ``TimeoutScheduler``. On dispose (or an error) the pending group and groups waiting for
    a slot are not handled; their messages are released (``message.release()``) unless
    their consumer is itself closing, which then releases them or keeps them as its
    ``on_dispose`` says (so nothing is released twice).

    Args:
        fn: The handler, called with a ``list`` of messages (at least one). Coroutine
            functions are not supported yet.
        max_size: Most messages per group (per call without ``key``), >= 1.
        max_wait: Longest a group waits after its first message, seconds (> 0) or
            timedelta.
        max_concurrency: Most calls of ``fn`` running at once, >= 1.
        key: ``Message -> hashable``: messages with equal keys are handled one call at a
            time, in read order.
        scheduler: Scheduler for the ``max_wait`` timers and the calls of ``fn`` (e.g. a
            ``TestScheduler`` in tests).

    Returns:
        An operator from ``Observable[Message]`` to ``Observable[Outcome]``.

    Raises:
        InvalidArgument: If ``fn`` is not callable or is a coroutine function, a size or
            count is not an int >= 1, ``max_wait`` is not a positive duration, ``key`` is
            not callable, or ``scheduler`` is not a reactivex scheduler.

    Example:
        >>> def insert_all(messages: list[Message]) -> None:
        ...     db.insert_many([m.body for m in messages])  # one round trip per group
        >>> read_queue(dsn, "events", visibility_timeout=30, batch_size=500,
        ...            max_in_flight=2000).pipe(
        ...     pgops.process_batch(insert_all, max_size=500, max_wait=0.2),
        ...     pgops.ack(),
        ... ).subscribe(print)  # doctest: +SKIP
    """
    if not callable(fn):
        raise InvalidArgument("fn", f"must be callable (list[Message] -> results), got {fn!r}")
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        raise InvalidArgument(
            "fn",
            "is a coroutine function; process_batch does not run async handlers yet: "
            "pass a plain function (e.g. one that calls asyncio.run_coroutine_threadsafe "
            "on your event loop and waits for the result)",
        )
    size = check_positive_int(max_size, "max_size")
    wait = seconds(max_wait, "max_wait", allow_zero=False)
    limit = check_positive_int(max_concurrency, "max_concurrency")
    if key is not None and not callable(key):
        raise InvalidArgument("key", f"must be callable (Message -> hashable), got {key!r}")
    if scheduler is not None and not isinstance(scheduler, abc.SchedulerBase):
        raise InvalidArgument("scheduler", f"must be a reactivex scheduler, got {scheduler!r}")
    settings = _Settings(fn, size, wait, limit, key, scheduler)
    return lambda source: _batched(source, settings)


@dataclass(frozen=True, slots=True)
class _Settings:
    """What ``process_batch`` was given, checked."""

    fn: BatchHandler
    max_size: int
    max_wait: float
    limit: int
    key: Callable[[Message], Hashable] | None
    scheduler: abc.SchedulerBase | None


def _not_a_message(value: object) -> NotAnOutcome:
    return NotAnOutcome(
        f"process_batch expects rx_pgmq.Message values, got {type(value).__name__}: "
        f"{value!r:.80}; apply it to a read_queue(...) source"
    )


class _StallWatch:
    """Counts the pending group's messages per consumer and tells when one consumer can
    read no more until the group is handled (see :meth:`rx_pgmq._core._demand.Demand.stalled_by`).

    The consumer's counters are read without its lock: ``in_flight`` grows only at a read,
    before the read's messages are emitted, so a stale value can only be a lower
    ``in_flight`` of a consumer that is not stalled.
    """

    __slots__ = ("_acknowledger", "_demand", "held")

    def __init__(self) -> None:
        self.held: dict[object, int] = {}
        self._acknowledger: object = None  # the last message's, with its demand (a cache)
        self._demand: Demand | None = None

    def add(self, message: Message) -> bool:
        """Count ``message`` as held; whether its consumer is now stalled by the group."""
        acknowledger = message._acknowledger
        if acknowledger is not self._acknowledger:
            demand = getattr(acknowledger, "demand", None)
            self._acknowledger = acknowledger
            self._demand = demand if isinstance(demand, Demand) else None
        demand = self._demand
        if demand is None:
            return False
        held = self.held
        n = held.get(acknowledger, 0) + 1
        held[acknowledger] = n
        return n >= demand.in_flight and demand.stalled_by(n)


def _release(messages: list[Message]) -> None:
    """Release messages that will not be handled, except those of a closing consumer."""
    for m in messages:
        acknowledger = m._acknowledger
        if acknowledger is None or getattr(acknowledger, "closing", False):
            continue
        try:
            m.release()
        except Exception as exc:  # an acknowledger that refuses: the vt frees it later
            _log.warning("process_batch could not release message %s: %s", m.msg_id, exc)


def _batched(source: Observable[Message], cfg: _Settings) -> Observable[Outcome]:
    def subscribe(
        observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        timers = cfg.scheduler or scheduler or TimeoutScheduler.singleton()
        run_on = cfg.scheduler
        lock = threading.Lock()  # guards the fields below; never held while calling out
        serial: Serial[Outcome] = Serial(observer)  # one call at a time, no lock held
        group: list[Message] = []
        keys: list[Hashable] = []  # key of each message of the group (with cfg.key)
        stall = _StallWatch()  # messages of the group per consumer
        key_fn, max_size = cfg.key, cfg.max_size
        max_wait = timedelta(seconds=cfg.max_wait)
        # One timer at most, reused across groups: a group that fills before its max_wait
        # leaves the timer armed, and when it fires it flushes the group then pending if
        # that group's deadline passed, or waits again for the rest of it. Groups that fill
        # fast thus cost no timer each (a TimeoutScheduler timer is a thread).
        deadline: datetime | None = None  # of the pending group
        armed = False  # a timer is scheduled (or firing)
        timer: abc.DisposableBase | None = None
        queue: KeyedQueue[_Task] = KeyedQueue(cfg.limit)
        upstream_done = False
        stopped = False  # a terminal event was sent, or the subscription was disposed
        executor = (
            ThreadPoolExecutor(cfg.limit, thread_name_prefix="rx_pgmq-batch")
            if cfg.limit > 1 and run_on is None
            else None
        )

        def take_locked() -> list[_Task]:
            """Flush the pending group (lock held): submit its calls; return those that
            may start now."""
            nonlocal group, keys, deadline
            messages, message_keys = group, keys
            group, keys, deadline = [], [], None
            stall.held.clear()
            if not messages:
                return []
            if cfg.key is None:
                task = queue.submit(UNKEYED, (UNKEYED, messages))
                return [task] if task is not None else []
            split: dict[Hashable, list[Message]] = {}
            for k, m in zip(message_keys, messages, strict=True):
                split.setdefault(k, []).append(m)
            starts = []
            for k, part in split.items():
                task = queue.submit(k, (k, part))
                if task is not None:
                    starts.append(task)
            return starts

        def stop() -> bool:
            """Stop once: release what waits in groups, end the timer and the pool; whether
            this call stopped it."""
            nonlocal stopped, timer
            with lock:
                if stopped:
                    return False
                stopped = True
                dropped = [m for _k, part in queue.clear() for m in part] + group
                group.clear()
                cancel, timer = timer, None
            if cancel is not None:
                cancel.dispose()
            _release(dropped)
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
            return True

        def send_terminal(error: BaseException | None) -> None:
            if stop():
                # KeyboardInterrupt & co. travel as they are; no lock held (#14 item 3)
                serial.terminal(error)

        def run(task: _Task) -> None:
            """Run ``task``, then every task its completion lets start (same thread)."""
            todo = [task]
            while todo:
                k, messages = todo.pop(0)
                try:
                    outcomes = outcomes_of(messages, cfg.fn(messages))
                except Exception as exc:
                    outcomes = [Outcome(m, False, error=exc) for m in messages]
                except BaseException as exc:  # KeyboardInterrupt, SystemExit, GeneratorExit
                    send_terminal(exc)
                    return
                try:
                    with settle_group():  # an ack downstream settles the group in one call
                        serial.on_next_many(outcomes)  # a subscriber raising ends the stream
                finally:  # even if a subscriber raised, the slot must be freed
                    if serial.stopped:
                        send_terminal(None)  # clean up; the stream ended already
                    with lock:
                        following = queue.done(k) if not stopped else []
                        finished = upstream_done and queue.idle and not group
                if following:
                    if executor is None and run_on is None:
                        todo.extend(following)
                    else:
                        start(following)
                if finished and not todo:
                    send_terminal(None)

        def schedule_run(on: abc.SchedulerBase, task: _Task) -> None:
            on.schedule(lambda _s, _state: run(task))

        def start(tasks: list[_Task]) -> None:
            for task in tasks:
                if executor is not None:
                    try:
                        executor.submit(run, task)
                    except RuntimeError:  # shut down by a dispose racing with this group
                        return
                elif run_on is not None:
                    schedule_run(run_on, task)
                else:
                    run(task)

        def arm(delay: float) -> None:
            """Schedule the timer (``armed`` was set under the lock)."""
            nonlocal timer
            scheduled = timers.schedule_relative(delay, lambda _s, _state: fire())
            with lock:
                keep = not stopped
                if keep:
                    timer = scheduled  # may have fired already: disposing it is harmless
            if not keep:
                scheduled.dispose()

        def fire() -> None:
            """The timer: flush the pending group if its ``max_wait`` passed, else wait on."""
            nonlocal armed, timer
            again = 0.0
            starts: list[_Task] = []
            with lock:
                armed, timer = False, None
                if stopped or deadline is None:
                    return
                left = (deadline - timers.now).total_seconds()
                if left > 0:
                    armed, again = True, left
                else:
                    starts = take_locked()
            if again:
                arm(again)
            if starts:
                start(starts)

        def on_next(message: Message) -> None:
            nonlocal deadline, armed
            if not isinstance(message, Message):
                send_terminal(_not_a_message(message))
                return
            k: Hashable = UNKEYED
            if key_fn is not None:
                try:
                    k = key_fn(message)
                    hash(k)
                except Exception as exc:  # this message alone fails
                    serial.on_next(Outcome(message, False, error=exc))
                    if serial.stopped:
                        send_terminal(None)  # the subscriber raised: clean up
                    return
            starts: list[_Task] = []
            schedule = False
            with lock:
                if stopped:
                    return
                group.append(message)
                if key_fn is not None:
                    keys.append(k)
                size = len(group)
                if size >= max_size or stall.add(message):
                    starts = take_locked()
                elif size == 1:
                    deadline = timers.now + max_wait
                    schedule = not armed
                    armed = True
            if schedule:
                arm(cfg.max_wait)
            if starts:
                start(starts)

        def on_completed() -> None:
            nonlocal upstream_done
            with lock:
                upstream_done = True
                starts = take_locked()
                finished = not starts and queue.idle
            if finished:
                send_terminal(None)
            else:
                start(starts)

        def dispose() -> None:
            serial.dispose()
            stop()

        subscription = source.subscribe(on_next, send_terminal, on_completed, scheduler=scheduler)
        return CompositeDisposable(subscription, Disposable(dispose))

    return Observable(subscribe)
