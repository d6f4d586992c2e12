"""Map psycopg errors to rx_pgmq's named errors (no I/O)."""

from __future__ import annotations

import re

import psycopg
from psycopg import errors as pgerr

from rx_pgmq.errors import (
    AuthenticationFailed,
    CannotConnect,
    ConnectionLost,
    DatabaseNotFound,
    InvalidConninfo,
    PermissionDenied,
    PGMQNotInstalled,
    PGMQOutdated,
    QueueNotFound,
    RoleNotFound,
    RxPgmqError,
)

__all__ = [
    "FIRST_PGMQ_VERSION",
    "connect_error",
    "first_line",
    "is_transient",
    "pgmq_version_needed",
    "translate",
]

# A missing ``pgmq.<table>`` that is not a queue (``q_``) or archive (``a_``) table, e.g.
# ``pgmq.meta``: PGMQ itself is absent (the schema may exist without its catalog tables).
_MISSING_PGMQ_CATALOG = re.compile(r'relation "pgmq\.(?![qa]_)')


FIRST_PGMQ_VERSION: dict[str, str] = {
    "read_grouped": "1.9.0",
    "read_grouped_with_poll": "1.9.0",
    "read_grouped_rr": "1.9.0",
    "read_grouped_rr_with_poll": "1.9.0",
    "create_fifo_index": "1.9.0",
    "create_fifo_indexes_all": "1.9.0",
    "read_grouped_head": "1.11.0",
    "read_grouped_head_with_poll": "1.11.0",
    "list_notify_insert_throttles": "1.11.0",
    "update_notify_insert": "1.11.0",
    "bind_topic": "1.11.0",
    "unbind_topic": "1.11.0",
    "send_topic": "1.11.0",
    "send_batch_topic": "1.11.0",
    "test_routing": "1.11.0",
    "list_topic_bindings": "1.11.0",
    "validate_routing_key": "1.11.0",
    "validate_topic_pattern": "1.11.0",
}
"""A PGMQ version that has each function newer than PGMQ 1.5 (rx_pgmq's minimum): the
release that added it, or a later one where the migration history is unclear. Overloads
count too: ``set_vt`` to a timestamp arrived in 1.13.0, see :func:`pgmq_version_needed`."""

_MISSING_FUNCTION = re.compile(r"function pgmq\.(\w+)\(([^)]*)\)")


def pgmq_version_needed(text: str) -> str:
    """The PGMQ version that has the function an ``UndefinedFunction`` error names, or ""."""
    match = _MISSING_FUNCTION.search(text)
    if match is None:
        return ""
    name, args = match.groups()
    if name == "set_vt" and "timestamp" in args:
        return "1.13.0"
    if name in ("send", "send_batch") and "timestamp" in args:
        return "1.11.0"
    return FIRST_PGMQ_VERSION.get(name, "")


# A failed connection attempt carries no SQLSTATE (libpq reports only text), so the few
# failures no retry can fix are recognized by libpq's and the server's (English) messages.
# Anything else (refused, unreachable, "the database system is starting up", too many
# connections, or a message in another language) counts as transient: a consumer retries
# it until its connect_timeout, so an unrecognized message is never retried forever.
_CONNECT_FAILURES: tuple[tuple[re.Pattern[str], type[CannotConnect]], ...] = (
    (re.compile(r'database "[^"]*" does not exist'), DatabaseNotFound),
    (re.compile(r'role "[^"]*" does not exist'), RoleNotFound),
    (
        re.compile(
            r"authentication failed|no password supplied|no pg_hba\.conf entry"
            r"|password is required|not permitted to log in|server requested .* password"
        ),
        AuthenticationFailed,
    ),
    (
        re.compile(
            r'missing "=" after|invalid connection option|invalid (?:integer |port )?value'
            r"|invalid (?:URI|percent-encoded|sslmode|IPv6)|unterminated quoted string"
            r"|end of string reached|unexpected spaces found|invalid connection string"
        ),
        InvalidConninfo,
    ),
)


def connect_error(exc: BaseException) -> CannotConnect | None:
    """The named error of a connection attempt that no retry can fix, or None.

    Args:
        exc: What ``psycopg.connect`` (or a pool) raised.

    Returns:
        :class:`AuthenticationFailed`, :class:`RoleNotFound`, :class:`DatabaseNotFound` or
        :class:`InvalidConninfo` with the original text, or None (transient or unknown).
    """
    if isinstance(exc, CannotConnect):
        return exc
    if not isinstance(exc, psycopg.OperationalError | psycopg.ProgrammingError):
        return None
    if getattr(exc, "sqlstate", None) is not None:
        return None  # a statement's error: the connection itself was made
    text = " ".join(str(exc).split())
    for pattern, cls in _CONNECT_FAILURES:
        if pattern.search(text):
            return cls(text)
    return None


def translate(exc: BaseException, queue: str | None = None) -> BaseException:
    """Return the named rx_pgmq error for a database exception (or ``exc`` unchanged).

    Args:
        exc: The exception psycopg raised.
        queue: The queue the statement was about, if any.

    Returns:
        An :class:`RxPgmqError` when the failure has a name, else ``exc`` itself.
    """
    if isinstance(exc, RxPgmqError) or not isinstance(exc, psycopg.Error):
        return exc
    cannot = connect_error(exc)
    if cannot is not None:
        return cannot
    text = first_line(exc)
    named = _named(exc, text, queue)
    if named is not None:
        return named
    if is_transient(exc) and not (exc.sqlstate or "").startswith("40"):
        # Class 40 (serialization failure, deadlock) is worth a retry; the connection is fine.
        return ConnectionLost(f"lost the database connection: {text}; retry later")
    return exc


def _named(exc: psycopg.Error, text: str, queue: str | None) -> RxPgmqError | None:
    """The named error for a failure about permissions, PGMQ itself or a queue."""
    if isinstance(exc, pgerr.InsufficientPrivilege):
        return PermissionDenied(text)
    if (isinstance(exc, pgerr.InvalidSchemaName) and "pgmq" in text) or (
        isinstance(exc, pgerr.UndefinedTable) and _MISSING_PGMQ_CATALOG.search(text)
    ):
        return PGMQNotInstalled(text)
    if isinstance(exc, pgerr.UndefinedFunction) and "pgmq." in text:
        # The schema exists (else: InvalidSchemaName), so the function is missing from it.
        return PGMQOutdated(text, needs=pgmq_version_needed(text))
    if queue is not None and (
        isinstance(exc, pgerr.UndefinedTable)
        or (isinstance(exc, pgerr.RaiseException) and "does not exist" in text)
    ):
        return QueueNotFound(queue, text)
    return None


def first_line(exc: BaseException | str) -> str:
    """The first non-blank line of an error's message (its type name if it has none)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return exc if isinstance(exc, str) else type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """Whether retrying on a fresh connection may succeed (connection-level failures)."""
    if isinstance(exc, ConnectionLost):
        return True
    if isinstance(
        exc,
        pgerr.AdminShutdown
        | pgerr.CrashShutdown
        | pgerr.CannotConnectNow
        | pgerr.ConnectionException
        | pgerr.SerializationFailure
        | pgerr.DeadlockDetected,
    ):
        return True
    if isinstance(exc, psycopg.OperationalError):
        # OperationalError without a SQLSTATE is a client-side connection failure, transient
        # unless it is one no retry can fix (bad credentials, unknown database, ...).
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate is None:
            return connect_error(exc) is None
        return str(sqlstate).startswith("08")
    return isinstance(exc, psycopg.InterfaceError)
