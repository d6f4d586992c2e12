"""Outcomes of processing a message, and the records the ack operators emit (no I/O).

An :class:`Outcome` says whether one message was processed successfully (with the handler's
result) or failed (with the exception or a reason), and may carry a per-message ack override
(Broadway's ``configure_ack``). The ack operators of :mod:`rx_pgmq.operators` turn outcomes
into acknowledgement actions and emit one :class:`Settled` record per message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from reactivex import Observable

from rx_pgmq._values._markup import body_preview, escape, reason_text, wrap
from rx_pgmq._values._slots import slot_setters
from rx_pgmq.actions import (
    ACTION_TYPES,
    AckStatus,
    Action,
    MoveTo,
    SetVisibilityTimeout,
    check_action,
)
from rx_pgmq.errors import InvalidArgument, RxPgmqError
from rx_pgmq.message import BodyT, Message, message_row_table

__all__ = [
    "ACTION_TYPES",
    "NotAnOutcome",
    "Outcome",
    "ProcessOperator",
    "Settled",
    "as_outcome",
    "check_action",
    "failed",
    "outcome_html",
    "settled_html",
    "settled_of",
    "succeeded",
    "success_of",
]


class NotAnOutcome(RxPgmqError, TypeError):
    """A stream value reached an operator that needs a ``Message`` or an ``Outcome``."""

    __module__ = "rx_pgmq.operators"


@dataclass(frozen=True, slots=True)
class Outcome(Generic[BodyT]):
    """The result of processing one message: success (with a value) or failure.

    Generic in its message's body type, like :class:`~rx_pgmq.Message`: the outcome of a
    ``Message[T]`` is an ``Outcome[T]`` (``Outcome`` alone is ``Outcome[Any]``).

    Build outcomes with :func:`succeeded` and :func:`failed`, or let
    ``rx_pgmq.operators.process`` build them from a handler.

    Attributes:
        message: The message processed.
        ok: Whether processing succeeded.
        value: The handler's result (successes).
        error: The exception that made processing fail (failures; ``None`` when the failure
            was given as a reason string).
        ack: A per-message acknowledgement override; when set it wins over every policy.

    Raises:
        InvalidArgument: If ``message`` is not a :class:`~rx_pgmq.Message`, ``ok`` is not a
            bool, a success carries an error, or ``ack`` is not an action.

    Example:
        >>> outcome = failed(message, ValueError("bad total"))  # doctest: +SKIP
        >>> outcome.reason  # doctest: +SKIP
        'bad total'
        >>> outcome.with_ack(MoveTo("dlq"))  # doctest: +SKIP
    """

    message: Message[BodyT]
    ok: bool
    value: Any = None
    error: BaseException | None = None
    ack: Action | None = None
    _reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.message, Message):
            raise InvalidArgument(
                "message", f"must be an rx_pgmq.Message, got {type(self.message).__name__}"
            )
        if not isinstance(self.ok, bool):
            raise InvalidArgument("ok", f"must be a bool, got {self.ok!r}")
        if self.error is not None:
            if self.ok:
                raise InvalidArgument("error", "a success carries no error; use failed()")
            if not isinstance(self.error, BaseException):
                raise InvalidArgument("error", f"must be an exception, got {self.error!r}")
        if self.ack is not None:
            check_action(self.ack, "ack")

    def with_ack(self, action: Action) -> Outcome[BodyT]:
        """Return a copy whose acknowledgement is ``action``, whatever the policy says.

        Args:
            action: The action for this message (Broadway's ``configure_ack``).

        Raises:
            InvalidArgument: If ``action`` is not an action.
        """
        return replace(self, ack=check_action(action, "action"))

    @property
    def reason(self) -> str | None:
        """Why processing failed: ``str(error)`` (the exception's class name when that is
        empty) or the reason given to :func:`failed`; ``None`` for a success."""
        if self.error is not None:
            return str(self.error) or type(self.error).__name__
        return self._reason

    def _repr_html_(self) -> str:
        return outcome_html(self)


def succeeded(message: Message[BodyT], value: Any = None) -> Outcome[BodyT]:
    """A successful outcome for ``message``.

    Args:
        message: The message processed.
        value: The result of processing it.

    Raises:
        InvalidArgument: If ``message`` is not a :class:`~rx_pgmq.Message`.

    Example:
        >>> rx_pgmq.succeeded(message, {"total": 3})  # doctest: +SKIP
    """
    return Outcome(message, True, value)


_OUTCOME_SETTERS = slot_setters(Outcome, ("message", "ok", "value", "error", "ack", "_reason"))


def success_of(message: Message[BodyT], value: Any) -> Outcome[BodyT]:
    """``succeeded(message, value)`` for a ``message`` known to be a ``Message`` (no checks).

    ``process`` calls it once per message: the slots are set directly instead of through
    the frozen dataclass ``__init__`` and its checks, which cost more than the rest of a
    no-op handler's path. Equal to ``Outcome(message, True, value)`` in every field.
    """
    s_msg, s_ok, s_value, s_error, s_ack, s_reason = _OUTCOME_SETTERS
    outcome: Outcome[BodyT] = object.__new__(Outcome)
    s_msg(outcome, message)
    s_ok(outcome, True)
    s_value(outcome, value)
    s_error(outcome, None)
    s_ack(outcome, None)
    s_reason(outcome, None)
    return outcome


def failed(message: Message[BodyT], reason: BaseException | str) -> Outcome[BodyT]:
    """A failed outcome for ``message`` (Broadway's ``Message.failed/2``).

    Args:
        message: The message processed.
        reason: The exception, or a text saying why (recorded by ``MoveTo``).

    Raises:
        InvalidArgument: If ``message`` is not a :class:`~rx_pgmq.Message` or ``reason`` is
            neither an exception nor a string.

    Example:
        >>> rx_pgmq.failed(message, "customer unknown")  # doctest: +SKIP
    """
    if isinstance(reason, BaseException):
        return Outcome(message, False, error=reason)
    if isinstance(reason, str):
        return Outcome(message, False, _reason=reason)
    raise InvalidArgument("reason", f"must be an exception or a str, got {reason!r}")


def as_outcome(value: object) -> Outcome:
    """Return ``value`` as an outcome: an :class:`Outcome` as is, a ``Message`` as a success.

    Raises:
        NotAnOutcome: For anything else.
    """
    if isinstance(value, Outcome):
        return value
    if isinstance(value, Message):
        return Outcome(value, True)
    raise NotAnOutcome(
        f"expected an rx_pgmq.Message or Outcome, got {type(value).__name__}: {value!r:.80}; "
        "ack operators take what read_queue(...) or operators.process(...) emit"
    )


_T = TypeVar("_T")


class ProcessOperator(Protocol):
    """What ``operators.process`` and ``process_batch`` return: an operator from
    ``Observable[Message[T]]`` to ``Observable[Outcome[T]]``, for the source's ``T``.

    Generic in its call rather than in the handler's type, so a lambda handler (whose
    parameter mypy cannot type from a ``.pipe(...)``) stays ``Message[Any]`` while the
    pipeline keeps the body type.
    """

    def __call__(self, source: Observable[Message[_T]], /) -> Observable[Outcome[_T]]:
        """Apply the operator to ``source``."""
        ...


@dataclass(frozen=True, slots=True)
class Settled(Generic[BodyT]):
    """What an ack operator emits for each message once its acknowledgement finished.

    Generic in its message's body type, like :class:`Outcome` (``Settled[T]``).

    Attributes:
        outcome: The outcome that was acknowledged.
        action: The action requested (after policies and overrides).
        status: How it ended: ``"acked"`` (committed), ``"unacked"`` (not applied; the
            message reappears after its visibility timeout), ``"lost_lease"`` (a fenced ack
            found it re-read by another consumer) or ``"ignored"`` (nothing to acknowledge,
            e.g. a delete-on-read consumer).
    """

    outcome: Outcome[BodyT]
    action: Action
    status: AckStatus

    @property
    def message(self) -> Message[BodyT]:
        """The message settled."""
        return self.outcome.message

    @property
    def ok(self) -> bool:
        """Whether processing succeeded."""
        return self.outcome.ok

    @property
    def error(self) -> BaseException | None:
        """The processing error, if any."""
        return self.outcome.error

    @property
    def reason(self) -> str | None:
        """The failure reason, if any (see :attr:`Outcome.reason`)."""
        return self.outcome.reason

    @property
    def acked(self) -> bool:
        """Whether the action committed (``status == "acked"``)."""
        return self.status == "acked"

    def _repr_html_(self) -> str:
        return settled_html(self)


_SETTLED_SETTERS = slot_setters(Settled, ("outcome", "action", "status"))


def settled_of(outcome: Outcome, action: Action, status: AckStatus) -> Settled:
    """``Settled(outcome, action, status)`` through the slots (the ack operators emit one
    per message; the frozen dataclass ``__init__`` costs twice as much). Equal in every
    field."""
    s_outcome, s_action, s_status = _SETTLED_SETTERS
    settled = object.__new__(Settled)
    s_outcome(settled, outcome)
    s_action(settled, action)
    s_status(settled, status)
    return settled


# -- notebook views (``_repr_html_``) ------------------------------------------------------


def outcome_html(outcome: Outcome, *, now: datetime | None = None) -> str:
    """An ``Outcome`` as HTML: success or failure (with its reason) and its message.

    Args:
        outcome: The outcome.
        now: The time ``vt`` is compared with (default: now).

    Returns:
        Styled HTML (``Outcome._repr_html_``).
    """
    if outcome.ok:
        verdict = '<span class="ok">success</span>'
        detail = f"<code>{escape(body_preview(outcome.value, 200))}</code>"
        label = "value"
    else:
        verdict = '<span class="bad">failure</span>'
        detail = escape(reason_text(outcome.error, outcome.reason))
        label = "reason"
    head = f"<table><tbody><tr><th>outcome</th><td>{verdict}</td></tr>"
    head += f"<tr><th>{label}</th><td>{detail}</td></tr></tbody></table>"
    return wrap(head + message_row_table(outcome.message, now))


def _action_text(action: Action) -> str:
    if isinstance(action, SetVisibilityTimeout):
        return f"set_vt({action.vt}s)"
    if isinstance(action, MoveTo):
        return f"move({action.queue})"
    return action.name


def settled_html(settled: Settled, *, now: datetime | None = None) -> str:
    """A ``Settled`` value as HTML: outcome, action, ack status and the message.

    Args:
        settled: The settled record.
        now: The time ``vt`` is compared with (default: now).

    Returns:
        Styled HTML (``Settled._repr_html_``).
    """
    verdict = (
        '<span class="ok">success</span>'
        if settled.ok
        else f'<span class="bad">failure</span> '
        f"{escape(reason_text(settled.error, settled.reason))}"
    )
    status_cls = "ok" if settled.status == "acked" else "bad"
    rows = [
        ("outcome", verdict),
        ("action", escape(_action_text(settled.action))),
        ("status", f'<span class="{status_cls}">{escape(settled.status)}</span>'),
    ]
    head = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return wrap(f"<table><tbody>{head}</tbody></table>{message_row_table(settled.message, now)}")
