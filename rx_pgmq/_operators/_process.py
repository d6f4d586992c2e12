"""``process``: run a handler on each message and emit its :class:`~rx_pgmq.Outcome`.

Three engines, chosen when the operator is made: inline (one call at a time on the
delivering thread), a thread pool or a scheduler (sync handlers, ``max_concurrency > 1``),
and an event loop (``async def`` handlers, or any handler with an asyncio scheduler).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rx_pgmq._fatal import FATAL, propagate
from rx_pgmq._loop import LoopThread, check_scheduler, loop_of
from rx_pgmq._operators._serial import Serial
from rx_pgmq._outcome import NotAnOutcome, Outcome, ProcessOperator, success_of
from rx_pgmq._telemetry import traced
from rx_pgmq._validate import check_positive_int
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import Message

__all__ = ["process"]

_log = logging.getLogger("rx_pgmq")
_CANCELLED = (asyncio.CancelledError, concurrent.futures.CancelledError)

_Handler = Callable[[Message], Any]
_Wait = Callable[[Awaitable[Any]], Any]


def _is_async(fn: object) -> bool:
    """Whether ``fn`` is declared ``async`` (a coroutine function, or an object whose
    ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method, not callability
    )


def _outcome_of(message: Message, result: Any) -> Outcome:
    if isinstance(result, Outcome):
        return result
    return success_of(message, result)  # message: checked by the caller


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
        if getattr(type(result), "__await__", None) is not None:
            result = wait(result)
    except _CANCELLED:
        _release(message)
        return None
    except Exception as exc:
        return Outcome(message, False, error=exc)
    return _outcome_of(message, result)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _release(message: Message) -> None:
    """Make a message visible again; its handler will not finish (best effort)."""
    if message.acknowledgeable:
        try:
            message.release()
        except Exception as exc:  # the consumer is gone: it released the message itself
            _log.debug("could not release message %s: %s", message.msg_id, exc)


def _end(on_error: Callable[[Any], object], message: Message, exc: BaseException) -> None:
    """A handler raised a fatal exception: release its message, end the stream with it,
    then let the exception do what Python does with it (:func:`rx_pgmq._fatal.propagate`)."""
    _release(message)
    try:
        on_error(exc)  # the original, whatever its class
    except BaseException as raised:  # RxPY's default on_error raises it again
        if raised is not exc:
            _log.error("on_error of a subscriber raised: %r", raised)
    propagate(exc)


