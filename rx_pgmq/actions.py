"""Acknowledgement actions: what happens to a message once it is processed.

An action is a plain frozen value. Ack operators (``rx_pgmq.operators.ack`` and friends)
turn actions into batched PGMQ calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from rx_pgmq._values._validate import check_queue_name, whole_seconds
from rx_pgmq.errors import InvalidArgument

__all__ = [
    "AckStatus",
    "Action",
    "Archive",
    "Delete",
    "MoveTo",
    "Nothing",
    "SetVisibilityTimeout",
]

AckStatus = Literal["acked", "unacked", "lost_lease", "ignored"]
"""How a settle request ended.

``acked``: the action committed. ``unacked``: it could not be applied (flush kept failing or
the consumer closed); the message reappears after its visibility timeout. ``lost_lease``: a
fenced ack found the message re-read by another consumer and left it alone. ``ignored``:
the consumer deletes on read, so there was nothing to acknowledge.
"""


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the message from the queue (the default for successes)."""

    name: Literal["delete"] = field(default="delete", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Archive:
    """Move the message to the queue's archive table (the default for failures)."""

    name: Literal["archive"] = field(default="archive", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Nothing:
    """Leave the message alone: it is retried once its visibility timeout expires."""

    name: Literal["nothing"] = field(default="nothing", init=False, repr=False)


@dataclass(frozen=True, slots=True, init=False)
class SetVisibilityTimeout:
    """Hide the message for ``vt`` more seconds (from now), then retry it.

    Args:
        vt: Whole seconds (``int``) or a ``timedelta`` (rounded up), >= 0.

    Raises:
        InvalidArgument: If ``vt`` is negative or not a duration.
    """

    vt: int
    name: Literal["set_vt"] = field(default="set_vt", repr=False)

    def __init__(self, vt: int | timedelta) -> None:
        object.__setattr__(self, "vt", whole_seconds(vt, "vt"))
        object.__setattr__(self, "name", "set_vt")


@dataclass(frozen=True, slots=True, init=False)
class MoveTo:
    """Send the message to another queue and delete it here, in one transaction.

    The copy keeps body and headers and adds header ``x-rx-pgmq-moved`` with the source
    queue, the failure reason (if any) and the attempt count (``read_ct``). Headers that
    are not a JSON object are kept under header ``x-rx-pgmq-original-headers``; a body that
    could not be decoded (``message.decode_error``) is copied exactly as stored.

    Args:
        queue: The destination queue (it must exist).

    Raises:
        InvalidArgument: If ``queue`` is not a valid queue name.
    """

    queue: str
    name: Literal["move"] = field(default="move", repr=False)

    def __init__(self, queue: str) -> None:
        object.__setattr__(self, "queue", check_queue_name(queue, "queue"))
        object.__setattr__(self, "name", "move")


Action = Delete | Archive | Nothing | SetVisibilityTimeout | MoveTo
"""Any acknowledgement action."""

ACTION_TYPES: tuple[type, ...] = (Delete, Archive, Nothing, SetVisibilityTimeout, MoveTo)
"""The classes of :data:`Action`, for ``isinstance`` checks (rx_pgmq's own argument checks)."""


def check_action(value: object, argument: str) -> Action:
    """Return ``value`` if it is an acknowledgement action (rx_pgmq's own argument checks).

    Raises:
        InvalidArgument: Otherwise (e.g. for the class ``Delete`` instead of ``Delete()``).
    """
    if not isinstance(value, ACTION_TYPES):
        raise InvalidArgument(
            argument,
            "must be an action from rx_pgmq.actions (Delete(), Archive(), Nothing(), "
            f"SetVisibilityTimeout(vt), MoveTo(queue)), got {value!r}",
        )
    return value  # type: ignore[return-value]
