"""FIFO group reads and indexes, on the client and through the consumer (#18 items 1, 2).

The order checks are exact across groups: PGMQ's round robin (``read_grouped_rr``) returns
A1, B1, A2; rx_pgmq used to sort every batch by ``msg_id`` and emitted A1, A2, B1.
EctoPGMQ's tests of the FIFO functions (``test/ecto_pgmq/pgmq_test.exs``,
``pgmq_poll_test.exs``, ``ecto_pgmq_test.exs``) each have an equivalent here, named in a
comment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from _support import Conn, Subscribe, source_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rx_pgmq import PGMQ, LongPoll, Message, ReadOptions
from rx_pgmq.errors import InvalidArgument, PGMQOutdated, QueueNotFound

VT = 300
GROUPS = ["a", "b", "a", "b", "a", "c"]


def _send_groups(pgmq: PGMQ, queue: str, groups: list[str]) -> dict[str, list[int]]:
    """Send one message per entry of ``groups`` (header x-pgmq-group); ids by label (a1...)."""
    ids = pgmq.send_batch(
        queue, [{"g": g} for g in groups], headers=[{"x-pgmq-group": g} for g in groups]
    )
    labels: dict[str, list[int]] = {}
    for g, msg_id in zip(groups, ids, strict=True):
        labels.setdefault(g, []).append(msg_id)
    return labels


def _labels(messages: list[Message], by_group: dict[str, list[int]]) -> list[str]:
    name = {i: f"{g}{n}" for g, ids in by_group.items() for n, i in enumerate(ids, 1)}
    return [name[m.msg_id] for m in messages]


def _nothing_visible(pgmq: PGMQ, queue: str) -> bool:
    return pgmq.read(queue, VT, 1) == []


EXPECTED = {
    # round robin: rank 1 of every group (oldest group first), then rank 2, ...
    "grouped_rr": ["a1", "b1", "c1", "a2", "b2", "a3"],
    # SQS FIFO: fill the batch from one group first, the group with the oldest message first
    "grouped": ["a1", "a2", "a3", "b1", "b2", "c1"],
    # one head per group, oldest head first
    "grouped_head": ["a1", "b1", "c1"],
}


# -- exact order across groups (#18 item 1) ---------------------------------------------


@pytest.mark.parametrize("mode", ["grouped_rr", "grouped", "grouped_head"])
@pytest.mark.parametrize("poll", [False, True], ids=["read", "with_poll"])
def test_client_fifo_reads_keep_the_servers_order_across_groups(
    client: PGMQ, pgmq_queue: str, mode: str, poll: bool
) -> None:
    """#18 item 1: PGMQ.read_grouped*/…_with_poll return the exact interleaving the
    function selects: round robin a1 b1 c1 a2 b2 a3; grouped a1 a2 a3 b1 b2 c1; heads
    a1 b1 c1."""
    by_group = _send_groups(client, pgmq_queue, GROUPS)
    read: Callable[..., list[Message]] = getattr(
        client, f"read_{mode}_with_poll" if poll else f"read_{mode}"
    )
    got = read(pgmq_queue, VT, 10)
    assert _labels(got, by_group) == EXPECTED[mode]
    assert all(m.read_ct == 1 and m.queue == pgmq_queue for m in got)
    assert got[0].headers == {"x-pgmq-group": "a"} and got[0].body == {"g": "a"}


@pytest.mark.parametrize("poll", [False, True], ids=["read", "long_poll"])
@pytest.mark.parametrize("mode", ["grouped_rr", "grouped", "grouped_head"])
def test_consumer_emits_fifo_batches_in_the_servers_order_across_groups(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, mode: Any, poll: bool
) -> None:
    """#18 item 1: read_queue(fifo=mode) emits one read's messages in the order PGMQ
    selected them, not sorted by msg_id (it emitted a1 b1 a2 b2 a3 c1 for round robin
    before), with and without a long poll.

    EctoPGMQ (ecto_pgmq_test.exs): "read_messages/5 will read messages from a queue with
    head grouping", "... with throughput-optimized grouping", "... with round-robin
    grouping", and the four "... with a poll ..." variants.
    """
    by_group = _send_groups(pgmq, pgmq_queue, GROUPS)
    options = ReadOptions(fifo=mode, long_poll=LongPoll(1) if poll else None)
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=6, read_options=options)
    sink = subscribe(source)
    expected = EXPECTED[mode]
    assert sink.wait_for(len(expected))
    assert _labels(list(sink.messages)[: len(expected)], by_group) == expected


# -- EctoPGMQ's FIFO read tests ------------------------------------------------------------


@pytest.mark.parametrize("poll", [False, True], ids=["read", "with_poll"])
def test_read_grouped_rr_interleaves_two_groups(client: PGMQ, pgmq_queue: str, poll: bool) -> None:
    """#18 item 2. EctoPGMQ: "read_grouped_rr/5 will read messages from a queue" and
    "read_grouped_rr_with_poll/7 will read messages from a queue": A1 A2 B -> A1 B A2,
    read once, nothing left visible."""
    by_group = _send_groups(client, pgmq_queue, ["A", "A", "B"])
    read = client.read_grouped_rr_with_poll if poll else client.read_grouped_rr
    assert _labels(read(pgmq_queue, VT, 3), by_group) == ["A1", "B1", "A2"]
    assert _nothing_visible(client, pgmq_queue)


@pytest.mark.parametrize("poll", [False, True], ids=["read", "with_poll"])
def test_read_grouped_fills_the_batch_from_the_oldest_group(
    client: PGMQ, pgmq_queue: str, poll: bool
) -> None:
    """#18 item 2. EctoPGMQ: "read_grouped/5 will read messages from a queue" and
    "read_grouped_with_poll/7 will read messages from a queue": A1 A2 B -> A1 A2 B."""
    by_group = _send_groups(client, pgmq_queue, ["A", "A", "B"])
    read = client.read_grouped_with_poll if poll else client.read_grouped
    assert _labels(read(pgmq_queue, VT, 3), by_group) == ["A1", "A2", "B1"]
    assert _nothing_visible(client, pgmq_queue)


@pytest.mark.parametrize("poll", [False, True], ids=["read", "with_poll"])
def test_read_grouped_head_reads_one_head_per_group(
    client: PGMQ, pgmq_queue: str, poll: bool
) -> None:
    """#18 item 2. EctoPGMQ: "read_grouped_head/5" and "read_grouped_head_with_poll/7":
    "will read messages from a queue" (A B C -> all three) and "... when too many are
    requested" (A1 A2 B, qty 3 -> A1 B; A2 stays visible for a plain read)."""
    read = client.read_grouped_head_with_poll if poll else client.read_grouped_head
    by_group = _send_groups(client, pgmq_queue, ["A", "B", "C"])
    assert _labels(read(pgmq_queue, VT, 3), by_group) == ["A1", "B1", "C1"]
    assert _nothing_visible(client, pgmq_queue)
    client.purge_queue(pgmq_queue)
    by_group = _send_groups(client, pgmq_queue, ["A", "A", "B"])
    assert _labels(read(pgmq_queue, VT, 3), by_group) == ["A1", "B1"]
    assert [m.msg_id for m in client.read(pgmq_queue, VT, 3)] == [by_group["A"][1]]


