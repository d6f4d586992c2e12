"""read_queue read options (delete-on-read, conditional, long poll, FIFO groups), batch
order and delivery threads, against a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from _support import (
    WAIT,
    Conn,
    Sink,
    Subscribe,
    count,
    read_cts,
    source_of,
    wait_until,
    watch,
)
from psycopg_pool import ConnectionPool
from reactivex.scheduler import EventLoopScheduler

import rx_pgmq
from rx_pgmq import LongPoll, ReadOptions
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import Message

# -- helpers ----------------------------------------------------------------------------


def long_polling(db: Conn, source: rx_pgmq.QueueSource) -> bool:
    """Whether the source's (only) reader connection is waiting inside read_with_poll."""
    consumers = source.consumers
    pid = consumers[0].reader_backend_pid() if consumers else None
    if pid is None:
        return False
    row = db.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "active" and "read_with_poll" in row[1]


def deleted_at_least(source: rx_pgmq.QueueSource, n: int) -> Callable[[], bool]:
    return lambda: source.stats.settled.get("delete", 0) >= n


# -- delete on read ---------------------------------------------------------------------


def test_delete_on_read_removes_each_message_before_it_is_emitted(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """ReadOptions(delete_on_read=True) reads with pgmq.pop: when on_next runs the row is
    already gone (not archived), and emitted messages free their room at once, so all 6
    arrive through a window of 2 without any settle."""
    ids = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(6)])
    present_at_emit: list[bool] = []

    def check(m: Message) -> None:
        with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
            present_at_emit.append(count(conn, pgmq_queue, "msg_id = %s", (m.msg_id,)) == 1)

    source = source_of(
        pgmq_dsn,
        pgmq_queue,
        batch_size=2,
        max_in_flight=2,
        read_options=ReadOptions(delete_on_read=True),
    )
    sink = subscribe(source, on_message=check)
    assert sink.wait_for(6)
    assert sink.ids == ids
    assert present_at_emit == [False] * 6
    assert read_cts(db, pgmq_queue) == {}
    assert count(db, pgmq_queue, prefix="a") == 0
    assert source.stats.settled.get("pop") == 6
    assert source.stats.in_flight == 0
    assert sink.messages[0].settle().result(WAIT) == "ignored"


# -- conditional ------------------------------------------------------------------------


