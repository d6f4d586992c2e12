"""Delivery invariants under stops, kills and competition (issue 7, scenarios 1, 2 and 5).

Like Kafka's offset validation test: uniquely numbered messages go through real pipelines
on a real PostgreSQL; afterwards the queue table, the archive and what each consumer
recorded are compared message by message. Each test prints its figures (``FIGURE ...``).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import (
    Processed,
    Run,
    Worker,
    figure,
    queue_rows,
    running,
    send_numbered,
    wait_until,
    workers,
)
from reactivex import operators as ops

import rx_pgmq
from rx_pgmq import Message
from rx_pgmq import operators as pgops
from rx_pgmq.client import PGMQ

pytestmark = pytest.mark.faults

READY = 30.0  # a child process imports rx_pgmq and connects (slow on a busy machine)


@pytest.fixture
def run() -> Iterator[Run]:
    yield from running()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Worker]]:
    yield from workers(tmp_path)


@pytest.mark.parametrize("stop", ["dispose", "complete"])
def test_clean_stop_mid_stream_then_restart_processes_and_acks_every_message_exactly_once(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, run: Run, stop: str
) -> None:
    """5,000 numbered messages, 10% failing: a pipeline stopped mid-stream and a new one
    started. Every message is processed exactly once and acked exactly once, the queue ends
    empty and the archive holds exactly the failures.

    ``dispose``: the subscription is disposed after 2,025 records. Reads stop, pending acks
    flush and commit, the unemitted rest of the batch is released; Rx delivers nothing
    after a dispose, so acks committed during it have no ``Settled`` record and are checked
    in the database (gone from the queue, not processed again). ``complete``: the stream
    completes after 2,025 messages (``take``); ``ack`` completes only after their acks
    committed, so every message has exactly one ``Settled`` record with status acked.
    """
    n_messages, stop_after = 5000, 2025  # mid-batch: part of a batch is released
    ids = send_numbered(pgmq, pgmq_queue, n_messages)
    failing = {msg_id for msg_id, n in ids.items() if n % 10 == 3}
    processed: Counter[int] = Counter()

    def handle(message: Message) -> None:
        processed[message.msg_id] += 1
        if message.msg_id in failing:
            raise ValueError(f"message {message.body['n']} fails on purpose")

    def source() -> rx_pgmq.QueueSource:
        return rx_pgmq.read_queue(
            pgmq_dsn,
            pgmq_queue,
            visibility_timeout=5,
            batch_size=50,
            max_in_flight=200,
            read_interval=0.2,
        )

    started = time.monotonic()
    first_source = source()
    if stop == "dispose":
        first, first_sub = run(first_source.pipe(pgops.process(handle), pgops.ack()))
        assert first.wait_count(stop_after, 60.0), f"only {first.count()} settled"
        first_sub.dispose()  # reads stop, pending acks flush, the rest is released
    else:
        first, _ = run(first_source.pipe(ops.take(stop_after), pgops.process(handle), pgops.ack()))
        assert first.wait(lambda _rs: first.completed, 60.0), f"{first.count()} settled"
    assert wait_until(lambda: first_source.consumers == [], 10.0)
    processed_first = set(processed)
    stats = first_source.stats

    second, _ = run(source().pipe(pgops.process(handle), pgops.ack()))
    assert wait_until(lambda: set(processed) == set(ids), 60.0), f"{len(processed)} processed"
    unrecorded = processed_first - {r.message.msg_id for r in first.records()}
    assert second.wait(lambda rs: first.count() + len(unrecorded) + len(rs) >= n_messages, 30.0)
    elapsed = time.monotonic() - started

    records = first.records() + second.records()
    acked = Counter(r.message.msg_id for r in records if r.status == "acked")
    statuses = Counter(r.status for r in records)
    figure(
        f"clean_stop[{stop}]",
        messages=n_messages,
        settled_records_first=first.count(),
        acked_during_dispose_without_record=len(unrecorded),
        released_on_stop=stats.settled.get("release", 0),
        settled_records_second=second.count(),
        statuses=dict(statuses),
        processed_twice=sum(1 for c in processed.values() if c > 1),
        seconds=elapsed,
        msgs_per_s=n_messages / elapsed,
    )
    assert set(processed.values()) == {1}, "a message was processed twice"
    assert set(acked.values()) == {1}, "a message was acked twice"
    assert set(acked) | unrecorded == set(ids) and not set(acked) & unrecorded
    assert statuses == {"acked": n_messages - len(unrecorded)}
    if stop == "complete":
        assert unrecorded == set() and first.count() == stop_after
    # what no record reports, the database does: committed, not redelivered
    assert stats.settled.get("delete", 0) + stats.settled.get("archive", 0) == len(processed_first)
    assert queue_rows(pgmq_dsn, pgmq_queue) == {}
    assert set(queue_rows(pgmq_dsn, pgmq_queue, "a")) == failing


def test_sigkilled_consumers_lose_nothing_and_duplicate_at_most_their_window(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, start_worker: Callable[[dict[str, Any]], Worker]
) -> None:
    """A consumer process is SIGKILLed mid-stream three times, then a new one finishes the
    queue. Every message is processed, the queue ends empty, the messages processed again
    after a kill are at most ``max_in_flight`` per kill, and every repeat has a higher
    ``read_ct`` (>= 2) than the processing it repeats."""
    n_messages, window, kills, per_life = 3000, 20, 3, 400
    ids = send_numbered(pgmq, pgmq_queue, n_messages)
    config = {
        "dsn": pgmq_dsn,
        "queue": pgmq_queue,
        "vt": 2,
        "batch_size": 10,
        "max_in_flight": window,
        "read_interval": 0.2,
        "work": 0.001,
    }
    started = time.monotonic()
    killed: list[Worker] = []
    for _ in range(kills):
        worker = start_worker(config)
        worker.wait_ready(READY)

        def lived(w: Worker = worker) -> bool:
            return len(w.processed()) >= per_life

        assert wait_until(lived, 60.0, 0.01), worker.stderr()
        worker.kill()  # SIGKILL: no flush, no release
        killed.append(worker)
    last = start_worker(config)
    last.wait_ready(READY)
    assert wait_until(lambda: queue_rows(pgmq_dsn, pgmq_queue) == {}, 60.0, 0.2), last.stderr()
    assert last.stop() == 0, last.stderr()
    elapsed = time.monotonic() - started

    history: dict[int, list[Processed]] = defaultdict(list)
    for worker in [*killed, last]:
        assert worker.errors() == []
        for p in worker.processed():
            history[p.msg_id].append(p)
    repeats = {w.index: 0 for w in killed}
    for msg_id, runs in history.items():
        for earlier, later in itertools.pairwise(runs):
            assert later.read_ct > earlier.read_ct >= 1, (msg_id, runs)
            assert later.read_ct >= 2
            assert earlier.worker in repeats, f"{msg_id} repeated after a clean stop: {runs}"
            repeats[earlier.worker] += 1
    duplicates = sum(len(runs) - 1 for runs in history.values())
    figure(
        "hard_kill",
        messages=n_messages,
        kills=kills,
        processed_before_each_kill=[len(w.processed()) for w in killed],
        duplicates=duplicates,
        duplicates_per_kill=list(repeats.values()),
        window=window,
        max_read_ct=max(p.read_ct for runs in history.values() for p in runs),
        seconds=elapsed,
    )
    assert set(history) == set(ids), f"lost: {sorted(set(ids) - set(history))[:10]}"
    assert all(r <= window for r in repeats.values()), repeats
    assert queue_rows(pgmq_dsn, pgmq_queue, "a") == {}


def _run_competing(
    pgmq_dsn: str,
    pgmq: PGMQ,
    queue: str,
    start_worker: Callable[[dict[str, Any]], Worker],
    n_messages: int,
    config: dict[str, Any],
) -> tuple[list[Worker], dict[int, int], float]:
    """Four worker processes consume ``n_messages`` sent after they are all ready."""
    team = [start_worker({"dsn": pgmq_dsn, "queue": queue, **config}) for _ in range(4)]
    for worker in team:
        worker.wait_ready(READY)
    started = time.monotonic()
    ids = send_numbered(pgmq, queue, n_messages, chunk=250)
    assert wait_until(lambda: queue_rows(pgmq_dsn, queue) == {}, 90.0, 0.2), [
        w.stderr() for w in team
    ]
    elapsed = time.monotonic() - started
    for worker in team:
        assert worker.stop() == 0, worker.stderr()
        assert worker.errors() == []
    return team, ids, elapsed


def test_four_competing_processes_within_the_lease_process_each_message_exactly_once(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, start_worker: Callable[[dict[str, Any]], Worker]
) -> None:
    """Four consumer processes on one queue, processing well within the visibility timeout:
    every message is processed exactly once (read_ct 1), by one of them, and acked."""
    team, ids, elapsed = _run_competing(
        pgmq_dsn,
        pgmq,
        pgmq_queue,
        start_worker,
        2000,
        {"vt": 30, "batch_size": 10, "max_in_flight": 20, "work": 0.002},
    )
    processed = [p for w in team for p in w.processed()]
    per_msg = Counter(p.msg_id for p in processed)
    statuses = sum((w.statuses() for w in team), Counter[str]())
    figure(
        "competing_within_vt",
        messages=len(ids),
        processes=len(team),
        per_process=[len(w.processed()) for w in team],
        duplicates=len(processed) - len(per_msg),
        statuses=dict(statuses),
        seconds=elapsed,
    )
    assert set(per_msg) == set(ids) and set(per_msg.values()) == {1}
    assert {p.read_ct for p in processed} == {1}
    assert statuses == {"acked": len(ids)}
    assert sum(1 for w in team if w.processed()) >= 2, "the processes did not compete"


def test_four_competing_processes_with_an_injected_lease_overrun_redeliver_and_count_it(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, start_worker: Callable[[dict[str, Any]], Worker]
) -> None:
    """Four consumer processes (4 handler threads each), vt 1 s; every 100th message takes
    2.5 s on its first delivery (a lease overrun). Each of those is redelivered (read_ct >= 2)
    while the first handler still runs, redeliveries are counted (a message that waited
    behind them past its 1 s lease is redelivered too), each delivery is processed at most
    once, and no message is lost."""
    team, ids, elapsed = _run_competing(
        pgmq_dsn,
        pgmq,
        pgmq_queue,
        start_worker,
        1000,
        {
            "vt": 1,
            "batch_size": 5,
            "max_in_flight": 10,
            "work": 0.002,
            "slow_every": 100,
            "slow_seconds": 2.5,
            "concurrency": 4,
        },
    )
    processed = [p for w in team for p in w.processed()]
    per_msg = Counter(p.msg_id for p in processed)
    redelivered = [p for p in processed if p.read_ct >= 2]
    slow = {p.msg_id for p in processed if p.n % 100 == 0}
    figure(
        "competing_lease_overrun",
        messages=len(ids),
        overrunning=len(slow),
        redeliveries=len(redelivered),
        redelivered_slow=len({p.msg_id for p in redelivered} & slow),
        redelivered_collateral=len({p.msg_id for p in redelivered} - slow),
        statuses=dict(sum((w.statuses() for w in team), Counter[str]())),
        seconds=elapsed,
    )
    assert set(per_msg) == set(ids), "a message was lost"
    assert slow <= {p.msg_id for p in redelivered}, "an overrunning message was not redelivered"
    deliveries = Counter((p.msg_id, p.read_ct) for p in processed)
    assert set(deliveries.values()) == {1}, "one delivery was processed twice"
    assert len(processed) - len(per_msg) <= len(redelivered)
