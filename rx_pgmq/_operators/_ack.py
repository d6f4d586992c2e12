"""Ack operators: settle each message through its consumer and emit a ``Settled`` record."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rx_pgmq._core._policy import Policy, check_policy, resolve
from rx_pgmq._operators._seen import SeenConsumers
from rx_pgmq._operators._serial import Serial
from rx_pgmq._values._loop import user_loop
from rx_pgmq._values._outcome import Outcome, Settled, as_outcome, settled_of
from rx_pgmq.actions import AckStatus, Action, Archive, Delete
from rx_pgmq.message import BodyT, Message, SettleCallback

__all__ = ["ack", "ack_with", "failures", "successes"]

_Decide = Callable[[Outcome], Action]
_R = TypeVar("_R")
_DELETE: Action = Delete()  # actions are immutable values: safe as defaults
_ARCHIVE: Action = Archive()


def ack(
    on_success: Policy = _DELETE, on_failure: Policy = _ARCHIVE
) -> Callable[[Observable[Outcome[BodyT] | Message[BodyT]]], Observable[Settled[BodyT]]]:
    """Acknowledge every message: successes with ``on_success``, failures with ``on_failure``.

    For each value (an ``Outcome``, or a plain ``Message``, which counts as a success) the
    operator picks one action — the outcome's own override (``outcome.with_ack(...)``) if it
    has one, else the policy — and settles the message through its consumer
    (``message.settle(action, reason=outcome.reason)``); the consumer batches these into
    few PGMQ calls. Once the acknowledgement finished, it emits one :class:`~rx_pgmq.Settled`
    per message (in the order acknowledgements finish). ``Settled.status`` says how it
    ended: ``"acked"``, ``"unacked"`` (not applied; the message reappears after its
    visibility timeout), ``"lost_lease"`` (fenced consumers) or ``"ignored"`` (e.g. a
    delete-on-read consumer: no SQL is sent and the consumer logs one warning).

    Records are emitted from the consumer's acknowledger thread (use ``observe_on`` to move
    slow subscribers elsewhere), or on the event loop that delivered the outcome (e.g. with
    an ``AsyncIOThreadSafeScheduler``); emissions are serialized without holding a lock while
    the subscriber runs: a thread that finds it busy queues its record and returns, and the
    busy thread delivers it next. A subscriber raising in ``on_next`` ends the stream with
    ``on_error``, as at the source. ``on_completed`` is sent only after every pending
    acknowledgement finished; ``on_error`` passes through at once (after the subscriber's
    call in progress, if any; records still queued are dropped).

    Errors go to ``on_error`` (the stream ends; unsettled messages are released by their
    consumer): a message that cannot be acknowledged (:class:`~rx_pgmq.errors.
    NotAcknowledgeable`, e.g. one from ``PGMQ.read``), a value that is neither a message nor
    an outcome (``NotAnOutcome``), a policy that raises or returns something that is not an
    action (``PolicyError``).

    Args:
        on_success: Policy for successes: an action or a function ``Outcome -> action``
            (default ``Delete()``).
        on_failure: Policy for failures (default ``Archive()``).

    Returns:
        An operator from ``Observable[Outcome | Message]`` to ``Observable[Settled]``,
        keeping the body type (``Outcome[T]`` in, ``Settled[T]`` out).

    Raises:
        InvalidArgument: If a policy is neither an action nor callable.

    Example:
        >>> read_queue(dsn, "orders", visibility_timeout=30).pipe(
        ...     pgops.process(handle),
        ...     pgops.ack(on_success=Delete(), on_failure=pgops.max_attempts(3)),
        ... ).subscribe(lambda s: print(s.message.msg_id, s.action, s.status))  # doctest: +SKIP
    """
    success = check_policy(on_success, "on_success")
    failure = check_policy(on_failure, "on_failure")
    return _acknowledge(lambda outcome: resolve(success if outcome.ok else failure, outcome))


def ack_with(
    policy: Policy,
) -> Callable[[Observable[Outcome[BodyT] | Message[BodyT]]], Observable[Settled[BodyT]]]:
    """Acknowledge every message with one policy, whether it succeeded or failed.

    Same behaviour as :func:`ack` (overrides win, one ``Settled`` per message); use it after
    :func:`successes` or :func:`failures`, or on a stream of plain messages.

    Args:
        policy: An action or a function ``Outcome -> action``.

    Returns:
        An operator from ``Observable[Outcome | Message]`` to ``Observable[Settled]``.

    Raises:
        InvalidArgument: If ``policy`` is neither an action nor callable.

    Example:
        >>> outcomes = source.pipe(pgops.process(handle), ops.share())  # doctest: +SKIP
        >>> outcomes.pipe(pgops.successes(), pgops.ack_with(Delete()))  # doctest: +SKIP
        >>> outcomes.pipe(pgops.failures(), pgops.ack_with(MoveTo("dlq")))  # doctest: +SKIP
    """
    chosen = check_policy(policy, "policy")
    return _acknowledge(lambda outcome: resolve(chosen, outcome))


def successes() -> Callable[[Observable[Outcome[BodyT]]], Observable[Outcome[BodyT]]]:
    """Keep only successful outcomes (a plain ``Message`` counts as a success).

    Returns:
        An operator from ``Observable[Outcome]`` to ``Observable[Outcome]``.

    Example:
        >>> outcomes.pipe(pgops.successes(), pgops.ack_with(Delete()))  # doctest: +SKIP
    """
    return _split(keep_ok=True)


def failures() -> Callable[[Observable[Outcome[BodyT]]], Observable[Outcome[BodyT]]]:
    """Keep only failed outcomes.

    Returns:
        An operator from ``Observable[Outcome]`` to ``Observable[Outcome]``.

    Example:
        >>> outcomes.pipe(pgops.failures(), pgops.ack_with(pgops.backoff(5)))  # doctest: +SKIP
    """
    return _split(keep_ok=False)


def _split(*, keep_ok: bool) -> Callable[[Observable[Outcome]], Observable[Outcome]]:
    def apply(source: Observable[Outcome]) -> Observable[Outcome]:
        def subscribe(
            observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_next(value: Outcome) -> None:
                try:
                    outcome = as_outcome(value)
                except Exception as exc:
                    observer.on_error(exc)
                    return
                if outcome.ok is keep_ok:
                    observer.on_next(outcome)

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return apply


def _call_on(loop: asyncio.AbstractEventLoop, fn: Callable[[_R], None], arg: _R) -> None:
    """Call ``fn(arg)`` on ``loop``'s thread (at once if the loop is closed)."""
    try:
        loop.call_soon_threadsafe(fn, arg)
    except RuntimeError:  # closed: nobody waits on it any more, keep the counts right
        fn(arg)


