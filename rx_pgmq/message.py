"""Plain values read from PGMQ: messages, queue metrics and queue records."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Generic, Protocol

from typing_extensions import TypeVar

from rx_pgmq._values import _inbox
from rx_pgmq._values._markup import (
    MESSAGE_HEADERS,
    body_preview,
    clock,
    escape,
    table,
    time_left,
    wrap,
)
from rx_pgmq.actions import AckStatus, Action, Delete, SetVisibilityTimeout, check_action
from rx_pgmq.errors import DecodeError, NotAcknowledgeable

__all__ = [
    "METRICS_HEADERS",
    "Acknowledger",
    "BodyT",
    "Message",
    "QueueInfo",
    "QueueMetrics",
    "SettleCallback",
    "message_cells",
    "message_html",
    "metrics_cells",
    "metrics_html",
]


SettleCallback = Callable[[AckStatus | Exception], None]
"""Receives the status of a settle request, or the exception an acknowledger failed it with."""


class Acknowledger(Protocol):
    """What a consumer gives each message it emits so the message can be settled.

    Broadway's acknowledger idea: the message carries a reference to whoever can
    acknowledge it. Both methods may be called from any thread; they return at once.
    """

    def settle(
        self, message: Message, action: Action, reason: str | None = None
    ) -> Future[AckStatus]:
        """Request ``action`` for ``message``; the future resolves once it committed."""
        ...

    def settle_callback(
        self, message: Message, action: Action, reason: str | None, callback: SettleCallback
    ) -> None:
        """Like :meth:`settle` without a ``Future``: call ``callback`` once, with the status.

        The ack operators use it (one ``Future`` per message costs more than the rest of
        the settle path). ``callback`` may run on any thread, or at once on the caller's.
        """
        ...


BodyT = TypeVar("BodyT", default=Any)
"""The type of a message's body: ``Any`` (parsed JSON) unless read with a ``body_type``."""


