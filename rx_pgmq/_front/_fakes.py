"""Test doubles for pipelines without a database (Broadway's ``CallerAcknowledger`` idea).

:class:`RecordingAcknowledger` implements the :class:`~rx_pgmq.message.Acknowledger`
protocol in memory: it records every settle request and resolves its future at once, after
a delay on a scheduler (virtual time with ``reactivex.testing.TestScheduler``), or when the
test calls :meth:`RecordingAcknowledger.resolve`. :func:`make_message` builds a message
bound to it. Public as ``rx_pgmq.testing.make_message`` and
``rx_pgmq.testing.RecordingAcknowledger``: use them to test your own operators and
policies; behaviour against PGMQ itself needs a real database (the same module's fixtures).

Example:
    >>> from rx_pgmq.actions import Archive
    >>> acker = RecordingAcknowledger()
    >>> msg = make_message({"id": 1}, acknowledger=acker)
    >>> msg.settle(Archive(), reason="boom").result()
    'acked'
    >>> acker.requests[0].action, acker.requests[0].reason
    (Archive(), 'boom')
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from reactivex import abc

from rx_pgmq.actions import AckStatus, Action
from rx_pgmq.message import Acknowledger, Message, SettleCallback

__all__ = ["RecordingAcknowledger", "SettleRequest", "make_message"]

_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class SettleRequest:
    """One call of :meth:`RecordingAcknowledger.settle`.

    Attributes:
        message: The message to settle.
        action: The action requested.
        reason: The failure reason passed along, if any.
        future: The future handed back to the caller.
    """

    message: Message
    action: Action
    reason: str | None
    future: Future[AckStatus] = field(compare=False, repr=False)


class RecordingAcknowledger:
    """An in-memory acknowledger that records settle requests.

    Args:
        status: The status futures resolve to (default ``"acked"``).
        auto: Resolve each future when requested (``True``) or only on :meth:`resolve`.
        scheduler: With ``auto``, resolve on this scheduler after ``delay`` instead of at
            once (e.g. a ``TestScheduler`` for virtual time).
        delay: Seconds (virtual seconds on a test scheduler) before resolving.

    Attributes:
        requests: Every settle request, in order.
    """

    def __init__(
        self,
        status: AckStatus = "acked",
        *,
        auto: bool = True,
        scheduler: abc.SchedulerBase | None = None,
        delay: float = 0.0,
    ) -> None:
        self.status: AckStatus = status
        self.auto = auto
        self.scheduler = scheduler
        self.delay = delay
        self.requests: list[SettleRequest] = []
        self._lock = threading.Lock()

    def settle(
        self, message: Message, action: Action, reason: str | None = None
    ) -> Future[AckStatus]:
        """Record the request and return its future (see the class for when it resolves)."""
        future: Future[AckStatus] = Future()
        with self._lock:
            self.requests.append(SettleRequest(message, action, reason, future))
        if self.auto:
            if self.scheduler is None:
                future.set_result(self.status)
            else:
                status = self.status
                self.scheduler.schedule_relative(
                    self.delay, lambda _s, _state: self._set(future, status)
                )
        return future

    def settle_callback(
        self, message: Message, action: Action, reason: str | None, callback: SettleCallback
    ) -> None:
        """Record the request like :meth:`settle`; call ``callback`` when its future resolves.

        ``callback`` gets the status, or the exception the future was failed with (a test
        may call ``requests[i].future.set_exception(...)``).
        """

        def done(future: Future[AckStatus]) -> None:
            error = future.exception()
            callback(future.result() if error is None else _as_exception(error))

        self.settle(message, action, reason).add_done_callback(done)

    @staticmethod
    def _set(future: Future[AckStatus], status: AckStatus) -> None:
        if not future.done():
            future.set_result(status)

    def resolve(self, status: AckStatus | None = None) -> int:
        """Resolve every unresolved future (with ``status`` or the default one).

        Returns:
            How many futures were resolved.
        """
        with self._lock:
            open_ = [r.future for r in self.requests if not r.future.done()]
        for future in open_:
            self._set(future, status or self.status)
        return len(open_)

    @property
    def actions(self) -> list[Action]:
        """The action of every request, in order."""
        with self._lock:
            return [r.action for r in self.requests]


def _as_exception(error: BaseException) -> Exception:
    return error if isinstance(error, Exception) else Exception(error)


def make_message(
    body: Any = None,
    *,
    msg_id: int | None = None,
    read_ct: int = 1,
    queue: str = "test",
    headers: dict[str, Any] | None = None,
    acknowledger: Acknowledger | None = None,
    enqueued_at: datetime = _EPOCH,
    vt: timedelta = timedelta(seconds=30),
) -> Message:
    """A :class:`~rx_pgmq.Message` for tests, optionally bound to an acknowledger.

    Args:
        body: The JSON body.
        msg_id: The id (default: a fresh one per process).
        read_ct: Reads so far, this one included.
        queue: The queue name recorded on the message.
        headers: The JSON headers.
        acknowledger: Who settles it (``None``: not acknowledgeable, like ``PGMQ.read``).
        enqueued_at: When it was "sent".
        vt: Visibility timeout after ``enqueued_at``.

    Returns:
        A frozen message.
    """
    return Message(
        msg_id=next(_ids) if msg_id is None else msg_id,
        read_ct=read_ct,
        enqueued_at=enqueued_at,
        last_read_at=enqueued_at if read_ct > 0 else None,
        vt=enqueued_at + vt,
        body=body,
        headers=headers,
        queue=queue,
        _acknowledger=acknowledger,
    )


if TYPE_CHECKING:  # mypy checks that RecordingAcknowledger is an Acknowledger
    _check: Acknowledger = RecordingAcknowledger()
