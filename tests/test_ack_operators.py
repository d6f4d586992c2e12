"""Ack operators (ack, ack_with, successes, failures) without a database.

Messages are bound to ``RecordingAcknowledger``, an in-memory implementation of the
``Acknowledger`` protocol (Broadway's CallerAcknowledger idea: a test double for operator
logic, not a mock of psycopg or PGMQ). With ``scheduler=TestScheduler`` and ``delay=5`` each
settle future resolves 5 virtual ticks after the request, like a batched flush would.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from functools import partial
from typing import Any

import pytest
import reactivex
from _support import error_of, notification
from hypothesis import given
from hypothesis import strategies as st
from reactivex import Observable
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.hotobservable import HotObservable

from rx_pgmq import Message, Outcome, Settled, failed, succeeded
from rx_pgmq.actions import (
    AckStatus,
    Action,
    Archive,
    Delete,
    MoveTo,
    Nothing,
    SetVisibilityTimeout,
)
from rx_pgmq.errors import InvalidArgument, NotAcknowledgeable
from rx_pgmq.message import SettleCallback
from rx_pgmq.operators import (
    NotAnOutcome,
    PolicyError,
    ack,
    ack_with,
    failures,
    max_attempts,
    process,
    resolve,
    successes,
)
from rx_pgmq.testing import RecordingAcknowledger, make_message

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed
subscribe = ReactiveTest.subscribe

WAIT = 5.0


def setup(
    delay: float = 5.0, status: AckStatus = "acked"
) -> tuple[TestScheduler, RecordingAcknowledger]:
    scheduler = TestScheduler()
    return scheduler, RecordingAcknowledger(status, scheduler=scheduler, delay=delay)


def test_defaults_delete_successes_and_archive_failures_once_acks_resolve() -> None:
    """ack(): success -> Delete, failure -> Archive, a plain Message counts as a success;
    each Settled is emitted when its future resolves; on_completed waits for the last one."""
    scheduler, acker = setup()
    m1, m2, m3 = (make_message(i, acknowledger=acker) for i in range(3))
    boom = ValueError("boom")
    xs = scheduler.create_hot_observable(
        on_next(210, succeeded(m1, "v")),
        on_next(220, failed(m2, boom)),
        on_next(230, m3),
        on_completed(231),
    )
    results = scheduler.start(lambda: xs.pipe(ack()))
    assert results.messages == [
        on_next(215, Settled(succeeded(m1, "v"), Delete(), "acked")),
        on_next(225, Settled(failed(m2, boom), Archive(), "acked")),
        on_next(235, Settled(succeeded(m3), Delete(), "acked")),
        on_completed(235),
    ]
    assert xs.subscriptions == [subscribe(200, 231)]
    assert [(r.message, r.action, r.reason) for r in acker.requests] == [
        (m1, Delete(), None),
        (m2, Archive(), "boom"),
        (m3, Delete(), None),
    ]


def test_process_then_ack_settles_each_message_by_its_outcome() -> None:
    """process + ack(on_failure=max_attempts(2)) composed: the handler's exception decides
    the action per message, with read_ct deciding between retry and archive."""
    scheduler, acker = setup(delay=1)
    ok, first_try, second_try = (
        make_message({"fail": f}, read_ct=r, acknowledger=acker)
        for f, r in ((False, 1), (True, 1), (True, 2))
    )

    def handle(m: Message) -> str:
        if m.body["fail"]:
            raise RuntimeError("nope")
        return "fine"

    xs = scheduler.create_hot_observable(
        on_next(210, ok), on_next(220, first_try), on_next(230, second_try), on_completed(240)
    )
    results = scheduler.start(lambda: xs.pipe(process(handle), ack(on_failure=max_attempts(2))))
    records = [(n.time, notification(n).value) for n in results.messages[:-1]]
    assert [(t, r.message, r.action, r.reason) for t, r in records] == [
        (211, ok, Delete(), None),
        (221, first_try, Nothing(), "nope"),
        (231, second_try, Archive(), "nope"),
    ]
    assert results.messages[-1] == on_completed(240)


def test_an_override_wins_over_both_policies() -> None:
    """with_ack(...) decides the action for successes and failures alike."""
    scheduler, acker = setup(delay=0)
    m1, m2 = (make_message(i, acknowledger=acker) for i in range(2))
    xs = scheduler.create_hot_observable(
        on_next(210, succeeded(m1).with_ack(Archive())),
        on_next(220, failed(m2, "x").with_ack(MoveTo("dlq"))),
    )
    scheduler.start(lambda: xs.pipe(ack(on_success=Delete(), on_failure=Nothing())))
    assert acker.actions == [Archive(), MoveTo("dlq")]
    assert acker.requests[1].reason == "x"


def test_policies_may_be_functions_of_the_outcome() -> None:
    """on_failure=max_attempts(3) uses read_ct: Nothing before the third read, then Archive."""
    scheduler, acker = setup(delay=0)
    ms = [make_message(i, read_ct=i, acknowledger=acker) for i in (1, 2, 3)]
    xs = scheduler.create_hot_observable(
        *(on_next(210 + i, failed(m, "x")) for i, m in enumerate(ms))
    )
    results = scheduler.start(lambda: xs.pipe(ack(on_failure=max_attempts(3))))
    assert [notification(n).value.action for n in results.messages] == [
        Nothing(),
        Nothing(),
        Archive(),
    ]


@pytest.mark.parametrize("status", ["acked", "unacked", "lost_lease", "ignored"])
def test_the_acknowledger_status_is_reported(status: AckStatus) -> None:
    """Settled.status is what the consumer resolved the settle future with."""
    scheduler, acker = setup(status=status)
    m = make_message(acknowledger=acker)
    xs = scheduler.create_hot_observable(on_next(210, m))
    results = scheduler.start(lambda: xs.pipe(ack()))
    assert results.messages == [on_next(215, Settled(succeeded(m), Delete(), status))]


def test_ack_with_applies_one_policy_to_everything() -> None:
    """ack_with(policy) gives successes, failures and plain messages the same policy."""
    scheduler, acker = setup(delay=0)
    ms = [make_message(i, acknowledger=acker) for i in range(3)]
    xs: HotObservable[Outcome | Message] = scheduler.create_hot_observable(
        on_next(210, succeeded(ms[0])), on_next(211, failed(ms[1], "x")), on_next(212, ms[2])
    )
    seen: list[Outcome] = []

    def policy(outcome: Outcome) -> Action:
        seen.append(outcome)
        return SetVisibilityTimeout(7)

    results = scheduler.start(lambda: xs.pipe(ack_with(policy)))
    assert acker.actions == [SetVisibilityTimeout(7)] * 3
    assert seen == [succeeded(ms[0]), failed(ms[1], "x"), succeeded(ms[2])]
    assert len(results.messages) == 3


def test_successes_and_failures_split_a_stream_of_outcomes() -> None:
    """successes() keeps ok outcomes (plain messages included); failures() keeps the rest."""
    scheduler = TestScheduler()
    m1, m2, m3 = (make_message(i) for i in range(3))
    bad = failed(m2, "x")
    xs = scheduler.create_hot_observable(
        on_next(210, succeeded(m1)), on_next(220, bad), on_next(230, m3), on_completed(240)
    )
    ok = scheduler.start(lambda: xs.pipe(successes()))
    assert ok.messages == [
        on_next(210, succeeded(m1)),
        on_next(230, succeeded(m3)),
        on_completed(240),
    ]
    scheduler2 = TestScheduler()
    ys = scheduler2.create_hot_observable(
        on_next(210, succeeded(m1)), on_next(220, bad), on_next(230, m3), on_completed(240)
    )
    ko = scheduler2.start(lambda: ys.pipe(failures()))
    assert ko.messages == [on_next(220, bad), on_completed(240)]


def test_split_streams_ack_with_their_own_policies() -> None:
    """A shared outcome stream split into successes and failures acks each message once."""
    scheduler, acker = setup(delay=0)
    ms = [make_message(i, acknowledger=acker) for i in range(4)]
    subject: Subject[Outcome] = Subject()
    outcomes: Observable[Outcome] = subject
    settled: list[Settled] = []
    outcomes.pipe(successes(), ack_with(Delete())).subscribe(settled.append)
    outcomes.pipe(failures(), ack_with(MoveTo("dlq"))).subscribe(settled.append)
    for i, m in enumerate(ms):
        subject.on_next(succeeded(m) if i % 2 else failed(m, "odd"))
    scheduler.start()
    assert [(s.message.msg_id, s.action) for s in settled] == [
        (ms[0].msg_id, MoveTo("dlq")),
        (ms[1].msg_id, Delete()),
        (ms[2].msg_id, MoveTo("dlq")),
        (ms[3].msg_id, Delete()),
    ]
    assert len(acker.requests) == 4


def test_a_message_that_cannot_be_acknowledged_is_an_error() -> None:
    """A message from PGMQ.read (no acknowledger) ends the stream with NotAcknowledgeable;
    Settled records of earlier messages still pending are not emitted after the error."""
    scheduler, acker = setup()
    good = make_message(acknowledger=acker)
    orphan = make_message(msg_id=99, queue="orders")
    xs = scheduler.create_hot_observable(on_next(210, good), on_next(212, orphan))
    results = scheduler.start(lambda: xs.pipe(ack()))
    assert len(results.messages) == 1
    assert results.messages[0].time == 212
    error = error_of(results.messages[0])
    assert isinstance(error, NotAcknowledgeable) and "PGMQ.delete" in str(error)
    assert xs.subscriptions == [subscribe(200, 212)]


def test_a_value_that_is_neither_message_nor_outcome_is_an_error() -> None:
    """Anything else reaching ack() ends the stream with NotAnOutcome."""
    scheduler, _acker = setup()
    junk: Any = 42  # deliberately not an Outcome or Message
    xs = scheduler.create_hot_observable(on_next(210, junk))
    results = scheduler.start(lambda: xs.pipe(ack()))
    assert isinstance(error_of(results.messages[0]), NotAnOutcome)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(lambda o: 1 / 0, ZeroDivisionError), (lambda o: "archive", PolicyError)],
)
def test_a_policy_that_raises_or_returns_junk_is_an_error(policy: Any, expected: type) -> None:
    """A policy exception passes to on_error; a non-action result is a PolicyError; no
    settle is requested."""
    scheduler, acker = setup()
    xs = scheduler.create_hot_observable(on_next(210, make_message(acknowledger=acker)))
    results = scheduler.start(lambda: xs.pipe(ack_with(policy)))
    assert isinstance(error_of(results.messages[0]), expected)
    assert acker.requests == []


def test_an_upstream_error_waits_for_the_pending_acks() -> None:
    """#14 item 2: an upstream on_error while an ack is pending: the ack's record is
    delivered first, then the error (as on_completed waits for them)."""
    acker = RecordingAcknowledger(auto=False)
    m = make_message(acknowledger=acker)
    subject: Subject[Message] = Subject()
    events: list[Any] = []
    source: Observable[Message] = subject
    err = RuntimeError("consumer failed")
    source.pipe(ack()).subscribe(
        lambda s: events.append(s.status), on_error=lambda e: events.append(e)
    )
    subject.on_next(m)
    subject.on_error(err)
    assert events == []  # the error waits for the pending ack
    acker.resolve("acked")
    assert events == ["acked", err]


def test_disposing_stops_emissions() -> None:
    """After dispose, acks that resolve later emit nothing."""
    scheduler, acker = setup()
    xs = scheduler.create_hot_observable(on_next(210, make_message(acknowledger=acker)))
    results = scheduler.start(lambda: xs.pipe(ack()), disposed=212)
    assert results.messages == []
    assert len(acker.requests) == 1


def test_records_follow_resolution_order_and_completion_waits_for_all() -> None:
    """Futures resolved out of order emit in resolution order; on_completed comes last."""
    acker = RecordingAcknowledger(auto=False)
    ms = [make_message(i, acknowledger=acker) for i in range(3)]
    subject: Subject[Message] = Subject()
    events: list[Any] = []
    source: Observable[Message] = subject
    source.pipe(ack()).subscribe(
        lambda s: events.append(s.message.msg_id), on_completed=lambda: events.append("done")
    )
    for m in ms:
        subject.on_next(m)
    subject.on_completed()
    assert events == []
    for request in reversed(acker.requests):
        request.future.set_result("acked")
    assert events == [ms[2].msg_id, ms[1].msg_id, ms[0].msg_id, "done"]


def test_a_failed_settle_future_is_an_error() -> None:
    """If an acknowledger fails a future with an exception, the stream ends with it."""
    acker = RecordingAcknowledger(auto=False)
    subject: Subject[Message] = Subject()
    errors: list[Exception] = []
    source: Observable[Message] = subject
    source.pipe(ack()).subscribe(on_error=errors.append)
    subject.on_next(make_message(acknowledger=acker))
    boom = OSError("acker died")
    acker.requests[0].future.set_exception(boom)
    assert errors == [boom]


def test_records_resolved_from_many_threads_are_serialized() -> None:
    """Futures resolved concurrently on 8 threads: the observer is never called concurrently,
    gets one record per message, and on_completed comes after the last one."""
    acker = RecordingAcknowledger(auto=False)
    ms = [make_message(i, acknowledger=acker) for i in range(400)]
    subject: Subject[Message] = Subject()
    gate = threading.Lock()
    overlaps = 0
    got: list[int] = []
    done = threading.Event()
    late: list[int] = []

    def observe(s: Settled) -> None:
        nonlocal overlaps
        if done.is_set():
            late.append(s.message.msg_id)
        if not gate.acquire(blocking=False):
            overlaps += 1
            return
        try:
            got.append(s.message.msg_id)
        finally:
            gate.release()

    source: Observable[Message] = subject
    source.pipe(ack()).subscribe(observe, on_completed=done.set)
    for m in ms:
        subject.on_next(m)
    subject.on_completed()
    futures: list[Future[AckStatus]] = [r.future for r in acker.requests]
    start = threading.Barrier(8)

    def resolve_share(k: int) -> None:
        start.wait(WAIT)
        for f in futures[k::8]:
            f.set_result("acked")

    threads = [threading.Thread(target=resolve_share, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert done.wait(WAIT)
    assert overlaps == 0 and late == []
    assert sorted(got) == sorted(m.msg_id for m in ms)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"on_success": "delete"}, "on_success"), ({"on_failure": None}, "on_failure")],
)
def test_policies_are_checked_before_subscribing(kwargs: dict[str, Any], argument: str) -> None:
    """A policy that is neither an action nor callable raises InvalidArgument at once."""
    with pytest.raises(InvalidArgument) as info:
        ack(**kwargs)
    assert info.value.argument == argument
    with pytest.raises(InvalidArgument):
        ack_with(3)  # type: ignore[arg-type]


# -- property: exactly one action per message, override wins ---------------------------

actions = st.one_of(
    st.just(Delete()),
    st.just(Archive()),
    st.just(Nothing()),
    st.integers(0, 100).map(SetVisibilityTimeout),
    st.just(MoveTo("dlq")),
)
policies = st.one_of(actions, st.builds(max_attempts, st.integers(1, 5), actions, actions))


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[str, int, Action | None, int]]:
    """(kind, read_ct, override, resolve delay) for up to 30 distinct messages."""
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["ok", "fail", "plain"]),
                st.integers(1, 6),
                st.none() | actions,
                st.integers(0, 20),
            ),
            max_size=30,
        )
    )


@given(streams(), policies, policies)
def test_every_message_is_settled_exactly_once_with_the_resolved_action(
    items: list[tuple[str, int, Action | None, int]], on_success: Any, on_failure: Any
) -> None:
    """For any stream, ack() requests one action per message (the override if any, else the
    matching policy's), emits one Settled per message and completes after the last one."""
    scheduler = TestScheduler()
    ackers = [RecordingAcknowledger(scheduler=scheduler, delay=d) for *_, d in items]
    values: list[Outcome | Message] = []
    expected: dict[int, Action] = {}
    for i, ((kind, read_ct, override, _d), acker) in enumerate(zip(items, ackers, strict=True)):
        m = make_message(i, msg_id=i + 1, read_ct=read_ct, acknowledger=acker)
        value: Outcome | Message
        if kind == "plain":
            value = m if override is None else succeeded(m).with_ack(override)
        else:
            value = succeeded(m) if kind == "ok" else failed(m, "x")
            value = value if override is None else value.with_ack(override)
        values.append(value)
        outcome = value if isinstance(value, Outcome) else succeeded(value)
        action = resolve(on_success if outcome.ok else on_failure, outcome)
        if override is not None:
            assert action == override
        expected[m.msg_id] = action
    xs = scheduler.create_hot_observable(
        *(on_next(210 + i, v) for i, v in enumerate(values)), on_completed(210 + len(values))
    )
    results = scheduler.start(lambda: xs.pipe(ack(on_success, on_failure)))
    records = [notification(n).value for n in results.messages if notification(n).kind == "N"]
    assert sorted(r.message.msg_id for r in records) == sorted(expected)
    assert {r.message.msg_id: r.action for r in records} == expected
    assert [len(a.requests) for a in ackers] == [1] * len(items)
    assert notification(results.messages[-1]).kind == "C"
    last = max((210 + i + d for i, (*_, d) in enumerate(items)), default=210)
    assert results.messages[-1].time == max(last, 210 + len(values))


def test_ack_settles_through_the_acknowledgers_callback_api() -> None:
    """#15 item 6: ack() uses Acknowledger.settle_callback (the consumer's Future-free path,
    now part of the protocol and of the public fake), one call per message."""

    class Counting(RecordingAcknowledger):
        calls = 0

        def settle_callback(
            self, message: Message, action: Action, reason: str | None, callback: SettleCallback
        ) -> None:
            self.calls += 1
            super().settle_callback(message, action, reason, callback)

    acker = Counting()
    got: list[Settled] = []
    source: Observable[Message] = reactivex.of(
        *(make_message(i, acknowledger=acker) for i in range(3))
    )
    source.pipe(ack()).subscribe(got.append)
    assert acker.calls == 3
    assert [s.status for s in got] == ["acked"] * 3


class _Collecting:
    """An acknowledger that keeps each request's callback; ``settle_many`` (the group
    path) is recorded as one call."""

    def __init__(self, *, many: bool) -> None:
        self.callbacks: list[SettleCallback] = []
        self.calls: list[int] = []  # requests per call
        if many:
            self.settle_many = self._settle_many

    def settle(self, message: Message, action: Action, reason: str | None = None) -> Any:
        raise AssertionError("the ack operators use settle_callback")

    def settle_callback(
        self, message: Message, action: Action, reason: str | None, callback: SettleCallback
    ) -> None:
        self.calls.append(1)
        self.callbacks.append(callback)

    def _settle_many(self, requests: list[tuple[Message, Action, str | None, Any]]) -> None:
        self.calls.append(len(requests))
        self.callbacks.extend(r[3] for r in requests)


def test_a_flush_reports_its_statuses_together_in_order_beside_other_tokens() -> None:
    """#17 item 3: the acknowledger reports a flush's statuses with one resolve() call,
    which hands the ack operator's callbacks to it as runs (one lock, one hand-over to the
    subscriber each): a record per message with its own status, in order, and other
    tokens between them (a Future, a plain callback) are reported in their place."""
    from rx_pgmq._core._settle import resolve

    acker = _Collecting(many=False)
    subject: Subject[Outcome] = Subject()
    got: list[Any] = []
    subject.pipe(ack()).subscribe(got.append)
    messages = [make_message(i, msg_id=900 + i, acknowledger=acker) for i in range(4)]
    for m in messages:
        subject.on_next(succeeded(m))
    tokens = acker.callbacks
    future: Future[AckStatus] = Future()
    plain: list[AckStatus] = []
    resolve(
        [
            (tokens[0], "acked"),
            (tokens[1], "lost_lease"),
            (future, "acked"),
            (tokens[2], "unacked"),
            (plain.append, "ignored"),
            (tokens[3], "acked"),
        ]
    )
    assert [(s.message.msg_id, s.status) for s in got] == [
        (900, "acked"),
        (901, "lost_lease"),
        (902, "unacked"),
        (903, "acked"),
    ]
    assert future.result(0) == "acked" and plain == ["ignored"]


def test_settle_group_sends_a_groups_requests_in_one_call_with_the_same_records() -> None:
    """#17 item 3: inside ``settle_group`` the ack operators' settle requests reach an
    acknowledger with ``settle_many`` in one call when the block ends (one without it gets
    one ``settle_callback`` each); the records and completion are those of single requests."""
    from rx_pgmq._core._settle import resolve
    from rx_pgmq._operators._ack import settle_group

    for many in (True, False):
        acker = _Collecting(many=many)
        subject: Subject[Outcome] = Subject()
        got: list[Any] = []
        done: list[object] = []
        subject.pipe(ack()).subscribe(got.append, done.append, partial(done.append, "completed"))
        messages = [make_message(i, msg_id=950 + i, acknowledger=acker) for i in range(5)]
        with settle_group():
            for m in messages:
                subject.on_next(succeeded(m))
            assert acker.calls == []  # nothing sent before the group ends
        assert acker.calls == ([5] if many else [1] * 5)
        subject.on_completed()
        assert done == []  # completion waits for the pending settles
        resolve([(cb, "acked") for cb in acker.callbacks])
        assert [s.message.msg_id for s in got] == [950, 951, 952, 953, 954]
        assert done == ["completed"]
