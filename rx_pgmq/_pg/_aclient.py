"""The PGMQ client as coroutines on psycopg's ``AsyncConnection`` / ``AsyncConnectionPool``.

Every call is the sync client's: the same plan (:mod:`rx_pgmq._pg._calls` and the
feature mixins' calls: validation, SQL, rows to result) run by the async executor of
:class:`~rx_pgmq._pg._api_base.AsyncClientAPI`, with the same named errors
(:mod:`rx_pgmq._pg._dberrors`) as :class:`rx_pgmq.PGMQ`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from types import TracebackType
from typing import Any, overload

import psycopg

from rx_pgmq._pg import _calls, _sql
from rx_pgmq._pg._aconn import AsyncConnSource
from rx_pgmq._pg._api_base import Delay
from rx_pgmq._pg._api_fifo import AsyncFifoAPI
from rx_pgmq._pg._api_queues import AsyncQueuesAPI
from rx_pgmq._pg._api_topics import AsyncTopicsAPI
from rx_pgmq._pg._conn import AsyncConninfo, OnSource
from rx_pgmq._pg._dberrors import translate
from rx_pgmq._values._records import Partitioning
from rx_pgmq.message import BodyT, Message, QueueInfo, QueueMetrics

__all__ = ["AsyncConninfo", "AsyncPGMQ"]

Duration = int | timedelta


class AsyncPGMQ(AsyncTopicsAPI, AsyncFifoAPI, AsyncQueuesAPI, OnSource[AsyncConninfo]):
    """:class:`rx_pgmq.PGMQ`'s methods as coroutines, for asyncio programs.

    Every method of ``PGMQ`` is here with the same signature, validation (before any SQL),
    named errors and ``body_type`` decoding: queue administration, ``send``/``send_batch``
    (and the topic sends), ``read``, ``read_with_poll``, ``pop``, the FIFO group reads,
    ``delete``/``archive``/``set_vt``, ``peek``, ``queue``/``queues``, notification
    throttles and partitioned queues. See ``PGMQ``'s methods for what each does.

    Args:
        conninfo: A conninfo string or URI (the client opens a small private pool on first
            use), a ``psycopg_pool.AsyncConnectionPool`` (borrowed per call), or a
            ``psycopg.AsyncConnection``: statements run in ``conn.transaction()``, so inside
            a caller's open transaction they join it (as a savepoint) and commit or roll
            back with it.

    Raises:
        InvalidArgument: If ``conninfo`` is none of those.

    Example:
        >>> async with AsyncPGMQ(dsn) as client:  # doctest: +SKIP
        ...     await client.create_queue("orders")
        ...     await client.send("orders", {"id": 1})
        >>> async with await psycopg.AsyncConnection.connect(dsn) as conn:  # doctest: +SKIP
        ...     async with conn.transaction():  # one transaction with the caller's writes
        ...         await conn.execute("INSERT INTO orders ...")
        ...         await AsyncPGMQ(conn).send("orders", {"id": 1})
    """

    _source: AsyncConnSource

    def __init__(self, conninfo: AsyncConninfo) -> None:
        self._source = AsyncConnSource(conninfo, application_name="rx_pgmq.aio")

    # -- plumbing ------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the private pool (a pool or connection passed in is left open).

        Either way the client refuses further calls (``InvalidArgument``).
        """
        await self._source.close()

    async def __aenter__(self) -> AsyncPGMQ:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def _cursor(self, queue: str | None = None) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        try:
            async with self._source.connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise translate(exc, queue) from exc

    # -- administration ------------------------------------------------------------------

    async def create_queue(
        self, name: str, unlogged: bool = False, partitioned: bool | Partitioning = False
    ) -> None:
        """``PGMQ.create_queue``: a no-op if it exists; ``partitioned`` needs pg_partman."""
        await self._run(_calls.create_queue(name, unlogged, partitioned))

    async def drop_queue(self, name: str) -> bool:
        """Drop a queue and its archive. Returns False if it did not exist."""
        return await self._run(_calls.drop_queue(name))

    async def purge_queue(self, name: str) -> int:
        """Delete every message in a queue; how many (``QueueNotFound`` if none)."""
        return await self._run(_calls.purge_queue(name))

    async def queue_exists(self, name: str) -> bool:
        """Whether a queue of that name exists."""
        return await self._run(_calls.queue_exists(name))

    async def list_queues(self) -> list[QueueInfo]:
        """Every queue, by name."""
        return await self._run(_calls.list_queues())

    async def metrics(self, name: str) -> QueueMetrics:
        """``pgmq.metrics`` of one queue (``QueueNotFound`` if none)."""
        return await self._run(_calls.metrics(name))

    async def metrics_all(self) -> list[QueueMetrics]:
        """``pgmq.metrics`` of every queue, by name."""
        return await self._run(_calls.metrics_all())

    async def enable_notify(self, name: str, throttle_ms: int = 250) -> None:
        """``PGMQ.enable_notify``: inserts fire ``NOTIFY "pgmq.q_<name>.INSERT"``."""
        await self._run(_calls.enable_notify(name, throttle_ms))

    async def disable_notify(self, name: str) -> None:
        """Stop insert notifications for the queue."""
        await self._run(_calls.disable_notify(name))

    async def notify_throttle_ms(self, name: str) -> int | None:
        """The queue's notification throttle in ms, or None if notifications are off."""
        return await self._run(_calls.notify_throttle_ms(name))

    # -- producing -----------------------------------------------------------------------

    async def send(
        self, name: str, body: Any, headers: Mapping[str, Any] | None = None, delay: Delay = 0
    ) -> int:
        """``PGMQ.send``: one message (a typed body is sent as its JSON form); its id."""
        return (await self._send(_calls.send(name, body, headers, delay)))[0]

    async def send_batch(
        self,
        name: str,
        bodies: Sequence[Any],
        headers: Sequence[Mapping[str, Any] | None] | None = None,
        delay: Delay = 0,
    ) -> list[int]:
        """``PGMQ.send_batch``: several messages in one statement; their ids in order."""
        return await self._send(_calls.send_batch(name, bodies, headers, delay))

    # -- low-level reads -----------------------------------------------------------------

    async def read(
        self,
        name: str,
        vt: Duration,
        qty: int = 1,
        conditional: Mapping[str, Any] | None = None,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """``PGMQ.read``: claim up to ``qty`` messages for ``vt`` (``BodyMismatch`` and
        ``DecodeError`` roll the read back: nothing claimed)."""
        return await self._run(_calls.read(name, vt, qty, conditional, body_type))

    async def read_with_poll(
        self,
        name: str,
        vt: Duration,
        qty: int = 1,
        max_poll_seconds: int = 5,
        poll_interval_ms: int = 100,
        conditional: Mapping[str, Any] | None = None,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """``PGMQ.read_with_poll``: :meth:`read`, waiting in the server up to
        ``max_poll_seconds`` (the event loop runs meanwhile)."""
        poll = (max_poll_seconds, poll_interval_ms)
        return await self._run(_calls.read_with_poll(name, vt, qty, poll, conditional, body_type))

    async def pop(
        self, name: str, qty: int = 1, *, body_type: type[BodyT] | None = None
    ) -> list[Message[BodyT]]:
        """``PGMQ.pop``: read and delete up to ``qty`` messages (at-most-once)."""
        return await self._run(_calls.pop(name, qty, body_type))

    # -- low-level acks ------------------------------------------------------------------

    @overload
    async def delete(self, name: str, msg_id: int) -> bool: ...
    @overload
    async def delete(self, name: str, msg_id: Sequence[int]) -> list[int]: ...

    async def delete(self, name: str, msg_id: int | Sequence[int]) -> bool | list[int]:
        """Delete one message (whether it existed) or many (the ids deleted)."""
        return await self._run(_calls.ack(name, msg_id, _sql.DELETE_ONE, _sql.DELETE_MANY))

    @overload
    async def archive(self, name: str, msg_id: int) -> bool: ...
    @overload
    async def archive(self, name: str, msg_id: Sequence[int]) -> list[int]: ...

    async def archive(self, name: str, msg_id: int | Sequence[int]) -> bool | list[int]:
        """Archive one message (whether it existed) or many (the ids archived)."""
        return await self._run(_calls.ack(name, msg_id, _sql.ARCHIVE_ONE, _sql.ARCHIVE_MANY))

    @overload
    async def set_vt(self, name: str, msg_id: int, vt: Delay) -> Message | None: ...
    @overload
    async def set_vt(self, name: str, msg_id: Sequence[int], vt: Delay) -> list[Message]: ...

    async def set_vt(
        self, name: str, msg_id: int | Sequence[int], vt: Delay
    ) -> Message | list[Message] | None:
        """``PGMQ.set_vt``: visible again ``vt`` seconds from now, or at an aware datetime.

        Returns:
            The updated message (None if it does not exist), or the list of updated ones.
        """
        return await self._run(_calls.set_vt(name, msg_id, vt))
