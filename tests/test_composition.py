"""Ordinary RxPY operators in a pipeline: every message ends settled or released (#14).

Item 1: a message the pipeline drops without settling it (``ops.filter``, ``take`` inside
a group, an exception inside ``ops.map``) is released once nothing references it, with one
WARNING per subscription; ``pgops.skip`` settles what it drops; a pipeline that never
settles gets one WARNING once its window stayed full for a visibility timeout.
"""

from __future__ import annotations

import copy
import logging
import pickle
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import reactivex as rx
from _support import WAIT, Conn, Sink, Subscribe, count, source_of, wait_until, watch
from reactivex import GroupedObservable, Observable
from reactivex import operators as ops

from rx_pgmq import operators as pgops
from rx_pgmq._values._outcome import Settled
from rx_pgmq.actions import Archive, Delete
from rx_pgmq.client import PGMQ
from rx_pgmq.message import Message

DROPPED = "dropped by the pipeline without being settled"


def _i(m: Message) -> int:
    return int(m.body["i"])


def _even_or_redelivered(m: Message) -> bool:
    return _i(m) % 2 == 0 or m.read_ct > 1


def _first_of_group(group: GroupedObservable[Any, Message]) -> Observable[Message]:
    return group.pipe(ops.take(1))


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_filter_before_process_and_ack_does_not_stall_and_releases_what_it_drops(
    pgmq_dsn: str,
    pgmq: PGMQ,
    pgmq_queue: str,
    subscribe: Subscribe,
    db: Conn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """#14 item 1: ops.filter drops the odd messages of 40 on their first delivery (a
    condition that changed by the next one): each is released at once and its room
    returns, so the window (5) never fills up with dropped messages; the dropped ones are
    visible again at once (not after their 30 s visibility timeout) and pass on their
    second delivery: all 40 are processed and acked; one WARNING names the first."""
    caplog.set_level(logging.WARNING, logger="rx_pgmq")
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(40)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=5, batch_size=5)
    sink = subscribe(
        source.pipe(
            ops.filter(_even_or_redelivered),
            pgops.process(_i),
            pgops.ack(),
        )
    )
    records: list[Settled] = sink.collect(40)
    assert sorted(r.outcome.value for r in records) == list(range(40))
    assert all(r.status == "acked" for r in records)
    assert {r.outcome.message.read_ct for r in records if r.outcome.value % 2} == {2}
    assert wait_until(lambda: count(db, pgmq_queue) == 0)
    assert source.stats.dropped == 20
    assert len(_warnings(caplog, DROPPED)) == 1


