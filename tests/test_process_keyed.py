"""operators.process(key=...) against a real PostgreSQL (#17 item 2).

Each test drains a fresh queue through ``read_queue -> process(key=...) -> ack`` and checks
the order in which the handler saw each key's messages and that no key ran twice at once.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from _support import WAIT, Conn, Subscribe, count, source_of, wait_until

import rx_pgmq
from rx_pgmq import Message, ReadOptions, Settled
from rx_pgmq import operators as pgops

GROUP = "x-pgmq-group"


class Watch:
    """Records, per key, the msg_ids handled in order, overlapping calls of one key and the
    most keys running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handled: dict[str, list[int]] = {}
        self.active: set[str] = set()
        self.overlap: list[str] = []
        self.most = 0

    def enter(self, k: str) -> None:
        with self.lock:
            if k in self.active:
                self.overlap.append(k)
            self.active.add(k)
            self.most = max(self.most, len(self.active))

    def leave(self, k: str, msg_id: int) -> None:
        with self.lock:
            self.handled.setdefault(k, []).append(msg_id)
            self.active.discard(k)


def handler(watch: Watch, kind: str, key_of: Callable[[Message], str]) -> Callable[[Message], Any]:
    """A handler that takes 1-5 ms per message, sync (a pool thread) or async."""
    rng = random.Random(17)

    def sync(m: Message) -> None:
        watch.enter(key_of(m))
        time.sleep(rng.uniform(0.001, 0.005))
        watch.leave(key_of(m), m.msg_id)

    async def asynchronous(m: Message) -> None:
        watch.enter(key_of(m))
        await asyncio.sleep(rng.uniform(0.001, 0.005))
        watch.leave(key_of(m), m.msg_id)

    return sync if kind == "sync" else asynchronous


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_per_key_order_holds_with_8_slots_and_20_keys(
    kind: str,
    pgmq: rx_pgmq.PGMQ,
    pgmq_queue: str,
    pgmq_dsn: str,
    db: Conn,
    subscribe: Subscribe,
) -> None:
    """#17 item 2: process(key=..., max_concurrency=8), sync on the pool and async on the
    loop: each of 20 keys' messages are handled in send order, never two of one key at
    once, different keys do run in parallel, and every message is acked."""
    rng = random.Random(20)
    keys = [f"k{rng.randrange(20)}" for _ in range(400)]
    sent = pgmq.send_batch(pgmq_queue, [{"key": k} for k in keys])
    expected: dict[str, list[int]] = {}
    for msg_id, k in zip(sent, keys, strict=True):
        expected.setdefault(k, []).append(msg_id)
    watch = Watch()

    def key_of(m: Message) -> str:
        return str(m.body["key"])

    source = source_of(pgmq_dsn, pgmq_queue, batch_size=50, max_in_flight=100)
    op = pgops.process(handler(watch, kind, key_of), max_concurrency=8, key=key_of)
    sink = subscribe(source.pipe(op, pgops.ack()))
    settled: list[Settled] = sink.collect(400, timeout=60)
    assert len(settled) == 400 and all(s.ok and s.acked for s in settled)
    assert watch.handled == expected
    assert watch.overlap == []
    assert 2 <= watch.most <= 8
    assert wait_until(lambda: count(db, pgmq_queue) == 0)


def test_fifo_reads_keyed_on_the_group_header_keep_pgmq_group_order(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, subscribe: Subscribe
) -> None:
    """#17 item 2: ReadOptions(fifo="grouped_rr") with process(key=x-pgmq-group header,
    max_concurrency=4): each group's messages are handled in send order, end to end."""
    groups = [f"g{i % 5}" for i in range(80)]
    sent = pgmq.send_batch(
        pgmq_queue, [{"i": i} for i in range(80)], headers=[{GROUP: g} for g in groups]
    )
    expected: dict[str, list[int]] = {}
    for msg_id, g in zip(sent, groups, strict=True):
        expected.setdefault(g, []).append(msg_id)
    watch = Watch()

    def key_of(m: Message) -> str:
        return str((m.headers or {})[GROUP])

    source = source_of(
        pgmq_dsn,
        pgmq_queue,
        batch_size=10,
        max_in_flight=20,
        read_options=ReadOptions(fifo="grouped_rr"),
    )
    op = pgops.process(handler(watch, "sync", key_of), max_concurrency=4, key=key_of)
    sink = subscribe(source.pipe(op, pgops.ack()))
    settled: list[Settled] = sink.collect(80, timeout=WAIT * 2)
    assert len(settled) == 80 and all(s.ok and s.acked for s in settled)
    assert watch.handled == expected
    assert watch.overlap == []
