"""One long-lived connection of a consumer (reader or acknowledger), reconnectable."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from rx_pgmq._conn import connect

__all__ = ["Link"]

_log = logging.getLogger("rx_pgmq")


class Link:
    """Holds one autocommit connection from a conninfo string or a pool.

    Args:
        conninfo: A conninfo string (a dedicated connection is opened) or a pool (a
            connection is borrowed for the link's lifetime).
        role: ``reader`` or ``acker``; tags ``application_name``.
    """

    def __init__(self, conninfo: str | ConnectionPool, role: str) -> None:
        self._conninfo = conninfo
        self._role = role
        self._conn: psycopg.Connection[Any] | None = None
        self._was_autocommit = True

    @property
    def connected(self) -> psycopg.Connection[Any] | None:
        """The current connection, if one is open."""
        return self._conn

    def get(self) -> psycopg.Connection[Any]:
        """The connection, opening (or borrowing) one if needed.

        Raises:
            psycopg.Error: If connecting fails.
        """
        if self._conn is None or self._conn.closed:
            if isinstance(self._conninfo, ConnectionPool):
                conn = self._conninfo.getconn()
                self._was_autocommit = conn.autocommit
                if not conn.autocommit:
                    conn.autocommit = True
            else:
                conn = connect(self._conninfo, application_name=f"rx_pgmq.{self._role}")
            self._conn = conn
        return self._conn

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
        if isinstance(self._conninfo, ConnectionPool):
            try:
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
