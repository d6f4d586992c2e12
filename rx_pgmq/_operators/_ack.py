"""Ack operators: settle each message through its consumer and emit a ``Settled`` record."""

from __future__ import annotations

import asyncio
import threading
from asyncio import _get_running_loop as _running_loop  # a public low-level API
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TypeVar, cast

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rx_pgmq._core._policy import Policy, check_policy, resolve
from rx_pgmq._core._settle import Grouped
from rx_pgmq._operators._seen import SeenConsumers
from rx_pgmq._operators._serial import Serial
from rx_pgmq._values._loop import user_loop
from rx_pgmq._values._outcome import ACTION_TYPES, Outcome, Settled, as_outcome, settled_of
from rx_pgmq.actions import AckStatus, Action, Archive, Delete
from rx_pgmq.message import Acknowledger, BodyT, Message, SettleCallback

__all__ = ["ack", "ack_with", "failures", "settle_group", "successes"]

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
    if isinstance(success, ACTION_TYPES) and isinstance(failure, ACTION_TYPES):
        fixed = partial(_fixed, cast(Action, success), cast(Action, failure))
        return _acknowledge(fixed)  # what resolve() does, without its two calls
    return _acknowledge(lambda outcome: resolve(success if outcome.ok else failure, outcome))


def _fixed(success: Action, failure: Action, outcome: Outcome) -> Action:
    """The action of ``outcome`` under two fixed policies: its override, else ``success``
    or ``failure`` (as :func:`~rx_pgmq._core._policy.resolve`, without two calls)."""
    override = outcome.ack
    if override is not None:
        return override
    return success if outcome.ok else failure


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


class _OnLoop:
    """Where the requests of an ack operator made on a user's event loop report: each run
    of statuses (a flush's, see :class:`Grouped`) goes to the operator on that loop with one
    ``call_soon_threadsafe``, so its records land on the loop, one wake-up per flush."""

    __slots__ = ("acks", "loop")

    def __init__(self, acks: _Acks, loop: asyncio.AbstractEventLoop) -> None:
        self.acks, self.loop = acks, loop

    def report_many(self, run: list[tuple[Grouped, AckStatus | Exception]]) -> None:
        _call_on(self.loop, self.acks.report_many, run)


class _Request(Grouped):
    """The settle callback of one message: its record is built from these once the
    acknowledger reports a status (several at once through :meth:`_Acks.report_many`).

    Built with ``_new_request`` and its three attributes set by the caller (no
    ``__init__`` frame: one per message, see :mod:`rx_pgmq._values._slots`).
    """

    __slots__ = ("action", "outcome")

    outcome: Outcome
    action: Action


_new_request = partial(object.__new__, _Request)


