"""operators.process_batch in virtual time (#17 items 1 and 2): grouping, results, dispose.

Hot observables on a ``TestScheduler`` feed messages; the operator's ``max_wait`` timers
and handler calls run on the same scheduler, so each test asserts the exact notifications
and their virtual times. The window-stall flush is driven by the real demand core
(:class:`rx_pgmq._core._demand.Demand`) attached to a recording acknowledger.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, TypeVar

import pytest
from _support import WAIT, error_of, notification
from hypothesis import example, given, settings
from hypothesis import strategies as st
from reactivex import abc, typing
from reactivex.scheduler.scheduler import Scheduler
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from rx_pgmq import Message, Outcome, failed, succeeded
from rx_pgmq._core._demand import Demand
from rx_pgmq._front._fakes import RecordingAcknowledger, make_message
from rx_pgmq._operators._batchresult import outcomes_of
from rx_pgmq.actions import Archive, SetVisibilityTimeout
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.operators import InvalidBatchResult, NotAnOutcome, process_batch

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed
subscribe = ReactiveTest.subscribe
_S = TypeVar("_S")


class WindowedAcknowledger(RecordingAcknowledger):
    """A recording acknowledger with a consumer's demand window (``max_in_flight``)."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.demand = Demand(window, window)
        self.closing = False


def msgs(n: int, acknowledger: RecordingAcknowledger | None = None) -> list[Message]:
    return [make_message({"n": i}, msg_id=i + 1, acknowledger=acknowledger) for i in range(n)]


def calls_of(log: list[tuple[float, list[int]]], scheduler: TestScheduler) -> Any:
    def fn(messages: list[Message]) -> None:
        log.append((scheduler.clock, [m.msg_id for m in messages]))

    return fn


def test_a_group_flushes_when_it_reaches_max_size() -> None:
    """#17 item 1: max_size=2 flushes at the second message; the odd one out flushes when
    the source completes (before on_completed), each call once per group."""
    scheduler = TestScheduler()
    m1, m2, m3 = msgs(3)
    log: list[tuple[float, list[int]]] = []
    xs = scheduler.create_hot_observable(
        on_next(210, m1), on_next(220, m2), on_next(230, m3), on_completed(250)
    )
    op = process_batch(calls_of(log, scheduler), max_size=2, max_wait=100, scheduler=scheduler)
    results = scheduler.start(lambda: xs.pipe(op))
    assert results.messages == [
        on_next(220, succeeded(m1)),
        on_next(220, succeeded(m2)),
        on_next(250, succeeded(m3)),
        on_completed(250),
    ]
    assert log == [(220.0, [1, 2]), (250.0, [3])]


def test_a_group_flushes_max_wait_after_its_first_message() -> None:
    """#17 item 1: a group holds what arrived within max_wait of its first message; the next
    message starts a new group with its own timer."""
    scheduler = TestScheduler()
    m1, m2, m3 = msgs(3)
    log: list[tuple[float, list[int]]] = []
    xs = scheduler.create_hot_observable(
        on_next(210, m1), on_next(250, m2), on_next(320, m3), on_completed(600)
    )
    op = process_batch(calls_of(log, scheduler), max_size=10, max_wait=100, scheduler=scheduler)
    results = scheduler.start(lambda: xs.pipe(op))
    assert results.messages == [
        on_next(310, succeeded(m1)),
        on_next(310, succeeded(m2)),
        on_next(420, succeeded(m3)),
        on_completed(600),
    ]
    assert log == [(310.0, [1, 2]), (420.0, [3])]


class CountingScheduler(TestScheduler):
    """A test scheduler that counts relative schedules (the operator's timers)."""

    def __init__(self) -> None:
        super().__init__()
        self.timers = 0

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[_S],
        state: _S | None = None,
    ) -> abc.DisposableBase:
        self.timers += 1
        return super().schedule_relative(duetime, action, state)


