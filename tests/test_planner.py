"""ReadPlanner: when the consumer reads (poll, notification and hybrid modes).

Unit tests drive the planner directly. The virtual-time tests run a small simulated queue
(PGMQ semantics: visibility timeouts, leading-edge insert-notification throttle) and a
simulated consumer loop built from Demand + ReadPlanner + AckBatcher on a
``reactivex.testing.TestScheduler``, so every timing assertion is exact and costs no
wall-clock time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import abc
from reactivex.testing import TestScheduler

from rx_pgmq._core._ackbatch import AckBatcher, Pending
from rx_pgmq._core._demand import Demand
from rx_pgmq._core._ledger import Ledger
from rx_pgmq._core._planner import ReadNow, ReadPlanner, WaitUntil
from rx_pgmq.actions import Action, Archive, Delete, Nothing, SetVisibilityTimeout
from rx_pgmq.errors import InvalidArgument

# --------------------------------------------------------------------------------------
# Unit tests
# --------------------------------------------------------------------------------------


def test_polling_off_without_listener_is_rejected_with_a_hint() -> None:
    """read_interval=None without a listener raises InvalidArgument naming both fixes."""
    with pytest.raises(InvalidArgument) as info:
        ReadPlanner(read_interval=None, listening=False)
    assert info.value.argument == "read_interval"
    assert "listener" in str(info.value)
    assert "read_interval in seconds" in str(info.value)


@pytest.mark.parametrize("interval", [0, 0.0, -1.0, float("nan"), "5"])
def test_read_interval_must_be_a_positive_duration(interval: Any) -> None:
    """A zero, negative or non-numeric read_interval raises InvalidArgument."""
    with pytest.raises(InvalidArgument) as info:
        ReadPlanner(read_interval=interval, listening=True)
    assert info.value.argument == "read_interval"


def test_negative_throttle_is_rejected() -> None:
    """A negative throttle raises InvalidArgument('throttle')."""
    with pytest.raises(InvalidArgument) as info:
        ReadPlanner(read_interval=1.0, listening=True, throttle=-0.1)
    assert info.value.argument == "throttle"


def test_nothing_is_read_before_start() -> None:
    """Before on_start no read is wanted and nothing is scheduled."""
    planner = ReadPlanner(read_interval=5.0, listening=False)
    assert planner.next(0.0, True) == WaitUntil(None)


def test_start_reads_at_once() -> None:
    """on_start makes the very next decision a read."""
    planner = ReadPlanner(read_interval=5.0, listening=False)
    planner.on_start(0.0)
    assert planner.next(0.0, True) == ReadNow()


def test_no_read_without_demand_and_the_wanted_read_stays_pending() -> None:
    """can_read=False always waits for an event; the wanted read happens once demand is back."""
    planner = ReadPlanner(read_interval=5.0, listening=False)
    planner.on_start(0.0)
    assert planner.next(0.0, False) == WaitUntil(None)
    assert planner.next(100.0, False) == WaitUntil(None)
    assert planner.next(100.0, True) == ReadNow()


def test_poll_mode_short_read_schedules_next_poll_after_interval() -> None:
    """A short read waits read_interval from the read's end, then reads again."""
    planner = ReadPlanner(read_interval=5.0, listening=False)
    planner.on_start(0.0)
    assert planner.next(0.0, True) == ReadNow()
    planner.on_read(0.25, asked=10, got=3)
    assert planner.next(0.25, True) == WaitUntil(5.25)
    assert planner.next(5.0, True) == WaitUntil(5.25)
    assert planner.next(5.25, True) == ReadNow()


def test_full_read_drains_at_once() -> None:
    """A full read (got == asked) asks for another read immediately."""
    planner = ReadPlanner(read_interval=None, listening=True)
    planner.on_start(0.0)
    assert planner.next(0.0, True) == ReadNow()
    planner.on_read(0.0, asked=10, got=10)
    assert planner.next(0.0, True) == ReadNow()
    planner.on_read(0.0, asked=10, got=4)
    assert planner.next(0.0, True) == WaitUntil(None)


def test_notification_mode_waits_for_an_event_after_a_short_read() -> None:
    """With polling off, a short read leaves nothing scheduled (WaitUntil(None))."""
    planner = ReadPlanner(read_interval=None, listening=True)
    planner.on_start(0.0)
    planner.next(0.0, True)
    planner.on_read(0.0, asked=10, got=0)
    assert planner.next(0.0, True) == WaitUntil(None)
    assert planner.next(1e6, True) == WaitUntil(None)


