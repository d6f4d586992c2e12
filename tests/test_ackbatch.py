"""AckBatcher, Batch and Backoff: batching settle requests into few PGMQ calls."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import abc
from reactivex.testing import TestScheduler

from rx_pgmq._core._ackbatch import AckBatcher, Batch, Pending
from rx_pgmq._core._backoff import Backoff
from rx_pgmq.actions import Action, Archive, Delete, MoveTo, Nothing, SetVisibilityTimeout
from rx_pgmq.errors import InvalidArgument


def p(msg_id: int, action: Action | None = None, token: object = None, read_ct: int = 1) -> Pending:
    """A settle request (Delete unless told)."""
    return Pending(msg_id, read_ct, action if action is not None else Delete(), None, token)


# --------------------------------------------------------------------------------------
# Batch grouping
# --------------------------------------------------------------------------------------


def test_batch_groups_requests_by_the_sql_they_need() -> None:
    """One delete, one archive, one set_vt per timeout, moves per queue, nothing apart."""
    requests = [
        p(1, Delete()),
        p(2, Archive()),
        p(3, SetVisibilityTimeout(30)),
        p(4, Nothing()),
        p(5, MoveTo("dlq")),
        p(6, Delete()),
        p(7, SetVisibilityTimeout(5)),
        p(8, SetVisibilityTimeout(30)),
        p(9, MoveTo("other")),
        p(10, MoveTo("dlq")),
    ]
    batch = Batch.of(requests)
    assert batch.delete == (1, 6)
    assert batch.archive == (2,)
    assert dict(batch.set_vt) == {30: (3, 8), 5: (7,)}
    assert {q: tuple(i.msg_id for i in items) for q, items in batch.move.items()} == {
        "dlq": (5, 10),
        "other": (9,),
    }
    assert batch.nothing == (4,)
    assert batch.items == tuple(requests)
    assert batch.duplicates == ()
    assert len(batch) == 10
    assert batch.sql_needed


def test_add_many_queues_like_one_add_per_request() -> None:
    """#17 item 3: ``add_many`` (a process_batch group's settles in one call) leaves the
    batcher as the same requests added one by one: order, count, age and SQL need."""
    one, many = AckBatcher(max_batch=3, max_age=1.0), AckBatcher(max_batch=3, max_age=1.0)
    requests = [p(1), p(2, Nothing()), p(3, Archive())]
    for r in requests:
        one.add(r, 5.0)
    assert many.add_many(requests, 5.0) == 3
    assert many.due(5.0, starved=False) and one.due(5.0, starved=False)  # max_batch reached
    assert many.deadline() == one.deadline() == 6.0
    assert many.take() == one.take()
    nothing_only = AckBatcher(max_batch=10)
    nothing_only.add_many([p(4, Nothing())], 1.0)
    assert nothing_only.due(1.0, starved=False)  # no SQL needed: due at once, as with add


def test_duplicate_ids_get_one_action_and_the_first_request_wins() -> None:
    """A second request for the same id goes to duplicates; only the first one has SQL."""
    first, second, third = p(7, Archive(), "a"), p(7, Delete(), "b"), p(7, Nothing(), "c")
    batch = Batch.of([first, p(8), second, third])
    assert batch.archive == (7,)
    assert batch.delete == (8,)
    assert batch.nothing == ()
    assert [i.token for i in batch.items] == ["a", None]
    assert [i.token for i in batch.duplicates] == ["b", "c"]
    assert len(batch) == 2


def test_nothing_only_batch_needs_no_sql() -> None:
    """A batch of Nothing requests (or an empty one) has sql_needed False."""
    assert not Batch.of([p(1, Nothing()), p(2, Nothing())]).sql_needed
    empty = Batch.of([])
    assert not empty.sql_needed
    assert len(empty) == 0
    assert dict(empty.set_vt) == {}
    assert dict(empty.move) == {}


def test_batch_mappings_are_read_only() -> None:
    """set_vt and move cannot be changed by the consumer."""
    batch = Batch.of([p(1, SetVisibilityTimeout(3))])
    with pytest.raises(TypeError):
        batch.set_vt[4] = (2,)  # type: ignore[index]


def test_a_non_action_is_refused() -> None:
    """A request carrying something that is not an action raises TypeError."""
    with pytest.raises(TypeError, match="not an acknowledgement action"):
        Batch.of([Pending(1, 1, "delete", None, None)])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# AckBatcher flush rules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": 1.5}, "max_batch"),
        ({"max_batch": 10, "max_age": -0.001}, "max_age"),
    ],
)
def test_batcher_arguments_are_checked(kwargs: dict[str, Any], argument: str) -> None:
    """Out-of-range max_batch / max_age raise InvalidArgument naming them."""
    with pytest.raises(InvalidArgument) as info:
        AckBatcher(**kwargs)
    assert info.value.argument == argument


def test_default_max_age_is_a_few_milliseconds() -> None:
    """Without max_age requests wait at most 5 ms."""
    assert AckBatcher(max_batch=10).max_age == 0.005


def test_empty_batcher_is_never_due() -> None:
    """Nothing pending: not due even when starved or closing; no deadline."""
    acks = AckBatcher(max_batch=3, max_age=0.01)
    assert len(acks) == 0
    assert not acks.due(100.0, starved=True, closing=True)
    assert acks.deadline() is None


def test_due_by_size() -> None:
    """max_batch requests are due at once, regardless of age."""
    acks = AckBatcher(max_batch=3, max_age=10.0)
    acks.add(p(1), 0.0)
    acks.add(p(2), 0.0)
    assert not acks.due(0.0, starved=False)
    acks.add(p(3), 0.0)
    assert acks.due(0.0, starved=False)


def test_due_by_age_of_the_oldest() -> None:
    """Due once the oldest request is max_age old; deadline says when."""
    acks = AckBatcher(max_batch=100, max_age=0.25)
    acks.add(p(1), 1.0)
    acks.add(p(2), 1.2)
    assert acks.deadline() == 1.25
    assert not acks.due(1.2499, starved=False)
    assert acks.due(1.25, starved=False)


def test_due_at_once_when_starved_or_closing() -> None:
    """A starved consumer or a closing one flushes whatever is pending."""
    acks = AckBatcher(max_batch=100, max_age=10.0)
    acks.add(p(1), 0.0)
    assert not acks.due(0.0, starved=False)
    assert acks.due(0.0, starved=True)
    assert acks.due(0.0, starved=False, closing=True)


def test_nothing_only_requests_are_due_at_once() -> None:
    """Only Nothing pending: no SQL to batch, so due (and deadline) at once."""
    acks = AckBatcher(max_batch=100, max_age=10.0)
    acks.add(p(1, Nothing()), 2.0)
    assert acks.due(2.0, starved=False)
    assert acks.deadline() == 2.0
    acks.add(p(2, Delete()), 2.0)
    assert not acks.due(2.0, starved=False)  # now it needs SQL: wait for size / age
    assert acks.deadline() == 12.0


def test_take_empties_and_returns_in_order() -> None:
    """take() returns everything pending as one batch and leaves nothing behind."""
    acks = AckBatcher(max_batch=10, max_age=1.0)
    for i in (3, 1, 2):
        acks.add(p(i), float(i))
    batch = acks.take()
    assert batch.delete == (3, 1, 2)
    assert len(acks) == 0
    assert acks.deadline() is None
    assert acks.take() == Batch.of([])


def test_requeue_puts_a_failed_batch_first_and_holds_it_until_retry_at() -> None:
    """A requeued batch goes ahead of newer requests, keeps first-wins, waits for retry_at."""
    acks = AckBatcher(max_batch=10, max_age=0.01)
    acks.add(p(1, Archive(), "a1"), 0.0)
    acks.add(p(1, Delete(), "a2"), 0.0)
    acks.add(p(2, Delete(), "b"), 0.0)
    failed = acks.take()
    acks.add(p(1, Nothing(), "late"), 0.5)
    acks.add(p(3, Delete(), "c"), 0.5)
    acks.requeue(failed, 1.0, retry_at=1.2)
    assert len(acks) == 5
    assert not acks.due(1.1, starved=True, closing=True)
    assert acks.deadline() == 1.2
    assert acks.due(1.2, starved=False)
    batch = acks.take()
    assert batch.archive == (1,)
    assert batch.delete == (2, 3)
    assert [i.token for i in batch.items] == ["a1", "b", "c"]
    assert [i.token for i in batch.duplicates] == ["a2", "late"]


def test_a_requeued_batch_is_due_at_its_retry_time_not_max_age_after_the_failure() -> None:
    """#14 item 10: a batch that failed was due already; its retry waits for retry_at only.
    Before, it waited max_age again from the requeue (ack_max_age=3: the first ack after an
    outage came up to 3 s after the server was back)."""
    acks = AckBatcher(max_batch=10_000, max_age=3.0)
    acks.add(p(1), 0.0)
    assert not acks.due(1.0, starved=False)
    failed = acks.take()
    acks.requeue(failed, 3.0, retry_at=3.25)
    acks.add(p(2), 3.1)  # a newer request rides along with the retry
    assert not acks.due(3.2, starved=False)
    assert acks.deadline() == 3.25
    assert acks.due(3.25, starved=False)
    assert [i.msg_id for i in acks.take().items] == [1, 2]
    acks.add(p(3), 4.0)  # after the retry's take, the age rule applies again
    assert acks.deadline() == 7.0


def test_requeue_without_retry_at_follows_the_age_rule_from_the_requeue_time() -> None:
    """Without retry_at a requeued batch counts as added at the requeue time."""
    acks = AckBatcher(max_batch=10, max_age=0.5)
    acks.add(p(1), 0.0)
    failed = acks.take()
    acks.requeue(failed, 3.0)
    assert acks.deadline() == 3.5
    acks.requeue(Batch.of([]), 4.0)  # nothing to put back: no change
    assert len(acks) == 1
    assert acks.deadline() == 3.5


_ACTIONS = st.sampled_from(
    [
        Delete(),
        Archive(),
        Nothing(),
        SetVisibilityTimeout(0),
        SetVisibilityTimeout(5),
        MoveTo("dlq"),
        MoveTo("other"),
    ]
)
_OPS = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 8), _ACTIONS),
    st.tuples(st.just("take"), st.booleans(), st.none()),  # True: the flush fails
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_OPS, max_size=80))
def test_every_request_is_returned_exactly_once_with_one_action_per_id(
    ops: list[tuple[str, Any, Any]],
) -> None:
    """Random adds, takes and failed flushes (requeued): every added request comes back in
    exactly one committed batch (items or duplicates); within a batch each msg_id has exactly
    one SQL action (or Nothing), and the first request for an id wins."""
    acks = AckBatcher(max_batch=4, max_age=0.01)
    added: list[object] = []
    returned: list[object] = []
    now = 0.0
    for kind, arg, action in ops:
        now += 0.001
        if kind == "add":
            token = object()
            added.append(token)
            acks.add(Pending(arg, 1, action, None, token), now)
            continue
        batch = acks.take()
        _check_batch(batch)
        if arg:  # the flush failed: back it goes
            acks.requeue(batch, now, retry_at=now + 0.05)
        else:
            returned.extend(i.token for i in batch.items + batch.duplicates)
    final = acks.take()
    _check_batch(final)
    returned.extend(i.token for i in final.items + final.duplicates)
    assert len(returned) == len(added)
    assert {id(t) for t in returned} == {id(t) for t in added}


def _check_batch(batch: Batch) -> None:
    actions: list[int] = [*batch.delete, *batch.archive, *batch.nothing]
    for ids in batch.set_vt.values():
        actions.extend(ids)
    for items in batch.move.values():
        actions.extend(i.msg_id for i in items)
    item_ids = [i.msg_id for i in batch.items]
    assert sorted(actions) == sorted(item_ids)  # one action per id
    assert len(set(item_ids)) == len(item_ids)  # deduplicated
    assert {d.msg_id for d in batch.duplicates} <= set(item_ids)
    assert batch.sql_needed == any(not isinstance(i.action, Nothing) for i in batch.items)
    for item in batch.items:  # each winner's action is the one its id got
        action = item.action
        if isinstance(action, Delete):
            assert item.msg_id in batch.delete
        elif isinstance(action, Archive):
            assert item.msg_id in batch.archive
        elif isinstance(action, Nothing):
            assert item.msg_id in batch.nothing
        elif isinstance(action, SetVisibilityTimeout):
            assert item.msg_id in batch.set_vt[action.vt]
        else:
            assert item in batch.move[action.queue]


# --------------------------------------------------------------------------------------
# Virtual time: a flush loop on a TestScheduler
# --------------------------------------------------------------------------------------


class FlushLoop:
    """The acknowledger half of the consumer: flush when due, else sleep until deadline().

    ``fail`` decides whether a flush attempt fails (then the batch is requeued with a
    Backoff delay); ``starved`` says whether the consumer's window is full.
    """

    def __init__(
        self,
        scheduler: TestScheduler,
        acks: AckBatcher,
        *,
        starved: Callable[[], bool] = lambda: False,
        fail: Callable[[int], bool] = lambda attempt: False,
    ) -> None:
        self.scheduler = scheduler
        self.acks = acks
        self.starved = starved
        self.fail = fail
        self.backoff = Backoff(initial=0.1, factor=2.0, maximum=1.0, max_attempts=4)
        self.closing = False
        self.attempt = 0
        self.timer: abc.DisposableBase | None = None
        self.committed: list[tuple[float, tuple[int, ...]]] = []
        self.failed: list[float] = []
        self.given_up: list[tuple[float, tuple[int, ...]]] = []
        self._floor = 0.0

    @property
    def now(self) -> float:
        return max(float(self.scheduler.clock), self._floor)

    def at(self, time: float, fn: Callable[[], None]) -> abc.DisposableBase:
        def action(_: abc.SchedulerBase, __: Any = None) -> None:
            self._floor = max(self._floor, time)
            fn()

        return self.scheduler.schedule_absolute(time, action)

    def settle(self, msg_id: int, action: Action | None = None) -> None:
        self.acks.add(p(msg_id, action), self.now)
        self.wake()

    def wake(self) -> None:
        if self.timer is not None:
            self.timer.dispose()
            self.timer = None
        if not self.acks.due(self.now, self.starved(), self.closing):
            deadline = self.acks.deadline()
            if deadline is not None:
                self.timer = self.at(deadline, self.wake)
            return
        batch = self.acks.take()
        self.attempt += 1
        if self.fail(self.attempt):
            self.failed.append(self.now)
            delay = self.backoff.next_delay()
            if delay is None:  # give up: these stay unsettled (reappear after their vt)
                self.given_up.append((self.now, tuple(i.msg_id for i in batch.items)))
                self.backoff.reset()
            else:
                self.acks.requeue(batch, self.now, retry_at=self.now + delay)
                self.wake()
            return
        self.backoff.reset()
        self.committed.append((round(self.now, 6), tuple(i.msg_id for i in batch.items)))
        self.wake()


def test_virtual_time_flush_by_size_age_and_starvation() -> None:
    """Flushes: 3 settles at t=1 (max_batch 3) at once; 2 settles from t=2 at t=2.05 (age);
    a settle at t=3 while starved at once; one at t=4 with room waits until 4.05."""
    scheduler = TestScheduler()
    starved = {"value": False}
    loop = FlushLoop(
        scheduler, AckBatcher(max_batch=3, max_age=0.05), starved=lambda: starved["value"]
    )
    for msg_id in (1, 2, 3):
        loop.at(1.0, partial(loop.settle, msg_id))
    loop.at(2.0, lambda: loop.settle(4))
    loop.at(2.01, lambda: loop.settle(5))

    def starve_and_settle() -> None:
        starved["value"] = True
        loop.settle(6)
        starved["value"] = False

    loop.at(3.0, starve_and_settle)
    loop.at(4.0, lambda: loop.settle(7))
    scheduler.advance_to(10.0)
    assert loop.committed == [(1.0, (1, 2, 3)), (2.05, (4, 5)), (3.0, (6,)), (4.05, (7,))]


def test_virtual_time_nothing_settles_do_not_wait_for_age() -> None:
    """A Nothing settle alone flushes at once (no SQL), a Delete next to it waits max_age."""
    scheduler = TestScheduler()
    loop = FlushLoop(scheduler, AckBatcher(max_batch=10, max_age=0.5))
    loop.at(1.0, lambda: loop.settle(1, Nothing()))
    loop.at(2.0, lambda: loop.settle(2, Delete()))
    loop.at(2.1, lambda: loop.settle(3, Nothing()))
    scheduler.advance_to(5.0)
    assert loop.committed == [(1.0, (1,)), (2.5, (2, 3))]


def test_virtual_time_closing_flushes_at_once() -> None:
    """On close, pending settles flush immediately instead of waiting max_age."""
    scheduler = TestScheduler()
    loop = FlushLoop(scheduler, AckBatcher(max_batch=10, max_age=5.0))
    loop.at(1.0, lambda: loop.settle(1))

    def close() -> None:
        loop.closing = True
        loop.wake()

    loop.at(1.5, close)
    scheduler.advance_to(10.0)
    assert loop.committed == [(1.5, (1,))]


def test_virtual_time_failed_flush_is_retried_with_backoff_and_merges_new_settles() -> None:
    """Two failures: retries after 0.1 and 0.2 s; settles made meanwhile join the retry."""
    scheduler = TestScheduler()
    loop = FlushLoop(
        scheduler, AckBatcher(max_batch=2, max_age=0.05), fail=lambda attempt: attempt <= 2
    )
    loop.at(1.0, lambda: loop.settle(1))
    loop.at(1.0, lambda: loop.settle(2))
    loop.at(1.15, lambda: loop.settle(3))
    scheduler.advance_to(5.0)
    assert [round(t, 6) for t in loop.failed] == [1.0, 1.1]
    assert loop.committed == [(1.3, (1, 2, 3))]


def test_virtual_time_a_flush_that_keeps_failing_is_given_up_never_committed() -> None:
    """After max_attempts retries the batch is dropped as unsettled, not reported acked."""
    scheduler = TestScheduler()
    loop = FlushLoop(scheduler, AckBatcher(max_batch=1, max_age=0.05), fail=lambda attempt: True)
    loop.at(0.0, lambda: loop.settle(9))
    scheduler.advance_to(10.0)
    # attempts at 0, +0.1, +0.2, +0.4, +0.8 (cap 1.0 not reached), then give up
    assert [round(t, 6) for t in loop.failed] == [0.0, 0.1, 0.3, 0.7, 1.5]
    assert loop.given_up == [(1.5, (9,))]
    assert loop.committed == []


# --------------------------------------------------------------------------------------
# Backoff
# --------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_maximum() -> None:
    """Defaults: 0.05, 0.1, 0.2, ... capped at 5 s; attempts counts the delays given."""
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert backoff.attempts == 10


def test_backoff_gives_up_after_max_attempts_and_reset_starts_over() -> None:
    """max_attempts=2: two delays, then None; reset() starts again from initial."""
    backoff = Backoff(initial=1.0, max_attempts=2)
    assert backoff.next_delay() == 1.0
    assert backoff.next_delay() == 2.0
    assert backoff.exhausted
    assert backoff.next_delay() is None
    assert backoff.attempts == 2
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == 1.0


def test_backoff_with_zero_attempts_never_retries() -> None:
    """max_attempts=0 returns None at once."""
    assert Backoff(max_attempts=0).next_delay() is None


def test_backoff_survives_many_attempts() -> None:
    """Thousands of attempts stay at the maximum (no float overflow)."""
    backoff = Backoff(initial=0.01, factor=10.0, maximum=7.0)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 7.0


def test_backoff_factor_one_is_constant() -> None:
    """factor=1 gives the same delay every time."""
    backoff = Backoff(initial=0.3, factor=1.0, maximum=1.0)
    assert [backoff.next_delay() for _ in range(3)] == [0.3, 0.3, 0.3]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"initial": 0}, "initial"),
        ({"initial": -1.0}, "initial"),
        ({"factor": 0.5}, "factor"),
        ({"initial": 1.0, "maximum": 0.5}, "maximum"),
        ({"max_attempts": -1}, "max_attempts"),
    ],
)
def test_backoff_arguments_are_checked(kwargs: dict[str, Any], argument: str) -> None:
    """Out-of-range Backoff arguments raise InvalidArgument naming them."""
    with pytest.raises(InvalidArgument) as info:
        Backoff(**kwargs)
    assert info.value.argument == argument


def test_add_returns_how_many_requests_are_pending() -> None:
    """add() reports the pending count after the request (duplicates and Nothing count),
    the figure the consumer uses to decide when to wake its acknowledger."""
    batcher = AckBatcher(max_batch=3, max_age=1.0)
    assert [
        batcher.add(p(i, action), 0.0) for i, action in ((1, None), (1, None), (2, Nothing()))
    ] == [
        1,
        2,
        3,
    ]
    assert len(batcher) == 3
    batcher.take()
    assert batcher.add(p(4), 0.5) == 1
