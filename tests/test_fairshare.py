"""FairShare (#19 item 3): weighted fair credit over queues sharing one window (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex.testing import TestScheduler

from rx_pgmq._core._fairshare import FairShare
from rx_pgmq.errors import InvalidArgument


def _drain(share: FairShare, backlog: list[bool], delivered: list[int], batch: int) -> None:
    """Every queue reads its credit in reads of ``batch``; a queue without backlog reads
    nothing (its read comes back empty) and gives back what ``on_read`` says."""
    for q in range(len(backlog)):
        while share.credit[q]:
            asked = min(batch, share.credit[q])
            got = asked if backlog[q] else 0
            share.withdrawn(q, share.on_read(q, asked, got))
            delivered[q] += got
            if not got:
                break


def _run(weights: list[int], window: int, backlog: list[bool], total: int) -> list[int]:
    """Deliver ``total`` messages: read all credit, settle the oldest one, repeat."""
    share = FairShare(weights, window)
    delivered = [0] * len(weights)
    settle_order: list[int] = []
    while sum(delivered) < total:
        share.grants()
        before = list(delivered)
        _drain(share, backlog, delivered, batch=10)
        for q, n in enumerate(delivered):
            settle_order.extend([q] * (n - before[q]))
        assert sum(share.credit) + sum(share.in_flight) <= window
        if settle_order:
            share.on_settled(settle_order.pop(0), 1)
    return delivered


def test_deliveries_follow_the_weights_while_all_have_backlog() -> None:
    """#19 item 3: 3:1 weights give 3:1 deliveries (within 1% over 5,000 messages)."""
    delivered = _run([3, 1], window=20, backlog=[True, True], total=5000)
    assert delivered[0] / delivered[1] == pytest.approx(3.0, rel=0.01)


def test_an_idle_queue_gives_its_share_at_once_and_keeps_one_probe() -> None:
    """#19 item 3: a short read takes back all but one credit; the others get it."""
    share = FairShare([1, 3], window=40)
    assert share.grants() == [10, 30]
    assert share.on_read(1, asked=10, got=2) == 27  # 28 left, one kept as the probe
    share.withdrawn(1, 27)
    assert share.backlog == [True, False]
    assert share.grants() == [27, 0]
    assert share.credit == [37, 1] and share.in_flight == [0, 2]
    share.on_settled(1, 2)
    assert share.grants() == [2, 0]  # the idle queue's freed places go to the other


def test_a_full_probe_makes_an_idle_queue_backlogged_again() -> None:
    """#19 item 3: the idle queue's one-message read comes back full: it gets its share."""
    share = FairShare([1, 1], window=10)
    share.grants()
    share.withdrawn(1, share.on_read(1, asked=5, got=0))
    share.grants()
    assert share.credit == [9, 1]
    assert share.on_read(1, asked=1, got=1) == 0
    assert share.backlog == [True, True]
    share.on_read(0, asked=9, got=9)
    share.on_settled(0, 4)
    assert share.grants() == [2, 2]


def test_arguments_are_checked() -> None:
    """A weight below 1, no queue, or a window smaller than the number of queues."""
    with pytest.raises(InvalidArgument, match="weight"):
        FairShare([1, 0], 10)
    with pytest.raises(InvalidArgument, match="queues"):
        FairShare([], 10)
    with pytest.raises(InvalidArgument, match="max_in_flight"):
        FairShare([1, 1, 1], 2)


def test_over_reads_and_over_settles_are_errors() -> None:
    share = FairShare([1], 5)
    share.grants()
    with pytest.raises(ValueError, match="over-read"):
        share.on_read(0, asked=6, got=6)
    with pytest.raises(ValueError, match="in flight"):
        share.on_settled(0, 1)
    with pytest.raises(ValueError, match="credit"):
        share.withdrawn(0, 6)


