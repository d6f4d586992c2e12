"""Named errors raised by rx_pgmq.

Every error subclasses :class:`RxPgmqError`; each message says what to do next.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationFailed",
    "BodyMismatch",
    "CannotConnect",
    "ConnectionLost",
    "DatabaseNotFound",
    "DecodeError",
    "InvalidArgument",
    "InvalidConninfo",
    "NotAcknowledgeable",
    "PGMQFeatureMissing",
    "PGMQNotInstalled",
    "PGMQOutdated",
    "PermissionDenied",
    "QueueNotFound",
    "RoleNotFound",
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
        self._message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the constructor's arguments (the default pickles ``args``, the
        # composed text), so it survives a process pool or multiprocessing queue.
        return (type(self), (self.argument, self._message))


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
        self._detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.queue, self._detail))


class _WithDetail(RxPgmqError):
    """An error whose text is a fixed hint, plus the server's detail when there is one."""

    _HINT = ""

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self._HINT} ({detail})" if detail else self._HINT)
        self._detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._detail,))


class PGMQNotInstalled(_WithDetail):
    """The database has no ``pgmq`` schema."""

    __module__ = "rx_pgmq.errors"
    _HINT = (
        "PGMQ is not installed in this database; run rx_pgmq.install_pgmq(conninfo) "
        "(or `CREATE EXTENSION pgmq` as a superuser)"
    )


class PGMQOutdated(PGMQNotInstalled):
    """PGMQ is installed, but lacks a function this call needs (an older PGMQ version).

    A subclass of :class:`PGMQNotInstalled`, so code that catches that still catches it.

    Attributes:
        needs: The first PGMQ version with the missing function (e.g. ``"1.11.0"``), or
            ``""`` when rx_pgmq does not know it.
    """

    __module__ = "rx_pgmq.errors"
    _HINT = (
        "the PGMQ installed in this database lacks a function this call needs (an older "
        "version); upgrade it (`ALTER EXTENSION pgmq UPDATE`, or the SQL of a newer pgmq "
        "package) or avoid the option that needs it"
    )

    def __init__(self, detail: str = "", needs: str = "") -> None:
        super().__init__(detail)
        self.needs = needs
        if needs:
            hint = self._HINT.replace("(an older version)", f"(it needs PGMQ {needs} or later)")
            self.args = (f"{hint} ({detail})" if detail else hint,)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._detail, self.needs))


_PACKAGES = {"pg_partman": " (Debian/Ubuntu package: postgresql-<major>-partman)"}
"""Where to get an extension, for the error text."""


class PGMQFeatureMissing(RxPgmqError):
    """The call needs a PostgreSQL extension the database lacks (e.g. ``pg_partman``).

    Attributes:
        extension: The missing extension's name.
        feature: What needs it (e.g. ``"partitioned queues"``).
    """

    __module__ = "rx_pgmq.errors"

    def __init__(self, extension: str, feature: str) -> None:
        package = _PACKAGES.get(extension, "")
        super().__init__(
            f"{feature} need the PostgreSQL extension {extension}, which this database "
            f"lacks: install it on the server{package}, then run "
            f"`CREATE EXTENSION {extension}` as a superuser"
        )
        self.extension = extension
        self.feature = feature

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.extension, self.feature))


class PermissionDenied(_WithDetail):
    """The database role lacks a privilege PGMQ needs."""

    __module__ = "rx_pgmq.errors"
    _HINT = (
        "permission denied: the role needs USAGE on schema pgmq, EXECUTE on the pgmq "
        "functions and SELECT/INSERT/UPDATE/DELETE on the queue's tables (see README, "
        "'Least privilege')"
    )


class ConnectionLost(RxPgmqError, ConnectionError):
    """The connection to PostgreSQL failed or broke; retrying later may succeed.

    Attributes:
        may_have_run: For a client call whose connection broke mid-call: ``False`` when the
            statement cannot have taken effect (its transaction was never committed, so
            retrying is safe), ``True`` when the connection broke during the commit (the
            statement may have taken effect: check before retrying a ``send``); ``None``
            when not known or not applicable (e.g. the server could not be reached).
    """

    __module__ = "rx_pgmq.errors"

    def __init__(self, message: str = "", *, may_have_run: bool | None = None) -> None:
        super().__init__(message)
        self.may_have_run = may_have_run

    def __reduce__(self) -> tuple[Any, ...]:
        return (_connection_lost, (str(self), self.may_have_run))


def _connection_lost(message: str, may_have_run: bool | None) -> ConnectionLost:
    """Rebuild a pickled :class:`ConnectionLost` (its flag is keyword-only)."""
    return ConnectionLost(message, may_have_run=may_have_run)


class CannotConnect(_WithDetail):
    """Connecting failed in a way no retry can fix: fix the conninfo or the server's setup.

    A consumer reports it to ``on_error`` at once instead of retrying. The subclasses say
    what is wrong; the server's or libpq's message follows in parentheses.
    """

    __module__ = "rx_pgmq.errors"
    _HINT = "cannot connect to PostgreSQL; check the conninfo"