@pytest.mark.parametrize(
    ("event", "listening"),
    [("on_demand", False), ("on_notification", True), ("on_reconnected", True)],
)
def test_each_event_asks_for_one_read(event: str, listening: bool) -> None:
    """New demand (poll mode), a notification and a listener reconnect each trigger a read."""
    planner = ReadPlanner(read_interval=5.0, listening=listening)
    planner.on_start(0.0)
    planner.next(0.0, True)
    planner.on_read(0.0, asked=10, got=0)
    assert planner.next(1.0, True) == WaitUntil(5.0)
    getattr(planner, event)(1.0)
    assert planner.next(1.0, True) == ReadNow()
    planner.on_read(1.0, asked=10, got=0)
    assert planner.next(1.0, True) == WaitUntil(6.0)


def test_listening_new_demand_after_a_full_read_reads() -> None:
    """While listening, demand after a full read (queue may hold more) reads at once."""
    planner = ReadPlanner(read_interval=None, listening=True)
    planner.on_start(0.0)
    planner.next(0.0, True)
    planner.on_read(0.0, asked=5, got=5)
    assert planner.next(0.0, False) == WaitUntil(None)  # window full
    planner.on_demand(1.0)
    assert planner.next(1.0, True) == ReadNow()


def test_new_demand_reads_while_listening_even_after_a_short_read() -> None:
    """Demand always reads: a settle (set_vt, Nothing, a FIFO group's head), request(n) or
    resume can make messages readable without any insert notification."""
    planner = ReadPlanner(read_interval=None, listening=True)
    planner.on_start(0.0)
    planner.next(0.0, True)
    planner.on_read(0.0, asked=10, got=1)
    assert planner.next(0.0, True) == WaitUntil(None)
    planner.on_demand(0.5)
    assert planner.next(0.5, True) == ReadNow()


def test_notifications_while_a_read_is_due_are_coalesced() -> None:
    """Several notifications before the read starts cost exactly one read."""
    planner = ReadPlanner(read_interval=None, listening=True)
    for t in (0.0, 0.1, 0.2):
        planner.on_notification(t)
    assert planner.next(0.3, True) == ReadNow()
    planner.on_read(0.4, asked=10, got=2)
    assert planner.next(0.4, True) == WaitUntil(None)


def test_notification_during_a_read_asks_for_one_more_read() -> None:
    """A notification that arrives after the read was issued is not answered by that read."""
    planner = ReadPlanner(read_interval=None, listening=True)
    planner.on_start(0.0)
    assert planner.next(0.0, True) == ReadNow()
    planner.on_notification(0.05)  # the read's snapshot may predate this insert
    planner.on_read(0.1, asked=10, got=0)
    assert planner.next(0.1, True) == ReadNow()
    planner.on_read(0.2, asked=10, got=1)
    assert planner.next(0.2, True) == WaitUntil(None)


def test_throttle_schedules_one_catch_up_read() -> None:
    """After a notification with throttle T, a read is due at notification time + T."""
    planner = ReadPlanner(read_interval=None, listening=True, throttle=1.0)
    planner.on_notification(2.0)
    assert planner.next(2.0, True) == ReadNow()
    planner.on_read(2.0, asked=10, got=1)
    assert planner.next(2.0, True) == WaitUntil(3.0)
    assert planner.next(3.0, True) == ReadNow()
    planner.on_read(3.0, asked=10, got=0)
    assert planner.next(3.0, True) == WaitUntil(None)


def test_a_read_issued_before_the_catch_up_deadline_does_not_cancel_it() -> None:
    """Only a read issued at or after notification + throttle answers the catch-up."""
    planner = ReadPlanner(read_interval=None, listening=True, throttle=1.0)
    planner.on_notification(0.0)
    planner.next(0.0, True)
    planner.on_read(0.0, asked=10, got=0)
    planner.on_reconnected(0.5)
    assert planner.next(0.5, True) == ReadNow()
    planner.on_read(0.6, asked=10, got=0)
    assert planner.next(0.6, True) == WaitUntil(1.0)


def test_the_earliest_deadline_wins() -> None:
    """With both a poll and a catch-up scheduled, the wait ends at the earlier one."""
    planner = ReadPlanner(read_interval=5.0, listening=True, throttle=1.0)
    planner.on_notification(0.0)
    planner.next(0.0, True)
    planner.on_read(0.0, asked=10, got=0)
    assert planner.next(0.0, True) == WaitUntil(1.0)
    planner.next(1.0, True)
    planner.on_read(1.0, asked=10, got=0)
    assert planner.next(1.0, True) == WaitUntil(6.0)


