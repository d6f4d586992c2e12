"""Where rx_pgmq reports to OpenTelemetry: nothing at all unless it was instrumented.

The hot paths read one module attribute, :data:`hooks`, and call through it only when it
is set; :func:`rx_pgmq.telemetry.instrument` sets it (this module imports nothing from
OpenTelemetry, so rx_pgmq runs without it installed). Each hook runs the I/O it wraps
(``run``) and returns what that returned, so it can time it and open a span around it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from rx_pgmq.actions import Action
from rx_pgmq.message import Message

__all__ = ["Hooks", "Settling", "hooks", "traced"]

_F = TypeVar("_F", bound=Callable[..., Any])
Headers = Mapping[str, Any] | None


class Settling(Protocol):
    """One settle request (``_ackbatch.Pending``) as the hooks see it."""

    @property
    def msg_id(self) -> int: ...

    @property
    def action(self) -> Action: ...


class Hooks(Protocol):
    """What an instrumentation does at each point (see ``rx_pgmq.telemetry``)."""

    def send(
        self, queue: str, headers: list[Headers], run: Callable[[list[Headers]], list[int]]
    ) -> list[int]:
        """A send of ``len(headers)`` messages: ``run`` sends them with the given headers."""
        ...

    async def asend(
        self,
        queue: str,
        headers: list[Headers],
        run: Callable[[list[Headers]], Awaitable[list[int]]],
    ) -> list[int]:
        """:meth:`send` of the asyncio client."""
        ...

    def read(self, queue: str, consumer: object, run: Callable[[], list[Message]]) -> list[Message]:
        """One read of a consumer: ``run`` reads and returns the messages."""
        ...

    def settle(
        self,
        queue: str,
        items: Sequence[Settling],
        run: Callable[[], tuple[set[int], set[int]]],
    ) -> tuple[set[int], set[int]]:
        """One ack flush: ``run`` applies it and returns (lost-lease ids, ids not applied)."""
        ...

    def committed(self, queue: str, action: Action | None) -> None:
        """A message settled in its handler's transaction (``None``: the lease was lost)."""
        ...

    def traced(self, fn: _F) -> _F:
        """``fn`` (a ``process`` handler, sync or async) wrapped in a process span."""
        ...


hooks: Hooks | None = None
"""The active instrumentation, or ``None`` (the default: no cost beyond reading this)."""


def traced(fn: _F) -> _F:
    """``fn`` with a process span around each call when instrumented, else ``fn`` itself.

    ``process`` calls it once when the operator is applied, not once per message.
    """
    active = hooks
    return fn if active is None else active.traced(fn)