@pytest.mark.parametrize(
    "method",
    [
        "read_grouped",
        "read_grouped_with_poll",
        "read_grouped_rr",
        "read_grouped_rr_with_poll",
        "read_grouped_head",
        "read_grouped_head_with_poll",
    ],
)
def test_fifo_reads_without_groups_return_what_there_is(
    client: PGMQ, pgmq_queue: str, method: str
) -> None:
    """#18 item 2. EctoPGMQ: "read_grouped*/… will read messages from a queue when too
    many are requested": two messages without a group header, qty 3. The grouped and
    round-robin reads return both in order; the head read returns the default group's
    head only."""
    ids = client.send_batch(pgmq_queue, [{"id": 1}, {"id": 2}])
    got = [m.msg_id for m in getattr(client, method)(pgmq_queue, VT, 3)]
    assert got == (ids[:1] if "head" in method else ids)
    assert all(m.read_ct == 1 for m in client.set_vt(pgmq_queue, got, 0))


@pytest.mark.parametrize(
    "method", ["read_grouped_with_poll", "read_grouped_rr_with_poll", "read_grouped_head_with_poll"]
)
def test_fifo_polls_return_as_soon_as_a_message_arrives(
    client: PGMQ, pgmq_queue: str, pgmq_dsn: str, method: str
) -> None:
    """#18 item 2. EctoPGMQ pgmq_poll_test: "read_grouped*_with_poll/7 will poll until
    messages are available": a message sent 0.5 s into a 10 s poll is returned well
    before the poll's end."""

    def send_later() -> None:
        threading.Event().wait(0.5)
        with PGMQ(pgmq_dsn) as other:
            other.send(pgmq_queue, {"late": True}, headers={"x-pgmq-group": "g"})

    sender = threading.Thread(target=send_later)
    started = time.monotonic()
    sender.start()
    got = getattr(client, method)(pgmq_queue, VT, 1, max_poll_seconds=10, poll_interval_ms=50)
    took = time.monotonic() - started
    sender.join()
    assert [m.body for m in got] == [{"late": True}]
    assert took < 8, f"the poll took {took:.1f} s"


