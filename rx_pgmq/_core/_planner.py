"""When a consumer reads: poll, notification and hybrid modes (no I/O).

The modes are EctoPGMQ.Producer's:

- poll (no listener): read when demand arrives; while demand is unmet after a short read,
  read again ``read_interval`` seconds after that read finished. Wait, never spin: an idle
  queue with room costs one read per interval.
- notification (listener, ``read_interval=None``): read on a notification, a reconnect of
  the listener or new demand; drain while reads come back full. Unlike EctoPGMQ, new
  demand always reads, even after a short read: a settle with ``SetVisibilityTimeout`` or
  ``Nothing``, a FIFO group's head, ``request(n)`` and ``resume`` make messages readable
  without any insert notification.
- hybrid (listener and ``read_interval``): both; ``read_interval`` bounds how long a missed
  notification can leave a visible message waiting.

PGMQ's insert notifications are throttled on the leading edge: inserts inside the throttle
window send nothing. With ``throttle > 0`` every notification therefore schedules one more
"catch-up" read at ``notification time + throttle``.

The planner is a plain state machine: no I/O, no threads, no locks; the consumer calls it
under its own lock and passes monotonic time in as ``now``. The consumer loop is::

    plan = planner.next(now, demand.read_size() > 0)
    if isinstance(plan, ReadNow):
        asked = demand.read_size(); got = read(asked)     # I/O
        demand.on_emitted(got); planner.on_read(now2, asked, got)
    else:
        wait until plan.deadline (or forever if None), or until an event
        (on_demand / on_notification / on_reconnected) wakes the loop

Events that arrive while a read is running (after :meth:`ReadPlanner.next` returned
:class:`ReadNow`) are not swallowed by that read's result: they ask for one more read,
since the insert they announce may have committed after the read's snapshot. Events that
arrive while a read is already due are coalesced into that one read.
"""

from __future__ import annotations

from dataclasses import dataclass

from rx_pgmq._values._validate import seconds
from rx_pgmq.errors import InvalidArgument

__all__ = ["Plan", "ReadNow", "ReadPlanner", "WaitUntil"]