def test_take_inside_groups_releases_the_rest_of_each_group_and_keeps_reading(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """#14 item 1: take(1) per group after read-ahead (group_by + flat_map) drops the other
    messages of each group while the subscription goes on: they are released and their
    room returns, so all 6 groups get their first message through a window of 4."""
    pgmq.send_batch(pgmq_queue, [{"i": i, "k": i % 6} for i in range(60)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=4, batch_size=4)
    sink = subscribe(
        source.pipe(
            ops.group_by(lambda m: m.body["k"]),
            ops.flat_map(_first_of_group),
            pgops.ack(),
        )
    )
    records: list[Settled] = sink.collect(6)
    assert sorted(r.outcome.message.body["k"] for r in records) == list(range(6))
    assert all(r.status == "acked" for r in records)
    sink.subscription.dispose()
    assert source.wait_closed(WAIT)
    assert count(db, pgmq_queue) == 54
    assert count(db, pgmq_queue, "vt > clock_timestamp()") == 0


def test_an_exception_in_map_caught_per_message_releases_that_message(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """#14 item 1 (error path): ops.map raises for every third message on its first
    delivery (a transient error) and the error is caught per message (flat_map + catch):
    the failed messages are dropped unsettled and released at once, the stream goes on
    through a window of 3, and each failed one passes on its second delivery."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(30)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=3, batch_size=3)

    def check(m: Message) -> Message:
        if _i(m) % 3 == 0 and m.read_ct == 1:
            raise ValueError(f"bad message {_i(m)}")
        return m

    def caught(m: Message) -> Observable[Message]:
        return rx.just(m).pipe(ops.map(check), ops.catch(rx.empty()))

    sink = subscribe(
        source.pipe(
            ops.flat_map(caught),
            pgops.ack(),
        )
    )
    records: list[Settled] = sink.collect(30)
    assert sorted(_i(r.outcome.message) for r in records) == list(range(30))
    assert {r.outcome.message.read_ct for r in records if _i(r.outcome.message) % 3 == 0} == {2}
    assert wait_until(lambda: count(db, pgmq_queue) == 0)


def test_a_subscriber_ignoring_messages_gets_one_warning_and_each_is_released_at_once(
    pgmq_dsn: str,
    pgmq: PGMQ,
    pgmq_queue: str,
    db: Conn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """#14 item 1: a subscriber that ignores (drops) every message: each is released right
    after its delivery (read again and again, read_ct growing), not after its 30 s
    visibility timeout, and the WARNING naming the fix is logged exactly once."""
    caplog.set_level(logging.WARNING, logger="rx_pgmq")
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(3)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=3)
    seen: list[int] = []
    sub = source.subscribe(lambda m: seen.append(m.read_ct))
    try:
        assert wait_until(lambda: len(seen) >= 15), "dropped messages were not released"
        assert max(seen) >= 5
    finally:
        sub.dispose()
    assert source.wait_closed(WAIT)
    found = _warnings(caplog, DROPPED)
    assert len(found) == 1
    assert "pgops.skip" in found[0].getMessage()
    assert count(db, pgmq_queue, "vt > clock_timestamp()") == 0


def test_skip_settles_what_it_drops_with_its_action_and_logs_nothing(
    pgmq_dsn: str,
    pgmq: PGMQ,
    pgmq_queue: str,
    subscribe: Subscribe,
    db: Conn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """#14 item 1: pgops.skip(predicate, action) settles each message it drops with its
    action (Archive here: archived, not released) and passes the others on; no WARNING."""
    caplog.set_level(logging.WARNING, logger="rx_pgmq")
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(20)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=4, batch_size=4)
    sink = subscribe(
        source.pipe(
            pgops.skip(lambda m: _i(m) % 2 == 1, action=Archive()),
            pgops.process(_i),
            pgops.ack(on_success=Delete()),
        )
    )
    records: list[Settled] = sink.collect(10)
    assert sorted(r.outcome.value for r in records) == list(range(0, 20, 2))
    assert wait_until(lambda: count(db, pgmq_queue, prefix="a") == 10)
    assert wait_until(lambda: count(db, pgmq_queue) == 0)
    assert source.stats.dropped == 0
    assert _warnings(caplog, DROPPED) == []


def test_skip_default_action_nothing_keeps_the_message_hidden_and_returns_its_room(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """#14 item 1: pgops.skip's default action is Nothing(): a skipped message stays hidden
    until its visibility timeout (not released) and its room returns (window of 2, 6
    skipped, the 2 others still arrive)."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(8)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=2, batch_size=2)
    sink = subscribe(source.pipe(pgops.skip(lambda m: _i(m) < 6), pgops.ack()))
    records: list[Settled] = sink.collect(2)
    assert sorted(_i(r.outcome.message) for r in records) == [6, 7]
    assert count(db, pgmq_queue) == 6
    assert count(db, pgmq_queue, "vt > clock_timestamp() + interval '20 seconds'") == 6


def test_skip_rejects_a_non_action_and_a_non_callable() -> None:
    """#14 item 1: pgops.skip checks its arguments when the operator is built."""
    from rx_pgmq.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="action"):
        pgops.skip(lambda m: True, action=Delete)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="predicate"):
        pgops.skip(3)  # type: ignore[arg-type]


def test_a_pipeline_without_ack_gets_one_warning_once_the_window_stays_full(
    pgmq_dsn: str,
    pgmq: PGMQ,
    pgmq_queue: str,
    subscribe: Subscribe,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """#14 item 1: a subscriber keeps every message and never settles one: once the window
    (3) stayed full with nothing settled for visibility_timeout (1 s), one WARNING says to
    ack; it is not repeated."""
    caplog.set_level(logging.WARNING, logger="rx_pgmq")
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(10)])
    source = source_of(pgmq_dsn, pgmq_queue, visibility_timeout=1, max_in_flight=3)
    kept: list[Any] = []
    subscribe(source, kept.append)
    text = "none was settled"
    assert wait_until(lambda: len(_warnings(caplog, text)) == 1, timeout=WAIT)
    watch(1.5)
    assert len(_warnings(caplog, text)) == 1
    assert len(kept) == 3


