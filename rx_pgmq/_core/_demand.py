"""The demand window of one consumer: how many messages it may read next (no I/O).

A consumer may have at most ``window`` messages emitted and not yet settled (``in_flight``).
Each read asks for ``min(batch_size, room)`` messages, and in controlled mode also no more
than the credit granted with :meth:`Demand.request`. Settling a message gives its room back.

The object is a plain state machine: no I/O, no threads, no locks. The consumer calls it
while holding its own lock. The usual read cycle is::

    size = demand.read_size()          # under the lock; 0 means "do not read"
    messages = read(size)              # I/O, lock released
    demand.on_emitted(len(messages))   # under the lock again

A pause that lands while such a read runs does not make its result an
error: :meth:`Demand.on_emitted` accepts up to the largest :meth:`Demand.read_size` returned
since the previous ``on_emitted`` (or up to ``read_size()`` now, if larger).
"""

from __future__ import annotations

from typing import Protocol

from rx_pgmq._values._validate import check_positive_int
from rx_pgmq.errors import RxPgmqError

__all__ = ["Demand", "DemandWatcher", "NotControlled"]


class DemandWatcher(Protocol):
    """Told what a :class:`Demand` records (``read_queues`` shares one window this way).

    Both methods run under the consumer's lock, after the change: keep them quick and
    never take another consumer's lock in them.
    """

    def read_done(self, demand: Demand, asked: int, got: int) -> None:
        """A read that could ask for up to ``asked`` messages emitted ``got``."""

    def settled(self, demand: Demand, n: int) -> None:
        """``n`` messages settled (their room is back)."""


class NotControlled(RxPgmqError, TypeError):
    """``request(n)`` was called on a source whose reads follow the demand window."""

    def __init__(self) -> None:
        super().__init__(
            "request(n) only applies to controlled sources: apply "
            "rx_pgmq.operators.controlled() to the read_queue source to read on request; "
            "without it, reads follow the demand window (max_in_flight) on their own"
        )


