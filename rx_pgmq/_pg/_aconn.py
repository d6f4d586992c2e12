"""Where the asyncio client's connections come from: :class:`~rx_pgmq._pg._conn.ConnSource`
for ``AsyncConnection`` / ``AsyncConnectionPool``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from rx_pgmq._pg._conn import AsyncConninfo, Source, first_connect_timeout, private_pool_options

__all__ = ["AsyncConnSource"]


class AsyncConnSource(Source[AsyncConninfo]):
    """Hands out async connections for short statements, committing each block.

    A conninfo string gets a small private pool (opened on first use, closed by
    :meth:`close`); a pool is borrowed from; a single connection is shared under a lock,
    inside ``conn.transaction()`` (a savepoint if the caller has a transaction open).
    """

    def __init__(self, conninfo: AsyncConninfo, *, application_name: str = "rx_pgmq.aio") -> None:
        super().__init__(conninfo, AsyncConnectionPool, psycopg.AsyncConnection, application_name)
        self._own_pool: AsyncConnectionPool | None = None
        self._lock = asyncio.Lock()  # the private pool's opening, or the one connection

    async def _pool(self, conninfo: str) -> AsyncConnectionPool:
        async with self._lock:
            self._check_open()
            if self._own_pool is None:
                options = private_pool_options(self._application_name)
                pool = AsyncConnectionPool(conninfo, open=False, **options)
                try:
                    await pool.open(wait=True, timeout=first_connect_timeout(conninfo))
                except BaseException:
                    await pool.close()
                    raise
                self._own_pool = pool
            return self._own_pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection whose work commits when the block exits without error (inside the
        caller's transaction, for a connection given: it commits or rolls back with it).

        Raises:
            InvalidArgument: After :meth:`close`, whatever the source was made from.
        """
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

    async def close(self) -> None:
        """Close the private pool, if any (a pool or connection passed in stays open, but
        this source refuses further use)."""
        self._closed = True
        pool, self._own_pool = self._own_pool, None
        if pool is not None:
            await pool.close()
