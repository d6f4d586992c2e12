"""Exponential retry delays, one schedule for every retry loop (no I/O)."""

from __future__ import annotations

import math

from rx_pgmq._values._validate import check_non_negative_int, seconds
from rx_pgmq.errors import InvalidArgument

__all__ = ["Backoff"]


class Backoff:
    """Exponential retry schedule for failed flushes, reads and reconnects.

    Delays are ``initial, initial*factor, ...`` capped at ``maximum``.

    Args:
        initial: First delay in seconds (> 0).
        factor: Growth per attempt (>= 1).
        maximum: Largest delay in seconds (>= initial).
        max_attempts: Delays to give before giving up (``None``: never give up).

    Attributes:
        attempts: Delays given since creation or the last :meth:`reset`.

    Raises:
        InvalidArgument: If an argument is out of range.
    """

    __slots__ = ("attempts", "factor", "initial", "max_attempts", "maximum")

    def __init__(
        self,
        *,
        initial: float = 0.05,
        factor: float = 2.0,
        maximum: float = 5.0,
        max_attempts: int | None = None,
    ) -> None:
        self.initial: float = seconds(initial, "initial", allow_zero=False)
        self.factor: float = float(factor)
        if not self.factor >= 1.0:
            raise InvalidArgument("factor", f"must be >= 1, got {factor!r}")
        self.maximum: float = seconds(maximum, "maximum")
        if self.maximum < self.initial:
            raise InvalidArgument("maximum", f"must be >= initial={initial!r}, got {maximum!r}")
        self.max_attempts: int | None = (
            None if max_attempts is None else check_non_negative_int(max_attempts, "max_attempts")
        )
        self.attempts: int = 0

    def __repr__(self) -> str:
        return (
            f"Backoff(initial={self.initial}, factor={self.factor}, maximum={self.maximum}, "
            f"max_attempts={self.max_attempts}, attempts={self.attempts})"
        )

    @property
    def exhausted(self) -> bool:
        """Whether :meth:`next_delay` would return ``None``."""
        return self.max_attempts is not None and self.attempts >= self.max_attempts

    def _delay(self, attempt: int) -> float:
        if self.factor == 1.0 or self.initial >= self.maximum:
            return min(self.initial, self.maximum)
        # Attempts from which the cap applies; avoids float overflow of factor**attempt.
        capped_from = math.log(self.maximum / self.initial, self.factor)
        if attempt >= capped_from:
            return self.maximum
        return min(self.initial * self.factor**attempt, self.maximum)

    def next_delay(self) -> float | None:
        """Return the next delay in seconds and count an attempt (``None`` when exhausted)."""
        if self.exhausted:
            return None
        delay = self._delay(self.attempts)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start over from ``initial`` (after a success)."""
        self.attempts = 0
