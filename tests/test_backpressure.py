"""Backpressure operators (windowed, stop_and_wait, pausable, controlled) on a real queue.

What a consumer has read is checked on the database: a read message has ``read_ct >= 1``
and, until settled, a visibility timeout in the future.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import reactivex
from _support import (
    WAIT,
    Conn,
    Subscribe,
    leased,
    source_of,
    table,
    unread,
    wait_until,
    watch,
)
from psycopg import sql
from reactivex import operators as ops
from reactivex.subject import BehaviorSubject, Subject

import rx_pgmq
from rx_pgmq import operators as pgops
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import InvalidArgument

# -- windowed / stop_and_wait -----------------------------------------------------------


def test_windowed_bounds_messages_in_flight_below_max_in_flight(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """windowed(3) on a max_in_flight=10 source: 3 read of 10, still 3 after polling;
    settling one lets exactly one more be read."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(10)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=10).pipe(pgops.windowed(3))
    assert isinstance(source, rx_pgmq.QueueSource)
    sink = subscribe(source)
    assert sink.wait_for(3)
    watch()
    assert len(sink.messages) == 3 and leased(db, pgmq_queue) == 3
    sink.messages[0].settle()
    assert sink.wait_for(4)
    watch()
    assert len(sink.messages) == 4 and leased(db, pgmq_queue) == 3