@dataclass(frozen=True, slots=True)
class ReadNow:
    """Read ``demand.read_size()`` messages now."""


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Sleep until ``deadline`` (monotonic seconds), or until an event if ``None``."""

    deadline: float | None


Plan = ReadNow | WaitUntil
"""What :meth:`ReadPlanner.next` decides."""


class ReadPlanner:
    """Decides when the consumer reads.

    Args:
        read_interval: Seconds between polls while demand is unmet (> 0), or ``None`` to
            never poll (notification mode).
        listening: Whether the consumer receives insert notifications.
        throttle: The queue's notification throttle in seconds (>= 0); when > 0, each
            notification schedules a catch-up read at its time + ``throttle``.

    Raises:
        InvalidArgument: If ``read_interval`` is ``None`` without a listener (nothing would
            read again after a short read), or a duration is negative / not a number.
    """

    __slots__ = (
        "_catchup_deadline",
        "_event_seq",
        "_issued",
        "_poll_deadline",
        "_read_seq",
        "listening",
        "read_interval",
        "throttle",
    )

    def __init__(
        self,
        *,
        read_interval: float | None,
        listening: bool,
        throttle: float = 0.0,
    ) -> None:
        if read_interval is None:
            if not listening:
                raise InvalidArgument(
                    "read_interval",
                    "is None (polling disabled) but there is no listener, so nothing would "
                    "read again after the queue runs empty; pass listener=True (or a "
                    "rx_pgmq.Listener) to read on notifications, or a read_interval in "
                    "seconds to poll",
                )
            self.read_interval: float | None = None
        else:
            self.read_interval = seconds(read_interval, "read_interval", allow_zero=False)
        self.listening: bool = listening
        self.throttle: float = seconds(throttle, "throttle")
        # A read is wanted while _event_seq > _read_seq. Each wanting event bumps
        # _event_seq; a finished read settles everything up to the sequence number it
        # was issued at (recorded by next()).
        self._event_seq = 0
        self._read_seq = 0
        self._issued: tuple[float, int] | None = None  # (time, event seq) of the last ReadNow
        self._poll_deadline: float | None = None
        self._catchup_deadline: float | None = None

    def __repr__(self) -> str:
        return (
            f"ReadPlanner(read_interval={self.read_interval}, listening={self.listening}, "
            f"throttle={self.throttle}, wanted={self.wanted}, "
            f"poll_deadline={self._poll_deadline}, catchup_deadline={self._catchup_deadline})"
        )

    @property
    def wanted(self) -> bool:
        """Whether an event asked for a read that no finished read has answered yet."""
        return self._event_seq > self._read_seq

    @property
    def poll_deadline(self) -> float | None:
        """When the next poll read is due (``None``: no poll scheduled)."""
        return self._poll_deadline

    @property
    def catchup_deadline(self) -> float | None:
        """When the throttle catch-up read is due (``None``: none scheduled)."""
        return self._catchup_deadline

    def _want(self) -> None:
        self._event_seq += 1

    def on_start(self, now: float) -> None:
        """The subscription started: read at once (demand arrives on subscribe)."""
        self._want()

    def on_demand(self, now: float) -> None:
        """Room or credit appeared (settle, request, resume): read once."""
        self._want()

    def on_notification(self, now: float) -> None:
        """An insert notification arrived for the queue: read, then catch up after throttle."""
        self._want()
        if self.throttle > 0:
            due = now + self.throttle
            if self._catchup_deadline is None or due > self._catchup_deadline:
                self._catchup_deadline = due

    def on_reconnected(self, now: float) -> None:
        """The listener (or the connection) came back: notifications may be lost, read."""
        self._want()

    def on_read(self, now: float, asked: int, got: int) -> None:
        """Record the result of a read that finished at ``now``.

        A full read (``got == asked``) asks for another read at once (drain). A short read
        schedules the next poll at ``now + read_interval`` (when polling). A catch-up read
        is answered only by a read issued at or after its deadline.

        Args:
            now: When the read finished.
            asked: How many messages the read asked for (>= 1).
            got: How many it returned (0 <= got <= asked).

        Raises:
            ValueError: If ``asked < 1`` or ``got`` is outside ``0..asked``.
        """
        if asked < 1:
            raise ValueError(f"on_read: asked must be >= 1, got {asked}")
        if not 0 <= got <= asked:
            raise ValueError(f"on_read: got must be between 0 and asked={asked}, got {got}")
        # A read not issued through next() answers nothing (conservative: no event lost).
        issued_at, issued_seq = (
            self._issued if self._issued is not None else (float("-inf"), self._read_seq)
        )
        self._issued = None
        # Events up to the issue are answered; later ones still want a read.
        self._read_seq = max(self._read_seq, issued_seq)
        if self._catchup_deadline is not None and issued_at >= self._catchup_deadline:
            self._catchup_deadline = None
        if got == asked:
            self._poll_deadline = None
            self._want()
            return
        if self.read_interval is not None:
            self._poll_deadline = now + self.read_interval
        else:
            self._poll_deadline = None

    def on_read_failed(self, now: float) -> None:
        """A read issued by :meth:`next` failed: whatever it was due for stays due.

        The consumer waits (see ``_backoff.Backoff``) and asks :meth:`next` again, which
        returns :class:`ReadNow` as long as demand allows.
        """
        self._issued = None

    def next(self, now: float, can_read: bool) -> ReadNow | WaitUntil:
        """Decide what the consumer does now.

        Args:
            now: The current monotonic time.
            can_read: Whether demand allows a read (room, credit, not paused).

        Returns:
            ``ReadNow()`` when a read is due; otherwise ``WaitUntil`` the earliest of the
            poll and catch-up deadlines, or ``WaitUntil(None)`` when nothing is scheduled
            or demand forbids reading (call :meth:`on_demand` when room appears; a due
            read stays pending until then).
        """
        if not can_read:
            return WaitUntil(None)
        poll, catchup = self._poll_deadline, self._catchup_deadline
        if (
            self.wanted
            or (poll is not None and now >= poll)
            or (catchup is not None and now >= catchup)
        ):
            self._issued = (now, self._event_seq)
            return ReadNow()
        deadlines = [d for d in (poll, catchup) if d is not None]
        return WaitUntil(min(deadlines) if deadlines else None)