class Demand:
    """Demand window and credit of one consumer.

    Args:
        window: Most messages emitted and not yet settled (``max_in_flight``), >= 1.
        batch_size: Most messages per read, >= 1.
        controlled: Read only what :meth:`request` granted (``operators.controlled()``).

    Attributes:
        window: Most messages emitted and not yet settled.
        batch_size: Most messages per read.
        in_flight: Messages emitted and not yet settled.
        paused: Whether reads are paused (``operators.pausable``).
        requested: Outstanding credit in controlled mode; ``None`` when not controlled
            (reads are then limited by room only).

    Raises:
        InvalidArgument: If ``window`` or ``batch_size`` is not an int >= 1.
    """

    __slots__ = (
        "_granted",
        "batch_size",
        "in_flight",
        "paused",
        "requested",
        "watcher",
        "window",
    )

    def __init__(self, window: int, batch_size: int, *, controlled: bool = False) -> None:
        self.window: int = check_positive_int(window, "max_in_flight")
        self.batch_size: int = check_positive_int(batch_size, "batch_size")
        self.in_flight: int = 0
        self.paused: bool = False
        self.requested: int | None = 0 if controlled else None
        self._granted = 0
        self.watcher: DemandWatcher | None = None

    def __repr__(self) -> str:
        return (
            f"Demand(window={self.window}, batch_size={self.batch_size}, "
            f"in_flight={self.in_flight}, requested={self.requested}, paused={self.paused})"
        )

    @property
    def controlled(self) -> bool:
        """Whether reads need credit from :meth:`request`."""
        return self.requested is not None

    def room(self) -> int:
        """Return how many more messages fit in the window (``window - in_flight``, >= 0)."""
        return max(0, self.window - self.in_flight)

    def _limit(self) -> int:
        """Most messages a read may return now, ignoring pause."""
        limit = min(self.batch_size, self.room())
        if self.requested is not None:
            limit = min(limit, self.requested)
        return limit

    def read_size(self) -> int:
        """Return how many messages the next read should ask for (0: do not read).

        Returns:
            0 while paused; else ``min(batch_size, room(), requested)`` (``requested`` only
            in controlled mode).
        """
        if self.paused:
            return 0
        size = self._limit()
        self._granted = max(self._granted, size)
        return size

    def on_emitted(self, n: int) -> None:
        """Record that a read returned ``n`` messages, now emitted and in flight.

        Args:
            n: Messages emitted (>= 0).

        Raises:
            ValueError: If ``n`` is negative or more than the read was allowed to ask for
                (the larger of :meth:`read_size` now and the largest ``read_size()``
                returned since the previous call): the consumer over-read.
        """
        if n < 0:
            raise ValueError(f"on_emitted: n must be >= 0, got {n}")
        asked = self._granted  # what the read could ask for (before read_size() below)
        allowed = max(asked, self.read_size())
        asked = asked or allowed
        if n > allowed:
            raise ValueError(
                f"on_emitted({n}): over-read, at most {allowed} messages were allowed "
                f"({self!r}); read no more than read_size() messages"
            )
        self._granted = 0
        self.in_flight += n
        if self.requested is not None:
            self.requested -= n  # never below 0: allowed <= requested
        if self.watcher is not None:
            self.watcher.read_done(self, asked, n)

    def on_settled(self, n: int) -> None:
        """Give back the room of ``n`` settled (acked or released) messages.

        Args:
            n: Messages settled (>= 0).

        Raises:
            ValueError: If ``n`` is negative or more than are in flight.
        """
        if n < 0:
            raise ValueError(f"on_settled: n must be >= 0, got {n}")
        if n > self.in_flight:
            raise ValueError(
                f"on_settled({n}): only {self.in_flight} messages are in flight; "
                "each message must be settled once"
            )
        self.in_flight -= n
        if self.watcher is not None:
            self.watcher.settled(self, n)

    def request(self, n: int) -> None:
        """Grant credit for ``n`` more messages (controlled mode).

        Credit adds up; the window still bounds what is in flight.

        Args:
            n: Messages to allow, >= 1.

        Raises:
            InvalidArgument: If ``n`` is not an int >= 1.
            NotControlled: If the source is not controlled (also a ``TypeError``).
        """
        n = check_positive_int(n, "n")
        if self.requested is None:
            raise NotControlled()
        self.requested += n

    def withdraw(self, n: int) -> int:
        """Take back up to ``n`` messages of credit no read was allowed yet (controlled mode).

        Args:
            n: Most credit to take back (>= 0).

        Returns:
            The credit taken back: ``min(n, requested - <the largest read_size() since the
            last on_emitted>)``, never below 0 (0 when not controlled).
        """
        if n < 0:
            raise ValueError(f"withdraw: n must be >= 0, got {n}")
        if self.requested is None:
            return 0
        taken = max(0, min(n, self.requested - self._granted))
        self.requested -= taken
        return taken

    def pause(self) -> None:
        """Stop reading (idempotent); messages in flight are unaffected."""
        self.paused = True

    def resume(self) -> None:
        """Allow reads again after :meth:`pause` (idempotent)."""
        self.paused = False

    def stalled_by(self, held: int) -> bool:
        """Whether no read can happen until one of ``held`` in-flight messages settles.

        True when reads are paused or the window (or, in controlled mode, the credit) is
        used up, and those ``held`` messages are everything in flight. An operator that
        holds messages back waiting for more (``operators.process_batch``) must then let
        them go: nothing more will arrive until it does.

        Args:
            held: Messages of this consumer that are emitted and held by the caller.
        """
        if held < self.in_flight:
            return False
        return self.paused or self.room() == 0 or self.requested == 0

    @property
    def starved(self) -> bool:
        """Whether the window is full (``room() == 0``): pending acks should flush now."""
        return self.room() == 0