def test_windowed_is_capped_by_max_in_flight(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """windowed(50) on a max_in_flight=4 source keeps at most 4 in flight."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(10)])
    sink = subscribe(source_of(pgmq_dsn, pgmq_queue, max_in_flight=4).pipe(pgops.windowed(50)))
    assert sink.wait_for(4)
    watch()
    assert len(sink.messages) == 4 and leased(db, pgmq_queue) == 4


def test_stop_and_wait_reads_the_next_message_only_after_the_previous_one_is_settled(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """stop_and_wait(): one message in flight at a time, in msg_id order."""
    ids = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(3)])
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=10).pipe(pgops.stop_and_wait())
    sink = subscribe(source)
    for n in range(1, 4):
        assert sink.wait_for(n)
        watch(0.4)
        assert len(sink.messages) == n, "read a second message before settling the first"
        assert leased(db, pgmq_queue) == 1
        assert sink.messages[-1].settle().result(WAIT) == "acked"
    assert sink.ids == ids


# -- pausable ---------------------------------------------------------------------------


def test_pausable_reads_nothing_while_paused_and_everything_after_resuming(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """pausable(BehaviorSubject(False)): no read while paused (messages stay unread in the
    database); True reads them; pausing again stops reads with nothing lost."""
    gate: BehaviorSubject[bool] = BehaviorSubject(False)
    first = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(6)])
    source = source_of(pgmq_dsn, pgmq_queue).pipe(pgops.pausable(gate))
    assert isinstance(source, rx_pgmq.QueueSource)
    sink = subscribe(source)
    watch()
    assert sink.messages == []
    assert source.stats.reads == 0
    assert unread(db, pgmq_queue) == 6

    gate.on_next(True)
    assert sink.wait_for(6)
    gate.on_next(False)
    watch(0.3)  # a read already running when the pause landed may finish
    reads = source.stats.reads
    second = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(6, 10)])
    watch()
    assert source.stats.reads == reads, "read while paused"
    assert len(sink.messages) == 6
    assert unread(db, pgmq_queue) == 4

    gate.on_next(True)
    assert sink.wait_for(10)
    watch(0.3)
    assert sorted(sink.ids) == sorted(first + second)
    assert unread(db, pgmq_queue) == 0
    assert sink.errors == []


def test_pausable_start_paused_waits_for_the_first_true(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """pausable(subject, start_paused=True) reads nothing until the pauser emits True."""
    gate: Subject[bool] = Subject()
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(3)])
    source = source_of(pgmq_dsn, pgmq_queue).pipe(pgops.pausable(gate, start_paused=True))
    sink = subscribe(source)
    watch()
    assert source.stats.reads == 0 and unread(db, pgmq_queue) == 3
    gate.on_next(True)
    assert sink.wait_for(3)


def test_pausable_pauser_error_ends_the_subscription_and_releases_messages(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """An error from the pauser reaches on_error and the consumer's unsettled messages are
    released (vt back to now), not left hidden."""
    gate: Subject[bool] = Subject()
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(3)])
    sink = subscribe(source_of(pgmq_dsn, pgmq_queue).pipe(pgops.pausable(gate)))
    assert sink.wait_for(3)
    gate.on_error(RuntimeError("pauser broke"))
    assert sink.wait_error()
    assert isinstance(sink.errors[0], RuntimeError)
    assert wait_until(lambda: leased(db, pgmq_queue) == 0)


# -- controlled -------------------------------------------------------------------------


def test_controlled_reads_exactly_what_request_asks_for(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """controlled(): nothing is read until request(n); request(3) reads exactly 3 of 10,
    request(2) then 2 more (5), and settling grants no credit by itself."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(10)])
    source = source_of(pgmq_dsn, pgmq_queue).pipe(pgops.controlled())
    assert isinstance(source, rx_pgmq.ControlledSource)
    sink = subscribe(source)
    watch(0.5)
    assert source.stats.reads == 0 and unread(db, pgmq_queue) == 10

    source.request(3)
    assert sink.wait_for(3)
    watch()
    assert len(sink.messages) == 3 and leased(db, pgmq_queue) == 3

    source.request(2)
    assert sink.wait_for(5)
    watch()
    assert len(sink.messages) == 5 and leased(db, pgmq_queue) == 5
    assert unread(db, pgmq_queue) == 5

    for m in sink.messages:
        m.settle()
    watch()
    assert len(sink.messages) == 5, "settling granted credit on a controlled source"
    assert unread(db, pgmq_queue) == 5


def test_controlled_keeps_credit_requested_before_subscribing(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """request(n) with no live subscription is banked and read by the next subscriber."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(5)])
    source = source_of(pgmq_dsn, pgmq_queue).pipe(pgops.controlled())
    source.request(2)
    sink = subscribe(source)
    assert sink.wait_for(2)
    watch()
    assert len(sink.messages) == 2 and leased(db, pgmq_queue) == 2


def test_controlled_request_skips_a_subscription_that_is_being_disposed(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """Two subscriptions of one controlled source. The older one is being disposed (its
    last ack is blocked by another transaction's row lock, so its close takes
    close_timeout) when request(3) arrives: the credit goes to the live subscription, which
    reads 3 messages, instead of vanishing with the closing one."""
    first_id = pgmq.send(pgmq_queue, {"i": 0})
    source = source_of(pgmq_dsn, pgmq_queue, close_timeout=2.0).pipe(pgops.controlled())
    assert isinstance(source, rx_pgmq.ControlledSource)
    old = subscribe(source)
    source.request(1)  # the oldest subscription reads it
    assert old.wait_for(1)
    new = subscribe(source)
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(1, 6)])
    closing, _ = source.consumers
    with psycopg.connect(pgmq_dsn) as blocker:  # holds the row lock the old ack needs
        blocker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE msg_id = %s FOR UPDATE").format(table(pgmq_queue)),
            (first_id,),
        )
        old.messages[0].settle()
        assert old.subscription is not None
        disposer = threading.Thread(target=old.subscription.dispose, daemon=True)
        disposer.start()
        assert wait_until(lambda: closing.closing, 5.0)
        assert not closing.closed
        source.request(3)
        assert new.wait_for(3, timeout=5.0), "the credit went to the closing subscription"
        blocker.rollback()
    disposer.join(WAIT)
    watch()
    assert len(new.messages) == 3 and leased(db, pgmq_queue) == 3


def test_controlled_request_rejects_non_positive_counts(pgmq_dsn: str, pgmq_queue: str) -> None:
    """request(0) and request(-1) raise InvalidArgument."""
    source = source_of(pgmq_dsn, pgmq_queue).pipe(pgops.controlled())
    for bad in (0, -1):
        with pytest.raises(InvalidArgument):
            source.request(bad)


# -- misuse -----------------------------------------------------------------------------

OPERATORS: dict[str, Callable[[], Callable[[Any], Any]]] = {
    "windowed": lambda: pgops.windowed(2),
    "stop_and_wait": pgops.stop_and_wait,
    "pausable": lambda: pgops.pausable(BehaviorSubject(True)),
    "controlled": pgops.controlled,
}


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_backpressure_operator_on_a_non_queue_source_raises_a_clear_type_error(
    name: str, pgmq_dsn: str, pgmq_queue: str
) -> None:
    """Each backpressure operator applied to a plain Observable, or after another
    operator, raises TypeError naming the operator and telling where it goes."""
    with pytest.raises(TypeError, match=rf"{name} applies only to a read_queue source"):
        reactivex.of(1, 2).pipe(OPERATORS[name]())
    mapped = source_of(pgmq_dsn, pgmq_queue).pipe(ops.map(lambda m: m))
    with pytest.raises(TypeError, match=r"right after\s+rx_pgmq\.read_queue"):
        mapped.pipe(OPERATORS[name]())


def test_backpressure_operator_arguments_are_checked_when_the_operator_is_made() -> None:
    """windowed(0) raises InvalidArgument and pausable(non-observable) raises TypeError,
    before any source is involved."""
    with pytest.raises(InvalidArgument):
        pgops.windowed(0)
    with pytest.raises(TypeError, match="Observable"):
        pgops.pausable(True)  # type: ignore[arg-type]
