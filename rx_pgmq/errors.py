"""Named errors raised by rx_pgmq.

Every error subclasses :class:`RxPgmqError`; each message says what to do next.
"""

from __future__ import annotations

__all__ = [
    "ConnectionLost",
    "InvalidArgument",
    "NotAcknowledgeable",
    "PGMQNotInstalled",
    "PermissionDenied",
    "QueueNotFound",
    "RxPgmqError",
]


class RxPgmqError(Exception):
    """Base class of every error rx_pgmq raises on purpose."""

    __module__ = "rx_pgmq.errors"


class InvalidArgument(RxPgmqError, ValueError):
    """An argument broke a rule; raised before any SQL is sent.

    Attributes:
        argument: The name of the offending argument.
    """

    __module__ = "rx_pgmq.errors"

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument


class QueueNotFound(RxPgmqError, LookupError):
    """The queue does not exist in this database.

    Attributes:
        queue: The queue name that was looked up.
    """

    __module__ = "rx_pgmq.errors"

    def __init__(self, queue: str, detail: str = "") -> None:
        hint = f"queue {queue!r} does not exist; create it with PGMQ.create_queue({queue!r})"
        super().__init__(f"{hint} ({detail})" if detail else hint)
        self.queue = queue


class PGMQNotInstalled(RxPgmqError):
    """The database has no ``pgmq`` schema."""

    __module__ = "rx_pgmq.errors"

    def __init__(self, detail: str = "") -> None:
        hint = (
            "PGMQ is not installed in this database; run rx_pgmq.install_pgmq(conninfo) "
            "(or `CREATE EXTENSION pgmq` as a superuser)"
        )
        super().__init__(f"{hint} ({detail})" if detail else hint)


class PermissionDenied(RxPgmqError):
    """The database role lacks a privilege PGMQ needs."""

    __module__ = "rx_pgmq.errors"

    def __init__(self, detail: str = "") -> None:
        hint = (
            "permission denied: the role needs USAGE on schema pgmq, EXECUTE on the pgmq "
            "functions and SELECT/INSERT/UPDATE/DELETE on the queue's tables (see README, "
            "'Least privilege')"
        )
        super().__init__(f"{hint} ({detail})" if detail else hint)


class ConnectionLost(RxPgmqError, ConnectionError):
    """The connection to PostgreSQL failed or broke; retrying later may succeed."""

    __module__ = "rx_pgmq.errors"


class NotAcknowledgeable(RxPgmqError):
    """The message has no consumer to acknowledge it through.

    Messages from :meth:`rx_pgmq.PGMQ.read` are not tied to a consumer; acknowledge them
    with :meth:`rx_pgmq.PGMQ.delete`, ``archive`` or ``set_vt`` instead.
    """

    __module__ = "rx_pgmq.errors"
