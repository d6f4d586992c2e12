"""Leases: overruns, the visibility heartbeat, fenced acks and the in-flight bound (issue 7,
scenarios 6 and 7), on a real PostgreSQL. Each test prints its figures (``FIGURE ...``)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from faults import Run, figure, query, queue_rows, running, send_numbered, table, wait_until
from psycopg import sql

import rx_pgmq
from rx_pgmq import Message, failed
from rx_pgmq import operators as pgops
from rx_pgmq.client import PGMQ

pytestmark = pytest.mark.faults

WAIT = 20.0


@pytest.fixture
def run() -> Iterator[Run]:
    yield from running()


def test_processing_longer_than_the_lease_with_extend_visibility_is_never_redelivered(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, run: Run
) -> None:
    """Two competing consumers with vt 2 s and extend_visibility=True process 20 messages
    that take 4.5 s each (more than two leases): the heartbeat extends them, so no message
    is redelivered (every read_ct is 1, each processed once) and all are acked."""
    n_messages, work = 20, 4.5
    ids = send_numbered(pgmq, pgmq_queue, n_messages)
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def handle(message: Message) -> None:
        with lock:
            seen.append((message.msg_id, message.read_ct))
        time.sleep(work)

    sources = [
        rx_pgmq.read_queue(
            pgmq_dsn,
            pgmq_queue,
            visibility_timeout=2,
            extend_visibility=True,
            batch_size=10,
            max_in_flight=10,
            read_interval=0.2,
        )
        for _ in range(2)
    ]
    started = time.monotonic()
    pipelines = [
        run(src.pipe(pgops.process(handle, max_concurrency=10), pgops.ack())) for src in sources
    ]
    assert wait_until(lambda: sum(r.count() for r, _ in pipelines) >= n_messages, 30.0)
    elapsed = time.monotonic() - started
    records = [s for r, _ in pipelines for s in r.records()]
    extended = sum(src.stats.extended for src in sources)
    redeliveries = sum(1 for _id, read_ct in seen if read_ct > 1)
    figure(
        "lease_overrun_extended",
        messages=n_messages,
        vt=2,
        work_seconds=work,
        redeliveries=redeliveries,
        extensions=extended,
        statuses=dict(Counter(s.status for s in records)),
        seconds=elapsed,
    )
    assert redeliveries == 0
    assert sorted(i for i, _ in seen) == sorted(ids)
    assert Counter(s.status for s in records) == {"acked": n_messages}
    assert extended >= n_messages  # each was extended at least once
    assert queue_rows(pgmq_dsn, pgmq_queue) == {}


def _held_then_stolen(
    pgmq_dsn: str, pgmq: PGMQ, queue: str, run: Run, *, fenced: bool
) -> tuple[list[rx_pgmq.Settled], dict[int, Message]]:
    """A consumer (vt 1 s) holds three messages past their lease; meanwhile another reader
    (``PGMQ.read``) takes two of them over. Then the consumer acks all three: n=0 succeeded
    (Delete), n=1 failed (Archive), n=2 (Delete) is a control nobody else read."""
    ids = send_numbered(pgmq, queue, 3)
    by_n = {n: msg_id for msg_id, n in ids.items()}
    arrived = threading.Barrier(4, timeout=WAIT)
    release = threading.Event()

    def handle(message: Message) -> rx_pgmq.Outcome | None:
        arrived.wait()
        assert release.wait(WAIT)
        if message.body["n"] == 1:
            return failed(message, "fails on purpose")
        return None

    source = rx_pgmq.read_queue(
        pgmq_dsn, queue, visibility_timeout=1, fenced=fenced, batch_size=3, read_interval=5.0
    )
    records, _ = run(source.pipe(pgops.process(handle, max_concurrency=3), pgops.ack()))
    arrived.wait()  # all three are being processed
    # The control must not come back to this consumer itself once acks free its room:
    # a longer lease (set_vt leaves read_ct alone, so its fenced ack still matches).
    pgmq.set_vt(queue, by_n[2], 60)
    stolen: dict[int, Message] = {}
    deadline = time.monotonic() + WAIT
    while len(stolen) < 2 and time.monotonic() < deadline:  # their 1 s lease runs out
        for n in (0, 1):
            for m in pgmq.read(queue, vt=60, qty=1, conditional={"n": n}):
                stolen[m.msg_id] = m
        time.sleep(0.1)
    assert sorted(stolen) == sorted([by_n[0], by_n[1]])
    release.set()
    assert records.wait_count(3, WAIT)
    return records.records(), stolen


def test_fenced_acks_leave_a_message_whose_lease_passed_to_another_reader_and_say_so(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, run: Run
) -> None:
    """fenced=True: a Delete or Archive for a message another reader has re-read (its
    read_ct changed) touches nothing: the message stays in the queue with the other
    reader's read_ct, nothing is archived, and the Settled status is "lost_lease"."""
    records, stolen = _held_then_stolen(pgmq_dsn, pgmq, pgmq_queue, run, fenced=True)
    by_id = {r.message.msg_id: r for r in records}
    left = queue_rows(pgmq_dsn, pgmq_queue)
    figure(
        "fenced_acks",
        statuses={r.message.body["n"]: r.status for r in records},
        left_in_queue=len(left),
        archived=len(queue_rows(pgmq_dsn, pgmq_queue, "a")),
    )
    for msg_id, theirs in stolen.items():
        assert by_id[msg_id].status == "lost_lease"
        assert not by_id[msg_id].acked
        assert left[msg_id] == theirs.read_ct == 2
    assert queue_rows(pgmq_dsn, pgmq_queue, "a") == {}
    (control,) = [r for r in records if r.message.msg_id not in stolen]
    assert control.status == "acked"  # lease ran out too, but nobody re-read it
    assert control.message.msg_id not in left