def test_later_notification_moves_the_catch_up_later() -> None:
    """A newer notification's catch-up (later) replaces the pending one."""
    planner = ReadPlanner(read_interval=None, listening=True, throttle=1.0)
    planner.on_notification(0.0)
    planner.on_notification(0.4)
    assert planner.catchup_deadline == 1.4


def test_on_read_rejects_impossible_results() -> None:
    """asked < 1, got < 0 and got > asked raise ValueError."""
    planner = ReadPlanner(read_interval=1.0, listening=False)
    with pytest.raises(ValueError):
        planner.on_read(0.0, asked=0, got=0)
    with pytest.raises(ValueError):
        planner.on_read(0.0, asked=5, got=6)
    with pytest.raises(ValueError):
        planner.on_read(0.0, asked=5, got=-1)


def test_a_read_not_issued_by_next_answers_no_event() -> None:
    """on_read without a preceding ReadNow keeps wanted reads wanted (nothing lost)."""
    planner = ReadPlanner(read_interval=None, listening=True, throttle=1.0)
    planner.on_notification(0.0)
    planner.on_read(5.0, asked=10, got=0)
    assert planner.wanted
    assert planner.catchup_deadline == 1.0


def test_a_failed_read_stays_due() -> None:
    """After on_read_failed the next decision is a read again."""
    planner = ReadPlanner(read_interval=5.0, listening=False)
    planner.on_start(0.0)
    assert planner.next(0.0, True) == ReadNow()
    planner.on_read_failed(0.1)
    assert planner.next(0.6, True) == ReadNow()


_EVENTS = st.sampled_from(
    ["start", "demand", "notification", "reconnected", "read", "fail", "tick"]
)


@settings(max_examples=150, deadline=None)
@given(
    listening=st.booleans(),
    interval=st.one_of(st.none(), st.sampled_from([0.5, 1.0, 2.5])),
    throttle=st.sampled_from([0.0, 0.25, 1.0]),
    steps=st.lists(
        st.tuples(_EVENTS, st.sampled_from([0.0, 0.1, 0.3, 1.0]), st.booleans(), st.integers(1, 5)),
        max_size=60,
    ),
)
def test_planner_random_event_sequences(
    listening: bool,
    interval: float | None,
    throttle: float,
    steps: list[tuple[str, float, bool, int]],
) -> None:
    """Random event sequences: ReadNow never without demand; waits always end in the future;
    every start / notification / reconnect / demand gets a read; a due catch-up or poll
    reads; a short read with no new event waits (no spin)."""
    if interval is None and not listening:
        listening = True
    planner = ReadPlanner(read_interval=interval, listening=listening, throttle=throttle)
    now = 0.0
    catchup: float | None = None  # the test's own record of the catch-up deadline
    poll: float | None = None
    for kind, dt, full, asked in steps:
        now += dt
        assert planner.next(now, False) == WaitUntil(None)
        if kind in ("start", "notification", "reconnected", "demand"):
            getattr(planner, "on_" + kind)(now)
            if kind == "notification" and throttle > 0:
                catchup = max(catchup or now + throttle, now + throttle)
            assert planner.next(now, True) == ReadNow()
        elif kind == "fail":
            planner.on_read_failed(now)
        elif kind == "read":
            plan = planner.next(now, True)
            if isinstance(plan, ReadNow):
                got = asked if full else asked - 1
                planner.on_read(now, asked, got)
                if catchup is not None and now >= catchup:
                    catchup = None
                poll = None if full or interval is None else now + interval
                if not full:  # nothing happened since the read was issued: no spin
                    after = planner.next(now, True)
                    assert isinstance(after, WaitUntil)
                    assert after.deadline is None or after.deadline > now
                    expected = [d for d in (poll, catchup) if d is not None]
                    assert after.deadline == (min(expected) if expected else None)
        plan = planner.next(now, True)
        if isinstance(plan, WaitUntil):
            assert plan.deadline is None or plan.deadline > now
            assert catchup is None or catchup > now, "a due catch-up read was not issued"
            assert poll is None or poll > now, "a due poll read was not issued"


# --------------------------------------------------------------------------------------
# Virtual-time simulation: queue + consumer loop on a TestScheduler
# --------------------------------------------------------------------------------------


@dataclass
class SimMessage:
    """A row of the simulated queue table."""

    msg_id: int
    visible_at: float
    read_ct: int = 0