def test_fifo_reads_validate_before_sql(client: PGMQ, pgmq_queue: str) -> None:
    """#18 item 2: bad queue names, vt, qty and poll arguments are InvalidArgument naming
    the argument; a missing queue is QueueNotFound."""
    with pytest.raises(InvalidArgument, match="name"):
        client.read_grouped("Bad", VT, 1)
    with pytest.raises(InvalidArgument, match="vt"):
        client.read_grouped_rr(pgmq_queue, -1, 1)
    with pytest.raises(InvalidArgument, match="qty"):
        client.read_grouped_head(pgmq_queue, VT, 0)
    with pytest.raises(InvalidArgument, match="max_poll_seconds"):
        client.read_grouped_with_poll(pgmq_queue, VT, 1, max_poll_seconds=-1)
    with pytest.raises(InvalidArgument, match="poll_interval_ms"):
        client.read_grouped_rr_with_poll(pgmq_queue, VT, 1, poll_interval_ms=0)
    with pytest.raises(QueueNotFound):
        client.read_grouped_rr("no_such_queue_fifo", VT, 1)


# -- FIFO indexes -------------------------------------------------------------------------


def _fifo_index(db: Conn, queue: str) -> bool:
    row = db.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = 'pgmq' AND indexname = %s)",
        (f"q_{queue}_fifo_idx",),
    ).fetchone()
    return bool(row and row[0])


def test_create_fifo_index_indexes_the_headers(client: PGMQ, pgmq_queue: str, db: Conn) -> None:
    """#18 item 2. EctoPGMQ: "create_fifo_index/3 will create an index to optimize FIFO
    group reads" and "create_queue/3 will create a queue with an index to optimize message
    group reads": the GIN index on headers exists afterwards; twice is fine; a missing
    queue is QueueNotFound."""
    assert not _fifo_index(db, pgmq_queue)
    client.create_fifo_index(pgmq_queue)
    client.create_fifo_index(pgmq_queue)
    assert _fifo_index(db, pgmq_queue)
    with pytest.raises(QueueNotFound):
        client.create_fifo_index("no_such_queue_fifo")


def test_create_fifo_indexes_all_covers_every_queue(
    client: PGMQ, pgmq_queue: str, db: Conn
) -> None:
    """#18 item 2: create_fifo_indexes_all indexes every existing queue."""
    assert not _fifo_index(db, pgmq_queue)
    client.create_fifo_indexes_all()
    assert _fifo_index(db, pgmq_queue)


def test_a_pgmq_without_read_grouped_head_names_the_version_needed(
    pgmq_dsn: str, pgmq_queue: str
) -> None:
    """#18 item 2: a FIFO function missing from the PGMQ installed (dropped here, inside a
    transaction that is rolled back) raises PGMQOutdated naming the PGMQ version with it."""
    with psycopg.connect(pgmq_dsn) as conn:
        conn.execute("DROP FUNCTION pgmq.read_grouped_head(text, integer, integer)")
        with pytest.raises(PGMQOutdated, match=r"needs PGMQ 1\.11\.0 or later") as info:
            PGMQ(conn).read_grouped_head(pgmq_queue, VT, 1)
        assert info.value.needs == "1.11.0" and "pgmq.read_grouped_head" in str(info.value)
        conn.rollback()


# -- the exact order, for any mix of groups ------------------------------------------------


def _model(mode: str, groups: list[str | None], qty: int) -> list[int]:
    """Indexes (send order) PGMQ's FIFO read of ``mode`` returns on a queue whose messages
    are all visible, by the rules of its SQL: groups ranked by their oldest message;
    round robin takes layer by layer, grouped group by group, heads one per group."""
    members: dict[str | None, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    ranked = sorted(members.values(), key=lambda ids: ids[0])
    if mode == "grouped_rr":
        depth = max(len(ids) for ids in ranked)
        order = [ids[k] for k in range(depth) for ids in ranked if k < len(ids)]
    elif mode == "grouped":
        order = [i for ids in ranked for i in ids]
    else:
        order = [ids[0] for ids in ranked]
    return order[:qty]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    groups=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=10),
    qty=st.integers(min_value=1, max_value=12),
    mode=st.sampled_from(["grouped_rr", "grouped", "grouped_head"]),
)
def test_fifo_reads_return_exactly_the_order_pgmqs_sql_selects(
    pgmq: PGMQ, pgmq_queue: str, groups: list[str | None], qty: int, mode: str
) -> None:
    """#18 item 1: for any mix of groups (None: no group header) and any qty, a FIFO read
    returns exactly the messages, in exactly the order, that PGMQ's SQL selects (a model
    of its ranking), not msg_id order."""
    pgmq.purge_queue(pgmq_queue)
    headers = [None if g is None else {"x-pgmq-group": g} for g in groups]
    ids = pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(len(groups))], headers)
    got = [m.msg_id for m in getattr(pgmq, f"read_{mode}")(pgmq_queue, VT, qty)]
    assert got == [ids[i] for i in _model(mode, groups, qty)]