def test_dropping_with_a_live_reference_elsewhere_does_not_release(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """#14 item 1: a message still referenced (kept by the subscriber) is not released
    while the subscription runs: only unreferenced messages are."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(2)])
    source = source_of(pgmq_dsn, pgmq_queue)
    kept: list[Message] = []
    subscribe(source, kept.append)
    assert wait_until(lambda: len(kept) == 2)
    watch(0.5)
    assert count(db, pgmq_queue, "vt > clock_timestamp()") == 2
    assert source.stats.dropped == 0


def test_a_dropped_copy_of_a_kept_message_does_not_release_it(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn
) -> None:
    """#14 item 1: only the emitted message tells its consumer it was dropped; copies
    (copy.copy, copy.deepcopy, dataclasses.replace, pickle) freed while the original is
    kept release nothing, and settling the original still deletes it."""
    pgmq.send(pgmq_queue, {"i": 0})
    source = source_of(pgmq_dsn, pgmq_queue)
    kept: list[Message] = []

    def copy_and_drop(m: Message) -> None:
        kept.append(m)
        plain = replace(m, _acknowledger=None)
        copies = [copy.copy(m), copy.deepcopy(plain), replace(m), pickle.loads(pickle.dumps(plain))]
        assert all(c.msg_id == m.msg_id for c in copies)
        del copies  # every copy freed here, the original kept

    subscribe(source, copy_and_drop)
    assert wait_until(lambda: len(kept) == 1)
    watch(0.3)
    assert source.stats.dropped == 0
    assert count(db, pgmq_queue, "vt > clock_timestamp()") == 1
    assert kept[0].settle(Delete()).result(WAIT) == "acked"
    assert count(db, pgmq_queue) == 0


# -- item 2: terminating operators -------------------------------------------------------


def _first_four(source: Observable[Message], kind: str) -> Observable[Message]:
    if kind == "take":
        return source.pipe(ops.take(4))
    if kind == "take_until":
        stop = rx.subject.Subject[int]()
        count_ = [0]

        def on(m: Message) -> None:
            count_[0] += 1
            if count_[0] == 5:  # the 5th is not let through: it is dropped
                stop.on_next(1)

        return source.pipe(ops.take_until(stop), ops.do_action(on))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["take", "take_until"])
def test_a_terminating_operator_lets_running_handlers_ack(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn, kind: str
) -> None:
    """#14 item 2: take(4) / take_until upstream of process(max_concurrency=4) ends the
    subscription while the 4 handlers (0.5 s each) still run: reading stops at once, the
    handlers' results are acked (not 'unacked'), their Settled records arrive, the
    stream completes, and nothing is released to be processed again."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(20)])
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=10)

    def slow(m: Message) -> int:
        threading.Event().wait(0.5)
        return _i(m)

    sink = subscribe(
        _first_four(source, kind).pipe(pgops.process(slow, max_concurrency=4), pgops.ack())
    )
    assert sink.wait_completed()
    records: list[Settled] = sink.messages
    assert [r.status for r in records] == ["acked"] * 4
    assert source.wait_closed(WAIT)
    assert count(db, pgmq_queue) == 16
    assert count(db, pgmq_queue, "vt > clock_timestamp()") == 0  # the read-ahead released
    assert source.stats.settled.get("delete") == 4


