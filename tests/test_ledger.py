"""Ledger: the record of who holds each delivery, tested alone (issue #15 item 1).

Plain unit tests pin each rule; a Hypothesis state machine drives random reads, settle
requests, drops, flushes (committed, failed or retried), heartbeats and shutdowns and
checks that credit never goes negative, no more than the window is ever in flight, and
every emitted delivery ends (settled or released) exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from rx_pgmq._core._demand import Demand
from rx_pgmq._core._ledger import Delivery, Ledger


@dataclass(frozen=True)
class Row:
    """A delivery as a read returns it (a message stand-in)."""

    msg_id: int
    read_ct: int


def _ledger(window: int = 10, batch_size: int = 10, *, controlled: bool = False) -> Ledger:
    return Ledger(Demand(window, batch_size, controlled=controlled))


def test_emitted_holds_each_delivery_and_takes_its_room() -> None:
    """emitted() holds each fresh delivery and counts it in flight."""
    ledger = _ledger()
    assert ledger.emitted([Row(1, 1), Row(2, 1)], 0.0) == [Row(1, 1), Row(2, 1)]
    assert len(ledger) == 2 and (1, 1) in ledger
    assert ledger.demand.in_flight == 2


def test_a_delivery_read_again_while_held_is_not_emitted_twice() -> None:
    """The server forgot a read (read_ct went back): the held copy is left out, no credit."""
    ledger = _ledger()
    ledger.emitted([Row(1, 1)], 0.0)
    assert ledger.emitted([Row(1, 1), Row(2, 1)], 1.0) == [Row(2, 1)]
    assert ledger.demand.in_flight == 2


def test_two_deliveries_of_one_message_are_held_and_settled_apart() -> None:
    """A re-read after the lease ran out is a second delivery with its own credit."""
    ledger = _ledger()
    ledger.emitted([Row(1, 1)], 0.0)
    ledger.emitted([Row(1, 2)], 5.0)
    assert ledger.settle_requested((1, 1)) is None
    assert ledger.settled([Row(1, 1)]) == 1
    assert (1, 2) in ledger and ledger.demand.in_flight == 1


def test_settle_request_rules() -> None:
    """The first request queues; a second, or one for a delivery not held, is ignored;
    after shutdown began every request is unacked."""
    ledger = _ledger()
    ledger.emitted([Row(1, 1)], 0.0)
    assert ledger.settle_requested((1, 1)) is None
    assert ledger.settle_requested((1, 1)) == "ignored"
    assert ledger.settle_requested((9, 1)) == "ignored"
    ledger.settled([Row(1, 1)])
    assert ledger.settle_requested((1, 1)) == "ignored"
    ledger.begin_shutdown()
    assert ledger.stopped
    assert ledger.settle_requested((1, 1)) == "unacked"


def test_settled_gives_room_back_once() -> None:
    """A flush ends each delivery once: a second report of it returns no credit."""
    ledger = _ledger(window=2)
    ledger.emitted([Row(1, 1), Row(2, 1)], 0.0)
    assert ledger.demand.read_size() == 0
    ledger.settle_requested((1, 1))
    assert ledger.settled([Row(1, 1)]) == 1
    assert ledger.settled([Row(1, 1)]) == 0
    assert ledger.demand.in_flight == 1 and ledger.demand.read_size() == 1


def test_dropped_asks_for_one_release_of_a_held_delivery() -> None:
    """dropped(): release a held delivery once; not one already settling, ended, or after
    shutdown began (shutdown releases it)."""
    ledger = _ledger()
    ledger.emitted([Row(1, 1), Row(2, 1), Row(3, 1)], 0.0)
    assert ledger.dropped((1, 1)) is True
    assert ledger.dropped((1, 1)) is False
    assert ledger.settle_requested((1, 1)) == "ignored"  # its release is pending
    ledger.settle_requested((2, 1))
    assert ledger.dropped((2, 1)) is False
    assert ledger.dropped((7, 1)) is False
    ledger.begin_shutdown()
    assert ledger.dropped((3, 1)) is False
    assert ledger.to_release() == [3]


def test_unsettled_alive_counts_held_deliveries_not_settling_and_ended_counts_ends() -> None:
    """#14 item 2: a closing consumer waits for the deliveries whose messages may still be
    settled downstream: held, neither settling nor gone (unsettled_alive); ``ended`` counts
    ends (#14 item 1: a full window with no change in it has stalled)."""
    ledger = _ledger()
    ledger.emitted([Row(1, 1), Row(2, 1), Row(3, 1), Row(4, 1)], 0.0)
    ledger.gone([(4, 1), (9, 1)])  # 4 left the pipeline; 9 is not held
    assert ledger.unsettled_alive() == 3
    ledger.settle_requested((1, 1))
    assert ledger.unsettled_alive() == 2
    assert ledger.ended == 0
    ledger.settled([Row(1, 1), Row(2, 1)])
    assert ledger.ended == 2
    assert ledger.unsettled_alive() == 1
    assert ledger.to_release() == [3, 4]  # gone deliveries are released like the rest
    assert ledger.close() == 2
    assert ledger.unsettled_alive() == 0


def test_heartbeat_picks_old_leases_not_settling_and_extension_renews_them() -> None:
    """lease_expiring(t): held deliveries read at or before t and not settling;
    lease_extended() restarts their clock."""
    ledger = _ledger()
    ledger.emitted([Row(1, 1), Row(2, 1)], 0.0)
    ledger.emitted([Row(3, 1)], 10.0)
    ledger.settle_requested((2, 1))
    assert ledger.lease_expiring(5.0) == [1]
    ledger.lease_extended([1], 12.0)
    assert ledger.lease_expiring(11.0) == [3]
    assert ledger.lease_expiring(12.0) == [1, 3]


def test_the_fence_sees_the_vt_of_the_read_then_of_the_heartbeat_and_holds_it_off() -> None:
    """#19 item 1: lease_vt() is the read's vt until the heartbeat records the vt set_vt
    returned for that delivery (a row with another read_ct, another reader's, is not
    taken); a delivery being fenced is not extended until fence_ended(); settling or
    closing forgets the recorded vt."""
    read_vt, beat_vt, other_vt = (datetime(2026, 1, 1, 0, 0, s, 1, UTC) for s in (1, 2, 3))
    ledger = _ledger()
    ledger.emitted([Row(1, 1), Row(2, 1), Row(3, 1)], 0.0)
    assert ledger.lease_vt((1, 1), read_vt) == read_vt
    ids = ledger.lease_expiring(0.0)
    ledger.extension_started(ids)
    assert ledger.lease_extended(ids, 1.0, [(1, 1, beat_vt), (2, 2, other_vt)]) is False
    assert ledger.lease_vt((1, 1), read_vt) == beat_vt
    assert ledger.lease_vt((2, 1), read_vt) == read_vt  # row 2 was someone else's read
    assert ledger.fence_started((1, 1)) is False  # no extension in flight
    assert ledger.lease_expiring(1.0) == [2, 3]
    ledger.fence_ended((1, 1))
    assert ledger.lease_expiring(1.0) == [1, 2, 3]
    ledger.settled([Row(1, 1)])
    ledger.emitted([Row(1, 1)], 2.0)  # the same key again (read_ct went back): forgotten
    assert ledger.lease_vt((1, 1), read_vt) == read_vt


def test_a_fence_started_during_an_extension_waits_for_its_end() -> None:
    """#19 item 1: fence_started() says an extension of the message is in flight until
    lease_extended() or extension_failed(), which then ask for a notify (a fence waits),
    or until the acknowledger stopped for good (flushes_abandoned)."""
    beat_vt = datetime(2026, 1, 1, 0, 0, 5, 7, UTC)
    ledger = _ledger()
    ledger.emitted([Row(1, 1), Row(2, 1)], 0.0)
    ledger.extension_started([1])
    assert ledger.fence_started((1, 1)) is True
    assert ledger.fence_started((2, 1)) is False
    assert ledger.lease_extended([1], 1.0, [(1, 1, beat_vt)]) is True
    assert ledger.fence_started((1, 1)) is False
    assert ledger.lease_vt((1, 1), beat_vt.replace(second=0)) == beat_vt
    ledger.extension_started([1])
    assert ledger.extension_failed() is True and ledger.fence_started((1, 1)) is False
    ledger.fence_ended((1, 1))
    ledger.fence_ended((2, 1))
    assert ledger.extension_failed() is False  # nobody fences: no notify
    ledger.extension_started([2])
    ledger.flushes_abandoned()  # the acknowledger died mid-extension: do not wait for it
    assert ledger.fence_started((2, 1)) is False
    assert ledger.close() == 2
    assert ledger.lease_vt((1, 1), beat_vt.replace(second=0)) == beat_vt.replace(second=0)


def test_outlived_names_requests_whose_lease_may_have_ended() -> None:
    """#14 item 10: a retried flush gives up the requests of deliveries read (or extended)
    at or before a time, or no longer held; the others are retried."""
    ledger = _ledger()
    ledger.emitted([Row(1, 1), Row(2, 1)], 0.0)
    ledger.emitted([Row(3, 1)], 10.0)
    ledger.lease_extended([2], 8.0)
    requests = [Row(1, 1), Row(2, 1), Row(3, 1), Row(4, 1)]
    assert ledger.outlived(requests, 5.0) == [Row(1, 1), Row(4, 1)]
    assert ledger.outlived(requests, 10.0) == requests
    assert ledger.outlived([Row(3, 1)], 9.9) == []


def test_shutdown_releases_held_deliveries_but_not_those_a_flush_is_applying() -> None:
    """to_release(): every held id except those being flushed (a release would race with
    the flush's own action); requests taken back unflushed are released."""
    ledger = _ledger()
    ledger.emitted([Row(1, 1), Row(2, 1), Row(3, 1), Row(4, 1)], 0.0)
    ledger.emitted([Row(1, 2)], 1.0)  # a second delivery of msg 1
    ledger.settle_requested((1, 1))  # being flushed
    ledger.settle_requested((3, 1))  # taken back from the batcher, never flushed
    ledger.begin_shutdown()
    assert ledger.to_release(unflushed=[(3, 1)]) == [2, 3, 4]
    assert ledger.close() == 5
    assert ledger.demand.in_flight == 0 and len(ledger) == 0
    assert ledger.settled([Row(1, 1)]) == 0  # the late flush returns nothing more


def test_delete_on_read_credit_returns_per_delivered_message() -> None:
    """Delete-on-read: nothing is held; each emitted message's room returns."""
    ledger = _ledger(window=3)
    ledger.emitted_deleted(3)
    assert ledger.demand.read_size() == 0 and len(ledger) == 0
    ledger.delivered_deleted(1)
    assert ledger.demand.read_size() == 1


def test_more_fresh_deliveries_than_allowed_is_an_over_read() -> None:
    """emitted() refuses more fresh deliveries than the demand allowed (ValueError)."""
    ledger = _ledger(window=1)
    with pytest.raises(ValueError, match="over-read"):
        ledger.emitted([Row(1, 1), Row(2, 1)], 0.0)


class LedgerMachine(RuleBasedStateMachine):
    """Random consumer histories against one ledger and a model of the deliveries."""

    def __init__(self) -> None:
        super().__init__()
        self.window = 5
        self.ledger = Ledger(Demand(self.window, 3))
        self.now = 0.0
        self.next_id = 1
        self.emitted: set[Delivery] = set()
        self.ended: dict[Delivery, int] = {}  # delivery -> times it ended
        self.settling: set[Delivery] = set()
        self.in_batcher: list[Delivery] = []  # requested, not yet taken by a flush
        self.flushes: list[list[Delivery]] = []  # flushes running
        self.fencing: set[Delivery] = set()  # process_in_transaction fences them
        self.lease_vt: dict[Delivery, datetime] = {}  # the vt the heartbeat recorded
        self.closed = False

    def _end(self, keys: set[Delivery]) -> None:
        for key in keys:
            self.ended[key] = self.ended.get(key, 0) + 1

    @precondition(lambda self: not self.closed)
    @rule(data=st.data(), reread=st.booleans())
    def read(self, data: st.DataObject, reread: bool) -> None:
        """A read returns up to read_size new messages, maybe a re-read of a held one."""
        size = self.ledger.demand.read_size()
        n = data.draw(st.integers(0, size))
        rows = [Row(self.next_id + i, 1) for i in range(n)]
        self.next_id += n
        held = sorted(set(self.emitted) - set(self.ended))
        if reread and held:
            key = data.draw(st.sampled_from(held))
            rows.append(Row(*key))  # the server forgot a read: same read_ct again
        self.now += 1.0
        fresh = self.ledger.emitted(rows, self.now)
        keys = [(r.msg_id, r.read_ct) for r in fresh]
        assert len(keys) == n
        self.emitted.update(keys)

    @precondition(lambda self: bool(self.emitted))
    @rule(data=st.data(), drop=st.booleans())
    def settle_or_drop(self, data: st.DataObject, drop: bool) -> None:
        """A settle request (or a drop) for some emitted deliveries, maybe repeated."""
        keys = data.draw(st.lists(st.sampled_from(sorted(self.emitted)), min_size=1))
        for key in keys:
            queue = self.ledger.dropped(key) if drop else self.ledger.settle_requested(key) is None
            was_free = key not in self.settling and key not in self.ended and not self.closed
            stopped = self.ledger.stopped
            assert queue == (was_free and not stopped)
            if queue:
                self.settling.add(key)
                self.in_batcher.append(key)

    @precondition(lambda self: bool(self.in_batcher))
    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        """The acknowledger takes a prefix of the pending requests and starts a flush."""
        k = data.draw(st.integers(1, len(self.in_batcher)))
        self.flushes.append(self.in_batcher[:k])
        self.in_batcher = self.in_batcher[k:]

    @precondition(lambda self: bool(self.flushes))
    @rule(data=st.data(), outcome=st.sampled_from(["commit", "fail", "retry"]))
    def flush_done(self, data: st.DataObject, outcome: str) -> None:
        """A flush finishes: committed, failed for good, or put back for a retry."""
        batch = self.flushes.pop(data.draw(st.integers(0, len(self.flushes) - 1)))
        if outcome == "retry" and not self.closed:  # still settling, back in the batcher
            self.in_batcher[:0] = batch
            return
        before = {key for key in batch if key not in self.ended}
        event(f"flush done closed={self.closed} late={len(batch) - len(before)}")
        n = self.ledger.settled([Row(*key) for key in batch])
        assert n == len(before)
        self._end(before)
        self.settling.difference_update(batch)

    @rule(age=st.floats(0.0, 5.0), data=st.data())
    def heartbeat(self, age: float, data: st.DataObject) -> None:
        """The heartbeat extends only held deliveries neither settling nor fenced; a fence
        started meanwhile is told to wait; the vt set_vt returned is recorded per delivery
        (a row with another read_ct, another reader's, is not)."""
        ids = self.ledger.lease_expiring(self.now - age)
        live = {key for key in self.emitted if key not in self.ended}
        busy = self.settling | self.fencing
        for msg_id in ids:
            assert any(k[0] == msg_id and k not in busy for k in live)
        self.ledger.extension_started(ids)
        fence_one: bool = data.draw(st.booleans())
        if ids and fence_one:
            fenced = (ids[0], data.draw(st.integers(1, 2)))
            assert self.ledger.fence_started(fenced) is True
            self.fencing.add(fenced)
        self.now += 1.0
        vt = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.now, microseconds=7)
        rows = [(i, data.draw(st.sampled_from([1, 1, 2])), vt) for i in ids]
        if data.draw(st.booleans()):
            self.ledger.lease_extended(ids, self.now, rows)
            self.lease_vt.update({(i, rc): t for i, rc, t in rows if (i, rc) in live})
        else:
            self.ledger.extension_failed()
        assert not any(self.ledger.fence_started(key) for key in self.fencing)

    @precondition(lambda self: bool(self.emitted))
    @rule(data=st.data())
    def fence(self, data: st.DataObject) -> None:
        """A transaction starts or ends fencing a delivery (no extension in flight)."""
        key = data.draw(st.sampled_from(sorted(self.emitted)))
        if key in self.fencing:
            self.ledger.fence_ended(key)
            self.fencing.discard(key)
        else:
            assert self.ledger.fence_started(key) is False
            self.fencing.add(key)

    @precondition(lambda self: not self.closed and len(self.emitted) >= 4)
    @rule(data=st.data())
    def shutdown(self, data: st.DataObject) -> None:
        """Shutdown: stop accepting settles, release what is held, close."""
        self.ledger.begin_shutdown()
        unflushed = list(self.in_batcher)
        self.in_batcher = []
        live = {key for key in self.emitted if key not in self.ended}
        flushing = self.settling - set(unflushed)
        released = set(self.ledger.to_release(unflushed))
        assert released == {k[0] for k in live - flushing} - {k[0] for k in flushing}
        self._end(live)
        assert self.ledger.close() == len(live)
        assert flushing == {key for batch in self.flushes for key in batch}
        self.settling = flushing  # a flush still running may finish later: ends nothing
        self.closed = True

    @invariant()
    def credit_never_negative_and_window_respected(self) -> None:
        demand = self.ledger.demand
        assert 0 <= demand.in_flight <= self.window
        assert demand.read_size() >= 0

    @invariant()
    def held_deliveries_are_the_ones_in_flight(self) -> None:
        live = {key for key in self.emitted if key not in self.ended}
        assert len(self.ledger) == len(live) == self.ledger.demand.in_flight

    @invariant()
    def the_fence_sees_the_last_vt_recorded_for_a_held_delivery(self) -> None:
        read_vt = datetime(2000, 1, 1, tzinfo=UTC)
        for key in self.emitted:
            expected = read_vt if key in self.ended else self.lease_vt.get(key, read_vt)
            assert self.ledger.lease_vt(key, read_vt) == expected

    @invariant()
    def every_delivery_ends_at_most_once(self) -> None:
        assert all(count == 1 for count in self.ended.values())

    def teardown(self) -> None:
        """Closing at the end: every emitted delivery ended exactly once."""
        if not self.closed:
            self.shutdown_all()
        assert set(self.ended) == self.emitted
        assert all(count == 1 for count in self.ended.values())
        assert self.ledger.demand.in_flight == 0

    def shutdown_all(self) -> None:
        self.ledger.begin_shutdown()
        live = {key for key in self.emitted if key not in self.ended}
        self._end(live)
        assert self.ledger.close() == len(live)


LedgerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_ledger_state_machine = LedgerMachine.TestCase
test_ledger_state_machine.__doc__ = (
    "#15 item 1: random histories keep credit >= 0, in flight <= window, and end every "
    "emitted delivery exactly once."
)
