"""The PGMQ client as coroutines on psycopg's ``AsyncConnection`` / ``AsyncConnectionPool``.

Same SQL (:mod:`rx_pgmq._pg._sql`), validation (:mod:`rx_pgmq._values._validate`) and named errors
(:mod:`rx_pgmq._pg._dberrors`) as :class:`rx_pgmq.PGMQ`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from types import TracebackType
from typing import Any, overload

import psycopg
from psycopg_pool import AsyncConnectionPool

from rx_pgmq._pg import _sql
from rx_pgmq._pg._api_base import batch_payload
from rx_pgmq._pg._conn import _first_connect_timeout
from rx_pgmq._pg._dberrors import translate
from rx_pgmq._values import _telemetry
from rx_pgmq._values._bodytype import body_decoder, decode_messages, encode_body
from rx_pgmq._values._validate import (
    check_batch,
    check_body,
    check_conditional,
    check_headers,
    check_msg_id,
    check_msg_ids,
    check_non_negative_int,
    check_positive_int,
    check_queue_name,
    whole_seconds,
)
from rx_pgmq.errors import InvalidArgument, QueueNotFound
from rx_pgmq.message import BodyT, Message, QueueInfo, QueueMetrics

__all__ = ["AsyncConninfo", "AsyncPGMQ"]

AsyncConninfo = str | AsyncConnectionPool | psycopg.AsyncConnection[Any]
"""A conninfo/URI string, a ``psycopg_pool.AsyncConnectionPool`` or an ``AsyncConnection``."""

Duration = int | timedelta


class AsyncPGMQ:
    """:class:`rx_pgmq.PGMQ`'s methods as coroutines, for asyncio programs.

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

    def __init__(self, conninfo: AsyncConninfo) -> None:
        if isinstance(conninfo, str):
            if not conninfo.strip():
                raise InvalidArgument("conninfo", "must be a non-empty conninfo string or URI")
        elif not isinstance(conninfo, AsyncConnectionPool | psycopg.AsyncConnection):
            raise InvalidArgument(
                "conninfo",
                "must be a conninfo string, a psycopg_pool.AsyncConnectionPool or a "
                f"psycopg.AsyncConnection, got {type(conninfo).__name__}",
            )
        self._conninfo = conninfo
        self._own_pool: AsyncConnectionPool | None = None
        self._lock = asyncio.Lock()  # the private pool's opening, or the one connection
        self._closed = False

    @property
    def conninfo(self) -> AsyncConninfo:
        """The conninfo, pool or connection this client was made with."""
        return self._conninfo

    async def close(self) -> None:
        """Close the private pool (a pool or connection passed in is left open).

        Either way the client refuses further calls (``InvalidArgument``).
        """
        self._closed = True
        pool, self._own_pool = self._own_pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> AsyncPGMQ:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgument("client", "is closed; create a new one")

    async def _pool(self, conninfo: str) -> AsyncConnectionPool:
        async with self._lock:
            self._check_open()
            if self._own_pool is None:
                pool = AsyncConnectionPool(
                    conninfo,
                    min_size=1,
                    max_size=4,
                    kwargs={"application_name": "rx_pgmq.aio", "autocommit": True},
                    open=False,
                    name="rx_pgmq.aio",
                )
                try:
                    await pool.open(wait=True, timeout=_first_connect_timeout(conninfo))
                except BaseException:
                    await pool.close()
                    raise
                self._own_pool = pool
            return self._own_pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        given = self._conninfo
        if isinstance(given, psycopg.AsyncConnection):
            async with self._lock:
                self._check_open()
                async with given.transaction():
                    yield given
            return
        if isinstance(given, AsyncConnectionPool):
            self._check_open()
            pool = given
        else:
            pool = await self._pool(given)
        async with pool.connection() as conn:
            if conn.autocommit:
                async with conn.transaction():
                    yield conn
            else:
                yield conn

    @asynccontextmanager
    async def _cursor(self, queue: str | None = None) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        try:
            async with self._connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise translate(exc, queue) from exc

    async def _one(self, queue: str | None, statement: str, params: tuple[Any, ...]) -> Any:
        """The first column of the first row (``None`` if no row)."""
        async with self._cursor(queue) as cur:
            row = await (await cur.execute(statement, params)).fetchone()
            return row[0] if row else None

    async def _rows(
        self, queue: str | None, statement: str, params: tuple[Any, ...] = ()
    ) -> list[Any]:
        async with self._cursor(queue) as cur:
            return await (await cur.execute(statement, params)).fetchall()

    async def _messages(
        self,
        queue: str,
        statement: str,
        params: tuple[Any, ...],
        decode: Callable[[Any], BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """The messages a statement returns (JSON text columns, decoded with the connection's
        loads, then each body with ``decode``); the first one's ``DecodeError`` (or
        ``BodyMismatch``) is raised inside the call's transaction, so the statement is
        rolled back (nothing claimed, popped or changed)."""
        async with self._cursor(queue) as cur:
            rows = await (await cur.execute(statement, params)).fetchall()
            msgs = _sql.messages_from_rows(rows, queue, loads=_sql.json_loads(cur.connection))
            for m in msgs:
                if m.decode_error is not None:
                    raise m.decode_error
            return decode_messages(msgs, decode)

    async def _existing(self, cur: psycopg.AsyncCursor[Any], queue: str) -> None:
        row = await (await cur.execute(_sql.QUEUE_EXISTS, (queue,))).fetchone()
        if not row or not row[0]:
            raise QueueNotFound(queue)

    # -- administration ------------------------------------------------------------------

    async def create_queue(self, name: str, unlogged: bool = False) -> None:
        """Create a queue (and its archive); a no-op if it exists. See ``PGMQ.create_queue``."""
        check_queue_name(name, "name")
        if not isinstance(unlogged, bool):
            raise InvalidArgument("unlogged", f"must be a bool, got {unlogged!r}")
        await self._rows(name, _sql.CREATE_UNLOGGED if unlogged else _sql.CREATE, (name,))

    async def drop_queue(self, name: str) -> bool:
        """Drop a queue and its archive. Returns False if it did not exist."""
        check_queue_name(name, "name")
        return bool(await self._one(name, _sql.DROP, (name,)))

    async def purge_queue(self, name: str) -> int:
        """Delete every message in a queue; how many were deleted.

        Raises:
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        async with self._cursor(name) as cur:
            await self._existing(cur, name)
            row = await (await cur.execute(_sql.PURGE, (name,))).fetchone()
            return int(row[0]) if row else 0

    async def queue_exists(self, name: str) -> bool:
        """Whether a queue of that name exists."""
        check_queue_name(name, "name")
        return bool(await self._one(name, _sql.QUEUE_EXISTS, (name,)))

    async def list_queues(self) -> list[QueueInfo]:
        """Every queue, by name."""
        return [_sql.queue_info_from_row(r) for r in await self._rows(None, _sql.LIST_QUEUES)]

    async def metrics(self, name: str) -> QueueMetrics:
        """``pgmq.metrics`` of one queue.

        Raises:
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        async with self._cursor(name) as cur:
            await self._existing(cur, name)
            row = await (await cur.execute(_sql.METRICS, (name,))).fetchone()
            assert row is not None
            return _sql.metrics_from_row(row)

    async def metrics_all(self) -> list[QueueMetrics]:
        """``pgmq.metrics`` of every queue, by name."""
        return [_sql.metrics_from_row(r) for r in await self._rows(None, _sql.METRICS_ALL)]

    async def enable_notify(self, name: str, throttle_ms: int = 250) -> None:
        """Make inserts fire ``NOTIFY "pgmq.q_<name>.INSERT"`` (see ``PGMQ.enable_notify``).

        Raises:
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        check_non_negative_int(throttle_ms, "throttle_ms")
        async with self._cursor(name) as cur:
            await self._existing(cur, name)
            await cur.execute(_sql.ENABLE_NOTIFY, (name, throttle_ms))

    async def disable_notify(self, name: str) -> None:
        """Stop insert notifications for the queue."""
        check_queue_name(name, "name")
        async with self._cursor(name) as cur:
            await self._existing(cur, name)
            await cur.execute(_sql.DISABLE_NOTIFY, (name,))

    # -- producing -----------------------------------------------------------------------

    async def send(
        self, name: str, body: Any, headers: Mapping[str, Any] | None = None, delay: Duration = 0
    ) -> int:
        """Send one message; its ``msg_id``. ``body`` may be a dataclass, msgspec.Struct or
        pydantic model instance (its JSON form is stored), as with ``PGMQ.send``.

        Raises:
            InvalidArgument: On a bad name, body, headers or delay (before any SQL).
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        text = check_body(encode_body(body))
        params = (name, text, check_headers(headers), whole_seconds(delay, "delay"))
        hooks = _telemetry.hooks
        if hooks is not None:

            async def run(heads: list[Mapping[str, Any] | None]) -> list[int]:
                traced = (*params[:2], check_headers(heads[0]), params[3])
                return [int(await self._one(name, _sql.SEND, traced))]

            return (await hooks.asend(name, [headers], run))[0]
        return int(await self._one(name, _sql.SEND, params))

    async def send_batch(
        self,
        name: str,
        bodies: Sequence[Any],
        headers: Sequence[Mapping[str, Any] | None] | None = None,
        delay: Duration = 0,
    ) -> list[int]:
        """Send several messages in one statement; their ids in order.

        Raises:
            InvalidArgument: On a bad name, body, headers or delay (before any SQL).
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        texts, heads = batch_payload(bodies, headers)
        params = (name, texts, heads, whole_seconds(delay, "delay"))
        hooks = _telemetry.hooks
        if hooks is not None:

            async def run(traced: list[Mapping[str, Any] | None]) -> list[int]:
                sent = (name, texts, check_batch(bodies, traced)[1], params[3])
                return [int(r[0]) for r in await self._rows(name, _sql.SEND_BATCH, sent)]

            return await hooks.asend(name, list(headers or [None] * len(texts)), run)
        return [int(r[0]) for r in await self._rows(name, _sql.SEND_BATCH, params)]

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
        """Claim up to ``qty`` visible messages, hiding them for ``vt`` seconds.

        ``body_type``: decode each body into this dataclass, TypedDict, msgspec.Struct or
        pydantic model class, as ``PGMQ.read`` does.

        Raises:
            InvalidArgument: On a bad name, vt, qty, conditional or body_type.
            QueueNotFound: If the queue does not exist.
            BodyMismatch: If a body does not fit ``body_type`` (nothing claimed).
            DecodeError: If a message's body or headers cannot be decoded (nothing claimed).
        """
        check_queue_name(name, "name")
        params = (
            name,
            whole_seconds(vt, "vt"),
            check_positive_int(qty, "qty"),
            check_conditional(conditional),
        )
        return await self._messages(name, _sql.READ, params, body_decoder(body_type))

    async def pop(
        self, name: str, qty: int = 1, *, body_type: type[BodyT] | None = None
    ) -> list[Message[BodyT]]:
        """Read and delete up to ``qty`` messages (at-most-once); ``body_type`` as in
        :meth:`read`.

        Raises:
            InvalidArgument: On a bad name, qty or body_type.
            QueueNotFound: If the queue does not exist.
            BodyMismatch: If a body does not fit ``body_type`` (nothing popped).
            DecodeError: If a message's body or headers cannot be decoded (nothing popped).
        """
        check_queue_name(name, "name")
        params = (name, check_positive_int(qty, "qty"))
        return await self._messages(name, _sql.POP, params, body_decoder(body_type))

    # -- low-level acks ------------------------------------------------------------------

    @overload
    async def delete(self, name: str, msg_id: int) -> bool: ...
    @overload
    async def delete(self, name: str, msg_id: Sequence[int]) -> list[int]: ...

    async def delete(self, name: str, msg_id: int | Sequence[int]) -> bool | list[int]:
        """Delete one message (whether it existed) or many (the ids deleted)."""
        return await self._ack(name, msg_id, _sql.DELETE_ONE, _sql.DELETE_MANY)

    @overload
    async def archive(self, name: str, msg_id: int) -> bool: ...
    @overload
    async def archive(self, name: str, msg_id: Sequence[int]) -> list[int]: ...

    async def archive(self, name: str, msg_id: int | Sequence[int]) -> bool | list[int]:
        """Archive one message (whether it existed) or many (the ids archived)."""
        return await self._ack(name, msg_id, _sql.ARCHIVE_ONE, _sql.ARCHIVE_MANY)

    async def _ack(
        self, name: str, msg_id: int | Sequence[int], one: str, many: str
    ) -> bool | list[int]:
        check_queue_name(name, "name")
        if isinstance(msg_id, int):
            return bool(await self._one(name, one, (name, check_msg_id(msg_id))))
        ids = check_msg_ids(msg_id, "msg_id")
        if not ids:
            return []
        return sorted(int(r[0]) for r in await self._rows(name, many, (name, ids)))

    @overload
    async def set_vt(self, name: str, msg_id: int, vt: Duration) -> Message | None: ...
    @overload
    async def set_vt(self, name: str, msg_id: Sequence[int], vt: Duration) -> list[Message]: ...

    async def set_vt(
        self, name: str, msg_id: int | Sequence[int], vt: Duration
    ) -> Message | list[Message] | None:
        """Make message(s) visible again ``vt`` seconds from now.

        Returns:
            The updated message (None if it does not exist), or the list of updated ones.
        """
        check_queue_name(name, "name")
        secs = whole_seconds(vt, "vt")
        if isinstance(msg_id, int):
            params: tuple[Any, ...] = (name, check_msg_id(msg_id), secs)
            msgs = await self._messages(name, _sql.SET_VT_ONE, params)
            return msgs[0] if msgs else None
        ids = check_msg_ids(msg_id, "msg_id")
        if not ids:
            return []
        return await self._messages(name, _sql.SET_VT_MANY, (name, ids, secs))
