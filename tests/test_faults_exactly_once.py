"""Exactly-once effects under SIGKILL (issue #19 item 1), beside the plain pipeline.

Two competing consumer processes write one row per message into a user table while one
of them is SIGKILLed at a random point, again and again (a new process takes its place).
With ``process_in_transaction`` the row and the ack commit together: every message id is
in the table exactly once. With ``process`` + ``ack`` the row commits before the ack, so a
kill between the two leaves a row whose message is processed again: the duplicates are
counted. Each run prints its figures (``FIGURE ...``; RELIABILITY.md quotes them).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import Worker, figure, query, queue_rows, send_numbered, wait_until, workers
from psycopg import sql

from rx_pgmq.client import PGMQ

pytestmark = pytest.mark.faults

READY = 30.0  # a child process imports rx_pgmq and connects (slow on a busy machine)
MESSAGES, KILLS = 2000, 6


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Worker]]:
    yield from workers(tmp_path)


@pytest.fixture
def effects(pgmq_dsn: str) -> Iterator[str]:
    """A user table ``(msg_id bigint, n int)`` without a unique key (duplicates show)."""
    name = f"effects_{uuid.uuid4().hex[:10]}"
    query(pgmq_dsn, sql.SQL("CREATE TABLE {} (msg_id bigint, n int)").format(sql.Identifier(name)))
    yield name
    query(pgmq_dsn, sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def _effect_counts(dsn: str, table: str) -> Counter[int]:
    rows = query(dsn, sql.SQL("SELECT msg_id FROM {}").format(sql.Identifier(table)))
    return Counter(r[0] for r in rows)


@pytest.mark.parametrize("transactional", [True, False], ids=["in_transaction", "plain"])
def test_sigkilled_competing_consumers_write_each_effect_exactly_once_in_a_transaction(
    pgmq_dsn: str,
    pgmq: PGMQ,
    pgmq_queue: str,
    effects: str,
    start_worker: Callable[[dict[str, Any]], Worker],
    transactional: bool,
) -> None:
    """#19 item 1: 2,000 messages, two competing consumer processes, one SIGKILLed at a
    random point six times (a new one replaces it). in_transaction: every message id is in
    the user table exactly once and the queue ends empty. plain (process + ack, the row
    committed before the ack): no message is lost and the queue ends empty; the duplicate
    effects are counted, not asserted."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ids = send_numbered(pgmq, pgmq_queue, MESSAGES)
    config = {
        "dsn": pgmq_dsn,
        "queue": pgmq_queue,
        "vt": 2,
        "batch_size": 10,
        "max_in_flight": 20,
        "read_interval": 0.1,
        "concurrency": 2,
        "work": 0.05,  # ~40 messages/s per process: the kills land mid-stream
        "effects": effects,
        "transactional": transactional,
    }
    started = time.monotonic()
    alive = [start_worker(config), start_worker(config)]
    for worker in alive:
        worker.wait_ready(READY)
    killed: list[Worker] = []
    kill_points: list[int] = []
    for _ in range(KILLS):
        target = sum(_effect_counts(pgmq_dsn, effects).values()) + rng.randrange(20, 250)

        def progressed(target: int = target) -> bool:
            return sum(_effect_counts(pgmq_dsn, effects).values()) >= target

        assert wait_until(progressed, 60.0, 0.01), [w.stderr() for w in alive]
        victim = alive.pop(rng.randrange(len(alive)))
        victim.kill()  # SIGKILL: open transactions roll back, nothing is flushed
        killed.append(victim)
        kill_points.append(sum(_effect_counts(pgmq_dsn, effects).values()))
        replacement = start_worker(config)
        replacement.wait_ready(READY)
        alive.append(replacement)
    assert wait_until(lambda: queue_rows(pgmq_dsn, pgmq_queue) == {}, 90.0, 0.2), [
        w.stderr() for w in alive
    ]
    for worker in alive:
        assert worker.stop() == 0, worker.stderr()
    elapsed = time.monotonic() - started

    counts = _effect_counts(pgmq_dsn, effects)
    duplicates = sum(c - 1 for c in counts.values())
    figure(
        f"exactly_once[{'in_transaction' if transactional else 'plain'}]",
        seed=seed,
        messages=MESSAGES,
        kills=len(killed),
        effects_at_kills=kill_points,
        effect_rows=sum(counts.values()),
        duplicate_effects=duplicate_count_text(duplicates, counts),
        seconds=elapsed,
    )
    assert len(killed) >= 5
    for worker in [*killed, *alive]:
        assert worker.errors() == [], worker.errors()
    assert set(counts) == set(ids), f"lost: {sorted(set(ids) - set(counts))[:10]}"
    assert queue_rows(pgmq_dsn, pgmq_queue) == {}
    if transactional:
        assert duplicates == 0, counts.most_common(5)
        assert queue_rows(pgmq_dsn, pgmq_queue, "a") == {}


def duplicate_count_text(duplicates: int, counts: Counter[int]) -> str:
    """``"<extra rows> (<messages with more than one row>)"``."""
    return f"{duplicates} ({sum(1 for c in counts.values() if c > 1)} messages)"
