"""Install PGMQ into a database: the extension when the server has it, else the bundled SQL."""

from __future__ import annotations

import importlib.resources
import importlib.util
import re
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from rx_pgmq._pg._dberrors import translate
from rx_pgmq.errors import InvalidArgument, PGMQNotInstalled

__all__ = ["install_pgmq", "pgmq_version"]

_LOCK_KEY = 0x7278_5F70_676D_71  # "rx_pgmq": one advisory lock shared by every installer
_READ_SIGNATURE = "pgmq.read(text,integer,integer,jsonb)"
_MARK = re.compile(r"^pgmq (\S+) installed by rx_pgmq$")
_UNKNOWN = "unknown"
_MISSING_PACKAGE = (
    'the server has no pgmq extension and the Python package "pgmq" that ships the PGMQ SQL '
    'is missing; run: pip install "rx-pgmq[embedded]"'
)


def _bundled_file(name: str) -> str:
    """Read ``sql/<name>`` from the ``pgmq`` package without importing it (it is slow)."""
    spec = importlib.util.find_spec("pgmq")
    if spec is None:
        raise PGMQNotInstalled(_MISSING_PACKAGE)
    for location in spec.submodule_search_locations or []:
        candidate = Path(location) / "sql" / name
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    try:  # unusual layouts (zip imports): let importlib.resources find it
        return importlib.resources.files("pgmq").joinpath("sql", name).read_text(encoding="utf-8")
    except (OSError, ImportError) as exc:
        raise PGMQNotInstalled(f"{_MISSING_PACKAGE} (cannot read pgmq/sql/{name}: {exc})") from exc


def bundled_sql() -> tuple[str, str]:
    """Return ``(version, script)`` of the PGMQ SQL shipped in the ``pgmq`` package.

    Raises:
        PGMQNotInstalled: If the ``pgmq`` package (extra ``embedded``) is not installed.
    """
    version = next(
        (
            line.strip()
            for line in _bundled_file("VERSION").splitlines()
            if line.strip() and not line.strip().startswith("#")
        ),
        "",
    )
    if not version:
        raise PGMQNotInstalled(f"{_MISSING_PACKAGE} (pgmq/sql/VERSION is empty)")
    return version, _bundled_file("pgmq.sql")


def _installed(conn: psycopg.Connection[Any]) -> str | None:
    """The PGMQ version installed in the connected database, or None."""
    row = conn.execute(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'pgmq'),"
        " to_regprocedure(%s) IS NOT NULL,"
        " (SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace"
        "  WHERE nspname = 'pgmq')",
        (_READ_SIGNATURE,),
    ).fetchone()
    assert row is not None
    extversion, has_read, comment = row
    if extversion is not None:
        return str(extversion)
    if not has_read:
        return None
    match = _MARK.match(comment or "")
    return match.group(1) if match else _UNKNOWN


def _connect(conninfo: str) -> psycopg.Connection[Any]:
    if not isinstance(conninfo, str) or not conninfo.strip():
        raise InvalidArgument(
            "conninfo", f"must be a non-empty libpq conninfo string or URI, got {conninfo!r}"
        )
    try:
        return psycopg.connect(
            conninfo, autocommit=True, application_name="rx_pgmq install", connect_timeout=10
        )
    except psycopg.Error as exc:
        raise translate(exc) from exc


def pgmq_version(conninfo: str) -> str | None:
    """Return the PGMQ version installed in a database, or None when it has none.

    Args:
        conninfo: A libpq conninfo string or URI.

    Returns:
        The extension's ``extversion``; for a SQL install, the version rx_pgmq recorded in
        the schema comment, or ``"unknown"`` if PGMQ was installed by other means; None when
        ``pgmq.read`` does not exist.

    Raises:
        InvalidArgument: If ``conninfo`` is not a non-empty string (before connecting).
        ConnectionLost: If the database cannot be reached.
    """
    with _connect(conninfo) as conn:
        try:
            return _installed(conn)
        except psycopg.Error as exc:
            raise translate(exc) from exc


def install_pgmq(conninfo: str) -> str:
    """Install PGMQ into a database unless it is already there.

    Uses ``CREATE EXTENSION pgmq`` when the server offers the extension; otherwise runs the
    PGMQ SQL shipped in the ``pgmq`` Python package in one transaction and records its
    version in the comment of schema ``pgmq``. Calling it again is a no-op, and concurrent
    calls are serialized by an advisory lock.

    Args:
        conninfo: A libpq conninfo string or URI of a role allowed to create schemas
            (or the extension).

    Returns:
        The installed PGMQ version, e.g. ``"1.13.0"`` (``"unknown"`` for a SQL install
        rx_pgmq did not make).

    Raises:
        InvalidArgument: If ``conninfo`` is not a non-empty string (before connecting).
        PGMQNotInstalled: If the extension is unavailable and the ``pgmq`` package is missing
            (``pip install "rx-pgmq[embedded]"``).
        PermissionDenied: If the role may not create the extension or schema.
        ConnectionLost: If the database cannot be reached.

    Example:
        >>> install_pgmq("postgresql://postgres@localhost/postgres")  # doctest: +SKIP
        '1.13.0'
    """
    with _connect(conninfo) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                existing = _installed(conn)
                if existing is not None:
                    return existing
                available = conn.execute(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq'"
                ).fetchone()
                if available is not None:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pgmq")
                    version = _installed(conn)
                    assert version is not None
                    return version
                version, script = bundled_sql()
                # A multi-statement script without parameters (simple query protocol).
                conn.execute(script.encode())
                conn.execute(
                    sql.SQL("COMMENT ON SCHEMA pgmq IS {}").format(
                        sql.Literal(f"pgmq {version} installed by rx_pgmq")
                    )
                )
                return version
        except psycopg.Error as exc:
            raise translate(exc) from exc
