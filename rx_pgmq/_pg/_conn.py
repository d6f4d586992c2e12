"""Where connections come from: a conninfo string, a pool, or one connection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from rx_pgmq._pg._dberrors import connect_error
from rx_pgmq.errors import ConnectionLost, InvalidArgument

__all__ = [
    "KEEPALIVE_DEFAULTS",
    "AsyncConninfo",
    "ConnSource",
    "Conninfo",
    "OnSource",
    "Source",
    "connect",
    "first_connect_timeout",
    "private_pool_options",
]

Conninfo = str | ConnectionPool | psycopg.Connection[Any]
"""A PostgreSQL conninfo/URI string, a ``psycopg_pool.ConnectionPool`` or a connection."""

AsyncConninfo = str | AsyncConnectionPool | psycopg.AsyncConnection[Any]
"""A conninfo/URI string, a ``psycopg_pool.AsyncConnectionPool`` or an ``AsyncConnection``."""


KEEPALIVE_DEFAULTS: dict[str, str] = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
"""TCP keepalives for a connection that only waits for notifications (no traffic of its
own), so a silently dropped one is noticed; applied where the conninfo sets none of its
own. libpq ignores them on Unix sockets."""


def connect(
    conninfo: str,
    *,
    autocommit: bool = True,
    application_name: str = "rx_pgmq",
    keepalive: bool = False,
    timeout: int = 10,
) -> psycopg.Connection[Any]:
    """Open a dedicated connection (autocommit by default) tagged with ``application_name``.

    With ``keepalive``, :data:`KEEPALIVE_DEFAULTS` fill in what the conninfo leaves unset.
    ``timeout`` bounds one attempt, handshake and login included (libpq's
    ``connect_timeout``: whole seconds, at least 2).
    """
    extra: dict[str, Any] = {}
    if keepalive:
        given = conninfo_to_dict(conninfo)
        extra = {k: v for k, v in KEEPALIVE_DEFAULTS.items() if k not in given}
    return psycopg.connect(
        conninfo,
        autocommit=autocommit,
        application_name=application_name,
        connect_timeout=timeout,
        **extra,
    )


C = TypeVar("C", Conninfo, AsyncConninfo)


class Source(Generic[C]):
    """What the sync and the asyncio connection sources share: what they are made from
    (checked), a dsn for new connections, and refusing use after ``close``.

    Raises:
        InvalidArgument: If ``conninfo`` is an empty string, or neither a string, a
            ``pool`` nor a ``connection`` (the sync or the asyncio kinds).
    """

    def __init__(self, conninfo: C, pool: type, connection: type, application_name: str) -> None:
        if isinstance(conninfo, str):
            if not conninfo.strip():
                raise InvalidArgument("conninfo", "must be a non-empty conninfo string or URI")
        elif not isinstance(conninfo, pool | connection):
            raise InvalidArgument(
                "conninfo",
                f"must be a conninfo string, a psycopg_pool.{pool.__name__} or a "
                f"psycopg.{connection.__name__}, got {type(conninfo).__name__}",
            )
        self._conninfo: C = conninfo
        self._application_name = application_name
        self._closed = False

    @property
    def conninfo(self) -> C:
        """What this source was made from."""
        return self._conninfo

    def dsn(self) -> str:
        """A conninfo string that opens a new connection to the same database."""
        given = self._conninfo
        if isinstance(given, str):
            return given
        if isinstance(given, ConnectionPool | AsyncConnectionPool):
            return str(given.conninfo)
        info = given.info
        # info.dsn leaves the password out; a new connection needs it.
        return make_conninfo(info.dsn, password=info.password) if info.password else info.dsn

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgument("client", "is closed; create a new one")


class OnSource(Generic[C]):
    """A client's ``conninfo`` and ``dsn()``, answered by its connection source."""

    _source: Source[C]

    @property
    def conninfo(self) -> C:
        """The conninfo, pool or connection this client was made with."""
        return self._source.conninfo

    def dsn(self) -> str:
        """A conninfo string for new connections to the same database."""
        return self._source.dsn()


def private_pool_options(application_name: str) -> dict[str, Any]:
    """The settings of a client's private pool (sync or asyncio): 1 to 4 autocommit
    connections tagged ``application_name``, the pool named after it."""
    return {
        "min_size": 1,
        "max_size": 4,
        "kwargs": {"application_name": application_name, "autocommit": True},
        "name": application_name,
    }