events = st.lists(
    st.tuples(st.sampled_from(["read", "settle", "grant"]), st.integers(0, 3), st.integers(0, 9)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    extra=st.integers(0, 20),
    history=events,
)
def test_window_holds_and_no_backlogged_queue_starves(
    weights: list[int], extra: int, history: list[tuple[str, int, int]]
) -> None:
    """#19 item 3, any history of reads (full or short), settles and grants: credit plus
    in flight never exceeds the window; an idle queue keeps at most one credit after its
    short read; then, with every queue backlogged, each gets its turn within two rounds
    of the weights and the shares follow the weights."""
    n = len(weights)
    window = n + extra
    share = FairShare(weights, window)
    for kind, q, k in history:
        q %= n
        if kind == "grant":
            share.grants()
        elif kind == "settle":
            share.on_settled(q, min(k, share.in_flight[q]))
        elif share.credit[q]:
            asked = min(share.credit[q], max(1, k))
            got = min(asked, k % (asked + 1))
            share.withdrawn(q, share.on_read(q, asked, got))
            if got < asked:
                assert share.credit[q] == 1
        assert sum(share.credit) + sum(share.in_flight) <= window
        assert min(share.credit) >= 0
    # Every queue has a backlog again: settle everything, let each read its credit full.
    for q in range(n):
        share.on_settled(q, share.in_flight[q])
        if share.credit[q]:
            share.on_read(q, share.credit[q], share.credit[q])
        share.on_settled(q, share.in_flight[q])
    assert share.backlog == [True] * n
    rounds = 50
    picks = [0] * n
    for i in range(rounds * sum(weights)):
        given_out = share.grants()
        assert sum(given_out) == window
        for q in range(n):
            share.on_read(q, given_out[q], given_out[q])
            share.on_settled(q, given_out[q])
            picks[q] += given_out[q]
        if i == 2 * sum(weights) - 1:
            assert all(picks), picks  # nobody starves
    total = sum(picks)
    for q in range(n):
        assert abs(picks[q] - total * weights[q] / sum(weights)) <= window + sum(weights)


class _Simulation:
    """Consumers of ``FairShare`` in virtual time: a read takes ``read_ticks`` and returns
    what the queue has (``stock``), each message of queue ``q`` is processed for
    ``work[q]`` ticks and then settles."""

    def __init__(self, weights: list[int], window: int, work: list[int], stock: list[int]):
        self.clock = TestScheduler()
        self.share = FairShare(weights, window)
        self.work = work
        self.stock = stock
        self.reading = [False] * len(weights)
        self.delivered = [0] * len(weights)
        self.peak_in_flight = 0

    def start(self) -> None:
        self._granted(self.share.grants())

    def _granted(self, grants: list[int]) -> None:
        for q, n in enumerate(grants):
            if n and not self.reading[q]:  # new credit: read (an idle queue does not poll)
                self.reading[q] = True
                self.clock.schedule_relative(1, lambda *_, q=q: self._read(q))

    def _read(self, q: int) -> None:
        self.reading[q] = False
        asked = min(10, self.share.credit[q])
        if not asked:
            return
        got = min(asked, self.stock[q])
        self.stock[q] -= got
        self.share.withdrawn(q, self.share.on_read(q, asked, got))
        self.delivered[q] += got
        self.peak_in_flight = max(self.peak_in_flight, sum(self.share.in_flight))
        for _ in range(got):
            self.clock.schedule_relative(self.work[q], lambda *_, q=q: self._settle(q))
        if got == asked and self.share.credit[q]:
            self._granted([int(i == q) for i in range(len(self.reading))])  # read on
        else:
            self._granted(self.share.grants())

    def _settle(self, q: int) -> None:
        self.share.on_settled(q, 1)
        self._granted(self.share.grants())


def test_virtual_time_weights_hold_whatever_each_queue_costs_to_process() -> None:
    """#19 item 3, virtual time: weights 3:1 with the weight-1 queue's messages 5 times
    cheaper to process: deliveries still follow the weights (a freed place goes by
    weight, not to the queue that freed it), and in flight never exceeds the window."""
    sim = _Simulation([3, 1], window=20, work=[10, 2], stock=[10**9, 10**9])
    sim.start()
    sim.clock.advance_to(20_000)
    high, low = sim.delivered
    assert high + low > 5000
    assert high / low == pytest.approx(3.0, rel=0.02)
    assert sim.peak_in_flight <= 20


def test_virtual_time_an_empty_queue_leaves_the_window_to_the_other_until_it_fills() -> None:
    """#19 item 3, virtual time: the weight-3 queue is empty; the weight-1 queue runs
    with the window less the probe place; once messages arrive on the empty queue, its
    probe read picks them up and it gets its 3:1 share again."""
    sim = _Simulation([3, 1], window=20, work=[10, 10], stock=[0, 10**9])
    sim.start()
    sim.clock.advance_to(1_000)
    assert sim.share.in_flight[1] + sim.share.credit[1] == 19
    assert sim.share.credit[0] == 1 and sim.delivered[0] == 0
    # Messages arrive; the idle queue's next poll (here: one read) reads its probe.
    sim.stock[0] = 10**9
    sim.reading[0] = True
    sim.clock.schedule_relative(1, lambda *_: sim._read(0))
    before = list(sim.delivered)
    sim.clock.advance_to(20_000)
    high, low = (sim.delivered[0] - before[0], sim.delivered[1] - before[1])
    assert high / low == pytest.approx(3.0, rel=0.05)
