"""read_queue consumption modes (poll, notification, hybrid) against a real PostgreSQL.

Latencies are measured from the moment ``send`` returned (the insert committed) to the
moment ``on_next`` ran; the figures are printed (``pytest -rP``) so they can be reported.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from _support import WAIT, Subscribe, source_of, terminate, wait_until

import rx_pgmq
from rx_pgmq.client import PGMQ

# -- helpers ----------------------------------------------------------------------------


def started(source: rx_pgmq.QueueSource) -> None:
    """Wait until the first read (made when the subscription starts) has finished."""
    assert wait_until(lambda: source.stats.reads >= 1), "the consumer never read"


def send_and_time(pgmq: PGMQ, queue: str, body: Any = None) -> float:
    """Send one message; return ``time.monotonic()`` right after the send committed."""
    pgmq.send(queue, body if body is not None else {"x": 1})
    return time.monotonic()


def take_down(dsn: str, listener: rx_pgmq.Listener) -> None:
    """Terminate the listener's backend and wait until the listener noticed."""
    pid = listener.backend_pid
    assert pid is not None
    terminate(dsn, pid)
    assert wait_until(lambda: listener.backend_pid is None), "listener did not notice"


# -- poll mode --------------------------------------------------------------------------


def test_poll_mode_reads_once_per_interval_while_idle_and_picks_up_a_new_message_within_interval(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """Poll mode: an idle queue costs ~one read per read_interval (no spinning), and a
    message sent to it is delivered within read_interval + 0.5 s."""
    source = source_of(pgmq_dsn, pgmq_queue, read_interval=1.0)
    sink = subscribe(source)
    started(source)
    before = source.stats.reads
    threading.Event().wait(3.2)  # measurement window, idle queue
    idle_reads = source.stats.reads - before
    print(f"poll mode: {idle_reads} reads in 3.2 s of idle with read_interval=1.0")
    assert 2 <= idle_reads <= 5, f"{idle_reads} reads in 3 s with read_interval=1 s"
    assert source.stats.empty_reads == source.stats.reads

    sent_at = send_and_time(pgmq, pgmq_queue)
    assert sink.wait_for(1, timeout=1.0 + 0.5 + 1.0), "message not delivered"
    latency = sink.arrived[0] - sent_at
    print(f"poll mode pickup latency: {latency * 1000:.0f} ms (read_interval 1000 ms)")
    assert latency <= 1.0 + 0.5
    assert sink.errors == []


# -- notification mode ------------------------------------------------------------------


def test_notification_mode_delivers_fast_without_any_polling(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """Notification mode (listener, read_interval=None): an idle consumer issues no reads
    at all, yet a sent message is delivered in well under 100 ms (bound 500 ms) because the
    insert notification wakes the reader."""
    pgmq.enable_notify(pgmq_queue, throttle_ms=0)
    source = source_of(pgmq_dsn, pgmq_queue, read_interval=None, listener=True)
    sink = subscribe(source)
    started(source)
    before = source.stats.reads
    threading.Event().wait(1.0)  # idle: polling is off, so no read may happen
    assert source.stats.reads == before, "notification mode polled an idle queue"

    latencies = []
    for i in range(5):
        sent_at = send_and_time(pgmq, pgmq_queue, {"i": i})
        assert sink.wait_for(i + 1, timeout=2.0), f"message {i} not delivered"
        latencies.append(max(0.0, sink.arrived[i] - sent_at))
        sink.messages[i].settle()
    ms = [round(x * 1000, 1) for x in latencies]
    print(f"notification mode latencies (ms): {ms}, median {statistics.median(ms)}")
    assert source.stats.notifications >= 5
    assert statistics.median(latencies) < 0.1
    assert max(latencies) < 0.5
    assert sink.errors == []


def test_notification_mode_drains_a_backlog_while_reads_come_back_full(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """Notification mode: 25 messages inserted at once (one notification) are all read,
    by reads of 10, 10 and 5 (the short read ends the drain), without any polling."""
    pgmq.enable_notify(pgmq_queue, throttle_ms=0)
    source = source_of(pgmq_dsn, pgmq_queue, read_interval=None, listener=True)
    sink = subscribe(source)
    started(source)
    before = source.stats.reads
    pgmq.send_batch(pgmq_queue, [{"i": i} for i in range(25)])
    assert sink.wait_for(25)
    threading.Event().wait(0.5)
    assert len(sink.messages) == 25
    assert source.stats.reads - before == 3
    assert source.stats.empty_reads == 1  # only the first read, on the empty queue


# -- hybrid mode ------------------------------------------------------------------------


def test_hybrid_mode_polls_up_a_message_whose_notification_never_came(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """Hybrid: with notifications disabled on the queue after subscribing (so the insert
    sends none), the message still arrives within read_interval (+0.75 s) by polling."""
    pgmq.enable_notify(pgmq_queue, throttle_ms=0)
    source = source_of(pgmq_dsn, pgmq_queue, read_interval=1.0, listener=True)
    sink = subscribe(source)
    started(source)
    pgmq.disable_notify(pgmq_queue)
    sent_at = send_and_time(pgmq, pgmq_queue)
    assert sink.wait_for(1, timeout=5.0)
    latency = sink.arrived[0] - sent_at
    print(f"hybrid, notifications off: delivered after {latency * 1000:.0f} ms")
    assert latency <= 1.0 + 0.75
    assert source.stats.notifications == 0


def test_hybrid_mode_recovers_a_message_sent_while_the_listener_connection_was_down(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """Hybrid: the listener's backend is terminated and the listener waits 5 s before
    reconnecting; a message sent meanwhile (its notification is lost) is delivered within
    read_interval (+0.75 s) by the poll, before the listener is back."""
    pgmq.enable_notify(pgmq_queue, throttle_ms=0)
    with rx_pgmq.Listener(pgmq_dsn, reconnect_initial=5.0, reconnect_max=5.0) as listener:
        source = source_of(pgmq_dsn, pgmq_queue, read_interval=1.0, listener=listener)
        sink = subscribe(source)
        started(source)
        take_down(pgmq_dsn, listener)
        sent_at = send_and_time(pgmq, pgmq_queue)
        assert sink.wait_for(1, timeout=5.0)
        latency = sink.arrived[0] - sent_at
        print(f"hybrid, listener down: delivered after {latency * 1000:.0f} ms")
        assert latency <= 1.0 + 0.75
        assert listener.reconnects == 0, "delivered by the reconnect, not by the poll"
        assert source.stats.notifications == 0
        assert sink.errors == []


def test_hybrid_listener_reconnect_wakes_the_consumer(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """A message sent while the listener is down, in a notification-only consumer, is
    read when the listener reconnects (its "reconnected" event wakes the consumer)."""
    pgmq.enable_notify(pgmq_queue, throttle_ms=0)
    with rx_pgmq.Listener(pgmq_dsn, reconnect_initial=1.0, reconnect_max=1.0) as listener:
        source = source_of(pgmq_dsn, pgmq_queue, read_interval=None, listener=listener)
        sink = subscribe(source)
        started(source)
        take_down(pgmq_dsn, listener)
        pgmq.send(pgmq_queue, {"x": 1})
        assert sink.wait_for(1, timeout=WAIT), "not read after the listener reconnected"
        assert listener.reconnects >= 1
        assert source.stats.notifications == 0


# -- throttle catch-up ------------------------------------------------------------------


def test_throttle_catch_up_read_delivers_an_insert_the_throttle_swallowed(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, subscribe: Subscribe
) -> None:
    """With throttle_ms=1000 and no polling, a second message sent inside the throttle
    window sends no notification, yet is delivered by the catch-up read within
    throttle + 0.5 s."""
    pgmq.enable_notify(pgmq_queue, throttle_ms=1000)
    source = source_of(pgmq_dsn, pgmq_queue, read_interval=None, listener=True)
    sink = subscribe(source)
    started(source)
    pgmq.send(pgmq_queue, {"n": 1})
    assert sink.wait_for(1, timeout=2.0), "first message (notified) not delivered"
    sent_at = send_and_time(pgmq, pgmq_queue, {"n": 2})
    assert sink.wait_for(2, timeout=5.0), "throttled message never delivered"
    latency = sink.arrived[1] - sent_at
    print(f"throttle catch-up: second message after {latency * 1000:.0f} ms (throttle 1000)")
    assert latency <= 1.0 + 0.5
    assert [m.body["n"] for m in sink.messages] == [1, 2]
    assert source.stats.notifications == 1, "the second insert was not swallowed"
