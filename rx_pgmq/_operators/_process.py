"""``process``: run a handler on each message and emit its :class:`~rx_pgmq.Outcome`."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rx_pgmq._outcome import NotAnOutcome, Outcome, success_of
from rx_pgmq._validate import check_positive_int
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import Message

__all__ = ["process"]


def _run(fn: Callable[[Message], Any], message: Message) -> Outcome:
    """Call ``fn``; an exception becomes a failure, an Outcome result is kept as is.

    A message that could not be decoded fails with its ``DecodeError`` without calling
    ``fn`` (issue 14 item 7): the failure policy settles it.
    """
    if message.decode_error is not None:
        return Outcome(message, False, error=message.decode_error)
    try:
        result = fn(message)
    except Exception as exc:
        return Outcome(message, False, error=exc)
    if isinstance(result, Outcome):
        return result
    return success_of(message, result)  # message: checked by the caller


def _not_a_message(value: object) -> NotAnOutcome:
    return NotAnOutcome(
        f"process expects rx_pgmq.Message values, got {type(value).__name__}: {value!r:.80}; "
        "apply it to a read_queue(...) source"
    )


def process(
    fn: Callable[[Message], Any],
    *,
    max_concurrency: int = 1,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[Message]], Observable[Outcome]]:
    """Turn each message into an :class:`~rx_pgmq.Outcome` by calling ``fn`` on it.

    ``fn`` returning normally gives ``succeeded(message, result)``; raising an exception
    gives ``failed(message, exc)`` and the stream goes on (an exception in ``fn`` never
    ends the stream). ``fn`` may also return an ``Outcome`` itself, e.g.
    ``rx_pgmq.failed(message, "bad input")`` or ``succeeded(message).with_ack(Archive())``.
    A message whose body or headers could not be decoded (``message.decode_error``) gives
    ``failed(message, message.decode_error)`` without calling ``fn``.

    With ``max_concurrency == 1`` and no ``scheduler``, ``fn`` runs on the thread that
    delivers the message (the consumer's reader thread), one message at a time. With
    ``max_concurrency > 1``, up to that many calls run at once on a thread pool of that size
    (one per subscription, shut down when the subscription ends); with a ``scheduler``, calls
    run on it (still at most ``max_concurrency`` at once). Messages waiting for a free slot
    are held in order; the consumer's demand window (``max_in_flight``) bounds how many
    there can be, because a message's room returns only once it is settled. Outcomes are
    emitted one at a time (never concurrently), in completion order; ``on_completed`` waits
    for the calls still running; ``on_error`` from upstream passes through at once.

    Args:
        fn: The handler, called once per message.
        max_concurrency: Most calls of ``fn`` running at once, >= 1.
        scheduler: Run ``fn`` on this scheduler instead of the delivering thread or a pool.

    Returns:
        An operator from ``Observable[Message]`` to ``Observable[Outcome]``.

    Raises:
        InvalidArgument: If ``fn`` is not callable, ``max_concurrency`` is not an int >= 1
            or ``scheduler`` is not a reactivex scheduler.

    Example:
        >>> read_queue(dsn, "orders", visibility_timeout=30, max_in_flight=20).pipe(
        ...     pgops.process(charge_card, max_concurrency=8),
        ...     pgops.ack(on_failure=pgops.max_attempts(3)),
        ... ).subscribe(print)  # doctest: +SKIP
    """
    if not callable(fn):
        raise InvalidArgument("fn", f"must be callable (Message -> result), got {fn!r}")
    limit = check_positive_int(max_concurrency, "max_concurrency")
    if scheduler is not None and not isinstance(scheduler, abc.SchedulerBase):
        raise InvalidArgument("scheduler", f"must be a reactivex scheduler, got {scheduler!r}")
    if limit == 1 and scheduler is None:
        return lambda source: _inline(source, fn)
    return lambda source: _concurrent(source, fn, limit, scheduler)


def _inline(source: Observable[Message], fn: Callable[[Message], Any]) -> Observable[Outcome]:
    def subscribe(
        observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        def on_next(message: Message) -> None:
            if not isinstance(message, Message):
                observer.on_error(_not_a_message(message))
                return
            observer.on_next(_run(fn, message))

        return source.subscribe(
            on_next, observer.on_error, observer.on_completed, scheduler=scheduler
        )

    return Observable(subscribe)


def _concurrent(
    source: Observable[Message],
    fn: Callable[[Message], Any],
    limit: int,
    run_on: abc.SchedulerBase | None,
) -> Observable[Outcome]:
    def subscribe(
        observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        lock = threading.Lock()  # guards the fields below; never held while calling out
        emit = threading.RLock()  # serializes observer calls
        waiting: deque[Message] = deque()
        running = 0
        upstream_done = False
        stopped = False  # a terminal event was sent, or the subscription was disposed
        executor = (
            ThreadPoolExecutor(limit, thread_name_prefix="rx_pgmq-process")
            if run_on is None
            else None
        )

        def shutdown() -> None:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

        def send_terminal(error: Exception | None) -> None:
            nonlocal stopped
            with emit:
                with lock:
                    if stopped:
                        return
                    stopped = True
                    waiting.clear()
                if error is None:
                    observer.on_completed()
                else:
                    observer.on_error(error)
            shutdown()

        def work(message: Message) -> None:
            nonlocal running
            try:
                outcome = _run(fn, message)
                with emit:
                    if not stopped:
                        observer.on_next(outcome)
            finally:  # even if a subscriber raised, the slot must be freed
                with lock:
                    following = waiting.popleft() if waiting and not stopped else None
                    if following is None:
                        running -= 1
                    finished = upstream_done and running == 0
            if following is not None:
                start(following)  # the freed slot goes to the oldest waiting message
            elif finished:
                send_terminal(None)

        def start(message: Message) -> None:
            if executor is not None:
                try:
                    executor.submit(work, message)
                except RuntimeError:  # shut down by a dispose racing with this message
                    return
            else:
                assert run_on is not None
                run_on.schedule(lambda _s, _state: work(message))

        def on_next(message: Message) -> None:
            nonlocal running
            if not isinstance(message, Message):
                send_terminal(_not_a_message(message))
                return
            with lock:
                if stopped:
                    return
                if running >= limit:
                    waiting.append(message)
                    return
                running += 1
            start(message)

        def on_completed() -> None:
            nonlocal upstream_done
            with lock:
                upstream_done = True
                finished = running == 0
            if finished:
                send_terminal(None)

        def dispose() -> None:
            nonlocal stopped
            with lock:
                stopped = True
                waiting.clear()
            shutdown()

        subscription = source.subscribe(on_next, send_terminal, on_completed, scheduler=scheduler)
        return CompositeDisposable(subscription, Disposable(dispose))

    return Observable(subscribe)
