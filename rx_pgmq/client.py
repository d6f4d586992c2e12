"""The PGMQ client: queue administration, producing, and low-level reads and acks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from types import TracebackType
from typing import Any, overload

import psycopg

from rx_pgmq import _sql
from rx_pgmq._conn import Conninfo, ConnSource
from rx_pgmq._dberrors import translate
from rx_pgmq._queues import check_queue_exists
from rx_pgmq._validate import (
    MAX_INT8,
    check_body,
    check_headers,
    check_non_negative_int,
    check_positive_int,
    check_queue_name,
    whole_seconds,
)
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import Message, QueueInfo, QueueMetrics

__all__ = ["PGMQ"]

Duration = int | timedelta


def _ids(value: object, argument: str = "msg_ids") -> list[int]:
    if isinstance(value, int | str | bytes) or not isinstance(value, Sequence):
        raise InvalidArgument(argument, f"must be a list of message ids, got {value!r}")
    ids = list(value)
    for i in ids:
        if not isinstance(i, int) or isinstance(i, bool) or not 1 <= i <= MAX_INT8:
            raise InvalidArgument(
                argument, f"message ids must be ints >= 1 (at most {MAX_INT8}), got {i!r}"
            )
    return ids


def _id(value: object, argument: str = "msg_id") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_INT8:
        raise InvalidArgument(argument, f"must be an int >= 1 (at most {MAX_INT8}), got {value!r}")
    return value


def _conditional(value: object) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise InvalidArgument(
            "conditional", f"must be a dict (jsonb filter) or None, got {value!r}"
        )
    return check_body(dict(value), "conditional")


class PGMQ:
    """A PGMQ client over psycopg 3: queue admin, producer side, low-level reads and acks.

    Args:
        conninfo: A conninfo string or URI (the client keeps a small private pool), a
            ``psycopg_pool.ConnectionPool`` (borrowed per call), or a ``psycopg.Connection``
            (used under a lock; statements run in ``conn.transaction()``, so inside a
            caller's open transaction they join it as a savepoint).

    Raises:
        InvalidArgument: If ``conninfo`` is none of those.

    Example:
        >>> client = PGMQ("postgresql://localhost/app")  # doctest: +SKIP
        >>> client.create_queue("orders")  # doctest: +SKIP
        >>> client.send("orders", {"id": 1})  # doctest: +SKIP
        1
    """

    def __init__(self, conninfo: Conninfo) -> None:
        self._source = ConnSource(conninfo, application_name="rx_pgmq.client")

    # -- plumbing ------------------------------------------------------------------------

    @property
    def conninfo(self) -> Conninfo:
        """The conninfo, pool or connection this client was made with."""
        return self._source.conninfo

    def dsn(self) -> str:
        """A conninfo string for new connections to the same database."""
        return self._source.dsn()

    def close(self) -> None:
        """Close the private pool (a pool or connection passed in is left open).

        Either way the client refuses further calls (``InvalidArgument``); make a new one.
        """
        self._source.close()

    def __enter__(self) -> PGMQ:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _cursor(self, queue: str | None = None) -> Iterator[psycopg.Cursor[Any]]:
        try:
            with self._source.connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise translate(exc, queue) from exc

    def _exists_or_raise(self, cur: psycopg.Cursor[Any], queue: str) -> None:
        check_queue_exists(cur, queue)

    # -- administration ------------------------------------------------------------------

    def create_queue(self, name: str, unlogged: bool = False) -> None:
        """Create a queue (and its archive); a no-op if it exists.

        Args:
            name: The queue name (``^[a-z_][a-z0-9_]{0,46}$``).
            unlogged: Create it ``UNLOGGED`` (faster, lost on a crash).

        Raises:
            InvalidArgument: On a bad name.
        """
        check_queue_name(name, "name")
        with self._cursor(name) as cur:
            cur.execute(_sql.CREATE_UNLOGGED if unlogged else _sql.CREATE, (name,))

    def drop_queue(self, name: str) -> bool:
        """Drop a queue and its archive. Returns False if it did not exist."""
        check_queue_name(name, "name")
        with self._cursor(name) as cur:
            row = cur.execute(_sql.DROP, (name,)).fetchone()
            return bool(row and row[0])

    def purge_queue(self, name: str) -> int:
        """Delete every message in a queue. Returns how many were deleted.

        Raises:
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        with self._cursor(name) as cur:
            self._exists_or_raise(cur, name)
            row = cur.execute(_sql.PURGE, (name,)).fetchone()
            return int(row[0]) if row else 0

    def queue_exists(self, name: str) -> bool:
        """Whether a queue of that name exists."""
        check_queue_name(name, "name")
        with self._cursor(name) as cur:
            row = cur.execute(_sql.QUEUE_EXISTS, (name,)).fetchone()
            return bool(row and row[0])

    def list_queues(self) -> list[QueueInfo]:
        """Every queue, by name."""
        with self._cursor() as cur:
            return [_sql.queue_info_from_row(r) for r in cur.execute(_sql.LIST_QUEUES)]

    def metrics(self, name: str) -> QueueMetrics:
        """``pgmq.metrics`` of one queue.

        Raises:
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        with self._cursor(name) as cur:
            self._exists_or_raise(cur, name)
            row = cur.execute(_sql.METRICS, (name,)).fetchone()
            assert row is not None
            return _sql.metrics_from_row(row)

    def metrics_all(self) -> list[QueueMetrics]:
        """``pgmq.metrics`` of every queue, by name."""
        with self._cursor() as cur:
            return [_sql.metrics_from_row(r) for r in cur.execute(_sql.METRICS_ALL)]

    def enable_notify(self, name: str, throttle_ms: int = 250) -> None:
        """Make inserts into the queue fire ``NOTIFY "pgmq.q_<name>.INSERT"``.

        Args:
            name: The queue.
            throttle_ms: At most one notification per this many ms (leading edge); 0 = all.

        Raises:
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        check_non_negative_int(throttle_ms, "throttle_ms")
        with self._cursor(name) as cur:
            self._exists_or_raise(cur, name)
            cur.execute(_sql.ENABLE_NOTIFY, (name, throttle_ms))

    def disable_notify(self, name: str) -> None:
        """Stop insert notifications for the queue."""
        check_queue_name(name, "name")
        with self._cursor(name) as cur:
            self._exists_or_raise(cur, name)
            cur.execute(_sql.DISABLE_NOTIFY, (name,))

    def notify_throttle_ms(self, name: str) -> int | None:
        """The queue's notification throttle in ms, or None if notifications are off."""
        check_queue_name(name, "name")
        with self._cursor(name) as cur:
            row = cur.execute(_sql.NOTIFY_THROTTLE, (name,)).fetchone()
            return int(row[0]) if row else None

    # -- producing -----------------------------------------------------------------------

    def send(
        self,
        name: str,
        body: Any,
        headers: Mapping[str, Any] | None = None,
        delay: Duration = 0,
    ) -> int:
        """Send one message. Returns its ``msg_id``.

        Args:
            name: The queue.
            body: Any JSON-serializable value.
            headers: A JSON object or None.
            delay: Seconds (int) or timedelta before it becomes visible.

        Raises:
            InvalidArgument: On a bad name, body, headers or delay (before any SQL).
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        text = check_body(body)
        head = check_headers(headers)
        secs = whole_seconds(delay, "delay")
        with self._cursor(name) as cur:
            row = cur.execute(_sql.SEND, (name, text, head, secs)).fetchone()
            assert row is not None
            return int(row[0])

    def send_batch(
        self,
        name: str,
        bodies: Sequence[Any],
        headers: Sequence[Mapping[str, Any] | None] | None = None,
        delay: Duration = 0,
    ) -> list[int]:
        """Send several messages in one statement. Returns their ids in order.

        Args:
            name: The queue.
            bodies: JSON-serializable values (at least one).
            headers: None, or one header object (or None) per body.
            delay: Seconds (int) or timedelta before they become visible.

        Raises:
            InvalidArgument: On a bad name, body, headers or delay (before any SQL).
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        if isinstance(bodies, str | bytes | Mapping) or not isinstance(bodies, Sequence):
            raise InvalidArgument("bodies", f"must be a list of message bodies, got {bodies!r}")
        if not bodies:
            raise InvalidArgument("bodies", "must hold at least one message body")
        texts = [check_body(b, f"bodies[{i}]") for i, b in enumerate(bodies)]
        heads: list[str | None] | None = None
        if headers is not None:
            if isinstance(headers, str | bytes | Mapping) or not isinstance(headers, Sequence):
                raise InvalidArgument("headers", "must be a list with one entry per body, or None")
            if len(headers) != len(bodies):
                raise InvalidArgument(
                    "headers", f"has {len(headers)} entries for {len(bodies)} bodies"
                )
            heads = [check_headers(h, f"headers[{i}]") for i, h in enumerate(headers)]
            if all(h is None for h in heads):
                heads = None
            else:
                heads = [h if h is not None else "null" for h in heads]
        secs = whole_seconds(delay, "delay")
        with self._cursor(name) as cur:
            rows = cur.execute(_sql.SEND_BATCH, (name, texts, heads, secs)).fetchall()
            return [int(r[0]) for r in rows]

    # -- low-level reads -----------------------------------------------------------------

    def read(
        self,
        name: str,
        vt: Duration,
        qty: int = 1,
        conditional: Mapping[str, Any] | None = None,
    ) -> list[Message]:
        """Claim up to ``qty`` visible messages, hiding them for ``vt`` seconds.

        Raises:
            InvalidArgument: On a bad name, vt, qty or conditional.
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        secs = whole_seconds(vt, "vt")
        check_positive_int(qty, "qty")
        cond = _conditional(conditional)
        with self._cursor(name) as cur:
            rows = cur.execute(_sql.READ, (name, secs, qty, cond)).fetchall()
        return _sql.messages_from_rows(rows, name)

    def read_with_poll(
        self,
        name: str,
        vt: Duration,
        qty: int = 1,
        max_poll_seconds: int = 5,
        poll_interval_ms: int = 100,
        conditional: Mapping[str, Any] | None = None,
    ) -> list[Message]:
        """Like :meth:`read`, but wait in the server up to ``max_poll_seconds`` for messages.

        Raises:
            InvalidArgument: On a bad argument.
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        secs = whole_seconds(vt, "vt")
        check_positive_int(qty, "qty")
        check_non_negative_int(max_poll_seconds, "max_poll_seconds")
        check_positive_int(poll_interval_ms, "poll_interval_ms")
        cond = _conditional(conditional)
        params = (name, secs, qty, max_poll_seconds, poll_interval_ms, cond)
        with self._cursor(name) as cur:
            rows = cur.execute(_sql.READ_WITH_POLL, params).fetchall()
        return _sql.messages_from_rows(rows, name)

    def pop(self, name: str, qty: int = 1) -> list[Message]:
        """Read and delete up to ``qty`` messages (at-most-once).

        Raises:
            InvalidArgument: On a bad name or qty.
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        check_positive_int(qty, "qty")
        with self._cursor(name) as cur:
            rows = cur.execute(_sql.POP, (name, qty)).fetchall()
        return _sql.messages_from_rows(rows, name)

    # -- low-level acks ------------------------------------------------------------------

    @overload
    def delete(self, name: str, msg_id: int) -> bool: ...
    @overload
    def delete(self, name: str, msg_id: Sequence[int]) -> list[int]: ...

    def delete(self, name: str, msg_id: int | Sequence[int]) -> bool | list[int]:
        """Delete one message (returns whether it existed) or many (returns ids deleted)."""
        return self._ack(name, msg_id, _sql.DELETE_ONE, _sql.DELETE_MANY)

    @overload
    def archive(self, name: str, msg_id: int) -> bool: ...
    @overload
    def archive(self, name: str, msg_id: Sequence[int]) -> list[int]: ...

    def archive(self, name: str, msg_id: int | Sequence[int]) -> bool | list[int]:
        """Archive one message (returns whether it existed) or many (returns ids archived)."""
        return self._ack(name, msg_id, _sql.ARCHIVE_ONE, _sql.ARCHIVE_MANY)

    def _ack(self, name: str, msg_id: int | Sequence[int], one: str, many: str) -> bool | list[int]:
        check_queue_name(name, "name")
        if isinstance(msg_id, int):
            mid = _id(msg_id)
            with self._cursor(name) as cur:
                row = cur.execute(one, (name, mid)).fetchone()
                return bool(row and row[0])
        ids = _ids(msg_id, "msg_id")
        if not ids:
            return []
        with self._cursor(name) as cur:
            return sorted(int(r[0]) for r in cur.execute(many, (name, ids)).fetchall())

    @overload
    def set_vt(self, name: str, msg_id: int, vt: Duration) -> Message | None: ...
    @overload
    def set_vt(self, name: str, msg_id: Sequence[int], vt: Duration) -> list[Message]: ...

    def set_vt(
        self, name: str, msg_id: int | Sequence[int], vt: Duration
    ) -> Message | list[Message] | None:
        """Make message(s) visible again ``vt`` seconds from now.

        Returns:
            The updated message (None if it does not exist), or the list of updated ones.
        """
        check_queue_name(name, "name")
        secs = whole_seconds(vt, "vt")
        if isinstance(msg_id, int):
            mid = _id(msg_id)
            with self._cursor(name) as cur:
                rows = cur.execute(_sql.SET_VT_ONE, (name, mid, secs)).fetchall()
            msgs = _sql.messages_from_rows(rows, name)
            return msgs[0] if msgs else None
        ids = _ids(msg_id, "msg_id")
        if not ids:
            return []
        with self._cursor(name) as cur:
            rows = cur.execute(_sql.SET_VT_MANY, (name, ids, secs)).fetchall()
        return _sql.messages_from_rows(rows, name)
