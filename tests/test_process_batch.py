"""operators.process_batch against a real PostgreSQL (#17 items 1 and 2).

Each test drains a fresh queue through ``read_queue -> process_batch -> ack`` and checks
what the handler saw and what the queue and archive tables hold afterwards.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Literal

from _support import WAIT, Conn, Subscribe, count, source_of, table, wait_until
from psycopg import sql

import rx_pgmq
from rx_pgmq import Message, ReadOptions, Settled
from rx_pgmq import operators as pgops

GROUP = "x-pgmq-group"


def ids_in(db: Conn, queue: str, prefix: Literal["q", "a"]) -> set[int]:
    """msg_ids in the queue table (``q``) or the archive (``a``)."""
    rows = db.execute(sql.SQL("SELECT msg_id FROM {}").format(table(queue, prefix))).fetchall()
    return {int(r[0]) for r in rows}


def test_a_raising_handler_archives_its_whole_group(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn, subscribe: Subscribe
) -> None:
    """#17 item 1: fn raising fails every message of its group; ack's default policy
    archives them all, and nothing stays in the queue."""
    sent = set(pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(12)]))
    calls: list[list[int]] = []

    def fn(messages: list[Message]) -> None:
        calls.append([m.msg_id for m in messages])
        raise RuntimeError("bulk insert failed")

    source = source_of(pgmq_dsn, pgmq_queue, batch_size=12, max_in_flight=12)
    sink = subscribe(source.pipe(pgops.process_batch(fn, max_size=4), pgops.ack()))
    settled: list[Settled] = sink.collect(12, timeout=WAIT)
    assert {s.message.msg_id for s in settled} == sent
    assert all(not s.ok and s.reason == "bulk insert failed" for s in settled)
    assert all(s.action.name == "archive" and s.acked for s in settled)
    assert sorted(i for call in calls for i in call) == sorted(sent)
    assert all(len(call) <= 4 for call in calls)
    assert ids_in(db, pgmq_queue, "a") == sent
    assert count(db, pgmq_queue) == 0


def test_a_partial_failure_mapping_settles_each_message_by_its_own_outcome(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn, subscribe: Subscribe
) -> None:
    """#17 item 1: a mapping of msg_id to result or exception: successes are deleted, the
    failures archived, one message each; a message missing from the mapping fails too."""
    sent = pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(10)])
    odd = {i for i in sent if i % 2}
    missing = max(sent)

    def fn(messages: list[Message]) -> dict[int, Any]:
        return {
            m.msg_id: ValueError(f"bad {m.msg_id}") if m.msg_id in odd else m.body["n"]
            for m in messages
            if m.msg_id != missing
        }

    source = source_of(pgmq_dsn, pgmq_queue, batch_size=10, max_in_flight=10)
    sink = subscribe(source.pipe(pgops.process_batch(fn, max_size=10), pgops.ack()))
    settled: list[Settled] = sink.collect(10, timeout=WAIT)
    by_id = {s.message.msg_id: s for s in settled}
    failed_ids = odd | {missing}
    assert {i for i, s in by_id.items() if not s.ok} == failed_ids
    assert "no entry for msg_id" in str(by_id[missing].reason)
    assert all(s.acked for s in settled)
    assert ids_in(db, pgmq_queue, "a") == failed_ids  # archived: the failures only
    assert count(db, pgmq_queue) == 0  # the rest deleted


def test_per_key_order_holds_with_8_slots_and_20_keys(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, subscribe: Subscribe
) -> None:
    """#17 item 2: with key and max_concurrency=8, each of 20 keys' messages are handled in
    send order, never two calls of one key at once, and different keys do run in parallel."""
    rng = random.Random(17)
    keys = [f"k{rng.randrange(20)}" for _ in range(400)]
    sent = pgmq.send_batch(pgmq_queue, [{"key": k} for k in keys])
    expected: dict[str, list[int]] = {}
    for msg_id, k in zip(sent, keys, strict=True):
        expected.setdefault(k, []).append(msg_id)
    handled: dict[str, list[int]] = {}
    lock = threading.Lock()
    active: set[str] = set()
    overlap: list[str] = []
    most = 0

    def fn(messages: list[Message]) -> None:
        nonlocal most
        k = messages[0].body["key"]
        with lock:
            if k in active:
                overlap.append(k)
            active.add(k)
            most = max(most, len(active))
        time.sleep(rng.uniform(0.001, 0.01))  # simulated work: lets calls overlap
        with lock:
            handled.setdefault(k, []).extend(m.msg_id for m in messages)
            assert all(m.body["key"] == k for m in messages)
            active.discard(k)

    source = source_of(pgmq_dsn, pgmq_queue, batch_size=50, max_in_flight=200)
    op = pgops.process_batch(
        fn, max_size=40, max_wait=0.05, max_concurrency=8, key=lambda m: m.body["key"]
    )
    sink = subscribe(source.pipe(op, pgops.ack()))
    settled: list[Settled] = sink.collect(400, timeout=60)
    assert len(settled) == 400 and all(s.ok and s.acked for s in settled)
    assert handled == expected
    assert overlap == []
    assert 2 <= most <= 8


def test_a_window_smaller_than_max_size_still_drains_quickly(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn, subscribe: Subscribe
) -> None:
    """#17 item 1: with max_in_flight=5 and max_size=100, a group holding the whole window
    flushes at once: 60 messages drain long before a single max_wait (60 s) could pass."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(60)])
    sizes: list[int] = []
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=5, max_in_flight=5)
    op = pgops.process_batch(lambda ms: sizes.append(len(ms)), max_size=100, max_wait=60)
    started = time.monotonic()
    sink = subscribe(source.pipe(op, pgops.ack()))
    settled: list[Settled] = sink.collect(60, timeout=30)
    elapsed = time.monotonic() - started
    assert len(settled) == 60 and all(s.acked for s in settled)
    assert elapsed < 30  # a max_wait per group would take 12 x 60 s
    assert sum(sizes) == 60 and max(sizes) <= 5
    assert count(db, pgmq_queue) == 0