def _acknowledge(
    decide: _Decide,
) -> Callable[[Observable[Outcome | Message]], Observable[Settled]]:
    def apply(source: Observable[Outcome | Message]) -> Observable[Settled]:
        def subscribe(
            observer: abc.ObserverBase[Settled], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            lock = threading.Lock()  # guards the fields below; never held while calling out
            serial: Serial[Settled] = Serial(observer)  # one call at a time, no lock held
            pending = 0
            upstream_done = False
            upstream_error: Exception | None = None  # sent once the pending settles finished

            seen = SeenConsumers()

            def send_terminal(error: Exception | None) -> None:
                if error is not None:  # nothing downstream settles now: release at once
                    seen.stream_failed()
                serial.terminal(error)

            def finish(outcome: Outcome, action: Action, status: AckStatus | Exception) -> None:
                nonlocal pending
                if isinstance(status, Exception):  # an acknowledger failed the request
                    with lock:
                        pending -= 1
                    send_terminal(status)
                    return
                try:
                    if not serial.stopped:
                        serial.on_next(settled_of(outcome, action, status))
                finally:  # even if a subscriber raised, completion must not wait forever
                    with lock:
                        pending -= 1
                        finished = upstream_done and pending == 0
                if finished:
                    send_terminal(upstream_error)

            def ignore(status: AckStatus | Exception) -> None:
                """Callback of a settle requested after the stream stopped."""

            def on_next(value: Outcome | Message) -> None:
                nonlocal pending
                try:
                    outcome = as_outcome(value)
                    action = decide(outcome)
                except Exception as exc:
                    send_terminal(exc)
                    return
                message = outcome.message
                seen.note(message)
                with lock:
                    track = not serial.stopped
                    if track:
                        pending += 1
                # The Future-free settle; it calls back like a Future's done-callback
                # (exceptions logged, never raised here). Outcomes delivered on the user's
                # event loop get their records on it too.
                loop = user_loop()
                try:
                    acker = message._acknowledger or message._acker()  # raises if None
                    callback: SettleCallback = ignore
                    if track:
                        done = partial(finish, outcome, action)  # one frame less
                        callback = done if loop is None else partial(_call_on, loop, done)
                    acker.settle_callback(message, action, outcome.reason, callback)
                except Exception as exc:  # e.g. NotAcknowledgeable: the request was not made
                    if track:
                        with lock:
                            pending -= 1
                    send_terminal(exc)

            def upstream_ended(error: Exception | None) -> None:
                """Upstream completed or failed: the settles requested already finish first
                (their records are delivered), then the terminal event (#14 item 2)."""
                nonlocal upstream_done, upstream_error
                with lock:
                    upstream_done, upstream_error = True, error
                    finished = pending == 0
                if finished:
                    send_terminal(error)

            subscription = source.subscribe(
                on_next, upstream_ended, partial(upstream_ended, None), scheduler=scheduler
            )
            return CompositeDisposable(subscription, Disposable(serial.dispose))

        return Observable(subscribe)

    return apply