def first_connect_timeout(conninfo: str) -> float:
    """How long a new private pool may take to open its first connection (seconds).

    ``connect_timeout`` from the conninfo (plus a second of slack) when set, else 30 s
    (psycopg_pool's default), so an unreachable server fails fast when the caller asked.
    """
    try:
        value = float(conninfo_to_dict(conninfo).get("connect_timeout") or 0)
    except (psycopg.Error, TypeError, ValueError):
        value = 0.0
    return value + 1.0 if value > 0 else 30.0


_BEGIN_ATTEMPTS = 6
"""Connections tried for one call whose ``BEGIN`` fails on a broken connection: a pool
holds at most 4 (every one is broken after a server restart), plus a fresh one."""


def _lost(exc: psycopg.Error, committing: bool) -> ConnectionLost:
    """The :class:`ConnectionLost` for a connection that broke inside a call's transaction.

    Broken before the commit, the server rolled the transaction back: nothing happened.
    Broken during the commit, it may have committed.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if committing:
        return ConnectionLost(
            f"lost the database connection while committing ({text}): the statement may "
            "have taken effect; check before retrying",
            may_have_run=True,
        )
    return ConnectionLost(
        f"lost the database connection while a statement was running ({text}): it did not "
        "take effect (its transaction was rolled back); retrying is safe",
        may_have_run=False,
    )


class ConnSource(Source[Conninfo]):
    """Hands out connections for short statements, committing each block.

    A conninfo string gets a small private pool (opened lazily, closed by :meth:`close`);
    a pool is borrowed from; a single connection is shared under a lock, inside
    ``conn.transaction()`` (a savepoint if the caller has a transaction open).
    """

    def __init__(self, conninfo: Conninfo, *, application_name: str = "rx_pgmq") -> None:
        super().__init__(conninfo, ConnectionPool, psycopg.Connection, application_name)
        self._own_pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ConnectionPool:
        with self._lock:
            self._check_open()
            if self._own_pool is None:
                assert isinstance(self._conninfo, str)
                self._probe(self._conninfo)
                options = private_pool_options(self._application_name)
                pool = ConnectionPool(self._conninfo, open=True, **options)
                # Fail fast (PoolTimeout -> ConnectionLost; the pool closes itself) instead
                # of every call waiting the pool's 30 s when the server is unreachable.
                pool.wait(timeout=first_connect_timeout(self._conninfo))
                self._own_pool = pool
            return self._own_pool

    def _probe(self, conninfo: str) -> None:
        """Connect once before opening the private pool, to fail at once on a login no
        retry can fix (unknown database or role, refused password, bad conninfo): the pool
        would retry it in the background until its wait timed out.

        Raises:
            psycopg.Error: Such a failure (callers translate it to a named error).
        """
        try:
            connect(conninfo, application_name=self._application_name).close()
        except psycopg.Error as exc:
            if connect_error(exc) is not None:
                raise
            # Transient (refused, starting up): the pool keeps trying within its wait.

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection whose work commits when the block exits without error.

        From a pool (private or given) of autocommit connections, the block runs in a
        transaction: a connection found broken by its ``BEGIN`` (a killed backend, a
        restarted server) is replaced and the call goes on, so nothing of the caller's
        reaches a dead connection.

        Raises:
            InvalidArgument: After :meth:`close`, whatever the source was made from.
            ConnectionLost: If the connection broke inside the block or its commit
                (``may_have_run`` says which), or no connection could be had.
        """
        if isinstance(self._conninfo, psycopg.Connection):
            conn = self._conninfo
            with self._lock:
                self._check_open()
                with conn.transaction():
                    yield conn
            return
        if isinstance(self._conninfo, ConnectionPool):
            self._check_open()
            pool = self._conninfo
        else:
            pool = self._pool()
        for attempt in range(1, _BEGIN_ATTEMPTS + 1):
            with pool.connection() as conn:
                if not conn.autocommit:
                    yield conn
                    return
                committing = False
                try:
                    with ExitStack() as stack:
                        try:
                            stack.enter_context(conn.transaction())  # sends BEGIN
                        except psycopg.OperationalError:
                            # Broken before the statement was sent (backend killed, or the
                            # server restarted, while the connection sat in the pool): the
                            # pool drops it, and the next connection runs the statement.
                            if conn.broken and attempt < _BEGIN_ATTEMPTS:
                                continue
                            raise
                        yield conn
                        committing = True  # leaving the stack sends COMMIT
                except psycopg.Error as exc:
                    if not conn.broken:
                        raise
                    raise _lost(exc, committing) from exc
                return

    def close(self) -> None:
        """Close the private pool, if any (a pool or connection passed in stays open, but
        this source refuses further use)."""
        with self._lock:
            self._closed = True
            pool, self._own_pool = self._own_pool, None
        if pool is not None:
            pool.close()