@dataclass(frozen=True, slots=True, weakref_slot=True)
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

    A consumer keeps no reference to a message it emitted: a message dropped unsettled (by
    ``ops.filter``, ``take``, an exception, ...) tells its consumer when it is freed and is
    released then, as soon as no reference to it is left (see README, "Composing with
    RxPY"). Copies (``copy.copy``, ``dataclasses.replace``, pickles) do not tell.
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
    # Set by the consumer on the instance it emits, cleared once a settle of it is queued:
    # called with the message when it is freed unsettled (a drop, #14 item 1). A finalizer
    # and a slot instead of a weak reference per message: one cheap call on the way out.
    _on_drop: Callable[[Message[Any]], None] | None = field(
        default=None, init=False, compare=False, repr=False
    )

    def __del__(self) -> None:
        on_drop = self._on_drop
        if on_drop is not None:
            on_drop(self)

    def __getstate__(self) -> list[Any]:
        """The fields' values for copies and pickles, without the drop hook."""
        return [None if f.name == "_on_drop" else getattr(self, f.name) for f in fields(self)]

    def __setstate__(self, state: list[Any]) -> None:
        for f, value in zip(fields(self), state, strict=True):
            object.__setattr__(self, f.name, value)

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
        return self._acker().settle(self, _checked(action), reason)

    def _acker(self) -> Acknowledger:
        """Its acknowledger.

        Raises:
            NotAcknowledgeable: If the message was not emitted by a consumer.
        """
        if self._acknowledger is None:
            raise NotAcknowledgeable(
                f"message {self.msg_id} of queue {self.queue!r} was not read by a read_queue "
                "consumer; use PGMQ.delete/archive/set_vt to acknowledge it"
            )
        return self._acknowledger

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
            InvalidArgument: If ``action`` is not an action (e.g. the class ``Delete``).
            NotAcknowledgeable: If the message was not emitted by a consumer.
            RuntimeError: If no event loop runs on this thread.
        """
        acker = self._acknowledger
        if acker is None:
            acker = self._acker()  # raises NotAcknowledgeable
        checked = _DELETE if action is None else _checked(action)
        future: asyncio.Future[AckStatus] = asyncio.get_running_loop().create_future()
        acker.settle_callback(self, checked, reason, _inbox.settle_callback(future))
        return future

    def arelease(self) -> asyncio.Future[AckStatus]:
        """:meth:`release` as a future of the running event loop (see :meth:`asettle`)."""
        return self.asettle(_RELEASE)

    def _repr_html_(self) -> str:
        """The message as an HTML table (Jupyter)."""
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
        return metrics_html(self)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One row of ``pgmq.list_queues``."""

    queue_name: str
    is_partitioned: bool
    is_unlogged: bool
    created_at: datetime


# -- notebook views (``_repr_html_``; rx_pgmq._front._html builds the bigger tables from these) --


def message_cells(message: Message, now: datetime | None = None, preview: int = 60) -> list[str]:
    """One message as the HTML cells of a ``MESSAGE_HEADERS`` table row."""
    return [
        escape(message.msg_id),
        escape(message.read_ct),
        clock(message.enqueued_at),
        escape(time_left(message.vt, now)),
        f"<code>{escape(body_preview(message.body, preview))}</code>",
    ]


def message_row_table(message: Message, now: datetime | None = None) -> str:
    """One message as a one-row ``MESSAGE_HEADERS`` table (not wrapped)."""
    return table(MESSAGE_HEADERS, [message_cells(message, now)], numeric=(0, 1))


def message_html(message: Message, *, now: datetime | None = None) -> str:
    """One message as HTML: its fields, headers and full body.

    Args:
        message: The message.
        now: The time ``vt`` is compared with (default: now).

    Returns:
        Styled HTML (``Message._repr_html_``).
    """
    e = escape
    last = message.last_read_at
    rows = [
        ("queue", e(message.queue)),
        ("msg_id", e(message.msg_id)),
        ("read_ct", e(message.read_ct)),
        ("enqueued_at", e(message.enqueued_at.isoformat())),
        ("last_read_at", e(last.isoformat()) if last else "-"),
        ("vt", f"{e(message.vt.isoformat())} ({e(time_left(message.vt, now))})"),
        ("headers", f"<code>{e(body_preview(message.headers, 400))}</code>"),
        ("body", f"<code>{e(body_preview(message.body, 400))}</code>"),
    ]
    inner = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return wrap(f"<table><caption>Message</caption><tbody>{inner}</tbody></table>")


METRICS_HEADERS = ("queue", "length", "visible", "oldest (s)", "newest (s)", "total sent")
"""The columns of a queue metrics row (see :func:`metrics_cells`)."""


def metrics_cells(m: QueueMetrics) -> list[str]:
    """One queue's metrics as the HTML cells of a ``METRICS_HEADERS`` table row."""

    def age(v: int | None) -> str:
        return '<span class="dim">-</span>' if v is None else escape(v)

    return [
        escape(m.queue_name),
        escape(m.queue_length),
        escape(m.queue_visible_length),
        age(m.oldest_msg_age_sec),
        age(m.newest_msg_age_sec),
        escape(m.total_messages),
    ]


def metrics_html(metrics: QueueMetrics) -> str:
    """One queue's metrics as HTML (``QueueMetrics._repr_html_``)."""
    return wrap(table(METRICS_HEADERS, [metrics_cells(metrics)], numeric=(1, 2, 3, 4, 5)))


_DELETE: Action = Delete()  # actions are immutable values: safe to share
_RELEASE: Action = SetVisibilityTimeout(0)


def _checked(action: object) -> Action:
    """``action``, or ``Delete()`` for None.

    Raises:
        InvalidArgument: If it is not an action (e.g. the class ``Delete``).
    """
    if action is None:
        return Delete()
    return check_action(action, "action")