def test_groups_that_fill_fast_share_one_timer_and_keep_exact_deadlines() -> None:
    """#17 item 1: two groups flushed by size and a third flushed by max_wait use two timer
    schedules (the first timer is reused, then waits out the rest of the third group's
    max_wait), and the third group still flushes exactly max_wait after its first message."""
    scheduler = CountingScheduler()
    ms = msgs(5)
    log: list[tuple[float, list[int]]] = []
    xs = scheduler.create_hot_observable(
        *(on_next(t, m) for t, m in zip((210, 211, 212, 213, 250), ms, strict=True))
    )
    op = process_batch(calls_of(log, scheduler), max_size=2, max_wait=100, scheduler=scheduler)
    scheduler.start(lambda: xs.pipe(op), disposed=1000)
    assert log == [(211.0, [1, 2]), (213.0, [3, 4]), (350.0, [5])]
    assert scheduler.timers == 2


def test_a_group_holding_the_whole_full_window_flushes_at_once() -> None:
    """#17 item 1: with max_in_flight 3 < max_size 10, the group flushes when the third
    message (the window full, all of it in the group) arrives, not after max_wait; a group
    holding only part of the window waits."""
    scheduler = TestScheduler()
    acker = WindowedAcknowledger(window=3)
    m1, m2, m3 = msgs(3, acker)
    acker.demand.on_emitted(acker.demand.read_size())  # one read of 3: the window is full
    log: list[tuple[float, list[int]]] = []
    xs = scheduler.create_hot_observable(on_next(210, m1), on_next(220, m2), on_next(230, m3))
    op = process_batch(calls_of(log, scheduler), max_size=10, max_wait=500, scheduler=scheduler)
    results = scheduler.start(lambda: xs.pipe(op))
    assert results.messages == [on_next(230, succeeded(m)) for m in (m1, m2, m3)]
    assert log == [(230.0, [1, 2, 3])]


def test_a_group_holding_part_of_a_full_window_waits_for_max_wait() -> None:
    """#17 item 1: the window is full but one of its 3 messages is elsewhere (it will settle
    and free room): the group of 2 is not stalled and flushes after max_wait."""
    scheduler = TestScheduler()
    acker = WindowedAcknowledger(window=3)
    m1, m2, _elsewhere = msgs(3, acker)
    acker.demand.on_emitted(acker.demand.read_size())
    log: list[tuple[float, list[int]]] = []
    xs = scheduler.create_hot_observable(on_next(210, m1), on_next(220, m2))
    op = process_batch(calls_of(log, scheduler), max_size=10, max_wait=500, scheduler=scheduler)
    results = scheduler.start(lambda: xs.pipe(op), disposed=2000)
    assert results.messages == [on_next(710, succeeded(m)) for m in (m1, m2)]
    assert log == [(710.0, [1, 2])]


def test_a_raising_handler_fails_the_whole_group_and_the_stream_goes_on() -> None:
    """#17 item 1: an exception from fn is the failure of every message of its group."""
    scheduler = TestScheduler()
    m1, m2, m3 = msgs(3)
    boom = ValueError("bulk insert failed")

    def fn(messages: list[Message]) -> None:
        if m1 in messages:
            raise boom

    xs = scheduler.create_hot_observable(
        on_next(210, m1), on_next(211, m2), on_next(220, m3), on_completed(230)
    )
    op = process_batch(fn, max_size=2, max_wait=100, scheduler=scheduler)
    results = scheduler.start(lambda: xs.pipe(op))
    assert results.messages == [
        on_next(211, failed(m1, boom)),
        on_next(211, failed(m2, boom)),
        on_next(230, succeeded(m3)),
        on_completed(230),
    ]


