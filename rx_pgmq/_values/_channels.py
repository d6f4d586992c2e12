"""PGMQ's insert-notification channels, and the events a listener hands its subscribers.

Plain values and name arithmetic (no I/O): the shared :class:`~rx_pgmq.Listener` and a
reader that LISTENs on its own connection both use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["EventKind", "ListenerCallback", "ListenerEvent", "channel_name", "queue_of_channel"]

_CHANNEL_PREFIX = "pgmq.q_"
_CHANNEL_SUFFIX = ".INSERT"

EventKind = Literal["notify", "reconnected"]


@dataclass(frozen=True, slots=True)
class ListenerEvent:
    """Something a subscriber of a :class:`Listener` should react to.

    Attributes:
        queue: The PGMQ queue the event is about.
        kind: ``"notify"`` when PGMQ signalled an insert into the queue; ``"reconnected"``
            after the listener lost its connection and LISTENs again (notifications may
            have been missed meanwhile, so read the queue).
        at: ``time.monotonic()`` when the event was received.
    """

    queue: str
    kind: EventKind
    at: float


ListenerCallback = Callable[[ListenerEvent], None]
"""A subscriber: called on the listener thread, must return quickly."""


def channel_name(queue: str) -> str:
    """Return the NOTIFY channel PGMQ uses for inserts into ``queue``.

    Args:
        queue: A valid queue name.

    Returns:
        ``pgmq.q_<queue>.INSERT`` (quote it with ``psycopg.sql.Identifier``).
    """
    return f"{_CHANNEL_PREFIX}{queue}{_CHANNEL_SUFFIX}"


def queue_of_channel(channel: str) -> str | None:
    """Return the queue a PGMQ insert channel belongs to, or ``None`` for other channels."""
    if channel.startswith(_CHANNEL_PREFIX) and channel.endswith(_CHANNEL_SUFFIX):
        queue = channel[len(_CHANNEL_PREFIX) : -len(_CHANNEL_SUFFIX)]
        return queue or None
    return None