class _Acks:
    """One subscription of an ack operator: its pending settles and its subscriber."""

    def __init__(self, observer: abc.ObserverBase[Settled], decide: _Decide) -> None:
        self.decide = decide
        self.lock = threading.Lock()  # guards the fields below; never held while calling out
        self.serial: Serial[Settled] = Serial(observer)  # one call at a time, no lock held
        self.pending = 0
        self.upstream_done = False
        self.upstream_error: Exception | None = None  # sent once the pending settles finished
        self.seen = SeenConsumers()
        self.last_acker: object = None  # the consumer of the last message (seen already)
        self.on_loop: _OnLoop | None = None  # the sink of requests made on a user's loop

    def send_terminal(self, error: Exception | None) -> None:
        if error is not None:  # nothing downstream settles now: release at once
            self.seen.stream_failed()
        self.serial.terminal(error)

    def report_many(self, run: list[tuple[Grouped, AckStatus | Exception]]) -> None:
        """The statuses of settles this operator requested (the acknowledger reports a
        flush's in one call): their records in order, one hand-over to the subscriber;
        an acknowledger's error ends the stream after the records before it."""
        failure: Exception | None = None
        records: list[Settled] = []
        # Every callback of this sink is a _Request (one cast for the run: cast is a call)
        for request, status in cast("list[tuple[_Request, AckStatus | Exception]]", run):
            if isinstance(status, Exception):  # an acknowledger failed the request
                failure = failure or status
            elif failure is None:
                records.append(settled_of(request.outcome, request.action, status))
        try:
            if records and not self.serial.stopped:
                if len(records) == 1:
                    self.serial.on_next(records[0])
                else:
                    self.serial.on_next_many(records)
        finally:  # even if a subscriber raised, completion must not wait forever
            with self.lock:
                self.pending -= len(run)
                finished = self.upstream_done and self.pending == 0
        if failure is not None:
            self.send_terminal(failure)
        elif finished:
            self.send_terminal(self.upstream_error)

    def on_next(self, value: Outcome | Message) -> None:
        try:
            outcome = value if type(value) is Outcome else as_outcome(value)
            action = self.decide(outcome)
        except Exception as exc:
            self.send_terminal(exc)
            return
        message = outcome.message
        acker = message._acknowledger
        if acker is not self.last_acker:  # one identity check per message for one consumer
            self.seen.note(message)
            self.last_acker = acker
        with self.lock:
            track = not self.serial.stopped
            if track:
                self.pending += 1
        # The Future-free settle; it calls back like a Future's done-callback
        # (exceptions logged, never raised here). Outcomes delivered on the user's
        # event loop get their records on it too.
        try:
            if acker is None:
                acker = message._acker()  # raises NotAcknowledgeable
            callback: SettleCallback = _ignore
            if track:
                callback = request = _new_request()
                request.sink, request.outcome, request.action = self, outcome, action
                if _running_loop() is not None and (loop := user_loop()) is not None:
                    request.sink = self.loop_sink(loop)  # its record goes back to the loop
            group: list[_GroupEntry] | None = None
            if _groups_open[0]:  # some thread has a group open: is it this one?
                group = getattr(_group, "requests", None)
            if group is not None:  # sent with the rest of the group (settle_group)
                group.append((acker, message, action, outcome.reason, callback, self, track))
            else:
                acker.settle_callback(message, action, outcome.reason, callback)
        except Exception as exc:  # e.g. NotAcknowledgeable: the request was not made
            self.request_failed(exc, track)

    def loop_sink(self, loop: asyncio.AbstractEventLoop) -> _OnLoop:
        """The sink that reports to this operator on ``loop`` (one per loop in a row)."""
        sink = self.on_loop
        if sink is None or sink.loop is not loop:
            sink = self.on_loop = _OnLoop(self, loop)
        return sink

    def request_failed(self, exc: Exception, track: bool) -> None:
        """A settle request could not be made: the stream ends with ``exc``."""
        if track:
            with self.lock:
                self.pending -= 1
        self.send_terminal(exc)

    def upstream_ended(self, error: Exception | None) -> None:
        """Upstream completed or failed: the settles requested already finish first
        (their records are delivered), then the terminal event (#14 item 2)."""
        with self.lock:
            self.upstream_done, self.upstream_error = True, error
            finished = self.pending == 0
        if finished:
            self.send_terminal(error)


_GroupEntry = tuple[Acknowledger, Message, Action, "str | None", SettleCallback, _Acks, bool]
_group = threading.local()  # .requests: the open settle group of this thread, or None
# How many threads have a group open (under _groups_lock): while none has, an ack skips
# the thread-local lookup.
_groups_open = [0]
_groups_lock = threading.Lock()


@contextmanager
def settle_group() -> Iterator[None]:
    """Collect the settle requests ack operators make on this thread meanwhile, and send
    them to their consumers when the block ends: one ``settle_many`` call (one lock, one
    batcher add) per run of requests to the same consumer, in order.

    ``process_batch`` wraps the emission of a group's outcomes in it, so a group of 1000
    messages is settled with one call instead of 1000. Statuses, records and errors are
    those of the requests made one by one; a nested block joins the outer one.
    """
    if getattr(_group, "requests", None) is not None:
        yield
        return
    requests: list[_GroupEntry] = []
    _group.requests = requests
    with _groups_lock:
        _groups_open[0] += 1
    try:
        yield
    finally:
        _group.requests = None
        with _groups_lock:
            _groups_open[0] -= 1
        if requests:
            _send_group(requests)


def _send_group(requests: list[_GroupEntry]) -> None:
    """Send each run of requests to the same acknowledger with one call."""
    start, end = 0, len(requests)
    while start < end:
        acker = requests[start][0]
        stop = start + 1
        while stop < end and requests[stop][0] is acker:
            stop += 1
        run = requests[start:stop]
        start = stop
        many = getattr(acker, "settle_many", None)
        if many is not None:
            try:
                many([(r[1], r[2], r[3], r[4]) for r in run])
            except Exception as exc:
                for r in run:
                    r[5].request_failed(exc, r[6])
            continue
        for r in run:
            try:
                acker.settle_callback(r[1], r[2], r[3], r[4])
            except Exception as exc:
                r[5].request_failed(exc, r[6])


def _ignore(status: AckStatus | Exception) -> None:
    """Callback of a settle requested after the stream stopped."""


def _acknowledge(
    decide: _Decide,
) -> Callable[[Observable[Outcome | Message]], Observable[Settled]]:
    def apply(source: Observable[Outcome | Message]) -> Observable[Settled]:
        def subscribe(
            observer: abc.ObserverBase[Settled], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            acks = _Acks(observer, decide)
            subscription = source.subscribe(
                acks.on_next,
                acks.upstream_ended,
                partial(acks.upstream_ended, None),
                scheduler=scheduler,
            )
            return CompositeDisposable(subscription, Disposable(acks.serial.dispose))

        return Observable(subscribe)

    return apply
