"""Acks across an outage (issue 14 item 10, scenario 11 of RELIABILITY.md).

Pending acks are retried while their messages' leases can still be valid, so an outage
shorter than the visibility timeout reprocesses nothing; the retry waits only its short
backoff step (not ``ack_max_age`` again), so the first ack commits soon after the server
is back. Each test runs a private embedded PostgreSQL that it stops and starts, and prints
its figures (``FIGURE ...``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from faults import Run, figure, query, queue_rows, running
from test_faults_outages import numbered_queue, own_server, restart

import rx_pgmq
from rx_pgmq import Message, embedded
from rx_pgmq import operators as pgops

pytestmark = pytest.mark.faults

WAIT = 30.0


@pytest.fixture
def run() -> Iterator[Run]:
    yield from running()


@pytest.fixture
def private_server() -> Iterator[embedded.EmbeddedServer]:
    """A throwaway embedded PostgreSQL of its own (this test stops and starts it)."""
    yield from own_server(durable=False)


@pytest.mark.parametrize("ack_max_age", [0.005, 3.0], ids=["max_age_5ms", "max_age_3s"])
def test_acks_pending_across_a_10s_outage_commit_after_the_restart_without_reprocessing(
    private_server: embedded.EmbeddedServer, run: Run, ack_max_age: float
) -> None:
    """#14 item 10: 150 messages are read (max_in_flight 200); the server is stopped,
    then they are processed, so their acks fail, and it is started again 10 s later. The
    acks are retried while the leases (visibility_timeout 30 s) last: after the restart
    they commit (all acked, each message processed once with read_ct 1, the queue ends
    empty), and the first one commits within 0.5 s of the server accepting connections
    again (asserted with room: 1.0 s). Before the fix the acks were given up after 8 tries
    (about 7 s; max_age_5ms: all unacked, to be processed again), and a retried flush
    waited ack_max_age again (max_age_3s: up to 3 s after the restart)."""
    dsn = private_server.dsn
    queue, n_messages = "ack_outage_q", 150
    ids = numbered_queue(dsn, queue, n_messages)
    processed: list[tuple[int, int]] = []
    go = threading.Event()
    read_all = threading.Event()

    def handle(message: Message) -> None:
        read_all.set()
        assert go.wait(WAIT)  # the first message waits for the stop; the rest queue up
        processed.append((message.msg_id, message.read_ct))

    source = rx_pgmq.read_queue(
        dsn,
        queue,
        visibility_timeout=30,
        batch_size=n_messages,  # one read takes them all
        max_in_flight=200,
        read_interval=0.2,
        ack_batch_size=10_000,
        ack_max_age=ack_max_age,
    )
    records, _ = run(source.pipe(pgops.process(handle), pgops.ack()))
    assert read_all.wait(WAIT)
    went_down, back = restart(private_server, then=go.set, down=10.0)
    # The server accepts connections a little before restart() sees it: measure from its
    # postmaster's start (wall clock), which is earlier still (a bound on the delay).
    started = float(query(dsn, "SELECT extract(epoch FROM pg_postmaster_start_time())")[0][0])
    to_wall = time.time() - time.monotonic()
    assert records.wait_count(n_messages, WAIT), f"{records.count()} of {n_messages} settled"
    with records.cond:
        before = sum(1 for t, _s in records.settled if t < went_down)
        acks = sorted(t + to_wall - started for t, _s in records.settled)
    statuses = Counter(s.status for s in records.records())
    per_msg = Counter(i for i, _rc in processed)
    figure(
        "acks_across_outage",
        ack_max_age=ack_max_age,
        messages=n_messages,
        settled_before_stop=before,
        downtime=back - went_down,
        first_ack_after_server_start=acks[0],
        last_ack_after_server_start=acks[-1],
        reconnects=source.stats.reconnects,
        statuses=dict(statuses),
        duplicates=sum(per_msg.values()) - len(per_msg),
    )
    assert before == 0
    assert statuses == {"acked": n_messages}
    assert set(per_msg) == set(ids) and set(per_msg.values()) == {1}
    assert {rc for _i, rc in processed} == {1}
    assert queue_rows(dsn, queue) == {}
    assert 0 < acks[0] <= 1.0, f"first ack {acks[0]:.3f}s after the server started"


@pytest.mark.parametrize("fenced", [False, True], ids=["unfenced", "fenced"])
def test_acks_pending_past_their_lease_are_given_up_unless_fenced(
    private_server: embedded.EmbeddedServer, run: Run, fenced: bool
) -> None:
    """#14 item 10: visibility_timeout 3 s, the server down for 6 s while 20 acks wait.
    Unfenced, an ack is retried only while its message's lease can be valid: each is
    reported unacked about when its lease ends (before the server is back), the messages
    are read again after the restart (read_ct 2) and acked then. Fenced, the acks are
    retried through the outage and the fence decides: each first delivery ends acked or
    lost_lease (if read again first), and every message is acked exactly once."""
    dsn = private_server.dsn
    queue, n_messages, vt = "lease_outage_q", 20, 3
    ids = numbered_queue(dsn, queue, n_messages)
    processed: list[tuple[int, int]] = []
    go, read_all = threading.Event(), threading.Event()

    def handle(message: Message) -> None:
        read_all.set()
        assert go.wait(WAIT)
        processed.append((message.msg_id, message.read_ct))

    source = rx_pgmq.read_queue(
        dsn,
        queue,
        visibility_timeout=vt,
        batch_size=n_messages,
        max_in_flight=50,
        read_interval=0.2,
        fenced=fenced,
    )
    records, _ = run(source.pipe(pgops.process(handle), pgops.ack()))
    assert read_all.wait(WAIT)
    read_at = time.monotonic()
    went_down, back = restart(private_server, then=go.set, down=6.0)
    started = float(query(dsn, "SELECT extract(epoch FROM pg_postmaster_start_time())")[0][0])
    up = started - (time.time() - time.monotonic())  # the server's start, monotonic
    assert records.wait(
        lambda rs: (
            sum(1 for r in rs if r.status in ("acked", "lost_lease")) >= n_messages
            and sum(1 for r in rs if r.status == "acked") >= n_messages
        ),
        WAIT,
    ), records.records()
    with records.cond:
        first = [(t, s) for t, s in records.settled if s.message.read_ct == 1]
    first_statuses = Counter(s.status for _t, s in first)
    acked = Counter(s.message.msg_id for s in records.records() if s.status == "acked")
    given_up = [t - read_at for t, s in first if s.status == "unacked"]
    figure(
        "acks_past_their_lease",
        fenced=fenced,
        visibility_timeout=vt,
        downtime=back - went_down,
        first_delivery_statuses=dict(first_statuses),
        unacked_after_read=f"{min(given_up):.2f}-{max(given_up):.2f}s" if given_up else None,
        processed_twice=len(processed) - len({i for i, _rc in processed}),
    )
    assert len(first) == n_messages
    assert set(acked) == set(ids) and set(acked.values()) == {1}
    assert queue_rows(dsn, queue) == {}
    if fenced:
        assert set(first_statuses) <= {"acked", "lost_lease"}
        assert all(t > up for t, _s in first)  # retried through the outage
    else:
        assert first_statuses == {"unacked": n_messages}
        assert all(t < up for t, _s in first)  # given up while the server was down
        assert all(vt - 0.5 <= g <= vt + 1.0 for g in given_up), given_up
