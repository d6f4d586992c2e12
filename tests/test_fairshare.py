"""FairShare (#19 item 3): weighted fair credit over queues sharing one window (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rx_pgmq._fairshare import FairShare
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
