"""``process``: run a handler on each message and emit its :class:`~rx_pgmq.Outcome`.

Three engines, chosen when the operator is made: inline (one call at a time on the
delivering thread), a thread pool or a scheduler (sync handlers, ``max_concurrency > 1``),
and an event loop (``async def`` handlers, or any handler with an asyncio scheduler).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rx_pgmq._operators._gate import (
    Gate,
    KeyFn,
    Task,
    end_fatal,
    not_a_message,
    release,
)
from rx_pgmq._operators._process_loop import on_loop
from rx_pgmq._values._fatal import FATAL
from rx_pgmq._values._loop import LoopThread, check_scheduler, loop_of
from rx_pgmq._values._outcome import Outcome, ProcessOperator, success_of
from rx_pgmq._values._telemetry import traced
from rx_pgmq._values._validate import check_positive_int
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import Message

__all__ = ["process"]

_CANCELLED = (asyncio.CancelledError, concurrent.futures.CancelledError)

_Handler = Callable[[Message], Any]
_Wait = Callable[[Awaitable[Any]], Any]


def _is_async(fn: object) -> bool:
    """Whether ``fn`` is declared ``async`` (a coroutine function, or an object whose
    ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method, not callability
    )


def _run(fn: _Handler, message: Message, wait: _Wait) -> Outcome | None:
    """Call ``fn`` (waiting for an awaitable result); an exception becomes a failure.

    Returns ``None`` when the awaited result was cancelled (the message is released).
    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` propagate to the caller.
    A message that could not be decoded fails with its ``DecodeError`` without calling
    ``fn`` (issue 14 item 7): the failure policy settles it.
    """
    if message.decode_error is not None:
        return Outcome(message, False, error=message.decode_error)
    try:
        result = fn(message)
        if result is None:  # the usual handler's result: no awaitable, no Outcome
            return success_of(message, None)
        if getattr(type(result), "__await__", None) is not None:
            result = wait(result)
    except _CANCELLED:
        release(message)
        return None
    except Exception as exc:
        return Outcome(message, False, error=exc)
    if isinstance(result, Outcome):  # outcome_of, without the call (once per message)
        return result
    return success_of(message, result)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class _Loops:
    """The loop thread, of the subscription's own and started on first use, on which a sync
    handler's awaitable results are awaited."""

    def __init__(self) -> None:
        self._own: LoopThread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def wait(self, awaitable: Awaitable[Any]) -> Any:
        """Await ``awaitable`` on the loop thread and return its result (blocks this thread).

        Raises:
            InvalidArgument: If this thread runs an event loop (blocking it could deadlock).
            concurrent.futures.CancelledError: If the subscription ended meanwhile.
        """
        if asyncio._get_running_loop() is not None:  # a public low-level API
            _close(awaitable)
            raise InvalidArgument(
                "fn",
                "returned an awaitable on a thread that runs an event loop, which process "
                "must not block; declare the handler `async def` and pass "
                "scheduler=AsyncIOThreadSafeScheduler(loop)",
            )
        with self._lock:
            if self._closed:
                loop = None
            else:
                if self._own is None:
                    self._own = LoopThread("rx_pgmq-process-loop")
                loop = self._own.loop
        if loop is None:
            _close(awaitable)
            raise concurrent.futures.CancelledError()
        try:
            future = asyncio.run_coroutine_threadsafe(_await(awaitable), loop)
        except RuntimeError:  # the loop closed meanwhile
            _close(awaitable)
            raise concurrent.futures.CancelledError() from None
        return future.result()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            own, self._own = self._own, None
        if own is not None:
            own.close()


