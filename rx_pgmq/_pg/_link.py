"""One long-lived connection of a consumer (reader or acknowledger), reconnectable."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import ConnStatus
from psycopg_pool import ConnectionPool

from rx_pgmq._pg._conn import connect

__all__ = ["Link"]

_log = logging.getLogger("rx_pgmq")

_UNLISTEN_ALL = b"UNLISTEN *"


class Link:
    """Holds one autocommit connection from a conninfo string or a pool.

    A link may also LISTEN (:meth:`listen`): every connection it opens then LISTENs on the
    channel before :meth:`get` returns it, and a connection given back to a pool UNLISTENs
    first.

    Args:
        conninfo: A conninfo string (a dedicated connection is opened) or a pool (a
            connection is borrowed for the link's lifetime).
        role: ``reader`` or ``acker``; tags ``application_name``.
        connect_timeout: Longest wait for one connection attempt from a conninfo string
            (seconds; rounded up, then kept between 2, libpq's least, and 10).
    """

    def __init__(
        self, conninfo: str | ConnectionPool, role: str, connect_timeout: float = 10.0
    ) -> None:
        self._conninfo = conninfo
        self._role = role
        self._timeout = max(2, min(10, math.ceil(connect_timeout)))
        self._conn: psycopg.Connection[Any] | None = None
        self._was_autocommit = True
        self._listen: bytes | None = None
        self._on_notify: Callable[[psycopg.Notify], None] | None = None

    @property
    def connected(self) -> psycopg.Connection[Any] | None:
        """The current connection, if one is open."""
        return self._conn

    def listen(self, channel: str, on_notify: Callable[[psycopg.Notify], None]) -> None:
        """LISTEN on ``channel`` on every connection opened from now on.

        Call it before the first :meth:`get`. Notifications that psycopg reads while a
        statement runs go to ``on_notify`` (on the thread running the statement); those
        that arrive between statements are collected by :meth:`take_notifications`.

        Args:
            channel: The channel name (quoted here).
            on_notify: Called with each notification read during a statement.
        """
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel)).as_bytes(None)
        self._on_notify = on_notify

    def get(self) -> psycopg.Connection[Any]:
        """The connection, opening (or borrowing) one if needed; LISTENing if asked.

        Raises:
            psycopg.Error: If connecting (or the LISTEN) fails.
        """
        if self._conn is not None and self._conn.closed:
            self.drop()  # a pooled one goes back, so the pool can replace it
        if self._conn is None:
            if isinstance(self._conninfo, ConnectionPool):
                conn = self._conninfo.getconn()
                self._was_autocommit = conn.autocommit
                if not conn.autocommit:
                    conn.autocommit = True
            else:
                conn = connect(
                    self._conninfo,
                    application_name=f"rx_pgmq.{self._role}",
                    keepalive=self._listen is not None,  # it may wait for notifications only
                    timeout=self._timeout,
                )
            self._conn = conn
            if self._listen is not None:
                assert self._on_notify is not None
                conn.add_notify_handler(self._on_notify)
                conn.execute(self._listen)  # on failure the caller drops the link
        return self._conn

    def take_notifications(self, *, read: bool = True) -> int:
        """Take the notifications that arrived on the idle connection; return how many.

        Call it when no statement runs: with ``read`` when the connection's socket is
        readable; without, to collect those libpq already holds in its buffer (read along
        with a statement's last result: the socket shows nothing more).

        Raises:
            psycopg.OperationalError: If the connection is broken or was closed.
        """
        conn = self._conn
        if conn is None or conn.closed:
            raise psycopg.OperationalError(f"the {self._role} connection is closed")
        pgconn = conn.pgconn
        if read:
            pgconn.consume_input()
        count = 0
        while pgconn.notifies() is not None:
            count += 1
        if pgconn.status != ConnStatus.OK:
            raise psycopg.OperationalError(f"the {self._role} connection was closed")
        return count

    def backend_pid(self) -> int | None:
        """The server process id of the current connection (tests terminate it)."""
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def cancel(self) -> None:
        """Cancel the statement running on the connection (from another thread)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.cancel_safe(timeout=2.0)
            except Exception as exc:  # best effort: the connection may be dying
                _log.debug("cancel on %s connection failed: %s", self._role, exc)

    def drop(self) -> None:
        """Forget a broken connection (closing it, or returning it to its pool)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._on_notify is not None:
            with contextlib.suppress(ValueError):  # not registered: the LISTEN never ran
                conn.remove_notify_handler(self._on_notify)
        if isinstance(self._conninfo, ConnectionPool):
            try:
                if self._listen is not None and not conn.closed and not conn.broken:
                    try:
                        conn.execute(_UNLISTEN_ALL)  # the pool's next user must not get ours
                    except psycopg.Error:
                        conn.close()  # the pool discards a closed connection
                if not conn.closed and not conn.broken and not self._was_autocommit:
                    conn.autocommit = False  # give it back as the pool handed it out
                self._conninfo.putconn(conn)
            except Exception as exc:
                _log.debug("returning a %s connection to its pool failed: %s", self._role, exc)
        else:
            try:
                conn.close()
            except Exception as exc:
                _log.debug("closing a %s connection failed: %s", self._role, exc)

    close = drop