@dataclass
class SimQueue:
    """An in-memory PGMQ queue: visibility timeouts and leading-edge notify throttling."""

    notify_throttle: float | None = None  # None: notifications disabled
    rows: dict[int, SimMessage] = field(default_factory=dict)
    archived: set[int] = field(default_factory=set)
    next_id: int = 1
    last_notified: float | None = None
    drop_notifications: bool = False
    listeners: list[Callable[[], None]] = field(default_factory=list)
    reads: list[tuple[float, int, int]] = field(default_factory=list)  # (time, asked, got)
    sql_calls: list[tuple[float, str, tuple[int, ...]]] = field(default_factory=list)

    def send(self, now: float, count: int = 1, delay: float = 0.0) -> list[int]:
        """Insert ``count`` messages in one transaction (one NOTIFY at most, as in PG)."""
        ids = []
        notify = False
        for _ in range(count):
            ids.append(self.next_id)
            self.rows[self.next_id] = SimMessage(self.next_id, now + delay)
            self.next_id += 1
            if self.notify_throttle is not None and (
                self.notify_throttle == 0
                or self.last_notified is None
                or now - self.last_notified >= self.notify_throttle
            ):
                self.last_notified = now
                notify = True
        if notify and not self.drop_notifications:
            for listener in self.listeners:
                listener()
        return ids

    def read(self, now: float, qty: int, vt: float) -> list[SimMessage]:
        """pgmq.read: claim up to qty visible rows in msg_id order."""
        visible = sorted(m for m, r in self.rows.items() if r.visible_at <= now)[:qty]
        got = []
        for msg_id in visible:
            row = self.rows[msg_id]
            row.visible_at = now + vt
            row.read_ct += 1
            got.append(SimMessage(row.msg_id, row.visible_at, row.read_ct))
        self.reads.append((now, qty, len(got)))
        return got

    def delete(self, now: float, ids: tuple[int, ...]) -> None:
        self.sql_calls.append((now, "delete", ids))
        for i in ids:
            self.rows.pop(i, None)

    def archive(self, now: float, ids: tuple[int, ...]) -> None:
        self.sql_calls.append((now, "archive", ids))
        for i in ids:
            if self.rows.pop(i, None) is not None:
                self.archived.add(i)

    def set_vt(self, now: float, ids: tuple[int, ...], vt: int) -> None:
        self.sql_calls.append((now, f"set_vt({vt})", ids))
        for i in ids:
            if i in self.rows:
                self.rows[i].visible_at = now + vt

    def unread(self, now: float) -> int:
        """Rows visible now (sent, not yet claimed)."""
        return sum(1 for r in self.rows.values() if r.visible_at <= now)


