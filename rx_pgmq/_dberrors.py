"""Map psycopg errors to rx_pgmq's named errors (no I/O)."""

from __future__ import annotations

import re

import psycopg
from psycopg import errors as pgerr

from rx_pgmq.errors import (
    ConnectionLost,
    PermissionDenied,
    PGMQNotInstalled,
    PGMQOutdated,
    QueueNotFound,
    RxPgmqError,
)

__all__ = ["first_line", "is_transient", "translate"]

# A missing ``pgmq.<table>`` that is not a queue (``q_``) or archive (``a_``) table, e.g.
# ``pgmq.meta``: PGMQ itself is absent (the schema may exist without its catalog tables).
_MISSING_PGMQ_CATALOG = re.compile(r'relation "pgmq\.(?![qa]_)')


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
        return PGMQOutdated(text)
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
        # OperationalError without a SQLSTATE is a client-side connection failure.
        return getattr(exc, "sqlstate", None) is None or str(exc.sqlstate).startswith("08")
    return isinstance(exc, psycopg.InterfaceError)