def _not_a_message(value: object) -> NotAnOutcome:
    return NotAnOutcome(
        f"process expects rx_pgmq.Message values, got {type(value).__name__}: {value!r:.80}; "
        "apply it to a read_queue(...) source"
    )


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
    ``on_completed`` waits for the calls still running; ``on_error`` from upstream passes
    through at once.

    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` raised by ``fn`` are not
    failures: the stream ends with ``on_error`` carrying that exception (the subscription
    is disposed, so unsettled messages are released), then on the main thread the
    exception is raised again, and on any other thread a ``KeyboardInterrupt``
    interrupts the main thread (as Ctrl-C would). An exception raised by the subscriber's
    ``on_next`` ends the stream with ``on_error`` too, as it does at the source.

    Args:
        fn: The handler, called once per message (sync or ``async def``).
        max_concurrency: Most calls of ``fn`` running at once, >= 1.
        scheduler: Run ``fn`` on this scheduler instead of the delivering thread or a pool;
            for async handlers, an ``AsyncIOThreadSafeScheduler``.

    Returns:
        An operator from ``Observable[Message]`` to ``Observable[Outcome]`` that keeps the
        body type for mypy: ``Observable[Message[T]]`` to ``Observable[Outcome[T]]``
        (annotate the handler's parameter ``Message[T]`` for ``message.body`` to be a
        ``T`` in it; a lambda's is ``Message[Any]``).

    Raises:
        InvalidArgument: If ``fn`` is not callable, ``max_concurrency`` is not an int >= 1,
            ``scheduler`` is not a reactivex scheduler, is RxPY's plain
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
    """
    if not callable(fn):
        raise InvalidArgument("fn", f"must be callable (Message -> result), got {fn!r}")
    limit = check_positive_int(max_concurrency, "max_concurrency")
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
        return lambda source: _on_loop(source, fn, limit, loop)
    if limit == 1 and run_on is None:
        return lambda source: _inline(source, fn)
    return lambda source: _concurrent(source, fn, limit, run_on)


def _inline(source: Observable[Message], fn: _Handler) -> Observable[Outcome]:
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
                observer.on_error(_not_a_message(message))
                return
            try:
                outcome = _run(fn, message, wait)
            except FATAL as exc:
                ended = True
                _end(observer.on_error, message, exc)
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


class _Gate:
    """Per-subscription bookkeeping shared by the pool and loop engines: how many calls
    run, who waits for a slot, and the one terminal event."""

    def __init__(self, observer: abc.ObserverBase[Outcome], limit: int) -> None:
        self.observer = observer
        self.limit = limit
        self.lock = threading.Lock()  # guards the fields below; never held while calling out
        self.serial: Serial[Outcome] = Serial(observer)  # one call at a time, no lock held
        self.waiting: deque[Message] = deque()
        self.running = 0
        self.upstream_done = False
        self.stopped = False  # a terminal event was sent, or the subscription was disposed
        self.on_stop: Callable[[], None] = lambda: None

    def admit(self, message: Message) -> bool:
        """Whether ``message`` may start now (else it waits, or the gate is stopped)."""
        with self.lock:
            if self.stopped:
                return False
            if self.running >= self.limit:
                self.waiting.append(message)
                return False
            self.running += 1
            return True

    def done(self, outcome: Outcome | None) -> Message | None:
        """Emit ``outcome`` (if any) and free its slot; return the message to start next."""
        if outcome is not None and not self.stopped:
            try:
                self.serial.on_next(outcome)  # a subscriber raising ends the stream
            finally:
                if self.serial.stopped:
                    self.stop()
        with self.lock:
            following = self.waiting.popleft() if self.waiting and not self.stopped else None
            if following is None:
                self.running -= 1
            finished = self.upstream_done and self.running == 0
        if finished:
            self.terminal(None)
        return following

    def fatal(self, message: Message, exc: BaseException) -> None:
        """A handler raised ``KeyboardInterrupt``/``SystemExit``/``GeneratorExit``."""
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
            self.waiting.clear()
        self.on_stop()  # first: on the main thread _end raises exc again
        _end(self.serial.terminal, message, exc)

    def completed(self) -> None:
        with self.lock:
            self.upstream_done = True
            finished = self.running == 0
        if finished:
            self.terminal(None)

    def terminal(self, error: BaseException | None) -> None:
        if self.stop():
            self.serial.terminal(error)  # no lock held: other threads go on meanwhile

    def stop(self) -> bool:
        """Stop admitting and shut the engine down; whether this call stopped it."""
        with self.lock:
            if self.stopped:
                return False
            self.stopped = True
            self.waiting.clear()
        self.on_stop()
        return True

    def dispose(self) -> None:
        self.serial.dispose()
        with self.lock:
            self.stopped = True
            self.waiting.clear()
        self.on_stop()

    def subscribe(
        self, source: Observable[Message], start: Callable[[Message], None], scheduler: Any
    ) -> abc.DisposableBase:
        def on_next(message: Message) -> None:
            if not isinstance(message, Message):
                self.terminal(_not_a_message(message))
            elif self.admit(message):
                start(message)

        subscription = source.subscribe(on_next, self.terminal, self.completed, scheduler=scheduler)
        return CompositeDisposable(subscription, Disposable(self.dispose))


def _concurrent(
    source: Observable[Message],
    fn: _Handler,
    limit: int,
    run_on: abc.SchedulerBase | None,
) -> Observable[Outcome]:
    def subscribe(
        observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        gate = _Gate(observer, limit)
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

        def work(message: Message) -> None:
            try:
                outcome = _run(fn, message, loops.wait)
            except FATAL as exc:
                gate.fatal(message, exc)
                return
            following = gate.done(outcome)
            if following is not None:
                start(following)  # the freed slot goes to the oldest waiting message

        def start(message: Message) -> None:
            if executor is not None:
                try:
                    executor.submit(work, message)
                except RuntimeError:  # shut down by a dispose racing with this message
                    return
            else:
                assert run_on is not None
                run_on.schedule(lambda _s, _state: work(message))

        return gate.subscribe(source, start, scheduler)

    return Observable(subscribe)


def _on_loop(
    source: Observable[Message],
    fn: _Handler,
    limit: int,
    given: asyncio.AbstractEventLoop | None,
) -> Observable[Outcome]:
    def subscribe(
        observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        gate = _Gate(observer, limit)
        own = LoopThread("rx_pgmq-process-loop") if given is None else None
        loop = given if given is not None else own.loop  # type: ignore[union-attr]
        tasks: set[asyncio.Task[None]] = set()  # touched on the loop only
        starting: list[Message] = []  # admitted, waiting for the loop to create its task
        kicked = False  # a kick is scheduled on the loop and has not run yet

        async def run(message: Message) -> None:  # one task per message, on the loop
            # The task reports its own end (no done-callback: one loop step less).
            try:
                if message.decode_error is not None:  # fails without calling fn (#14 item 7)
                    outcome = Outcome(message, False, error=message.decode_error)
                else:
                    result = fn(message)
                    if getattr(type(result), "__await__", None) is not None:
                        result = await result
                    outcome = _outcome_of(message, result)
            except Exception as exc:
                outcome = Outcome(message, False, error=exc)
            except asyncio.CancelledError:
                _release(message)
                following = gate.done(None)  # None when the gate stopped (a dispose)
                if following is not None:
                    spawn(following)
                raise
            except BaseException as exc:  # KeyboardInterrupt, SystemExit, GeneratorExit
                gate.fatal(message, exc)  # re-raised on the main thread (asyncio stops)
                return
            finally:
                tasks.discard(asyncio.current_task())
            following = gate.done(outcome)
            if following is not None:
                spawn(following)

        def spawn(message: Message) -> None:  # on the loop
            tasks.add(loop.create_task(run(message)))

        def kick() -> None:  # on the loop: start what on_next admitted
            nonlocal kicked
            with gate.lock:
                batch = starting.copy()
                starting.clear()
                kicked = False
                stopped = gate.stopped
            for message in batch:
                if stopped:
                    _release(message)
                else:
                    spawn(message)

        def on_next(message: Message) -> None:  # any thread: one wake-up for a burst
            nonlocal kicked
            if not isinstance(message, Message):
                gate.terminal(_not_a_message(message))
                return
            with gate.lock:  # gate.admit and the hand-over to the loop under one lock
                if gate.stopped:
                    return
                if gate.running >= limit:
                    gate.waiting.append(message)
                    return
                gate.running += 1
                starting.append(message)
                wake, kicked = not kicked, True
            if wake:
                try:
                    loop.call_soon_threadsafe(kick)
                except RuntimeError:  # the loop is closed: the consumer releases it
                    return

        def cancel_all() -> None:  # on the loop
            for task in list(tasks):
                task.cancel()

        def stop() -> None:
            if own is not None:
                own.close()  # cancels every task of its loop
                return
            with contextlib.suppress(RuntimeError):  # the caller's loop closed: nothing runs
                loop.call_soon_threadsafe(cancel_all)

        gate.on_stop = stop
        subscription = source.subscribe(on_next, gate.terminal, gate.completed, scheduler=scheduler)
        return CompositeDisposable(subscription, Disposable(gate.dispose))

    return Observable(subscribe)