class SimConsumer:
    """The consumer's reader and acknowledger loops, with I/O replaced by SimQueue calls.

    It drives the real core the consumer drives (``Demand``, ``ReadPlanner``, ``Ledger``,
    ``AckBatcher``), built and called as in ``rx_pgmq._consumer._facade``: only the threads, the
    lock and the SQL are replaced (by a ``TestScheduler`` and ``SimQueue``).

    It runs on a TestScheduler of its own (``scheduler``) and starts at t=0; ``advance_to``
    runs it. Reads and ack flushes take ``read_latency`` / ``flush_latency`` virtual
    seconds; each emitted message is processed for ``process_time`` seconds and then
    settled with ``action(message)`` (``None``: never settled).
    """

    def __init__(
        self,
        queue: SimQueue,
        *,
        window: int = 100,
        batch_size: int = 10,
        read_interval: float | None = 5.0,
        listening: bool = False,
        throttle: float = 0.0,
        controlled: bool = False,
        vt: float = 30.0,
        read_latency: float = 0.0,
        flush_latency: float = 0.0,
        process_time: float = 0.0,
        action: Callable[[SimMessage], Action | None] = lambda m: Delete(),
        max_age: float = 0.005,
    ) -> None:
        self.scheduler = TestScheduler()
        self.queue = queue
        self.demand = Demand(window, batch_size, controlled=controlled)
        self.ledger = Ledger(self.demand)
        self.planner = ReadPlanner(
            read_interval=read_interval, listening=listening, throttle=throttle
        )
        self.acks = AckBatcher(max_batch=batch_size, max_age=max_age)
        self.vt = vt
        self.read_latency = read_latency
        self.flush_latency = flush_latency
        self.process_time = process_time
        self.action = action
        self.reading = False
        self.flushing = False
        self.closing = False
        self.read_timer: abc.DisposableBase | None = None
        self.ack_timer: abc.DisposableBase | None = None
        self.delivered: list[tuple[float, int]] = []  # (time, msg_id)
        self.flushes: list[tuple[float, int]] = []  # (commit time, distinct messages)
        self.max_in_flight_seen = 0
        self._floor = 0.0
        if listening:
            queue.listeners.append(self.notified)
        self.at(0.0, self.start)

    # -- helpers ------------------------------------------------------------------------
    @property
    def now(self) -> float:
        # The scheduler keeps whole microseconds; a timer set for 5.005 may fire at
        # 5.004999... A real wait ends at (or after) its deadline, so time seen by the
        # decision objects is never before the deadline of the timer that fired.
        return max(float(self.scheduler.clock), self._floor)

    def at(self, time: float, fn: Callable[[], object]) -> abc.DisposableBase:
        def action(_: abc.SchedulerBase, __: Any = None) -> None:
            self._floor = max(self._floor, time)
            fn()

        return self.scheduler.schedule_absolute(max(time, self.now), action)

    def advance_to(self, time: float) -> None:
        """Run everything scheduled up to virtual time ``time``."""
        self.scheduler.advance_to(time)

    # -- events -------------------------------------------------------------------------
    def start(self) -> None:
        self.planner.on_start(self.now)
        self.step()

    def notified(self) -> None:
        self.planner.on_notification(self.now)
        self.step()

    def reconnected(self) -> None:
        self.planner.on_reconnected(self.now)
        self.step()

    def request(self, n: int) -> None:
        self.demand.request(n)
        self.planner.on_demand(self.now)
        self.step()

    def pause(self) -> None:
        self.demand.pause()

    def resume(self) -> None:
        self.demand.resume()
        self.planner.on_demand(self.now)
        self.step()

    # -- reader loop --------------------------------------------------------------------
    def step(self) -> None:
        """Run the reader until it must wait (what the reader thread does when woken)."""
        while not self.reading:
            if self.read_timer is not None:
                self.read_timer.dispose()
                self.read_timer = None
            plan = self.planner.next(self.now, self.demand.read_size() > 0)
            if isinstance(plan, WaitUntil):
                if plan.deadline is not None:
                    assert plan.deadline > self.now, "the planner asked to wait in the past"
                    self.read_timer = self.at(plan.deadline, self.step)
                return
            asked = self.demand.read_size()
            rows = self.queue.read(self.now, asked, self.vt)
            if self.read_latency:
                self.reading = True
                self.at(self.now + self.read_latency, partial(self.done, asked, rows))
                return
            self.done(asked, rows, loop=False)

    def done(self, asked: int, rows: list[SimMessage], loop: bool = True) -> None:
        self.reading = False
        self.planner.on_read(self.now, asked, len(rows))
        rows = self.ledger.emitted(rows, self.now)
        self.max_in_flight_seen = max(self.max_in_flight_seen, self.demand.in_flight)
        for row in rows:
            self.delivered.append((self.now, row.msg_id))
            self.at(self.now + self.process_time, partial(self.processed, row))
        if loop:
            self.step()

    # -- acknowledger -------------------------------------------------------------------
    def processed(self, row: SimMessage) -> None:
        action = self.action(row)
        if action is None:
            return
        if self.ledger.settle_requested((row.msg_id, row.read_ct)) is not None:
            return
        self.acks.add(Pending(row.msg_id, row.read_ct, action, None, None), self.now)
        self.ack_step()

    def ack_step(self) -> None:
        if self.flushing:
            return
        if self.ack_timer is not None:
            self.ack_timer.dispose()
            self.ack_timer = None
        if not self.acks.due(self.now, self.demand.starved, self.closing):
            deadline = self.acks.deadline()
            if deadline is not None:
                self.ack_timer = self.at(deadline, self.ack_step)
            return
        batch = self.acks.take()
        if batch.delete:
            self.queue.delete(self.now, batch.delete)
        if batch.archive:
            self.queue.archive(self.now, batch.archive)
        for vt, ids in batch.set_vt.items():
            self.queue.set_vt(self.now, ids, vt)
        self.flushing = True
        self.at(self.now + self.flush_latency, lambda: self.committed(batch.items))

    def committed(self, items: tuple[Pending, ...]) -> None:
        self.flushing = False
        self.flushes.append((self.now, len(items)))
        self.ledger.settled(items)  # credit only after the commit
        self.planner.on_demand(self.now)
        self.step()
        self.ack_step()


def _read_times(queue: SimQueue) -> list[float]:
    return [round(t, 6) for t, _, _ in queue.reads]


def test_sim_poll_mode_idle_queue_costs_one_read_per_interval() -> None:
    """Poll mode on an empty queue: reads at 0, 5, 10, ... 60 and nothing in between."""
    queue = SimQueue()
    consumer = SimConsumer(queue, read_interval=5.0)
    consumer.advance_to(60.0)
    assert _read_times(queue) == [5.0 * i for i in range(13)]