def test_unfenced_acks_delete_a_message_another_reader_holds(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, run: Run
) -> None:
    """Without fencing (the default) the same late acks apply: the message another reader
    holds is deleted or archived under it, and the status is "acked" (why fenced exists)."""
    records, stolen = _held_then_stolen(pgmq_dsn, pgmq, pgmq_queue, run, fenced=False)
    figure(
        "unfenced_late_acks",
        statuses={r.message.body["n"]: r.status for r in records},
        left_in_queue=len(queue_rows(pgmq_dsn, pgmq_queue)),
        archived=len(queue_rows(pgmq_dsn, pgmq_queue, "a")),
    )
    assert {r.status for r in records} == {"acked"}
    assert not set(stolen) & set(queue_rows(pgmq_dsn, pgmq_queue))


@pytest.mark.parametrize("together", [False, True], ids=["apart", "same_flush"])
@pytest.mark.parametrize("fenced", [False, True], ids=["unfenced", "fenced"])
def test_a_consumer_re_reading_a_message_it_still_holds_settles_both_and_keeps_its_window(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, run: Run, fenced: bool, together: bool
) -> None:
    """One consumer (vt 1-2 s, two handler slots) still processes a message when its lease
    runs out and reads it again itself (read_ct 2). Both deliveries are settled, whether
    their acks are flushed apart or in one batch: the first (late) ack is "acked" (unfenced)
    or "lost_lease" (fenced), the second is "acked"; the message is gone, and the demand
    window gets both credits back (in_flight 0), so the consumer keeps reading."""
    (msg_id,) = pgmq.send_batch(pgmq_queue, [{"n": 0}])
    release = threading.Event()
    read_cts: list[int] = []

    def handle(message: Message) -> None:
        read_cts.append(message.read_ct)
        if message.read_ct == 1 or together:
            assert release.wait(WAIT)

    source = rx_pgmq.read_queue(
        pgmq_dsn,
        pgmq_queue,
        visibility_timeout=2 if together else 1,  # together: both acks wait 0.3 s
        fenced=fenced,
        batch_size=1,
        max_in_flight=3 if together else 2,  # 3: never starved, so both acks wait 0.3 s
        read_interval=0.1,
        ack_max_age=0.3 if together else 0.005,
        ack_batch_size=10,
    )
    records, _ = run(source.pipe(pgops.process(handle, max_concurrency=2), pgops.ack()))
    if together:
        assert wait_until(lambda: len(read_cts) >= 2, WAIT)  # both handlers wait
    else:
        assert records.wait_count(1, WAIT)  # the second delivery, acked while the first waits
    release.set()
    assert records.wait_count(2, WAIT)
    statuses = {r.message.read_ct: r.status for r in records.records()}
    assert wait_until(lambda: source.stats.in_flight == 0, 5.0), source.stats
    later = pgmq.send(pgmq_queue, {"n": 1})
    assert records.wait_count(3, WAIT), "the consumer stopped reading"
    label = f"{'fenced' if fenced else 'unfenced'}-{'same_flush' if together else 'apart'}"
    figure(
        f"self_re_read[{label}]",
        read_cts=read_cts,
        statuses=statuses,
        ack_flushes=source.stats.ack_flushes,
        in_flight_after=source.stats.in_flight,
    )
    assert read_cts[:2] == [1, 2]
    assert statuses == {1: "lost_lease" if fenced else "acked", 2: "acked"}
    assert records.records()[2].message.msg_id == later
    assert msg_id not in queue_rows(pgmq_dsn, pgmq_queue)


def test_unsettled_messages_in_the_database_never_exceed_max_in_flight(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, run: Run
) -> None:
    """A slow consumer (max_in_flight 20, batch 7, 4 handler threads, 5-30 ms of work,
    10% failures archived) under a 600-message backlog: sampled from the database every
    100 ms, the messages read and not yet settled (read_ct > 0 and vt in the future) never
    exceed 20."""
    n_messages, window = 600, 20
    send_numbered(pgmq, pgmq_queue, n_messages)
    rng = random.Random(7)
    delays = [rng.uniform(0.005, 0.03) for _ in range(n_messages)]

    def handle(message: Message) -> None:
        n = message.body["n"]
        time.sleep(delays[n])
        if n % 10 == 0:
            raise ValueError("fails on purpose")

    samples: list[int] = []
    stop = threading.Event()
    count_in_flight = sql.SQL(
        "SELECT count(*) FROM {} WHERE read_ct > 0 AND vt > clock_timestamp()"
    ).format(table(pgmq_queue))

    def sample() -> None:
        import psycopg

        with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
            while not stop.wait(0.1):
                row = conn.execute(count_in_flight).fetchone()
                assert row is not None
                samples.append(int(row[0]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    source = rx_pgmq.read_queue(
        pgmq_dsn,
        pgmq_queue,
        visibility_timeout=30,
        batch_size=7,
        max_in_flight=window,
        read_interval=0.2,
    )
    started = time.monotonic()
    records, _ = run(source.pipe(pgops.process(handle, max_concurrency=4), pgops.ack()))
    assert records.wait_count(n_messages, 60.0), records.count()
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join(5.0)
    figure(
        "slow_consumer",
        messages=n_messages,
        max_in_flight=window,
        samples=len(samples),
        max_sampled=max(samples),
        mean_sampled=sum(samples) / len(samples),
        seconds=elapsed,
    )
    assert max(samples) <= window
    assert max(samples) >= window // 2, "the sampler never saw the consumer busy"
    assert len(samples) >= 10
    assert query(pgmq_dsn, sql.SQL("SELECT count(*) FROM {}").format(table(pgmq_queue))) == [(0,)]