def test_conditional_reads_only_messages_whose_body_matches(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """ReadOptions(conditional={"kind": "a"}) delivers only bodies containing it; the
    others are never read (read_ct 0)."""
    kinds = ["a", "b", "a", "b", "b", "a"]
    ids = pgmq.send_batch(pgmq_queue, [{"kind": k, "i": i} for i, k in enumerate(kinds)])
    source = source_of(pgmq_dsn, pgmq_queue, read_options=ReadOptions(conditional={"kind": "a"}))
    sink = subscribe(source)
    assert sink.wait_for(3)
    watch()
    assert sink.ids == [i for i, k in zip(ids, kinds, strict=True) if k == "a"]
    cts = read_cts(db, pgmq_queue)
    assert [cts[i] for i, k in zip(ids, kinds, strict=True) if k == "b"] == [0, 0, 0]


# -- long poll --------------------------------------------------------------------------


def test_long_poll_delivers_a_message_sent_while_the_read_waits_in_the_server(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """LongPoll(max_seconds=2): a message sent while read_with_poll is waiting in the
    server is returned by that read, well before the wait ends."""
    source = source_of(
        pgmq_dsn, pgmq_queue, read_options=ReadOptions(long_poll=LongPoll(2, interval_ms=50))
    )
    sink = subscribe(source)
    assert wait_until(lambda: long_polling(db, source)), "never saw a waiting long poll"
    reads = source.stats.reads
    pgmq.send(pgmq_queue, {"x": 1})
    sent_at = time.monotonic()
    assert sink.wait_for(1, timeout=5.0)
    latency = sink.arrived[0] - sent_at
    print(f"long poll delivered after {latency * 1000:.0f} ms")
    assert latency < 1.0
    assert source.stats.reads <= reads + 1


def test_dispose_cancels_a_waiting_long_poll_promptly(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """Disposing while read_with_poll waits (max 10 s) cancels it: dispose returns at once
    and the close (the cancel included) ends in well under the wait; the subscription
    gets no error."""
    source = source_of(pgmq_dsn, pgmq_queue, read_options=ReadOptions(long_poll=LongPoll(10)))
    sink = subscribe(source)
    assert wait_until(lambda: long_polling(db, source)), "never saw a waiting long poll"
    (consumer,) = source.consumers
    started = time.monotonic()
    sink.subscription.dispose()
    assert source.wait_closed(WAIT)
    took = time.monotonic() - started
    print(f"dispose and close during a long poll took {took * 1000:.0f} ms")
    assert took < 2.0
    assert consumer.closed
    assert sink.errors == []


# -- FIFO groups ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["grouped", "grouped_rr", "grouped_head"])
def test_fifo_reads_respect_group_order(
    mode: Any, pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """FIFO reads (header x-pgmq-group): within a group messages arrive in msg_id order,
    and no message is read while an earlier message of its group is still unsettled."""
    groups = ["a", "b", "a", "b", "a", "c"]
    ids = pgmq.send_batch(
        pgmq_queue, [{"i": i} for i in range(6)], headers=[{"x-pgmq-group": g} for g in groups]
    )
    group_of = dict(zip(ids, groups, strict=True))
    in_group = {g: [i for i in ids if group_of[i] == g] for g in "abc"}
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=2, read_options=ReadOptions(fifo=mode))
    settling = threading.Event()
    sink = subscribe(source, on_message=lambda m: settling.is_set() and m.settle())
    assert sink.wait_for(3)
    watch()
    first = sink.ids
    for g, members in in_group.items():
        got = [i for i in first if group_of[i] == g]
        assert got == members[: len(got)], f"group {g} out of order: {got}"
    assert in_group["a"][2] not in first, "read a3 while a1 was unsettled"

    settling.set()
    for m in list(sink.messages):
        m.settle()
    assert sink.wait_for(6)
    for g, members in in_group.items():
        assert [i for i in sink.ids if group_of[i] == g] == members
    assert len(set(sink.ids)) == 6


# -- batch order and delivery -----------------------------------------------------------


def test_messages_of_one_batch_are_emitted_in_msg_id_order(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """A batch that pgmq.read returns out of msg_id order (rows moved by set_vt) is still
    emitted in msg_id order."""
    ids = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(10)])
    pgmq.set_vt(pgmq_queue, ids[:5], 0)  # new row versions after the others
    pgmq.set_vt(pgmq_queue, ids[1:5:2], 0)
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=10)
    sink = subscribe(source)
    assert sink.wait_for(10)  # one read: batch_size 10, all 10 visible
    assert sink.ids == sorted(ids)


def test_scheduler_moves_delivery_off_the_reader_thread_and_calls_never_overlap(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """scheduler=EventLoopScheduler(): every on_next runs on that scheduler's thread, not
    on the consumer's reader thread, one call at a time, in order."""
    ids = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(30)])
    scheduler = EventLoopScheduler()
    try:
        source = source_of(
            pgmq_dsn,
            pgmq_queue,
            read_interval=0.1,
            batch_size=5,
            max_in_flight=10,
            scheduler=scheduler,
        )
        sink = subscribe(source, on_message=lambda m: m.settle(), work=0.002)
        assert sink.wait_for(30)
        sink.subscription.dispose()
    finally:
        scheduler.dispose()
    names = {t.name for t in sink.threads}
    assert len(names) == 1
    assert not names.pop().startswith("rx_pgmq-reader")
    assert sink.overlaps == 0
    assert sink.ids == ids


