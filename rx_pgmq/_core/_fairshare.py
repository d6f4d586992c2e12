"""Weighted fair demand over several queues sharing one window (no I/O).

``read_queues`` runs one controlled consumer per queue; :class:`FairShare` decides how much
credit (messages each consumer may read) each gets from the shared ``window``:

- Every message granted and not yet read (credit) or read and not yet settled (in flight)
  takes one place of the window; the sum never exceeds it.
- Free places go one at a time, by smooth weighted round-robin, to the queues that have a
  backlog: while all have one, grants (and so deliveries) follow the weights.
- A read that comes back short (fewer messages than it asked for) says the queue has no
  backlog: its credit beyond one message is taken back at once and goes to the others.
  The one message it keeps is its probe: its poll or notification reads ask for it, and
  a probe that comes back full makes the queue backlogged again. So no queue starves,
  and the others run at the window less one place per idle queue.
- A settled message frees its place.

The object is a plain state machine: the caller holds one lock around every call.
"""

from __future__ import annotations

from collections.abc import Sequence

from rx_pgmq._values._validate import check_positive_int
from rx_pgmq.errors import InvalidArgument

__all__ = ["FairShare"]


class FairShare:
    """Credit of several queues sharing one window, handed out by weight.

    Args:
        weights: One weight (int >= 1) per queue, by index.
        window: Most messages granted or in flight over all queues; at least one per queue.

    Attributes:
        window: The shared window.
        weights: The weights, by queue index.
        credit: Per queue, messages granted and not yet read (nor taken back).
        in_flight: Per queue, messages read and not yet settled.
        backlog: Per queue, whether its last read came back full (True at the start).

    Raises:
        InvalidArgument: If a weight is not an int >= 1, there is no queue, or the window
            is smaller than the number of queues.
    """

    __slots__ = ("_current", "backlog", "credit", "in_flight", "weights", "window")

    def __init__(self, weights: Sequence[int], window: int) -> None:
        if not weights:
            raise InvalidArgument("queues", "must name at least one queue")
        self.weights = [check_positive_int(w, "weight") for w in weights]
        self.window = check_positive_int(window, "max_in_flight")
        if self.window < len(self.weights):
            raise InvalidArgument(
                "max_in_flight",
                f"must be at least the number of queues ({len(self.weights)}): each queue "
                f"keeps one place of the window to notice new messages, got {window}",
            )
        n = len(self.weights)
        self.credit = [0] * n
        self.in_flight = [0] * n
        self.backlog = [True] * n
        self._current = [0] * n

    def __repr__(self) -> str:
        return (
            f"FairShare(window={self.window}, weights={self.weights}, credit={self.credit}, "
            f"in_flight={self.in_flight}, backlog={self.backlog})"
        )

    def free(self) -> int:
        """Places of the window neither granted nor in flight."""
        return self.window - sum(self.credit) - sum(self.in_flight)

    def on_read(self, q: int, asked: int, got: int) -> int:
        """Record that queue ``q`` read ``got`` of the ``asked`` messages.

        Returns:
            How much of ``q``'s credit to take back (then report it with
            :meth:`withdrawn`): all but one message after a short read, else 0.

        Raises:
            ValueError: If ``got`` is negative or more than ``q``'s credit.
        """
        if got < 0 or got > self.credit[q]:
            raise ValueError(f"on_read({q}, {asked}, {got}): over-read ({self!r})")
        self.credit[q] -= got
        self.in_flight[q] += got
        if got < asked:
            self.backlog[q] = False
            self._current[q] = 0
            return max(0, self.credit[q] - 1)
        self.backlog[q] = True
        return 0

    def withdrawn(self, q: int, n: int) -> None:
        """Record that ``n`` messages of ``q``'s credit were taken back.

        Raises:
            ValueError: If ``n`` is negative or more than ``q``'s credit.
        """
        if n < 0 or n > self.credit[q]:
            raise ValueError(f"withdrawn({q}, {n}): more than its credit ({self!r})")
        self.credit[q] -= n

    def on_settled(self, q: int, n: int) -> None:
        """Record that ``n`` messages of queue ``q`` settled (their places are free).

        Raises:
            ValueError: If ``n`` is negative or more than ``q`` has in flight.
        """
        if n < 0 or n > self.in_flight[q]:
            raise ValueError(f"on_settled({q}, {n}): more than in flight ({self!r})")
        self.in_flight[q] -= n

    def grants(self) -> list[int]:
        """Hand out the free places; return how many each queue gets (and record them).

        An idle queue without credit gets its one probe message first; the rest goes to
        the backlogged queues, one message at a time by smooth weighted round-robin.
        """
        n = len(self.weights)
        out = [0] * n
        free = self.free()
        for q in range(n):
            if free > 0 and not self.backlog[q] and self.credit[q] == 0:
                out[q] += 1
                self.credit[q] += 1
                free -= 1
        eligible = [q for q in range(n) if self.backlog[q]]
        if not eligible:
            return out
        total = sum(self.weights[q] for q in eligible)
        current, weights = self._current, self.weights
        while free > 0:
            best = eligible[0]
            for q in eligible:
                current[q] += weights[q]
                if current[q] > current[best]:
                    best = q
            current[best] -= total
            out[best] += 1
            self.credit[best] += 1
            free -= 1
        return out
