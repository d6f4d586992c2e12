"""Ack policies: which action an outcome gets (no I/O).

A policy is an action (every outcome gets it) or a function ``Outcome -> action``. A
per-message override (:meth:`rx_pgmq.Outcome.with_ack`) always wins over the policy.
Built-ins: :func:`max_attempts` (give up after n reads) and :func:`backoff` (retry later and
later). Built-ins accept policies for their branches, so they compose::

    max_attempts(5, then=MoveTo("dlq"), otherwise=backoff(10))
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from datetime import timedelta
from typing import TypeAlias

from rx_pgmq._values._outcome import ACTION_TYPES, Outcome
from rx_pgmq._values._validate import check_positive_int, whole_seconds
from rx_pgmq.actions import Action, Archive, Nothing, SetVisibilityTimeout
from rx_pgmq.errors import InvalidArgument, RxPgmqError

__all__ = [
    "Policy",
    "PolicyError",
    "backoff",
    "check_policy",
    "max_attempts",
    "resolve",
]

Policy: TypeAlias = Action | Callable[[Outcome], Action]
"""An action, or a function choosing the action for an outcome."""

_ARCHIVE: Action = Archive()  # actions are immutable values: safe as defaults
_NOTHING: Action = Nothing()


class PolicyError(RxPgmqError, TypeError):
    """A policy function returned something that is not an action."""

    __module__ = "rx_pgmq.operators"


_EXPECTED = (
    "must be an action (Delete(), Archive(), Nothing(), SetVisibilityTimeout(vt), "
    "MoveTo(queue)) or a function Outcome -> action"
)


def check_policy(policy: object, argument: str) -> Policy:
    """Return ``policy`` if it is an action or a function of one outcome.

    A class (``Delete`` instead of ``Delete()``) is callable but not a policy, and neither
    is a callable that cannot take one positional argument: both are refused here, when
    the pipeline is built, instead of failing on the first message.

    Raises:
        InvalidArgument: Otherwise.
    """
    if isinstance(policy, ACTION_TYPES):
        return policy  # type: ignore[return-value]
    if isinstance(policy, type):
        hint = f"; did you mean {policy.__name__}()?" if policy in ACTION_TYPES else ""
        raise InvalidArgument(argument, f"{_EXPECTED}, got the class {policy!r}{hint}")
    if not callable(policy):
        raise InvalidArgument(argument, f"{_EXPECTED}, got {policy!r}")
    try:
        signature = inspect.signature(policy)
    except (TypeError, ValueError):  # no signature to check (some builtins): accept
        return policy
    try:
        signature.bind(None)
    except TypeError:
        raise InvalidArgument(
            argument,
            f"{_EXPECTED}, got {policy!r}, which cannot be called with one outcome "
            f"(signature {signature})",
        ) from None
    return policy


def _apply(policy: Policy, outcome: Outcome) -> Action:
    """The action ``policy`` gives ``outcome``, ignoring any override."""
    if isinstance(policy, ACTION_TYPES):
        return policy  # type: ignore[return-value]
    action = policy(outcome)  # type: ignore[operator]
    if not isinstance(action, ACTION_TYPES):
        raise PolicyError(
            f"policy {policy!r} returned {action!r} for message {outcome.message.msg_id} of "
            f"queue {outcome.message.queue!r}; a policy must return an action from "
            "rx_pgmq.actions (Delete(), Archive(), Nothing(), SetVisibilityTimeout(vt), "
            "MoveTo(queue))"
        )
    return action  # type: ignore[return-value]


def resolve(policy: Policy, outcome: Outcome) -> Action:
    """The action for ``outcome``: its override if it has one, else what ``policy`` says.

    Args:
        policy: An action or a function ``Outcome -> action``.
        outcome: The outcome to acknowledge.

    Returns:
        Exactly one action.

    Raises:
        PolicyError: If a policy function returns something that is not an action.

    Example:
        >>> resolve(Archive(), failed(message, "boom"))  # doctest: +SKIP
        Archive()
        >>> resolve(Archive(), failed(message, "boom").with_ack(Delete()))  # doctest: +SKIP
        Delete()
    """
    if outcome.ack is not None:
        return outcome.ack
    return _apply(policy, outcome)


class _MaxAttempts:
    __slots__ = ("n", "otherwise", "then")

    def __init__(self, n: int, then: Policy, otherwise: Policy) -> None:
        self.n = n
        self.then = then
        self.otherwise = otherwise

    def __call__(self, outcome: Outcome) -> Action:
        branch = self.then if outcome.message.read_ct >= self.n else self.otherwise
        return _apply(branch, outcome)

    def __repr__(self) -> str:
        return f"max_attempts({self.n}, then={self.then!r}, otherwise={self.otherwise!r})"


def max_attempts(
    n: int, then: Policy = _ARCHIVE, otherwise: Policy = _NOTHING
) -> Callable[[Outcome], Action]:
    """Give up on a message once it has been read ``n`` times.

    Uses the message's ``read_ct`` (reads so far, this one included): ``read_ct >= n`` gets
    ``then``, anything earlier gets ``otherwise``.

    Args:
        n: Reads allowed, >= 1.
        then: The action (or policy) once attempts are used up (default ``Archive()``).
        otherwise: The action (or policy) before that (default ``Nothing()``: retry when the
            visibility timeout ends).

    Returns:
        A policy function.

    Raises:
        InvalidArgument: If ``n`` is not an int >= 1 or a branch is not a policy.

    Example:
        >>> source.pipe(
        ...     pgops.process(handle),
        ...     pgops.ack(on_failure=pgops.max_attempts(3, then=MoveTo("dlq"))),
        ... )  # doctest: +SKIP
    """
    return _MaxAttempts(
        check_positive_int(n, "n"),
        check_policy(then, "then"),
        check_policy(otherwise, "otherwise"),
    )


class _Backoff:
    __slots__ = ("base", "cap", "factor")

    def __init__(self, base: int, factor: float, cap: int) -> None:
        self.base = base
        self.factor = factor
        self.cap = cap

    def delay(self, read_ct: int) -> int:
        """Whole seconds to hide a message that has been read ``read_ct`` times."""
        if self.base == 0:
            return 0
        try:
            raw = self.base * self.factor ** max(0, read_ct - 1)
        except OverflowError:
            return self.cap
        return self.cap if raw >= self.cap else math.ceil(raw)

    def __call__(self, outcome: Outcome) -> Action:
        return SetVisibilityTimeout(self.delay(outcome.message.read_ct))

    def __repr__(self) -> str:
        return f"backoff({self.base}, factor={self.factor}, max={self.cap})"


def backoff(
    base: int | timedelta, factor: float = 2, max: int | timedelta = 3600
) -> Callable[[Outcome], Action]:
    """Retry later and later: hide the message for ``base * factor ** (read_ct - 1)`` seconds.

    The first read waits ``base``, the second ``base * factor`` and so on, never more than
    ``max`` (fractions round up to whole seconds).

    Args:
        base: The first timeout (int seconds or timedelta), >= 0.
        factor: Growth per read, a finite number >= 1.
        max: The longest timeout (int seconds or timedelta), >= ``base``.

    Returns:
        A policy function giving ``SetVisibilityTimeout``.

    Raises:
        InvalidArgument: If an argument is out of range.

    Example:
        >>> pgops.ack(on_failure=pgops.backoff(5, max=600))  # doctest: +SKIP
    """
    first = whole_seconds(base, "base")
    cap = whole_seconds(max, "max")
    if isinstance(factor, bool) or not isinstance(factor, int | float):
        raise InvalidArgument("factor", f"must be a number >= 1, got {factor!r}")
    growth = float(factor)
    if not (math.isfinite(growth) and growth >= 1.0):
        raise InvalidArgument("factor", f"must be a finite number >= 1, got {factor!r}")
    if cap < first:
        raise InvalidArgument("max", f"must be >= base ({first}s), got {max!r}")
    return _Backoff(first, growth, cap)