def _close(awaitable: Awaitable[Any]) -> None:
    """Close a coroutine that will never run (no 'never awaited' warning)."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


def process(
    fn: _Handler,
    *,
    max_concurrency: int = 1,
    key: KeyFn | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> ProcessOperator:
    """Turn each message into an :class:`~rx_pgmq.Outcome` by calling ``fn`` on it.

    ``fn`` returning normally gives ``succeeded(message, result)``; raising an exception
    gives ``failed(message, exc)`` and the stream goes on (an exception in ``fn`` never
    ends the stream). ``fn`` may also return an ``Outcome`` itself, e.g.
    ``rx_pgmq.failed(message, "bad input")`` or ``succeeded(message).with_ack(Archive())``.
    A message whose body or headers could not be decoded (``message.decode_error``) gives
    ``failed(message, message.decode_error)`` without calling ``fn``.

    Sync handlers: with ``max_concurrency == 1`` and no ``scheduler``, ``fn`` runs on the
    thread that delivers the message (the consumer's reader thread), one message at a
    time. With ``max_concurrency > 1``, up to that many calls run at once on a thread pool
    of that size (one per subscription, shut down when the subscription ends); with a
    ``scheduler``, calls run on it (still at most ``max_concurrency`` at once).

    Async handlers (``async def``, or any handler when ``scheduler`` is an
    ``AsyncIOThreadSafeScheduler``) run as tasks, up to ``max_concurrency`` at once, on the
    scheduler's event loop, or with no scheduler on an event loop thread the subscription
    owns and closes. A sync handler that returns an awaitable has it awaited on such a
    loop. Disposing cancels the running tasks; a cancelled handler is not a failure: its
    message is released (visible again at once) and no outcome is emitted.

    Messages waiting for a free slot are held in order; the consumer's demand window
    (``max_in_flight``) bounds how many there can be, because a message's room returns only
    once it is settled. Outcomes are emitted one at a time (never concurrently), in
    completion order, with no lock held while the subscriber runs (issue 14 item 3);
    ``on_completed`` waits for the calls still running, and so does an ``on_error`` from
    upstream (e.g. ``ops.timeout``): their outcomes are delivered first, then the error.

    With ``key``, messages with equal ``key(message)`` are handled one at a time in read
    order (a message waits while an earlier one of its key runs or waits), different keys in
    parallel up to ``max_concurrency``; a slot that frees goes to the key that has waited
    longest, so a busy key cannot starve the others. This holds for every engine (pool,
    scheduler, event loop); with ``max_concurrency == 1`` everything runs in read order
    anyway. For PGMQ's FIFO groups, read with ``ReadOptions(fifo=...)`` and key on the group
    header: ``key=lambda m: (m.headers or {}).get("x-pgmq-group")``. A ``key`` that raises
    (or returns an unhashable value) fails that message alone, without calling ``fn``.

    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` raised by ``fn`` are not
    failures: the stream ends with ``on_error`` carrying that exception (the subscription
    is disposed, so unsettled messages are released), then on the main thread the
    exception is raised again, and on any other thread a ``KeyboardInterrupt``
    interrupts the main thread (as Ctrl-C would). An exception raised by the subscriber's
    ``on_next`` ends the stream with ``on_error`` too, as it does at the source.

    Args:
        fn: The handler, called once per message (sync or ``async def``).
        max_concurrency: Most calls of ``fn`` running at once, >= 1.
        key: ``Message -> hashable``: messages with equal keys are handled one at a time,
            in read order.
        scheduler: Run ``fn`` on this scheduler instead of the delivering thread or a pool;
            for async handlers, an ``AsyncIOThreadSafeScheduler``.

    Returns:
        An operator from ``Observable[Message]`` to ``Observable[Outcome]`` that keeps the
        body type for mypy: ``Observable[Message[T]]`` to ``Observable[Outcome[T]]``
        (annotate the handler's parameter ``Message[T]`` for ``message.body`` to be a
        ``T`` in it; a lambda's is ``Message[Any]``).

    Raises:
        InvalidArgument: If ``fn`` or ``key`` is not callable, ``max_concurrency`` is not an
            int >= 1, ``scheduler`` is not a reactivex scheduler, is RxPY's plain
            ``AsyncIOScheduler`` (not thread-safe), or is not an asyncio scheduler while
            ``fn`` is ``async def``.

    Example:
        >>> read_queue(dsn, "orders", visibility_timeout=30, max_in_flight=20).pipe(
        ...     pgops.process(charge_card, max_concurrency=8),
        ...     pgops.ack(on_failure=pgops.max_attempts(3)),
        ... ).subscribe(print)  # doctest: +SKIP
        >>> async def notify(message):  # doctest: +SKIP
        ...     await http.post(URL, json=message.body)
        >>> source.pipe(pgops.process(notify, max_concurrency=100), pgops.ack())  # doctest: +SKIP
        >>> source.pipe(  # one account's messages in read order, 8 accounts at once
        ...     pgops.process(post_entry, max_concurrency=8, key=lambda m: m.body["account"]),
        ...     pgops.ack(),
        ... )  # doctest: +SKIP
    """
    if not callable(fn):
        raise InvalidArgument("fn", f"must be callable (Message -> result), got {fn!r}")
    limit = check_positive_int(max_concurrency, "max_concurrency")
    if key is not None and not callable(key):
        raise InvalidArgument("key", f"must be callable (Message -> hashable), got {key!r}")
    run_on = check_scheduler(scheduler)
    fn = traced(fn)  # a process span per call once rx_pgmq.telemetry is instrumented
    loop = loop_of(run_on)
    if _is_async(fn) or loop is not None:
        if run_on is not None and loop is None:
            raise InvalidArgument(
                "scheduler",
                f"must be None or a reactivex AsyncIOThreadSafeScheduler(loop) for an async "
                f"handler, got {type(run_on).__name__}",
            )
        return lambda source: on_loop(source, fn, limit, loop, key)
    if limit == 1 and run_on is None:  # one call at a time, in read order: every key too
        return lambda source: _inline(source, fn, key)
    return lambda source: _concurrent(source, fn, limit, run_on, key)


def _inline(source: Observable[Message], fn: _Handler, key: KeyFn | None) -> Observable[Outcome]:
    def subscribe(
        observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        loops = _Loops()
        wait = loops.wait
        ended = False  # a handler raised a fatal exception

        def on_next(message: Message) -> None:
            nonlocal ended
            if ended:
                return
            if not isinstance(message, Message):
                observer.on_error(not_a_message(message))
                return
            if key is not None:  # the order is read order already; a key that fails, fails
                try:
                    hash(key(message))
                except Exception as exc:
                    observer.on_next(Outcome(message, False, error=exc))
                    return
            try:
                outcome = _run(fn, message, wait)
            except FATAL as exc:
                ended = True
                end_fatal(observer.on_error, message, exc)
                return
            if outcome is not None:
                # A subscriber raising here propagates to the source, which ends the
                # stream with on_error, as it does for its own subscriber.
                observer.on_next(outcome)

        subscription = source.subscribe(
            on_next, observer.on_error, observer.on_completed, scheduler=scheduler
        )
        return CompositeDisposable(subscription, Disposable(loops.close))

    return Observable(subscribe)


def _concurrent(
    source: Observable[Message],
    fn: _Handler,
    limit: int,
    run_on: abc.SchedulerBase | None,
    key: KeyFn | None,
) -> Observable[Outcome]:
    def subscribe(
        observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        gate = Gate(observer, limit, key)
        loops = _Loops()
        executor = (
            ThreadPoolExecutor(limit, thread_name_prefix="rx_pgmq-process")
            if run_on is None
            else None
        )

        def shutdown() -> None:
            loops.close()
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

        gate.on_stop = shutdown

        def work(task: Task) -> None:
            k, message = task
            try:
                outcome = _run(fn, message, loops.wait)
            except FATAL as exc:
                gate.fatal(message, exc)
                return
            for following in gate.done(k, outcome):  # the slot (and key) go to who waited
                start(following)

        def start(task: Task) -> None:
            if executor is not None:
                try:
                    executor.submit(work, task)
                except RuntimeError:  # shut down by a dispose racing with this message
                    return
            else:
                assert run_on is not None
                run_on.schedule(lambda _s, _state: work(task))

        return gate.subscribe(source, start, scheduler)

    return Observable(subscribe)
