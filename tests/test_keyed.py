"""KeyedQueue (#17 item 2): one task per key at a time, keys in parallel, bounded (no I/O).

The queue is the per-key scheduler ``process_batch(key=...)`` uses and ``process(key=...)``
can use: these tests drive it alone, as the operator would (start what ``submit`` / ``done``
hand back), including a Hypothesis run against a step-by-step simulation.
"""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rx_pgmq._operators._keyed import UNKEYED, KeyedQueue
from rx_pgmq.errors import InvalidArgument


def test_same_key_waits_and_runs_in_submission_order() -> None:
    """#17 item 2: a second task of a busy key waits even with free slots; it starts when the
    first is done, and tasks of one key start in the order submitted."""
    q: KeyedQueue[str] = KeyedQueue(4)
    assert q.submit("a", "a1") == "a1"
    assert q.submit("a", "a2") is None
    assert q.submit("a", "a3") is None
    assert q.submit("b", "b1") == "b1"  # another key runs beside it
    assert len(q) == 2 and q.running == 2
    assert q.done("a") == ["a2"]
    assert q.done("a") == ["a3"]
    assert q.done("b") == [] and q.done("a") == []
    assert q.idle


def test_at_most_limit_run_and_the_longest_waiting_key_gets_a_freed_slot() -> None:
    """#17 item 2: with limit 2, a third key waits for a slot; a freed slot goes to the key
    that waited longest for one, not to the next task of the key that just finished."""
    q: KeyedQueue[str] = KeyedQueue(2)
    assert [q.submit("a", "a1"), q.submit("b", "b1")] == ["a1", "b1"]
    assert q.submit("c", "c1") is None  # no slot
    assert q.submit("a", "a2") is None  # its key is busy
    assert q.done("a") == ["c1"]  # c waited for a slot before a2's key was free
    assert q.running == 2
    assert q.done("b") == ["a2"]
    assert q.done("c") == [] and q.done("a") == [] and q.idle


def test_unkeyed_tasks_are_a_bounded_fifo() -> None:
    """Without a key function every task is UNKEYED: up to limit at once, the rest in order."""
    q: KeyedQueue[int] = KeyedQueue(2)
    assert [q.submit(UNKEYED, i) for i in range(5)] == [0, 1, None, None, None]
    assert q.done(UNKEYED) == [2]
    assert q.done(UNKEYED) == [3]
    assert q.clear() == [4]
    assert q.done(UNKEYED) == [] and q.done(UNKEYED) == [] and q.idle


def test_clear_returns_every_waiting_task_and_done_of_an_idle_key_is_an_error() -> None:
    """clear() hands back what never started (the operator releases those messages)."""
    q: KeyedQueue[str] = KeyedQueue(1)
    q.submit("a", "a1")
    q.submit("a", "a2")
    q.submit("b", "b1")
    assert sorted(q.clear()) == ["a2", "b1"]
    assert len(q) == 0 and not q.idle  # a1 still runs
    assert q.done("a") == [] and q.idle
    with pytest.raises(KeyError):
        q.done("a")
    with pytest.raises(InvalidArgument):
        KeyedQueue(0)


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 4),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=60),
)
def test_random_runs_keep_per_key_order_and_the_limit(
    limit: int, ops: list[tuple[bool, int]]
) -> None:
    """#17 item 2, any interleaving of submits and completions: never two tasks of one key at
    once (UNKEYED tasks are independent), never more than limit, each key's tasks start in
    submission order, and every task starts once everything finished."""
    q: KeyedQueue[tuple[Hashable, int]] = KeyedQueue(limit)
    running: list[tuple[Hashable, int]] = []
    started: dict[Hashable, list[int]] = {}
    submitted: dict[Hashable, list[int]] = {}
    seq = 0

    def begin(tasks: list[tuple[Hashable, int]]) -> None:
        for task in tasks:
            if task[0] is not UNKEYED:
                assert task[0] not in {k for k, _ in running}, "two tasks of one key at once"
            running.append(task)
            started.setdefault(task[0], []).append(task[1])
        assert len(running) <= limit

    for is_submit, k in ops:
        key: Hashable = UNKEYED if k == 0 else k
        if is_submit:
            seq += 1
            submitted.setdefault(key, []).append(seq)
            first = q.submit(key, (key, seq))
            begin([first] if first is not None else [])
        elif running:
            index = k % len(running)
            done_key, _ = running.pop(index)
            begin(q.done(done_key))
    while running:
        done_key, _ = running.pop(0)
        begin(q.done(done_key))
    assert q.idle
    assert started == submitted  # all started, each key in submission order
