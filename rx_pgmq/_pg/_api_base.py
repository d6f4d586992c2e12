"""What the :class:`~rx_pgmq.PGMQ` client's feature mixins share: its one execute path,
and the checks of the arguments several of them take (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import psycopg

from rx_pgmq._pg import _sql
from rx_pgmq._values._bodytype import encode_body
from rx_pgmq._values._validate import check_batch, whole_seconds
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import Message

__all__ = ["ClientAPI", "Delay", "batch_payload", "decoded", "delay_or_time"]

Delay = int | timedelta | datetime
"""When a message becomes visible: seconds from now (int or timedelta) or an aware
datetime."""


class ClientAPI:
    """The base of the client's feature mixins: they run SQL only through ``_cursor``.

    :class:`~rx_pgmq.PGMQ` provides both methods; every call of every mixin goes through
    its connection handling and error translation.
    """

    def _cursor(self, queue: str | None = None) -> AbstractContextManager[psycopg.Cursor[Any]]:
        raise NotImplementedError  # pragma: no cover - PGMQ overrides it

    def _exists_or_raise(self, cur: psycopg.Cursor[Any], queue: str) -> None:
        raise NotImplementedError  # pragma: no cover - PGMQ overrides it


def decoded(
    cur: psycopg.Cursor[Any], result: psycopg.Cursor[Any], name: str, *, in_order: bool = False
) -> list[Message]:
    """The messages of a statement's rows (JSON text columns, :data:`_sql.TEXT_COLUMNS`);
    raise the first one's ``DecodeError``, if any.

    Called inside the statement's transaction, so raising rolls the statement back: nothing
    is claimed, popped or changed.
    """
    loads = _sql.json_loads(cur.connection)
    msgs = _sql.messages_from_rows(result.fetchall(), name, loads=loads, in_order=in_order)
    for m in msgs:
        if m.decode_error is not None:
            raise m.decode_error
    return msgs


def delay_or_time(value: object, argument: str) -> int | datetime:
    """A delay or visibility timeout as whole seconds from now, or an aware datetime.

    Raises:
        InvalidArgument: On a naive datetime (its time zone would be a guess), or a
            negative, fractional or too large number of seconds.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgument(
                argument,
                f"a naive datetime is ambiguous, give an aware one (e.g. "
                f"datetime.now(UTC) + timedelta(minutes=5)); got {value!r}",
            )
        return value
    return whole_seconds(value, argument)


def batch_payload(bodies: object, headers: object) -> tuple[list[str], list[str] | None]:
    """JSON texts of a batch's bodies (typed bodies encoded first), and of its headers (one
    per body) or None: :func:`~rx_pgmq._values._validate.check_batch` after :func:`encode_body`.

    Raises:
        InvalidArgument: If ``bodies`` is not a non-empty list of JSON values, or
            ``headers`` not None or a list of one JSON object (or None) per body.
    """
    if isinstance(bodies, Sequence) and not isinstance(bodies, str | bytes | Mapping):
        bodies = [encode_body(b) for b in bodies]
    return check_batch(bodies, headers)
