"""What the clients' feature mixins share: the sync and the async executor of a
:class:`~rx_pgmq._pg._plan.Call`, and the checks of the arguments several calls take."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import psycopg

from rx_pgmq._pg import _sql
from rx_pgmq._pg._plan import Done, Fetched, Runnable, Sending
from rx_pgmq._values import _telemetry
from rx_pgmq._values._bodytype import encode_body
from rx_pgmq._values._validate import check_batch, whole_seconds
from rx_pgmq.errors import InvalidArgument

__all__ = [
    "AsyncClientAPI",
    "ClientAPI",
    "Delay",
    "batch_payload",
    "delay_or_time",
]

T = TypeVar("T")

Delay = int | timedelta | datetime
"""When a message becomes visible: seconds from now (int or timedelta) or an aware
datetime."""


class ClientAPI:
    """The base of the sync client's feature mixins: every call runs through :meth:`_run`.

    :class:`~rx_pgmq.PGMQ` provides ``_cursor`` (its connection handling and error
    translation); the mixins' methods are thin: a planner of
    :mod:`rx_pgmq._pg._calls` (checks, statements, rows to result) and this executor.
    """

    def _cursor(self, queue: str | None = None) -> AbstractContextManager[psycopg.Cursor[Any]]:
        raise NotImplementedError  # pragma: no cover - PGMQ overrides it

    def _run(self, call: Runnable[T]) -> T:
        """Run a call's steps in one transaction and return its result (a ``Done``'s at once)."""
        if isinstance(call, Done):
            return call.value
        plan = call.plan
        with self._cursor(call.queue) as cur:
            fetched = partial(Fetched, loads=_sql.json_loads(cur.connection))
            try:  # inside the block: an exception leaving it would roll the call back
                step = next(plan)
                while True:
                    try:
                        cur.execute(step.statement, step.params)
                    except psycopg.Error as exc:
                        step = plan.throw(exc)  # the plan may name it, or re-raises it
                    else:
                        step = plan.send(fetched(cur.fetchall() if cur.description else []))
            except StopIteration as done:
                result: T = done.value
                return result

    def _send(self, sending: Sending) -> list[int]:
        """Run a send, through the telemetry hooks when they are on."""
        hooks = _telemetry.hooks
        if hooks is None:
            return self._run(sending.call(None))
        return hooks.send(sending.queue, sending.headers, lambda h: self._run(sending.call(h)))


class AsyncClientAPI:
    """The base of the asyncio client's feature mixins: :class:`ClientAPI` with awaits.

    :class:`~rx_pgmq.aio.AsyncPGMQ` provides ``_cursor``; the plans are the sync client's.
    """

    def _cursor(
        self, queue: str | None = None
    ) -> AbstractAsyncContextManager[psycopg.AsyncCursor[Any]]:
        raise NotImplementedError  # pragma: no cover - AsyncPGMQ overrides it

    async def _run(self, call: Runnable[T]) -> T:
        """Run a call's steps in one transaction and return its result (a ``Done``'s at once)."""
        if isinstance(call, Done):
            return call.value
        plan = call.plan
        async with self._cursor(call.queue) as cur:
            fetched = partial(Fetched, loads=_sql.json_loads(cur.connection))
            try:  # inside the block: an exception leaving it would roll the call back
                step = next(plan)
                while True:
                    try:
                        await cur.execute(step.statement, step.params)
                    except psycopg.Error as exc:
                        step = plan.throw(exc)  # the plan may name it, or re-raises it
                    else:
                        rows = await cur.fetchall() if cur.description else []
                        step = plan.send(fetched(rows))
            except StopIteration as done:
                result: T = done.value
                return result

    async def _send(self, sending: Sending) -> list[int]:
        """Run a send, through the telemetry hooks when they are on."""
        hooks = _telemetry.hooks
        if hooks is None:
            return await self._run(sending.call(None))
        return await hooks.asend(
            sending.queue, sending.headers, lambda h: self._run(sending.call(h))
        )


def delay_or_time(value: object, argument: str) -> int | datetime:
    """A delay or visibility timeout as whole seconds from now, or an aware datetime.

    Raises:
        InvalidArgument: On a naive datetime (its time zone would be a guess), or a
            negative, fractional or too large number of seconds.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgument(
                argument,
                f"a naive datetime is ambiguous, give an aware one (e.g. "
                f"datetime.now(UTC) + timedelta(minutes=5)); got {value!r}",
            )
        return value
    return whole_seconds(value, argument)


def batch_payload(bodies: object, headers: object) -> tuple[list[str], list[str] | None]:
    """JSON texts of a batch's bodies (typed bodies encoded first), and of its headers (one
    per body) or None: :func:`~rx_pgmq._values._validate.check_batch` after :func:`encode_body`.

    Raises:
        InvalidArgument: If ``bodies`` is not a non-empty list of JSON values, or
            ``headers`` not None or a list of one JSON object (or None) per body.
    """
    if isinstance(bodies, Sequence) and not isinstance(bodies, str | bytes | Mapping):
        bodies = [encode_body(b) for b in bodies]
    return check_batch(bodies, headers)
