"""Several consumer processes on one queue (#17 item 5), against a real PostgreSQL."""

from __future__ import annotations

import time

import pytest
from _support import Conn, count

import rx_pgmq
from rx_pgmq._front._scalebench import ScaleError, WorkerSpec, bench_queue, scaled_drain


@pytest.mark.slow
def test_four_consumer_processes_on_one_queue_lose_nothing_and_duplicate_nothing(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn
) -> None:
    """#17 item 5: 4 processes, each read_queue -> process -> ack(Delete) on the same queue
    of 6,000 messages, no faults: every message is handled exactly once (0 lost, 0
    duplicates), every process takes a share, and the queue and archive end empty."""
    n = 6000
    for start in range(0, n, 1000):
        pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(start, start + 1000)])
    spec = WorkerSpec(pgmq_dsn, (pgmq_queue,), batch_size=50, max_in_flight=200)
    result = scaled_drain(spec, n, 4, timeout=50)
    assert (result.lost, result.duplicates, result.handled) == (0, 0, n)
    assert len(result.per_consumer) == 4 and all(c > 0 for c in result.per_consumer)
    assert count(db, pgmq_queue) == 0
    assert count(db, pgmq_queue, prefix="a") == 0


@pytest.mark.slow
def test_bench_queue_fills_drains_and_drops_a_scratch_queue(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str
) -> None:
    """#17 item 4 (what `rx-pgmq bench --consumers N` runs): 2 processes drain 1,500 sent
    messages exactly once, progress is reported for both phases, and the queue is gone."""
    before = {q.queue_name for q in pgmq.list_queues()}
    seen: dict[str, int] = {}
    result = bench_queue(
        pgmq_dsn,
        consumers=2,
        messages=1500,
        batch_size=50,
        on_progress=lambda phase, n: seen.__setitem__(phase, n),
        timeout=50,
    )
    assert (result.sent, result.handled, result.duplicates, result.lost) == (1500, 1500, 0, 0)
    assert seen == {"send": 1500, "drain": 1500}
    assert result.rate > 0
    assert {q.queue_name for q in pgmq.list_queues()} == before


@pytest.mark.slow
def test_a_consumer_whose_pipeline_fails_ends_the_drain_with_its_error(pgmq_dsn: str) -> None:
    """#17 item 4: a consumer process whose pipeline ends with on_error (here: the queue
    does not exist) ends the drain at once with ScaleError naming the error, instead of
    waiting for the timeout."""
    spec = WorkerSpec(pgmq_dsn, ("rx_pgmq_no_such_queue",), batch_size=10, max_in_flight=40)
    started = time.monotonic()
    with pytest.raises(ScaleError, match="rx_pgmq_no_such_queue"):
        scaled_drain(spec, 10, 2, timeout=100)
    assert time.monotonic() - started < 60
