"""``skip``: drop the messages a predicate picks, and settle each one it drops."""

from __future__ import annotations

import logging
from collections.abc import Callable

from reactivex import Observable, abc

from rx_pgmq.actions import AckStatus, Action, Nothing
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import Message, _checked

__all__ = ["skip"]

_log = logging.getLogger("rx_pgmq")
_NOTHING: Action = Nothing()  # actions are immutable values: safe as a default


def _logged(status: AckStatus | Exception) -> None:
    """The status of a skipped message's settle: only a failure is worth a line."""
    if isinstance(status, Exception):
        _log.warning("pgops.skip could not settle a skipped message: %s", status)


def skip(
    predicate: Callable[[Message], bool], action: Action = _NOTHING
) -> Callable[[Observable[Message]], Observable[Message]]:
    """Drop the messages ``predicate`` picks, settling each with ``action``.

    ``ops.filter`` drops a message without settling it: rx_pgmq then releases it once
    nothing references it (visible again at once, read again) and logs a WARNING. Use
    ``skip`` to drop messages for good: each message for which ``predicate`` returns true
    is settled with ``action`` (default ``Nothing()``: its room in the window returns and
    it stays hidden until its visibility timeout; ``Delete()`` or ``Archive()`` remove it)
    and not passed on. The others pass on unchanged.

    Args:
        predicate: Called with each message; true means skip it.
        action: How to settle a skipped message (an action from ``rx_pgmq.actions``).

    Returns:
        An operator from ``Observable[Message]`` to ``Observable[Message]``. An exception
        raised by ``predicate`` ends the stream with ``on_error`` (its message is released
        like any unsettled message).

    Raises:
        InvalidArgument: If ``predicate`` is not callable or ``action`` is not an action
            (e.g. the class ``Delete``).

    Example:
        >>> source.pipe(
        ...     pgops.skip(lambda m: m.body.get("test"), action=Delete()),
        ...     pgops.process(handle),
        ...     pgops.ack(),
        ... ).subscribe(print)  # doctest: +SKIP
    """
    if not callable(predicate):
        raise InvalidArgument("predicate", f"must be callable (Message -> bool), got {predicate!r}")
    checked = _checked(action)

    def apply(source: Observable[Message]) -> Observable[Message]:
        def subscribe(
            observer: abc.ObserverBase[Message], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_next(message: Message) -> None:
                try:
                    dropped = predicate(message)
                    if dropped:
                        message._acker().settle_callback(message, checked, None, _logged)
                except Exception as exc:  # the predicate, or NotAcknowledgeable
                    observer.on_error(exc)
                    return
                if not dropped:
                    observer.on_next(message)

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return apply
