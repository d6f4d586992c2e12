"""Plain values read from PGMQ: messages, queue metrics and queue records."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Generic, Protocol

from typing_extensions import TypeVar

from rx_pgmq import _inbox
from rx_pgmq.actions import (
    AckStatus,
    Action,
    Archive,
    Delete,
    MoveTo,
    Nothing,
    SetVisibilityTimeout,
)
from rx_pgmq.errors import DecodeError, InvalidArgument, NotAcknowledgeable

__all__ = ["Acknowledger", "BodyT", "Message", "QueueInfo", "QueueMetrics"]

_ACTION_TYPES = (Delete, Archive, Nothing, SetVisibilityTimeout, MoveTo)


class Acknowledger(Protocol):
    """What a consumer gives each message it emits so the message can be settled.

    Broadway's acknowledger idea: the message carries a reference to whoever can
    acknowledge it. ``settle`` may be called from any thread; it returns at once.
    """

    def settle(
        self, message: Message, action: Action, reason: str | None = None
    ) -> Future[AckStatus]:
        """Request ``action`` for ``message``; the future resolves once it committed."""
        ...


BodyT = TypeVar("BodyT", default=Any)
"""The type of a message's body: ``Any`` (parsed JSON) unless read with a ``body_type``."""


@dataclass(frozen=True, slots=True)
class Message(Generic[BodyT]):
    """One PGMQ message as read by a consumer (PGMQ's ``message_record``).

    Generic in its body's type: ``Message`` alone is ``Message[Any]``.

    Attributes:
        msg_id: The id PGMQ assigned on send.
        read_ct: How many times it has been read (this read included).
        enqueued_at: When it was sent.
        last_read_at: When it was last read (``None`` if never).
        vt: When it becomes visible to other readers again.
        body: The JSON body (PGMQ's ``message`` column), parsed.
        headers: The JSON headers, parsed (``None`` if absent).
        queue: The queue it was read from.
        decode_error: Set when the body or headers cannot be decoded in Python (see
            :class:`~rx_pgmq.errors.DecodeError`); ``body`` and ``headers`` are then
            ``None``. ``operators.process`` turns such a message into a failure without
            calling the handler.
    """

    msg_id: int
    read_ct: int
    enqueued_at: datetime
    last_read_at: datetime | None
    vt: datetime
    body: BodyT
    headers: dict[str, Any] | None
    queue: str
    _acknowledger: Acknowledger | None = field(default=None, compare=False, repr=False)
    decode_error: DecodeError | None = field(default=None, compare=False, repr=False)

    @property
    def acknowledgeable(self) -> bool:
        """Whether this message came from a consumer that can settle it."""
        return self._acknowledger is not None

    def settle(
        self, action: Action | None = None, *, reason: str | None = None
    ) -> Future[AckStatus]:
        """Settle this message through its consumer (default action: ``Delete()``).

        Settling returns the message's demand credit to its consumer once the action
        commits. The ack operators call this for you.

        Args:
            action: What to do with the message; ``Delete()`` if omitted.
            reason: A failure reason, recorded by ``MoveTo``.

        Returns:
            A future resolving to the :data:`rx_pgmq.actions.AckStatus`.

        Raises:
            InvalidArgument: If ``action`` is not an action (e.g. the class ``Delete``).
            NotAcknowledgeable: If the message was not emitted by a consumer.
        """
        if action is not None and not isinstance(action, _ACTION_TYPES):
            raise InvalidArgument(
                "action",
                "must be an action from rx_pgmq.actions (Delete(), Archive(), Nothing(), "
                f"SetVisibilityTimeout(vt), MoveTo(queue)), got {action!r}",
            )
        if self._acknowledger is None:
            raise NotAcknowledgeable(
                f"message {self.msg_id} of queue {self.queue!r} was not read by a read_queue "
                "consumer; use PGMQ.delete/archive/set_vt to acknowledge it"
            )
        return self._acknowledger.settle(self, action or Delete(), reason)

    def release(self) -> Future[AckStatus]:
        """Make the message visible to every reader again now (``set_vt`` 0) and settle it."""
        return self.settle(SetVisibilityTimeout(0))

    def asettle(
        self, action: Action | None = None, *, reason: str | None = None
    ) -> asyncio.Future[AckStatus]:
        """:meth:`settle` as a future of the running event loop: ``await`` it for the status.

        The request is made at once (awaiting is optional); the future resolves on the loop
        once the action committed.

        Raises:
            NotAcknowledgeable: If the message was not emitted by a consumer.
            RuntimeError: If no event loop runs on this thread.
        """
        future: asyncio.Future[AckStatus] = asyncio.get_running_loop().create_future()
        fast = getattr(self._acknowledger, "settle_callback", None)  # a consumer: no Future
        if fast is None:
            self.settle(action, reason=reason).add_done_callback(partial(_inbox.relay, future))
        else:
            fast(self, action or Delete(), reason, partial(_inbox.post, future))
        return future

    def arelease(self) -> asyncio.Future[AckStatus]:
        """:meth:`release` as a future of the running event loop (see :meth:`asettle`)."""
        return self.asettle(SetVisibilityTimeout(0))

    def _repr_html_(self) -> str:
        """The message as an HTML table (Jupyter)."""
        from rx_pgmq._html import message_html

        return message_html(self)


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    """``pgmq.metrics`` for one queue; field names are PGMQ's."""

    queue_name: str
    queue_length: int
    newest_msg_age_sec: int | None
    oldest_msg_age_sec: int | None
    total_messages: int
    scrape_time: datetime
    queue_visible_length: int

    def _repr_html_(self) -> str:
        """The metrics as an HTML table (Jupyter)."""
        from rx_pgmq._html import metrics_html

        return metrics_html(self)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One row of ``pgmq.list_queues``."""

    queue_name: str
    is_partitioned: bool
    is_unlogged: bool
    created_at: datetime
