"""Demand: the window of emitted-and-unsettled messages and the size of each read."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rx_pgmq._core._demand import Demand, NotControlled
from rx_pgmq.errors import InvalidArgument, RxPgmqError


@pytest.mark.parametrize(
    ("window", "batch_size", "argument"),
    [
        (0, 10, "max_in_flight"),
        (10, 0, "batch_size"),
        (True, 1, "max_in_flight"),
        (1.5, 1, "max_in_flight"),
    ],
)
def test_window_and_batch_size_must_be_positive_ints(
    window: Any, batch_size: Any, argument: str
) -> None:
    """A window or batch size that is not an int >= 1 raises InvalidArgument naming it."""
    with pytest.raises(InvalidArgument) as info:
        Demand(window, batch_size)
    assert info.value.argument == argument


def test_fresh_demand_reads_a_batch() -> None:
    """Uncontrolled: nothing in flight, read_size is min(batch_size, window)."""
    assert Demand(100, 10).read_size() == 10
    assert Demand(4, 10).read_size() == 4
    demand = Demand(100, 10)
    assert demand.requested is None
    assert not demand.controlled
    assert demand.room() == 100
    assert not demand.starved


def test_read_size_is_limited_by_room() -> None:
    """With 97 of 100 in flight the next read asks for 3; with 100, for 0 (starved)."""
    demand = Demand(100, 10)
    for _ in range(9):
        demand.on_emitted(demand.read_size())
    demand.on_emitted(7)
    assert demand.in_flight == 97
    assert demand.read_size() == 3
    demand.on_emitted(3)
    assert demand.room() == 0
    assert demand.read_size() == 0
    assert demand.starved


def test_settling_gives_room_back() -> None:
    """on_settled frees room; the next read grows back up to batch_size."""
    demand = Demand(5, 10)
    demand.on_emitted(5)
    assert demand.starved
    demand.on_settled(2)
    assert demand.in_flight == 3
    assert demand.read_size() == 2
    assert not demand.starved


def test_over_read_is_an_error() -> None:
    """Emitting more than read_size() allowed raises ValueError and changes nothing."""
    demand = Demand(5, 3)
    with pytest.raises(ValueError, match="over-read"):
        demand.on_emitted(4)
    demand.on_emitted(3)
    with pytest.raises(ValueError, match="over-read"):
        demand.on_emitted(3)  # only 2 fit now
    assert demand.in_flight == 3


def test_negative_counts_are_errors() -> None:
    """on_emitted(-1) and on_settled(-1) raise ValueError."""
    demand = Demand(5, 3)
    with pytest.raises(ValueError):
        demand.on_emitted(-1)
    with pytest.raises(ValueError):
        demand.on_settled(-1)


def test_settling_more_than_in_flight_is_an_error() -> None:
    """Settling a message twice (more than in flight) raises ValueError."""
    demand = Demand(5, 3)
    demand.on_emitted(2)
    with pytest.raises(ValueError, match="in flight"):
        demand.on_settled(3)
    assert demand.in_flight == 2


def test_zero_counts_are_no_ops() -> None:
    """An empty read and an empty flush change nothing."""
    demand = Demand(5, 3)
    demand.on_emitted(0)
    demand.on_settled(0)
    assert demand.in_flight == 0
    assert demand.read_size() == 3


def test_pause_stops_reads_and_resume_restores_them() -> None:
    """Paused: read_size 0 (room unchanged); resume: back to normal; both idempotent."""
    demand = Demand(5, 3)
    demand.pause()
    demand.pause()
    assert demand.read_size() == 0
    assert demand.room() == 5
    demand.resume()
    demand.resume()
    assert demand.read_size() == 3


def test_a_read_already_running_when_paused_is_accepted() -> None:
    """pause() between read_size() and on_emitted() does not turn that read into an error."""
    demand = Demand(5, 3)
    assert demand.read_size() == 3
    demand.pause()
    assert demand.read_size() == 0
    demand.on_emitted(3)
    assert demand.in_flight == 3
    with pytest.raises(ValueError):
        demand.on_emitted(1)  # no read was granted since: paused


def test_stalled_by_only_when_nothing_more_can_be_read_and_the_holder_has_it_all() -> None:
    """#17 item 1: stalled_by(held) is True when the window (credit, pause) admits no read
    and the caller holds every message in flight; a partial hold or free room is not."""
    d = Demand(window=3, batch_size=3)
    d.on_emitted(d.read_size())  # 3 in flight: the window is full
    assert not d.stalled_by(2)  # one of the read is still elsewhere (e.g. not yet emitted)
    assert d.stalled_by(3)
    d.on_settled(1)
    assert not d.stalled_by(2)  # room for one more: a read can come
    d.pause()
    assert d.stalled_by(2)  # paused: nothing comes until resume
    c = Demand(window=10, batch_size=10, controlled=True)
    c.request(2)
    c.on_emitted(c.read_size())
    assert c.stalled_by(2) and not c.stalled_by(1)  # the credit is used up


def test_controlled_reads_nothing_before_request() -> None:
    """controlled: no credit, no read; request(3) reads 3; credit is used up by emits."""
    demand = Demand(100, 10, controlled=True)
    assert demand.controlled
    assert demand.requested == 0
    assert demand.read_size() == 0
    demand.request(3)
    assert demand.read_size() == 3
    demand.on_emitted(2)
    assert demand.requested == 1
    assert demand.read_size() == 1
    demand.on_emitted(1)
    assert demand.read_size() == 0
    assert not demand.starved  # room is left; only credit is missing


def test_controlled_credit_adds_up_and_is_still_bounded_by_batch_and_window() -> None:
    """request(5) + request(20) = 25 credit; reads are still min(batch, room, credit)."""
    demand = Demand(12, 10, controlled=True)
    demand.request(5)
    demand.request(20)
    assert demand.requested == 25
    assert demand.read_size() == 10
    demand.on_emitted(10)
    assert demand.read_size() == 2  # window 12
    demand.on_settled(10)
    demand.on_emitted(10)
    assert demand.requested == 5


@pytest.mark.parametrize("n", [0, -2, True, 1.0])
def test_request_needs_a_positive_int(n: Any) -> None:
    """request(n) with n not an int >= 1 raises InvalidArgument('n')."""
    demand = Demand(10, 10, controlled=True)
    with pytest.raises(InvalidArgument) as info:
        demand.request(n)
    assert info.value.argument == "n"


def test_request_on_an_uncontrolled_source_is_a_type_error_saying_what_to_do() -> None:
    """request() without controlled mode raises NotControlled (a TypeError and RxPgmqError)."""
    demand = Demand(10, 10)
    with pytest.raises(NotControlled) as info:
        demand.request(1)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, RxPgmqError)
    assert "controlled()" in str(info.value)
    assert demand.requested is None


class DemandMachine(RuleBasedStateMachine):
    """Random request / settle / pause / resume / read sequences.

    Reads follow the consumer's cycle (read_size, I/O, on_emitted) and may have a pause
    land in the middle of the I/O.
    """

    def __init__(self) -> None:
        super().__init__()
        self.demand = Demand(1, 1)

    @initialize(window=st.integers(1, 30), batch_size=st.integers(1, 12), controlled=st.booleans())
    def setup(self, window: int, batch_size: int, controlled: bool) -> None:
        self.demand = Demand(window, batch_size, controlled=controlled)

    @rule(fraction=st.floats(0.0, 1.0), meddle=st.sampled_from([None, "pause"]))
    def read(self, fraction: float, meddle: str | None) -> None:
        demand = self.demand
        before = demand.in_flight
        requested = demand.requested
        size = demand.read_size()
        assert 0 <= size <= demand.batch_size
        assert size <= demand.room()
        if requested is not None:
            assert size <= requested
        if demand.paused:
            assert size == 0
        window_at_read = demand.window
        if meddle == "pause":
            demand.pause()
        got = int(size * fraction)
        demand.on_emitted(got)
        assert demand.in_flight == before + got
        assert demand.in_flight <= max(window_at_read, before)
        if requested is not None:
            assert demand.requested == requested - got

    @precondition(lambda self: self.demand.in_flight > 0)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(1, self.demand.in_flight))
        self.demand.on_settled(n)

    @rule(extra=st.integers(1, 5))
    def over_settle_is_refused(self, extra: int) -> None:
        before = self.demand.in_flight
        with pytest.raises(ValueError):
            self.demand.on_settled(before + extra)
        assert self.demand.in_flight == before

    @rule(extra=st.integers(1, 5))
    def over_read_is_refused(self, extra: int) -> None:
        demand = self.demand
        demand.on_emitted(demand.read_size())  # a full read uses up what was granted
        before = demand.in_flight
        with pytest.raises(ValueError):
            demand.on_emitted(demand.read_size() + extra)
        assert demand.in_flight == before

    @rule(n=st.integers(1, 8))
    def request(self, n: int) -> None:
        if self.demand.controlled:
            self.demand.request(n)
        else:
            with pytest.raises(NotControlled):
                self.demand.request(n)

    @rule()
    def pause(self) -> None:
        self.demand.pause()

    @rule()
    def resume(self) -> None:
        self.demand.resume()

    @invariant()
    def in_flight_within_the_window(self) -> None:
        demand = self.demand
        assert 0 <= demand.in_flight <= demand.window
        if demand.in_flight >= demand.window:
            assert demand.read_size() == 0
            assert demand.starved
        if demand.requested is not None:
            assert demand.requested >= 0
        assert demand.read_size() <= demand.batch_size


DemandMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_demand_state_machine = DemandMachine.TestCase
test_demand_state_machine.__doc__ = (
    "For random operation sequences in_flight never exceeds the window (except right after "
    "a shrink, and then no read happens), and read_size never exceeds batch_size, room or "
    "credit."
)


class _Recorder:
    """A DemandWatcher that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []

    def read_done(self, demand: Demand, asked: int, got: int) -> None:
        self.events.append(("read", asked, got))

    def settled(self, demand: Demand, n: int) -> None:
        self.events.append(("settled", n, 0))


def test_watcher_hears_what_each_read_could_ask_and_what_it_got() -> None:
    """#19 item 3: the watcher learns the read size, not credit granted during the read
    (that would make a full read look short), and every settle."""
    demand = Demand(10, 5, controlled=True)
    watcher = _Recorder()
    demand.watcher = watcher
    demand.request(3)
    assert demand.read_size() == 3
    demand.request(4)  # granted while the read of 3 runs
    demand.on_emitted(3)
    demand.on_settled(2)
    assert watcher.events == [("read", 3, 3), ("settled", 2, 0)]


def test_withdraw_takes_back_only_credit_no_read_was_allowed() -> None:
    """#19 item 3: withdraw leaves the credit a running read may use."""
    demand = Demand(10, 5, controlled=True)
    demand.request(8)
    assert demand.read_size() == 5  # a read of up to 5 may be running
    assert demand.withdraw(8) == 3
    demand.on_emitted(5)
    assert demand.requested == 0
    assert demand.withdraw(1) == 0
    assert Demand(10, 5).withdraw(3) == 0  # not controlled: no credit to take
    with pytest.raises(ValueError, match="withdraw"):
        demand.withdraw(-1)