class AuthenticationFailed(CannotConnect):
    """The server refused the credentials (wrong or missing password, no pg_hba.conf entry)."""

    __module__ = "rx_pgmq.errors"
    _HINT = (
        "PostgreSQL refused the login: check the user and password in the conninfo (or "
        "PGPASSWORD / ~/.pgpass) and the server's pg_hba.conf"
    )


class RoleNotFound(CannotConnect):
    """The conninfo's user does not exist on the server."""

    __module__ = "rx_pgmq.errors"
    _HINT = (
        "the database role (user) in the conninfo does not exist; create it (CREATE ROLE "
        "... LOGIN) or fix the user name"
    )


class DatabaseNotFound(CannotConnect):
    """The conninfo's database does not exist on the server."""

    __module__ = "rx_pgmq.errors"
    _HINT = (
        "the database in the conninfo does not exist; create it (CREATE DATABASE) or fix the dbname"
    )


class InvalidConninfo(CannotConnect, ValueError):
    """The conninfo string cannot be parsed, or holds an invalid option or value."""

    __module__ = "rx_pgmq.errors"
    _HINT = (
        "the conninfo is malformed: use 'key=value' pairs (host=... dbname=... user=...) "
        "or a URI postgresql://user:password@host:port/dbname"
    )


class NotAcknowledgeable(RxPgmqError):
    """The message has no consumer to acknowledge it through.

    Messages from :meth:`rx_pgmq.PGMQ.read` are not tied to a consumer; acknowledge them
    with :meth:`rx_pgmq.PGMQ.delete`, ``archive`` or ``set_vt`` instead.
    """

    __module__ = "rx_pgmq.errors"


class DecodeError(RxPgmqError, ValueError):
    """A message's body or headers, valid jsonb in PostgreSQL, cannot be decoded in Python.

    Examples: an array nested deeper than Python's recursion limit, an integer with more
    digits than ``sys.get_int_max_str_digits()`` allows, headers that are not a JSON object,
    or an error raised by a custom ``psycopg.types.json.set_json_loads`` function.

    A consumer emits such a message with ``message.decode_error`` set to this error and
    ``body`` and ``headers`` set to ``None``; ``operators.process`` turns it into a failed
    outcome without calling the handler, so the failure policy settles it (default
    ``Archive()``). :meth:`rx_pgmq.PGMQ.read` and the client's other calls returning
    messages raise it and roll their statement back (nothing is claimed, popped or
    changed): settle that message by id (e.g. ``PGMQ.archive(queue, error.msg_id)``) and
    call again. A body that does not fit the ``body_type`` it was read with is a
    :class:`BodyMismatch`, a subclass taking the same paths.

    Attributes:
        msg_id: The message's id.
        queue: The queue it was read from.
        part: What failed to decode: ``"body"`` or ``"headers"``.
        detail: Why, e.g. ``"RecursionError: maximum recursion depth exceeded"``.
        body_text: The body as stored (JSON text), or ``None``.
        headers_text: The headers as stored (JSON text), or ``None``.
    """

    __module__ = "rx_pgmq.errors"

    def __init__(
        self,
        msg_id: int,
        queue: str,
        part: str,
        detail: str,
        body_text: str | None = None,
        headers_text: str | None = None,
    ) -> None:
        super().__init__(
            f"message {msg_id} of queue {queue!r}: its {part} cannot be decoded ({detail}); "
            "it is delivered with body None and decode_error set: settle it by policy "
            "(e.g. Archive() or MoveTo a dead-letter queue) and inspect it in SQL"
        )
        self.msg_id = msg_id
        self.queue = queue
        self.part = part
        self.detail = detail
        self.body_text = body_text
        self.headers_text = headers_text

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.msg_id, self.queue, self.part, self.detail, self.body_text, self.headers_text)
        return (type(self), args)


class BodyMismatch(DecodeError):
    """A message body does not fit the body type it was read with.

    A :class:`DecodeError` whose ``part`` is ``"body"``: a ``read_queue(..., body_type=T)``
    consumer emits the message with ``decode_error`` set to it and ``body`` ``None``
    (``operators.process`` fails it without calling the handler; default ``Archive()``);
    :meth:`rx_pgmq.PGMQ.read` and the other client reads raise it and roll back.

    Attributes:
        body_type: The expected type's name.
        detail: What does not fit.
        msg_id: The message's id, when known (``None`` from a bare decoder).
        queue: Its queue, when known.
        body_text: The body as stored (JSON text), when known.
        headers_text: The headers as stored (JSON text), when known.
    """

    __module__ = "rx_pgmq.errors"

    def __init__(
        self,
        body_type: str,
        detail: str,
        msg_id: int | None = None,
        queue: str | None = None,
        body_text: str | None = None,
        headers_text: str | None = None,
    ) -> None:
        which = "the body" if msg_id is None else f"the body of message {msg_id} of {queue!r}"
        ValueError.__init__(
            self,
            f"{which} does not fit {body_type}: {detail}; fix the sender, or read without "
            "body_type to see the raw JSON",
        )
        self.body_type = body_type
        self.detail = detail
        self.msg_id = msg_id  # type: ignore[assignment]  # None before a message is known
        self.queue = queue  # type: ignore[assignment]
        self.part = "body"
        self.body_text = body_text
        self.headers_text = headers_text

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.body_type, self.detail, self.msg_id, self.queue)
        return (type(self), (*args, self.body_text, self.headers_text))