def test_sim_poll_interval_counts_from_the_end_of_a_slow_read() -> None:
    """With 0.5 s reads the next poll starts read_interval after the last one finished."""
    queue = SimQueue()
    consumer = SimConsumer(queue, read_interval=2.0, read_latency=0.5)
    consumer.advance_to(10.0)
    assert _read_times(queue) == [0.0, 2.5, 5.0, 7.5, 10.0]


@pytest.mark.parametrize("sent_at", [0.001, 3.0, 4.999, 5.0, 7.3, 14.99])
def test_sim_poll_mode_message_lands_within_read_interval(sent_at: float) -> None:
    """A message sent to an idle polled queue is delivered within read_interval."""
    queue = SimQueue()
    consumer = SimConsumer(queue, read_interval=5.0)
    consumer.at(sent_at, lambda: queue.send(consumer.now))
    consumer.advance_to(30.0)
    assert len(consumer.delivered) == 1
    delivered_at = consumer.delivered[0][0]
    assert sent_at <= delivered_at <= sent_at + 5.0
    # each delivery was settled (Delete) and the queue is empty again
    assert queue.rows == {}


@settings(deadline=None, max_examples=60)
@given(
    sent=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=30),
    interval=st.floats(0.5, 9.0),
)
def test_sim_poll_mode_every_message_lands_within_read_interval(
    sent: list[float], interval: float
) -> None:
    """Random send times: every message is delivered no later than sent + read_interval,
    and a read comes sooner than one interval after the previous one only to drain a full
    read or because an ack flush returned credit (new demand)."""
    queue = SimQueue()
    consumer = SimConsumer(queue, read_interval=interval, batch_size=3)
    send_time: dict[int, float] = {}

    def send() -> None:
        (msg_id,) = queue.send(consumer.now)
        send_time[msg_id] = consumer.now

    for t in sent:
        consumer.at(t, send)
    consumer.advance_to(60.0)
    assert sorted(m for _, m in consumer.delivered) == sorted(send_time)
    for delivered_at, msg_id in consumer.delivered:
        assert delivered_at <= send_time[msg_id] + interval + 1e-6
    commits = {round(t, 6) for t, _ in consumer.flushes}
    for (a, asked, got), (b, _, _) in zip(queue.reads, queue.reads[1:], strict=False):
        assert b - a >= interval - 1e-6 or got == asked or round(b, 6) in commits


def test_sim_poll_mode_reads_when_demand_returns_not_on_the_timer() -> None:
    """Window full: no polls at all; a settle makes room and triggers a read at once."""
    queue = SimQueue()
    queue.send(0.0, count=8)
    consumer = SimConsumer(queue, window=5, batch_size=10, read_interval=1.0, process_time=20.0)
    consumer.advance_to(19.0)
    assert queue.reads == [(0.0, 5, 5)]  # window full: no polling
    assert consumer.demand.in_flight == 5
    consumer.advance_to(20.0)
    # all 5 settle at t=20; starved, so the first flushes alone at once, the other 4 right
    # after its commit; each commit is new demand and reads at once (room 1, then room 4)
    assert consumer.flushes == [(20.0, 1), (20.0, 4)]
    assert queue.reads == [(0.0, 5, 5), (20.0, 1, 1), (20.0, 4, 2)]
    assert consumer.max_in_flight_seen == 5


def test_sim_window_without_settling_reads_exactly_the_window() -> None:
    """max_in_flight=5 and nothing settled: exactly 5 messages are claimed, ever."""
    queue = SimQueue()
    queue.send(0.0, count=50)
    consumer = SimConsumer(queue, window=5, batch_size=2, read_interval=0.5, action=lambda m: None)
    consumer.advance_to(25.0)  # < vt: claimed rows stay hidden
    assert [got for _, _, got in queue.reads] == [2, 2, 1]
    assert queue.unread(25.0) == 45
    assert consumer.demand.in_flight == 5


def test_sim_notification_mode_reads_at_the_notification_and_drains() -> None:
    """Polling off: one read at start, none while idle; 25 messages -> reads 10, 10, 5 at once."""
    queue = SimQueue(notify_throttle=0.0)
    consumer = SimConsumer(queue, read_interval=None, listening=True)
    consumer.at(30.0, lambda: queue.send(consumer.now, count=25))
    consumer.advance_to(100.0)
    # the drain reads 10, 10, 5; each of the first two ack flushes (10 ids, due by size at
    # once) is new demand and reads again (empty: demand always reads)
    assert queue.reads[:4] == [(0.0, 10, 0), (30.0, 10, 10), (30.0, 10, 10), (30.0, 10, 5)]
    assert queue.reads[4:] == [(30.0, 10, 0), (30.0, 10, 0)]
    assert all(t == 30.0 for t, _ in consumer.delivered)
    assert len(consumer.delivered) == 25