def test_results_per_message_list_mapping_and_outcomes() -> None:
    """#17 item 1: a same-length list gives one result per message (an exception fails its
    message, an Outcome is kept); a mapping by msg_id does the same for partial failure;
    any other value is every message's success value."""
    m1, m2, m3 = msgs(3)
    bad = KeyError("no such customer")
    archived = succeeded(m3).with_ack(Archive())
    assert outcomes_of([m1, m2, m3], [10, bad, archived]) == [
        succeeded(m1, 10),
        failed(m2, bad),
        archived,
    ]
    assert outcomes_of([m1, m2, m3], {2: bad, 1: "ok", 3: archived}) == [
        succeeded(m1, "ok"),
        failed(m2, bad),
        archived,
    ]
    assert outcomes_of([m1, m2], 7) == [succeeded(m1, 7), succeeded(m2, 7)]
    assert outcomes_of([m1, m2], None) == [succeeded(m1), succeeded(m2)]


def test_results_that_do_not_match_the_group_fail_with_a_clear_reason() -> None:
    """#17 item 1: a msg_id missing from the mapping fails that message; unknown ids, a list
    of another length or an Outcome of another message fail with InvalidBatchResult."""
    m1, m2 = msgs(2)
    missing = outcomes_of([m1, m2], {1: None})
    assert missing[0] == succeeded(m1)
    assert not missing[1].ok and isinstance(missing[1].error, InvalidBatchResult)
    assert "no entry for msg_id 2" in str(missing[1].reason)
    unknown = outcomes_of([m1, m2], {1: None, 2: None, 99: None})
    assert all(not o.ok and "not msg_ids" in str(o.reason) for o in unknown)
    short = outcomes_of([m1, m2], [None])
    assert all(not o.ok and "a list of 1 results" in str(o.reason) for o in short)
    swapped = outcomes_of([m1, m2], [succeeded(m2), None])
    assert not swapped[0].ok and "Outcome of msg_id 2" in str(swapped[0].reason)
    assert swapped[1] == succeeded(m2)