def test_fifo_reads_keyed_on_the_group_header_keep_pgmq_group_order(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, subscribe: Subscribe
) -> None:
    """#17 item 2: ReadOptions(fifo="grouped_rr") with key on x-pgmq-group and 4 slots:
    each group's messages are handled in send order, end to end."""
    groups = [f"g{i % 5}" for i in range(60)]
    sent = pgmq.send_batch(
        pgmq_queue, [{"i": i} for i in range(60)], headers=[{GROUP: g} for g in groups]
    )
    expected: dict[str, list[int]] = {}
    for msg_id, g in zip(sent, groups, strict=True):
        expected.setdefault(g, []).append(msg_id)
    handled: dict[str, list[int]] = {}
    lock = threading.Lock()

    def fn(messages: list[Message]) -> None:
        with lock:
            for m in messages:
                handled.setdefault((m.headers or {})[GROUP], []).append(m.msg_id)

    source = source_of(
        pgmq_dsn,
        pgmq_queue,
        batch_size=10,
        max_in_flight=20,
        read_options=ReadOptions(fifo="grouped_rr"),
    )
    op = pgops.process_batch(
        fn, max_size=10, max_wait=0.05, max_concurrency=4, key=lambda m: (m.headers or {})[GROUP]
    )
    sink = subscribe(source.pipe(op, pgops.ack()))
    settled: list[Settled] = sink.collect(60, timeout=WAIT)
    assert len(settled) == 60 and all(s.ok and s.acked for s in settled)
    assert handled == expected


def test_dispose_releases_the_pending_group_once(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn, subscribe: Subscribe
) -> None:
    """#17 item 1: disposed while a group waits (max_wait 60 s), fn is never called and the
    messages are visible again at once (released by the consumer, not left hidden)."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(3)])
    calls: list[int] = []
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=10, max_in_flight=10)
    op = pgops.process_batch(lambda ms: calls.append(len(ms)), max_size=100, max_wait=60)
    sink = subscribe(source.pipe(op, pgops.ack()))
    assert wait_until(lambda: count(db, pgmq_queue, "read_ct >= 1") == 3)
    sink.subscription.dispose()
    assert source.wait_closed(WAIT)
    assert calls == []
    visible = "vt <= clock_timestamp()"
    assert count(db, pgmq_queue, visible) == 3


def test_a_groups_acks_reach_the_consumer_in_one_call(
    pgmq: rx_pgmq.PGMQ,
    pgmq_queue: str,
    pgmq_dsn: str,
    db: Conn,
    subscribe: Subscribe,
    monkeypatch: Any,
) -> None:
    """#17 item 3: ``process_batch -> ack`` settles each group with one
    ``Consumer.settle_many`` call (one lock, one batcher add) instead of one call per
    message; every message still gets its own acked Settled record and is deleted."""
    from rx_pgmq._consumer._facade import Consumer

    sizes: list[int] = []
    settle_many = Consumer.settle_many

    def counting(self: Consumer, requests: list[Any]) -> None:
        sizes.append(len(requests))
        settle_many(self, requests)

    monkeypatch.setattr(Consumer, "settle_many", counting)
    sent = set(pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(30)]))
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=10, max_in_flight=30)
    sink = subscribe(source.pipe(pgops.process_batch(lambda _ms: None, max_size=10), pgops.ack()))
    settled: list[Settled] = sink.collect(30, timeout=WAIT)
    assert {s.message.msg_id for s in settled} == sent
    assert all(s.ok and s.acked and s.action.name == "delete" for s in settled)
    assert sizes == [10, 10, 10]
    assert wait_until(lambda: count(db, pgmq_queue) == 0)