def test_sim_notification_during_a_slow_read_is_not_lost() -> None:
    """A message sent while a read is running (after its snapshot) is read right after."""
    queue = SimQueue(notify_throttle=0.0)
    consumer = SimConsumer(queue, read_interval=None, listening=True, read_latency=1.0)
    consumer.at(0.5, lambda: queue.send(consumer.now))
    consumer.advance_to(10.0)
    assert queue.reads[:2] == [(0.0, 10, 0), (1.0, 10, 1)]
    assert consumer.delivered == [(2.0, 1)]
    assert [(round(t, 6), got) for t, _, got in queue.reads[2:]] == [(2.005, 0)]  # ack flush


def test_sim_throttle_catch_up_read_delivers_a_swallowed_insert() -> None:
    """Throttle 1 s: the insert at 2.5 sends no NOTIFY; the catch-up read at 3.0 gets it."""
    queue = SimQueue(notify_throttle=1.0)
    consumer = SimConsumer(queue, read_interval=None, listening=True, throttle=1.0)
    consumer.at(2.0, lambda: queue.send(consumer.now))
    consumer.at(2.5, lambda: queue.send(consumer.now))
    consumer.advance_to(50.0)
    assert consumer.delivered == [(2.0, 1), (3.0, 2)]
    # 2.005 and 3.005: each ack flush is new demand and reads
    assert _read_times(queue) == [0.0, 2.0, 2.005, 3.0, 3.005]


def test_sim_without_catch_up_a_swallowed_insert_waits_forever() -> None:
    """Control: a planner unaware of the throttle never reads the swallowed insert."""
    queue = SimQueue(notify_throttle=1.0)
    consumer = SimConsumer(queue, read_interval=None, listening=True, throttle=0.0)
    consumer.at(2.0, lambda: queue.send(consumer.now))
    consumer.at(2.5, lambda: queue.send(consumer.now))
    consumer.advance_to(50.0)
    assert consumer.delivered == [(2.0, 1)]


def test_sim_hybrid_recovers_a_lost_notification_within_read_interval() -> None:
    """Hybrid: a dropped NOTIFY leaves the message for at most read_interval."""
    queue = SimQueue(notify_throttle=0.0)
    consumer = SimConsumer(queue, read_interval=10.0, listening=True)

    def lost_send() -> None:
        queue.drop_notifications = True
        queue.send(consumer.now)
        queue.drop_notifications = False

    consumer.at(12.0, lost_send)
    consumer.at(25.0, lambda: queue.send(consumer.now))  # delivered by its notification
    consumer.advance_to(40.0)
    assert consumer.delivered == [(20.0, 1), (25.0, 2)]
    # polls at 0, 10, 20; the notification reads at 25; each ack flush (20.005, 25.005) is
    # new demand and reads, which restarts the poll timer
    assert _read_times(queue) == [0.0, 10.0, 20.0, 20.005, 25.0, 25.005, 35.005]


def test_sim_notification_mode_reads_after_listener_reconnect() -> None:
    """Polling off: a message whose NOTIFY was lost is read when the listener reconnects."""
    queue = SimQueue(notify_throttle=0.0, drop_notifications=True)
    consumer = SimConsumer(queue, read_interval=None, listening=True)
    consumer.at(1.0, lambda: queue.send(consumer.now))
    consumer.at(7.0, consumer.reconnected)
    consumer.advance_to(20.0)
    assert consumer.delivered == [(7.0, 1)]


def test_sim_pause_stops_reads_and_resume_reads_at_once() -> None:
    """Paused: no reads (not even polls); resume triggers a read immediately."""
    queue = SimQueue()
    consumer = SimConsumer(queue, read_interval=1.0)
    consumer.at(2.5, consumer.pause)
    consumer.at(3.0, lambda: queue.send(consumer.now))
    consumer.at(8.25, consumer.resume)
    consumer.advance_to(9.0)
    # the 3.0 poll is skipped while paused; the flush of msg 1 at 8.255 returns credit,
    # which is new demand: one more read; the next poll is one interval after it
    assert _read_times(queue) == [0.0, 1.0, 2.0, 8.25, 8.255]
    assert consumer.delivered == [(8.25, 1)]


