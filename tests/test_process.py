"""operators.process: messages in, outcomes out (virtual time, plus a thread-pool check).

Virtual-time tests drive hot observables on a ``TestScheduler`` and assert the exact
notification list. ``Slow`` wraps the test scheduler so each call of ``fn`` "takes" a fixed
number of ticks, which makes concurrency limits and completion ordering visible.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, TypeVar

import pytest
from _support import error_of, notification
from reactivex import Observable, abc, typing
from reactivex.scheduler.scheduler import Scheduler
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from rx_pgmq import Message, Outcome, failed, succeeded
from rx_pgmq.actions import Archive
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.operators import NotAnOutcome, process
from rx_pgmq.testing import make_message

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed
subscribe = ReactiveTest.subscribe

_S = TypeVar("_S")
WAIT = 5.0  # bound for things that normally take milliseconds


class Slow(Scheduler):
    """Runs every scheduled action ``ticks`` later on a test scheduler (a slow handler)."""

    def __init__(self, base: TestScheduler, ticks: float) -> None:
        super().__init__()
        self.base = base
        self.ticks = ticks

    @property
    def now(self) -> datetime:
        return self.base.now

    def schedule(
        self, action: typing.ScheduledAction[_S], state: _S | None = None
    ) -> abc.DisposableBase:
        return self.base.schedule_relative(self.ticks, action, state)

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[_S],
        state: _S | None = None,
    ) -> abc.DisposableBase:
        return self.base.schedule_relative(
            self.base.to_seconds(duetime) + self.ticks, action, state
        )

    def schedule_absolute(
        self,
        duetime: typing.AbsoluteTime,
        action: typing.ScheduledAction[_S],
        state: _S | None = None,
    ) -> abc.DisposableBase:
        return self.base.schedule_absolute(duetime, action, state)


def msgs(n: int) -> list[Message]:
    return [make_message({"n": i}, msg_id=i + 1) for i in range(n)]


# -- inline (max_concurrency=1, no scheduler) -------------------------------------------


def test_each_message_becomes_an_outcome_and_exceptions_become_failures() -> None:
    """A result gives a success, an exception a failure, and the stream goes on to complete."""
    scheduler = TestScheduler()
    m1, m2, m3 = msgs(3)
    boom = ValueError("boom")

    def handle(m: Message) -> Any:
        if m is m2:
            raise boom
        return m.body["n"] * 10

    xs = scheduler.create_hot_observable(
        on_next(210, m1), on_next(220, m2), on_next(230, m3), on_completed(250)
    )
    results = scheduler.start(lambda: xs.pipe(process(handle)))
    assert results.messages == [
        on_next(210, succeeded(m1, 0)),
        on_next(220, failed(m2, boom)),
        on_next(230, succeeded(m3, 20)),
        on_completed(250),
    ]
    assert xs.subscriptions == [subscribe(200, 250)]


def test_an_outcome_returned_by_the_handler_is_kept() -> None:
    """A handler may return its own Outcome (a failure reason, an ack override)."""
    scheduler = TestScheduler()
    m1, m2 = msgs(2)
    made = {m1.msg_id: failed(m1, "bad input"), m2.msg_id: succeeded(m2).with_ack(Archive())}
    xs = scheduler.create_hot_observable(on_next(210, m1), on_next(220, m2))
    results = scheduler.start(lambda: xs.pipe(process(lambda m: made[m.msg_id])))
    assert results.messages == [on_next(210, made[m1.msg_id]), on_next(220, made[m2.msg_id])]


def test_upstream_errors_pass_through() -> None:
    """An error from the source ends the outcome stream with the same error."""
    scheduler = TestScheduler()
    err = RuntimeError("consumer failed")
    (m1,) = msgs(1)
    xs = scheduler.create_hot_observable(on_next(210, m1), on_error(220, err))
    results = scheduler.start(lambda: xs.pipe(process(lambda m: None)))
    assert results.messages == [on_next(210, succeeded(m1)), on_error(220, err)]


@pytest.mark.parametrize("on_scheduler", [False, True])
def test_a_value_that_is_not_a_message_is_an_error(on_scheduler: bool) -> None:
    """process fed something other than a Message ends with NotAnOutcome (a TypeError)."""
    scheduler = TestScheduler()
    junk: Any = {"id": 1}  # deliberately not a Message
    xs = scheduler.create_hot_observable(on_next(210, junk))
    operator = process(lambda m: None, scheduler=scheduler if on_scheduler else None)
    results = scheduler.start(lambda: xs.pipe(operator))
    assert len(results.messages) == 1
    error = error_of(results.messages[0])
    assert isinstance(error, NotAnOutcome) and isinstance(error, TypeError)
    assert xs.subscriptions == [subscribe(200, 210)]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"fn": 3}, "fn"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 2.0}, "max_concurrency"),
        ({"scheduler": "pool"}, "scheduler"),
        ({"key": "x-pgmq-group"}, "key"),
    ],
)
def test_arguments_are_checked_before_subscribing(kwargs: dict[str, Any], argument: str) -> None:
    """A non-callable fn or key, a bad max_concurrency or a non-scheduler raise InvalidArgument."""
    fn = kwargs.pop("fn", lambda m: None)
    with pytest.raises(InvalidArgument) as info:
        process(fn, **kwargs)
    assert info.value.argument == argument


# -- on a scheduler (virtual time) ------------------------------------------------------


def test_at_most_max_concurrency_calls_run_and_completion_waits_for_them() -> None:
    """With 2 slots and 10-tick calls, the third message starts only when a slot frees up,
    and on_completed comes after the last outcome, not when the source completes."""
    scheduler = TestScheduler()
    m1, m2, m3 = msgs(3)
    starts: list[tuple[float, int]] = []

    def handle(m: Message) -> int:
        starts.append((scheduler.clock, m.msg_id))
        return m.msg_id

    xs = scheduler.create_hot_observable(
        on_next(210, m1), on_next(211, m2), on_next(212, m3), on_completed(215)
    )
    slow = Slow(scheduler, 10)
    results = scheduler.start(lambda: xs.pipe(process(handle, max_concurrency=2, scheduler=slow)))
    assert results.messages == [
        on_next(220, succeeded(m1, 1)),
        on_next(221, succeeded(m2, 2)),
        on_next(230, succeeded(m3, 3)),
        on_completed(230),
    ]
    assert starts == [(220.0, 1), (221.0, 2), (230.0, 3)]


def test_failures_on_a_scheduler_do_not_end_the_stream() -> None:
    """Exceptions raised on worker threads/schedulers become failures too."""
    scheduler = TestScheduler()
    m1, m2 = msgs(2)
    boom = KeyError("missing")

    def handle(m: Message) -> None:
        raise boom

    xs = scheduler.create_hot_observable(on_next(210, m1), on_next(211, m2), on_completed(212))
    results = scheduler.start(
        lambda: xs.pipe(process(handle, max_concurrency=4, scheduler=Slow(scheduler, 5)))
    )
    assert results.messages == [
        on_next(215, failed(m1, boom)),
        on_next(216, failed(m2, boom)),
        on_completed(216),
    ]


def test_one_slot_on_a_scheduler_processes_in_order() -> None:
    """max_concurrency=1 with a scheduler runs calls there one at a time, in arrival order."""
    scheduler = TestScheduler()
    ms = msgs(3)
    xs = scheduler.create_hot_observable(*(on_next(210, m) for m in ms), on_completed(211))
    results = scheduler.start(
        lambda: xs.pipe(process(lambda m: m.msg_id, scheduler=Slow(scheduler, 10)))
    )
    assert results.messages == [
        on_next(220, succeeded(ms[0], 1)),
        on_next(230, succeeded(ms[1], 2)),
        on_next(240, succeeded(ms[2], 3)),
        on_completed(240),
    ]


def test_an_upstream_error_waits_for_the_calls_in_flight() -> None:
    """#14 item 2: an upstream on_error (e.g. ops.timeout) while calls are in flight: their
    outcomes are emitted first (so their messages are acked, not processed again), then the
    error, once the last call finished."""
    scheduler = TestScheduler()
    m1, m2 = msgs(2)
    err = RuntimeError("consumer failed")
    xs = scheduler.create_hot_observable(on_next(210, m1), on_next(212, m2), on_error(215, err))
    results = scheduler.start(
        lambda: xs.pipe(process(lambda m: 1, max_concurrency=2, scheduler=Slow(scheduler, 10)))
    )
    assert results.messages == [
        on_next(220, succeeded(m1, 1)),
        on_next(222, succeeded(m2, 1)),
        on_error(222, err),
    ]


def test_disposing_stops_emissions_of_calls_in_flight() -> None:
    """After dispose, outcomes of calls still running are not emitted."""
    scheduler = TestScheduler()
    m1, m2 = msgs(2)
    xs = scheduler.create_hot_observable(on_next(210, m1), on_next(250, m2))
    results = scheduler.start(
        lambda: xs.pipe(process(lambda m: 1, max_concurrency=2, scheduler=Slow(scheduler, 10))),
        disposed=255,
    )
    assert results.messages == [on_next(220, succeeded(m1, 1))]
    assert xs.subscriptions == [subscribe(200, 255)]


# -- thread pool (real threads, no database) ----------------------------------------------


def test_thread_pool_runs_up_to_max_concurrency_at_once_and_serializes_outcomes() -> None:
    """max_concurrency=3 runs exactly 3 handlers at once on rx_pgmq-process threads; the
    observer is never called concurrently; on_completed follows the ninth outcome."""
    subject: Subject[Message] = Subject()
    cond = threading.Condition()
    running = peak = 0
    release = threading.Event()
    names: set[str] = set()
    in_observer = threading.Lock()
    overlaps = 0
    seen: list[Outcome] = []
    completed = threading.Event()

    def handle(m: Message) -> int:
        nonlocal running, peak
        with cond:
            running += 1
            peak = max(peak, running)
            names.add(threading.current_thread().name)
            cond.notify_all()
        release.wait(WAIT)
        with cond:
            running -= 1
        if m.msg_id % 2:
            raise ValueError(m.msg_id)
        return m.msg_id

    def observe(outcome: Outcome) -> None:
        nonlocal overlaps
        if not in_observer.acquire(blocking=False):
            overlaps += 1
            return
        try:
            seen.append(outcome)
            release.wait(0.001)  # widen the window for overlapping calls
        finally:
            in_observer.release()

    source: Observable[Message] = subject
    sub = source.pipe(process(handle, max_concurrency=3)).subscribe(
        observe, on_completed=completed.set
    )
    for m in msgs(9):
        subject.on_next(m)
    subject.on_completed()
    with cond:
        assert cond.wait_for(lambda: running == 3, WAIT)
    assert not completed.is_set() and seen == []
    release.set()
    assert completed.wait(WAIT)
    sub.dispose()
    assert peak == 3 and overlaps == 0
    assert sorted(o.message.msg_id for o in seen) == list(range(1, 10))
    assert [o.ok for o in sorted(seen, key=lambda o: o.message.msg_id)] == [False, True] * 4 + [
        False
    ]
    assert names and all(n.startswith("rx_pgmq-process") for n in names)


# -- per-key order (#17 item 2, virtual time) ------------------------------------------


def test_same_key_runs_one_at_a_time_in_order_other_keys_in_parallel() -> None:
    """#17 item 2: with 3 slots and 10-tick calls, a1 a2 b1 a3 arriving together: a1 and b1
    run at once, a2 only after a1, a3 only after a2, although slots are free."""
    scheduler = TestScheduler()
    a1, a2, b1, a3 = (
        make_message({"k": k}, msg_id=i + 1) for i, k in enumerate(("a", "a", "b", "a"))
    )
    starts: list[tuple[float, int]] = []

    def handle(m: Message) -> int:
        starts.append((scheduler.clock, m.msg_id))
        return m.msg_id

    xs = scheduler.create_hot_observable(
        on_next(210, a1), on_next(211, a2), on_next(212, b1), on_next(213, a3), on_completed(215)
    )
    op = process(
        handle, max_concurrency=3, key=lambda m: m.body["k"], scheduler=Slow(scheduler, 10)
    )
    results = scheduler.start(lambda: xs.pipe(op))
    assert starts == [(220.0, 1), (222.0, 3), (230.0, 2), (240.0, 4)]
    assert results.messages == [
        on_next(220, succeeded(a1, 1)),
        on_next(222, succeeded(b1, 3)),
        on_next(230, succeeded(a2, 2)),
        on_next(240, succeeded(a3, 4)),
        on_completed(240),
    ]


def test_a_freed_slot_goes_to_the_key_that_waited_longest() -> None:
    """#17 item 2: 2 slots, a1 b1 busy; c1 then a2 wait: a1 finishing starts c1 (it waited
    for a slot before a2 could run), and a2 starts when b1 frees the next slot."""
    scheduler = TestScheduler()
    a1, b1, c1, a2 = (
        make_message({"k": k}, msg_id=i + 1) for i, k in enumerate(("a", "b", "c", "a"))
    )
    starts: list[tuple[float, int]] = []

    def handle(m: Message) -> int:
        starts.append((scheduler.clock, m.msg_id))
        return m.msg_id

    xs = scheduler.create_hot_observable(
        on_next(210, a1), on_next(211, b1), on_next(212, c1), on_next(213, a2), on_completed(215)
    )
    op = process(
        handle, max_concurrency=2, key=lambda m: m.body["k"], scheduler=Slow(scheduler, 10)
    )
    results = scheduler.start(lambda: xs.pipe(op))
    assert starts == [(220.0, 1), (221.0, 2), (230.0, 3), (231.0, 4)]
    assert results.messages[-1] == on_completed(231)


@pytest.mark.parametrize("limit", [1, 3])
def test_a_key_that_raises_fails_that_message_alone(limit: int) -> None:
    """#17 item 2: a key function raising (or returning an unhashable value) fails that
    message without calling fn; the others are handled and the stream completes."""
    scheduler = TestScheduler()
    good, bad, unhashable = (
        make_message(body, msg_id=i + 1) for i, body in enumerate(({"k": "a"}, {}, {"k": ["list"]}))
    )
    called: list[int] = []

    def handle(m: Message) -> int:
        called.append(m.msg_id)
        return m.msg_id

    xs = scheduler.create_hot_observable(
        on_next(210, good), on_next(211, bad), on_next(212, unhashable), on_completed(215)
    )
    slow = Slow(scheduler, 10) if limit > 1 else None
    op = process(handle, max_concurrency=limit, key=lambda m: m.body["k"], scheduler=slow)
    results = scheduler.start(lambda: xs.pipe(op))
    outcomes = [notification(r).value for r in results.messages if notification(r).kind == "N"]
    assert called == [1]
    assert {o.message.msg_id: o.ok for o in outcomes} == {1: True, 2: False, 3: False}
    errors = {o.message.msg_id: type(o.error) for o in outcomes if not o.ok}
    assert errors == {2: KeyError, 3: TypeError}
    assert notification(results.messages[-1]).kind == "C"