def test_without_scheduler_messages_are_delivered_on_the_reader_thread_one_at_a_time(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """Without scheduler=, on_next runs on the consumer's reader thread, never overlapping,
    even while the acknowledger thread flushes settles."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(20)])
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=3, max_in_flight=4)
    sink = subscribe(source, on_message=lambda m: m.settle(), work=0.002)
    assert sink.wait_for(20)
    assert {t.name for t in sink.threads} == {f"rx_pgmq-reader-{pgmq_queue}"}
    assert sink.overlaps == 0


def test_a_connection_pool_lends_the_consumer_its_connections_and_gets_them_back(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str
) -> None:
    """read_queue(pool, ...): the consumer borrows its reader and acknowledger connections
    from the pool and returns them on dispose, so a pool of 2 serves one subscription
    after another."""
    with ConnectionPool(pgmq_dsn, min_size=1, max_size=2, timeout=5.0) as pool:
        source = source_of(pool, pgmq_queue, batch_size=2, max_in_flight=2)
        for round_ in range(2):
            pgmq.send_batch(pgmq_queue, [{"round": round_}] * 2)
            sink = Sink[Message](on_message=lambda m: m.settle())
            sub = source.subscribe(sink)
            try:
                assert sink.wait_for(2), f"round {round_}: nothing delivered"
                assert wait_until(deleted_at_least(source, 2 * round_ + 2))
            finally:
                sub.dispose()
                assert source.wait_closed(15)  # dispose returns at once; the close follows
            assert sink.errors == []
        assert pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"]
    assert pgmq.metrics(pgmq_queue).queue_length == 0


def test_a_pooled_reader_connection_closed_under_the_consumer_goes_back_to_the_pool(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str
) -> None:
    """The reader's pooled connection is closed under a polling consumer of a pool of 2
    (both connections lent out). The consumer gives the closed one back, so the pool can
    open a replacement, and the next message is delivered within 3 s; keeping it would
    leave the pool full, and the reader would first wait out the pool's timeout (5 s)."""
    with ConnectionPool(pgmq_dsn, min_size=1, max_size=2, timeout=5.0) as pool:
        source = source_of(pool, pgmq_queue, read_interval=0.2)
        sink = Sink[Message](on_message=lambda m: m.settle())
        sub = source.subscribe(sink)
        try:
            pgmq.send(pgmq_queue, {"n": 1})
            assert sink.wait_for(1)
            assert wait_until(deleted_at_least(source, 1))  # the acknowledger holds one too
            (consumer,) = source.consumers
            conn = consumer.reader.link.connected  # private: the connection to pull away
            assert conn is not None
            conn.close()
            sent = time.monotonic()
            pgmq.send(pgmq_queue, {"n": 2})
            assert sink.wait_for(2, timeout=10.0), "the reader never got a connection"
            assert sink.arrived[1] - sent < 3.0
        finally:
            sub.dispose()
        assert sink.errors == []
        assert wait_until(
            lambda: pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"]
        )


# -- option validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delete_on_read": True, "conditional": {"a": 1}},
        {"delete_on_read": True, "long_poll": LongPoll()},
        {"delete_on_read": True, "fifo": "grouped"},
        {"fifo": "grouped", "conditional": {"a": 1}},
        {"fifo": "lifo"},
        {"conditional": [1, 2]},
        {"long_poll": 5},
        {"delete_on_read": "yes"},
    ],
)
def test_read_options_reject_combinations_pgmq_cannot_run(kwargs: dict[str, Any]) -> None:
    """ReadOptions raises InvalidArgument for options PGMQ has no function for."""
    with pytest.raises(InvalidArgument):
        ReadOptions(**kwargs)


def test_long_poll_rejects_non_positive_durations() -> None:
    """LongPoll(max_seconds=0) and LongPoll(interval_ms=0) raise InvalidArgument."""
    with pytest.raises(InvalidArgument):
        LongPoll(max_seconds=0)
    with pytest.raises(InvalidArgument):
        LongPoll(interval_ms=0)