@pytest.mark.parametrize("fatal", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_interrupts_from_the_handler_end_the_stream_with_them(fatal: type) -> None:
    """#17 item 1: KeyboardInterrupt/SystemExit/GeneratorExit are not turned into failures:
    on_error carries the very exception."""
    scheduler = TestScheduler()
    (m1,) = msgs(1)
    exc = fatal()

    def fn(messages: list[Message]) -> None:
        raise exc

    xs = scheduler.create_hot_observable(on_next(210, m1))
    errors: list[tuple[float, BaseException]] = []
    xs.pipe(process_batch(fn, max_size=1, scheduler=scheduler)).subscribe(
        on_next=lambda o: errors.append((scheduler.clock, AssertionError(o))),
        on_error=lambda e: errors.append((scheduler.clock, e)),
    )
    scheduler.advance_to(300)
    assert errors == [(210.0, exc)]  # the very exception (a recorder would wrap it)


def test_dispose_drops_the_pending_group_and_releases_its_messages() -> None:
    """#17 item 1: disposed with a group pending, fn is never called for it and each of its
    messages is released (set_vt 0) once; the timer does nothing later."""
    scheduler = TestScheduler()
    acker = RecordingAcknowledger()
    m1, m2 = msgs(2, acker)
    log: list[tuple[float, list[int]]] = []
    xs = scheduler.create_hot_observable(on_next(210, m1), on_next(220, m2))
    op = process_batch(calls_of(log, scheduler), max_size=10, max_wait=100, scheduler=scheduler)
    results = scheduler.start(lambda: xs.pipe(op), disposed=250)
    assert results.messages == []
    assert log == []
    assert [(r.message.msg_id, r.action) for r in acker.requests] == [
        (1, SetVisibilityTimeout(0)),
        (2, SetVisibilityTimeout(0)),
    ]


def test_dispose_leaves_the_messages_of_a_closing_consumer_to_it() -> None:
    """#17 item 1: a consumer that is closing releases (or keeps) its unsettled messages
    itself: process_batch does not release them a second time."""
    scheduler = TestScheduler()
    acker = WindowedAcknowledger(window=10)
    acker.closing = True
    (m1,) = msgs(1, acker)
    xs = scheduler.create_hot_observable(on_next(210, m1))
    op = process_batch(lambda ms: None, max_wait=100, scheduler=scheduler)
    scheduler.start(lambda: xs.pipe(op), disposed=250)
    assert acker.requests == []


def test_key_splits_a_group_into_one_call_per_key_in_read_order() -> None:
    """#17 item 2: with key, a flushed group becomes one call per key, each holding that
    key's messages in read order; a key function that raises fails its message alone."""
    scheduler = TestScheduler()
    ms = [make_message({"k": k}, msg_id=i + 1) for i, k in enumerate("abab")]
    broken = make_message({}, msg_id=9)
    calls: list[list[int]] = []

    def fn(messages: list[Message]) -> None:
        calls.append([m.msg_id for m in messages])

    xs = scheduler.create_hot_observable(
        *(on_next(210 + i, m) for i, m in enumerate(ms)), on_next(215, broken), on_completed(300)
    )
    op = process_batch(fn, max_size=4, max_wait=100, key=lambda m: m.body["k"], scheduler=scheduler)
    results = scheduler.start(lambda: xs.pipe(op))
    assert calls == [[1, 3], [2, 4]]
    assert [r.time for r in results.messages] == [213, 213, 213, 213, 215, 300]
    broken_outcome = notification(results.messages[4]).value
    assert isinstance(broken_outcome, Outcome) and broken_outcome.message is broken
    assert isinstance(broken_outcome.error, KeyError)


def test_a_value_that_is_not_a_message_is_an_error() -> None:
    """process_batch fed something other than a Message ends with NotAnOutcome."""
    scheduler = TestScheduler()
    junk: Any = {"id": 1}
    xs = scheduler.create_hot_observable(on_next(210, junk))
    results = scheduler.start(lambda: xs.pipe(process_batch(lambda ms: None)))
    assert isinstance(error_of(results.messages[0]), NotAnOutcome)
    assert xs.subscriptions == [subscribe(200, 210)]


async def _async_handler(messages: list[Message]) -> None:
    """A coroutine function (not supported yet)."""


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"fn": 3}, "fn"),
        ({"fn": _async_handler}, "fn"),
        ({"max_size": 0}, "max_size"),
        ({"max_size": 2.0}, "max_size"),
        ({"max_wait": 0}, "max_wait"),
        ({"max_wait": -1}, "max_wait"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"key": "group"}, "key"),
        ({"scheduler": "pool"}, "scheduler"),
    ],
)
def test_arguments_are_checked_at_call_time(kwargs: dict[str, Any], argument: str) -> None:
    """#17 item 1: bad arguments raise InvalidArgument naming the argument, before any
    subscription (a coroutine function is refused until async handlers land)."""
    fn = kwargs.pop("fn", lambda ms: None)
    with pytest.raises(InvalidArgument) as info:
        process_batch(fn, **kwargs)
    assert info.value.argument == argument


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


def test_a_later_group_of_a_busy_key_waits_for_the_earlier_call() -> None:
    """#17 item 2: calls take 10 ticks; a2+a3 (flushed at 213) wait for a1's call (until
    221) although slots are free, while b1 runs beside a1."""
    scheduler = TestScheduler()
    a1, b1, a2, a3 = (
        make_message({"k": k}, msg_id=i + 1) for i, k in enumerate(("a", "b", "a", "a"))
    )
    calls: list[tuple[float, list[int]]] = []

    def fn(messages: list[Message]) -> None:
        calls.append((scheduler.clock, [m.msg_id for m in messages]))

    xs = scheduler.create_hot_observable(
        on_next(210, a1), on_next(211, b1), on_next(212, a2), on_next(213, a3), on_completed(300)
    )
    op = process_batch(
        fn,
        max_size=2,
        max_wait=1000,
        max_concurrency=4,
        key=lambda m: m.body["k"],
        scheduler=Slow(scheduler, 10),
    )
    results = scheduler.start(lambda: xs.pipe(op))
    assert calls == [(221.0, [1]), (221.0, [2]), (231.0, [3, 4])]
    assert results.messages == [
        on_next(221, succeeded(a1)),
        on_next(221, succeeded(b1)),
        on_next(231, succeeded(a2)),
        on_next(231, succeeded(a3)),
        on_completed(300),
    ]