def test_sim_controlled_source_reads_only_what_was_requested() -> None:
    """controlled: nothing is read before request(3); request(3) reads exactly 3."""
    queue = SimQueue()
    queue.send(0.0, count=20)
    consumer = SimConsumer(queue, read_interval=1.0, controlled=True)
    consumer.at(5.0, lambda: consumer.request(3))
    consumer.advance_to(20.0)
    assert queue.reads == [(5.0, 3, 3)]
    assert len(consumer.delivered) == 3


def test_sim_acks_flush_by_size() -> None:
    """batch_size=10: ten settles at once are one delete of 10 ids, at that same instant."""
    queue = SimQueue()
    queue.send(0.0, count=10)
    consumer = SimConsumer(queue, window=100, batch_size=10, process_time=1.0)
    consumer.advance_to(2.0)
    assert queue.sql_calls == [(1.0, "delete", tuple(range(1, 11)))]


def test_sim_acks_flush_by_age() -> None:
    """Three settles (below batch size, credit left) flush when the oldest is max_age old."""
    queue = SimQueue()
    queue.send(0.0, count=3)
    consumer = SimConsumer(queue, window=100, batch_size=10, process_time=1.0, max_age=0.25)
    consumer.advance_to(5.0)
    assert queue.sql_calls == [(1.25, "delete", (1, 2, 3))]


def test_sim_acks_flush_at_once_when_starved() -> None:
    """Window full: each settle flushes immediately instead of waiting max_age (10 s)."""
    queue = SimQueue()
    queue.send(0.0, count=4)
    consumer = SimConsumer(
        queue,
        window=2,
        batch_size=10,
        max_age=10.0,
        process_time=1.0,
        action=lambda m: Delete() if m.msg_id % 2 else Archive(),
    )
    consumer.advance_to(15.0)
    # msgs 1, 2 settle at t=1; 3, 4 (read as room came back) at t=2. While the window is
    # full every settle flushes at once (the next right after the previous commits); once
    # the queue is empty the window has room and msg 4 waits max_age like any ack.
    assert queue.sql_calls == [
        (1.0, "delete", (1,)),
        (1.0, "archive", (2,)),
        (2.0, "delete", (3,)),
        (12.0, "archive", (4,)),
    ]
    assert consumer.flushes == [(1.0, 1), (1.0, 1), (2.0, 1), (12.0, 1)]


def test_sim_acks_wait_for_age_when_not_starved() -> None:
    """Control for the starvation test: with room left the same settles wait max_age."""
    queue = SimQueue()
    queue.send(0.0, count=2)
    consumer = SimConsumer(queue, window=100, batch_size=10, max_age=10.0, process_time=1.0)
    consumer.advance_to(20.0)
    assert queue.sql_calls == [(11.0, "delete", (1, 2))]


def test_sim_credit_returns_only_after_the_flush_commits() -> None:
    """With a 0.5 s flush, the next read waits for the commit, never for the settle."""
    queue = SimQueue()
    queue.send(0.0, count=4)
    consumer = SimConsumer(queue, window=2, batch_size=2, process_time=1.0, flush_latency=0.5)
    consumer.advance_to(10.0)
    # settles at 1.0 (starved: flushed at once), commit at 1.5 -> read; the second settle
    # flushes after that commit (2.0) -> read. Never a read at the settle time itself.
    assert [(t, got) for t, _, got in queue.reads[:3]] == [(0.0, 2), (1.5, 1), (2.0, 1)]
    assert consumer.max_in_flight_seen == 2


def test_sim_nothing_and_set_vt_redeliver_after_the_timeout() -> None:
    """Nothing leaves a message to reappear after vt; set_vt(2) after 2 s, read_ct 2."""
    queue = SimQueue()
    queue.send(0.0, count=2)

    seen: list[tuple[int, int]] = []

    def action(m: SimMessage) -> Action:
        seen.append((m.msg_id, m.read_ct))
        if m.read_ct > 1:
            return Delete()
        return Nothing() if m.msg_id == 1 else SetVisibilityTimeout(2)

    consumer = SimConsumer(queue, read_interval=1.0, vt=10.0, action=action)
    consumer.advance_to(30.0)
    # set_vt(2) is flushed at 0.005 (max_age) and counts from there: visible at 2.005, when
    # a poll happens to run; Nothing leaves msg 1 hidden until its read vt (10.0) and the
    # next poll (10.01) gets it. Both come back with read_ct 2 and are then deleted.
    assert [(round(t, 6), m) for t, m in consumer.delivered] == [
        (0.0, 1),
        (0.0, 2),
        (2.005, 2),
        (10.01, 1),
    ]
    assert seen == [(1, 1), (2, 1), (2, 2), (1, 2)]
    assert queue.sql_calls[0] == (0.005, "set_vt(2)", (2,))
    assert queue.rows == {}