@pytest.mark.parametrize("kind", ["timeout", "first"])
def test_an_error_ending_or_first_upstream_lets_running_handlers_ack(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe, db: Conn, kind: str
) -> None:
    """#14 item 2: ops.timeout (the stream ends with an error while 4 handlers of 2 s run)
    and ops.first (it completes while its one handler runs) upstream of
    process(max_concurrency=4): the running handlers' results are acked and their Settled
    records arrive before the terminal event (an upstream error waits for the handlers),
    and nothing they handled is released to be processed again."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(4)])
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=10)
    upstream = source.pipe(ops.timeout(1.0)) if kind == "timeout" else source.pipe(ops.first())

    def slow(m: Message) -> int:
        threading.Event().wait(2.0)
        return _i(m)

    sink = subscribe(upstream.pipe(pgops.process(slow, max_concurrency=4), pgops.ack()))
    expected = 4 if kind == "timeout" else 1
    if kind == "timeout":
        assert sink.wait_error()
        assert str(sink.errors[0]) == "Timeout"  # RxPY's timeout error
    else:
        assert sink.wait_completed()
    records: list[Settled] = sink.messages
    assert [r.status for r in records] == ["acked"] * expected
    assert source.wait_closed(WAIT)
    assert count(db, pgmq_queue) == 4 - expected
    assert source.stats.settled.get("delete") == expected


# -- item 4: dispose and exit ------------------------------------------------------------


def test_dispose_returns_at_once_while_a_handler_runs_and_the_close_follows(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn
) -> None:
    """#14 item 4: dispose() from another thread returns at once (bound 0.5 s for a loaded
    machine; 50 ms is the goal) while an inline handler still runs on the reader thread;
    the close goes on in the background and waits for the handler (its outcome goes
    nowhere: the subscriber left, so its message is released with the rest), then
    wait_closed reports it."""
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(5)])
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=5, close_timeout=10)
    started, finish = threading.Event(), threading.Event()

    def handler(m: Message) -> int:
        started.set()
        finish.wait(WAIT)
        return _i(m)

    sink = Sink[Settled]()
    subscription = source.pipe(pgops.process(handler), pgops.ack()).subscribe(sink)
    assert started.wait(WAIT)
    t0 = time.monotonic()
    subscription.dispose()
    took = time.monotonic() - t0
    assert took < 0.5, f"dispose took {took:.3f} s"
    assert not source.wait_closed(0.2)  # still closing: the handler runs
    finish.set()
    assert source.wait_closed(WAIT)
    assert count(db, pgmq_queue) == 5
    assert count(db, pgmq_queue, "vt > clock_timestamp()") == 0


_SCRIPT = """
import sys
import rx_pgmq
from reactivex import operators as ops

dsn, queue, how = sys.argv[1:]
source = rx_pgmq.read_queue(dsn, queue, visibility_timeout=60, read_interval=0.05, batch_size=10)
if how == "run":
    source.pipe(ops.take(3)).run()
else:
    import threading
    seen = threading.Semaphore(0)
    subscription = source.subscribe(lambda m: seen.release())
    for _ in range(5):
        seen.acquire(timeout=30)
    subscription.dispose()
print("returned", flush=True)
"""


@pytest.mark.parametrize("how", ["run", "dispose"])
def test_a_script_ending_right_after_run_or_dispose_leaves_no_message_hidden(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn, tmp_path: Path, how: str
) -> None:
    """#14 item 4: a script that returns right after .run() (take(3) of a read of 10) or
    after dispose() releases its messages before the interpreter exits (a non-daemon
    thread waits for the close): every message read is visible again at once, none stays
    hidden for its 60 s visibility timeout. Run 3 times (it failed about 1 run in 3)."""
    script = tmp_path / "consume.py"
    script.write_text(_SCRIPT)
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(10)])
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, str(script), pgmq_dsn, pgmq_queue, how],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "returned" in done.stdout
        assert count(db, pgmq_queue, "read_ct > 0") > 0
        hidden = count(db, pgmq_queue, "vt > clock_timestamp()")
        assert hidden == 0, f"{hidden} messages left hidden; stderr: {done.stderr}"