def test_one_slot_serializes_a_timer_flush_and_a_size_flush_on_other_threads() -> None:
    """#17 item 1: with max_concurrency=1 a group flushed on the timer thread and one flushed
    by a full group on the emitting thread never run at once: the emitting thread returns at
    once and the second group runs after the first, in order."""
    subject: Subject[Message] = Subject()
    m1, m2, m3 = msgs(3)
    release = threading.Event()
    first_running = threading.Event()
    calls: list[list[int]] = []
    active = 0
    most = 0
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    completed = threading.Event()

    def fn(messages: list[Message]) -> None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        if messages[0] is m1:
            first_running.set()
            assert release.wait(WAIT)
        with lock:
            calls.append([m.msg_id for m in messages])
            active -= 1

    subject.pipe(process_batch(fn, max_size=2, max_wait=1.0)).subscribe(
        outcomes.append, on_completed=completed.set
    )
    subject.on_next(m1)  # flushed by its timer (1 s), on the timer thread
    assert first_running.wait(WAIT)
    subject.on_next(m2)
    subject.on_next(m3)  # a full group: flushed here, must wait for the slot
    assert calls == []  # this thread did not run it (the first call still blocks)
    release.set()
    subject.on_completed()
    assert completed.wait(WAIT)
    assert calls == [[1], [2, 3]] and most == 1
    assert [o.message.msg_id for o in outcomes] == [1, 2, 3]


@settings(max_examples=300, deadline=None)
@example(gaps=[0, 0, 1], max_size=2, half_waits=1)  # a reused timer firing for a new group
@given(
    gaps=st.lists(st.integers(0, 8), min_size=1, max_size=40),
    max_size=st.integers(1, 6),
    half_waits=st.integers(0, 12),
)
def test_random_arrivals_form_greedy_groups_within_max_size_and_max_wait(
    gaps: list[int], max_size: int, half_waits: int
) -> None:
    """#17 item 1, any arrival pattern: every message is handled once, in order; a call holds
    at most max_size messages and happens no later than max_wait after its first message;
    a call flushed before max_wait is full; and a group that was not full took every
    message that arrived before its flush."""
    scheduler = TestScheduler()
    max_wait = half_waits + 0.5  # deadlines never tie with an arrival (whole ticks)
    arrivals = [201 + sum(gaps[: i + 1]) for i in range(len(gaps))]
    ms = msgs(len(gaps))
    at = {m.msg_id: t for m, t in zip(ms, arrivals, strict=True)}
    log: list[tuple[float, list[int]]] = []
    xs = scheduler.create_hot_observable(
        *(on_next(t, m) for t, m in zip(arrivals, ms, strict=True)), on_completed(5000)
    )
    op = process_batch(
        calls_of(log, scheduler), max_size=max_size, max_wait=max_wait, scheduler=scheduler
    )
    results = scheduler.start(lambda: xs.pipe(op), disposed=6000)
    assert [i for _t, ids in log for i in ids] == [m.msg_id for m in ms]
    assert len(results.messages) == len(ms) + 1
    for n, (clock, ids) in enumerate(log):
        assert len(ids) <= max_size
        first, last = at[ids[0]], at[ids[-1]]
        assert last <= clock <= first + max_wait
        if clock < first + max_wait:
            assert len(ids) == max_size
        if len(ids) < max_size and n + 1 < len(log):
            assert at[log[n + 1][1][0]] > clock  # nothing that could join was left out
