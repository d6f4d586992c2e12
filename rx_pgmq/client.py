"""The PGMQ client: queue administration, producing, and low-level reads and acks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, overload

import psycopg

from rx_pgmq._pg import _calls, _sql
from rx_pgmq._pg._api_base import Delay
from rx_pgmq._pg._api_fifo import FifoAPI
from rx_pgmq._pg._api_queues import QueuesAPI
from rx_pgmq._pg._api_topics import TopicsAPI
from rx_pgmq._pg._closing import Closing
from rx_pgmq._pg._conn import Conninfo, ConnSource, OnSource
from rx_pgmq._pg._dberrors import translate
from rx_pgmq._values._records import Partitioning
from rx_pgmq.message import BodyT, Message, QueueInfo, QueueMetrics

__all__ = ["PGMQ"]

Duration = int | timedelta


class PGMQ(TopicsAPI, FifoAPI, QueuesAPI, OnSource[Conninfo], Closing):
    """A PGMQ client over psycopg 3: queue admin, producer side, low-level reads and acks.

    It runs all of PGMQ 1.13 (the README's table maps each PGMQ function to its method):
    topics (:class:`~rx_pgmq._pg._api_topics.TopicsAPI`), FIFO group reads
    (:class:`~rx_pgmq._pg._api_fifo.FifoAPI`), queue details, notification throttles,
    partitioned queues and peeking (:class:`~rx_pgmq._pg._api_queues.QueuesAPI`). A function
    missing from an older PGMQ raises ``PGMQOutdated`` naming the version that has it.

    Args:
        conninfo: A conninfo string or URI (the client keeps a small private pool), a
            ``psycopg_pool.ConnectionPool`` (borrowed per call), or a ``psycopg.Connection``
            (used under a lock; statements run in ``conn.transaction()``, so inside a
            caller's open transaction they join it as a savepoint).

    A call whose pooled connection turns out broken before its statement was sent (the
    server restarted, or the backend was terminated) reconnects and runs the statement;
    only a connection lost while the statement ran raises :class:`~rx_pgmq.errors.
    ConnectionLost`, whose ``may_have_run`` says whether it may have taken effect.

    Raises:
        InvalidArgument: If ``conninfo`` is none of those.

    Example:
        >>> client = PGMQ("postgresql://localhost/app")  # doctest: +SKIP
        >>> client.create_queue("orders")  # doctest: +SKIP
        >>> client.send("orders", {"id": 1})  # doctest: +SKIP
        1
    """

    _source: ConnSource

    def __init__(self, conninfo: Conninfo) -> None:
        self._source = ConnSource(conninfo, application_name="rx_pgmq.client")

    # -- plumbing ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the private pool (a pool or connection passed in is left open).

        Either way the client refuses further calls (``InvalidArgument``); make a new one.
        """
        self._source.close()

    @contextmanager
    def _cursor(self, queue: str | None = None) -> Iterator[psycopg.Cursor[Any]]:
        try:
            with self._source.connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise translate(exc, queue) from exc

    # -- administration ------------------------------------------------------------------

    def create_queue(
        self, name: str, unlogged: bool = False, partitioned: bool | Partitioning = False
    ) -> None:
        """Create a queue (and its archive); a no-op if it exists.

        Args:
            name: The queue name (``^[a-z_][a-z0-9_]{0,46}$``).
            unlogged: Create it ``UNLOGGED`` (faster, lost on a crash).
            partitioned: Partition it with ``pg_partman`` (``pgmq.create_partitioned``):
                True for PGMQ's defaults, or a :class:`~rx_pgmq.Partitioning`.

        Raises:
            InvalidArgument: On a bad name or partitioning, both options, or ``unlogged``
                not a bool.
            PGMQFeatureMissing: If ``partitioned`` and the database lacks ``pg_partman``.
        """
        self._run(_calls.create_queue(name, unlogged, partitioned))

    def drop_queue(self, name: str) -> bool:
        """Drop a queue and its archive. Returns False if it did not exist."""
        return self._run(_calls.drop_queue(name))

    def purge_queue(self, name: str) -> int:
        """Delete every message in a queue. Returns how many were deleted.

        Raises:
            QueueNotFound: If the queue does not exist.
        """
        return self._run(_calls.purge_queue(name))

    def queue_exists(self, name: str) -> bool:
        """Whether a queue of that name exists."""
        return self._run(_calls.queue_exists(name))

    def list_queues(self) -> list[QueueInfo]:
        """Every queue, by name."""
        return self._run(_calls.list_queues())

    def metrics(self, name: str) -> QueueMetrics:
        """``pgmq.metrics`` of one queue.

        Raises:
            QueueNotFound: If the queue does not exist.
        """
        return self._run(_calls.metrics(name))

    def metrics_all(self) -> list[QueueMetrics]:
        """``pgmq.metrics`` of every queue, by name."""
        return self._run(_calls.metrics_all())

    def enable_notify(self, name: str, throttle_ms: int = 250) -> None:
        """Make inserts into the queue fire ``NOTIFY "pgmq.q_<name>.INSERT"``.

        Args:
            name: The queue.
            throttle_ms: At most one notification per this many ms (leading edge); 0 = all.

        Raises:
            QueueNotFound: If the queue does not exist.
        """
        self._run(_calls.enable_notify(name, throttle_ms))

    def disable_notify(self, name: str) -> None:
        """Stop insert notifications for the queue."""
        self._run(_calls.disable_notify(name))

    def notify_throttle_ms(self, name: str) -> int | None:
        """The queue's notification throttle in ms, or None if notifications are off."""
        return self._run(_calls.notify_throttle_ms(name))

    # -- producing -----------------------------------------------------------------------

    def send(
        self,
        name: str,
        body: Any,
        headers: Mapping[str, Any] | None = None,
        delay: Delay = 0,
    ) -> int:
        """Send one message. Returns its ``msg_id``.

        Args:
            name: The queue.
            body: Any JSON-serializable value, or an instance of a dataclass,
                ``msgspec.Struct`` or pydantic model (sent as its JSON form).
            headers: A JSON object (str keys) or None; see the README's "Headers" for the
                keys PGMQ and rx_pgmq use (``x-pgmq-group``, ``x-rx-pgmq-*``).
            delay: Seconds (int) or timedelta before it becomes visible, or an aware
                datetime when it does.

        Raises:
            InvalidArgument: On a bad name, body, headers or delay (before any SQL).
            QueueNotFound: If the queue does not exist.
        """
        return self._send(_calls.send(name, body, headers, delay))[0]

    def send_batch(
        self,
        name: str,
        bodies: Sequence[Any],
        headers: Sequence[Mapping[str, Any] | None] | None = None,
        delay: Delay = 0,
    ) -> list[int]:
        """Send several messages in one statement. Returns their ids in order.

        Args:
            name: The queue.
            bodies: JSON-serializable values (at least one).
            headers: None, or one header object (or None) per body.
            delay: Seconds (int) or timedelta before they become visible, or an aware
                datetime when they do.

        Raises:
            InvalidArgument: On a bad name, body, headers or delay (before any SQL).
            QueueNotFound: If the queue does not exist.
        """
        return self._send(_calls.send_batch(name, bodies, headers, delay))

    # -- low-level reads -----------------------------------------------------------------

    def read(
        self,
        name: str,
        vt: Duration,
        qty: int = 1,
        conditional: Mapping[str, Any] | None = None,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """Claim up to ``qty`` visible messages, hiding them for ``vt`` seconds.

        Args:
            name: The queue.
            vt: Seconds (int) or timedelta to hide them for.
            qty: Most messages to claim.
            conditional: Only messages whose body contains this JSON object.
            body_type: Decode each body into this dataclass, TypedDict, msgspec.Struct or
                pydantic model class (``Message[body_type]``); None keeps parsed JSON.

        Raises:
            InvalidArgument: On a bad name, vt, qty, conditional or body_type.
            QueueNotFound: If the queue does not exist.
            BodyMismatch: If a body does not fit ``body_type``; the read is rolled back,
                so nothing is claimed.
            DecodeError: If a message's body or headers cannot be decoded; the statement is
                rolled back (settle that message by id, e.g. with :meth:`archive`).
        """
        return self._run(_calls.read(name, vt, qty, conditional, body_type))

    def read_with_poll(
        self,
        name: str,
        vt: Duration,
        qty: int = 1,
        max_poll_seconds: int = 5,
        poll_interval_ms: int = 100,
        conditional: Mapping[str, Any] | None = None,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """Like :meth:`read`, but wait in the server up to ``max_poll_seconds`` for messages.

        Raises:
            InvalidArgument: On a bad argument.
            QueueNotFound: If the queue does not exist.
            BodyMismatch: If a body does not fit ``body_type`` (nothing is claimed).
            DecodeError: If a message's body or headers cannot be decoded; the statement is
                rolled back (settle that message by id, e.g. with :meth:`archive`).
        """
        poll = (max_poll_seconds, poll_interval_ms)
        return self._run(_calls.read_with_poll(name, vt, qty, poll, conditional, body_type))

    def pop(
        self, name: str, qty: int = 1, *, body_type: type[BodyT] | None = None
    ) -> list[Message[BodyT]]:
        """Read and delete up to ``qty`` messages (at-most-once).

        Raises:
            InvalidArgument: On a bad name, qty or body_type.
            QueueNotFound: If the queue does not exist.
            BodyMismatch: If a body does not fit ``body_type``; the pop is rolled back,
                so nothing is deleted.
            DecodeError: If a message's body or headers cannot be decoded; the statement is
                rolled back (settle that message by id, e.g. with :meth:`archive`).
        """
        return self._run(_calls.pop(name, qty, body_type))

    # -- low-level acks ------------------------------------------------------------------

    @overload
    def delete(self, name: str, msg_id: int) -> bool: ...
    @overload
    def delete(self, name: str, msg_id: Sequence[int]) -> list[int]: ...

    def delete(self, name: str, msg_id: int | Sequence[int]) -> bool | list[int]:
        """Delete one message (returns whether it existed) or many (returns ids deleted)."""
        return self._run(_calls.ack(name, msg_id, _sql.DELETE_ONE, _sql.DELETE_MANY))

    @overload
    def archive(self, name: str, msg_id: int) -> bool: ...
    @overload
    def archive(self, name: str, msg_id: Sequence[int]) -> list[int]: ...

    def archive(self, name: str, msg_id: int | Sequence[int]) -> bool | list[int]:
        """Archive one message (returns whether it existed) or many (returns ids archived)."""
        return self._run(_calls.ack(name, msg_id, _sql.ARCHIVE_ONE, _sql.ARCHIVE_MANY))

    @overload
    def set_vt(self, name: str, msg_id: int, vt: Delay) -> Message | None: ...
    @overload
    def set_vt(self, name: str, msg_id: Sequence[int], vt: Delay) -> list[Message]: ...

    def set_vt(
        self, name: str, msg_id: int | Sequence[int], vt: Delay
    ) -> Message | list[Message] | None:
        """Make message(s) visible again ``vt`` seconds from now, or at an aware datetime.

        Returns:
            The updated message (None if it does not exist), or the list of updated ones.

        Raises:
            InvalidArgument: On a bad name, id or vt (a naive datetime included).
            PGMQOutdated: For a datetime on a PGMQ older than 1.13.
            DecodeError: If a message's body or headers cannot be decoded; the statement is
                rolled back (settle that message by id, e.g. with :meth:`archive`).
        """
        return self._run(_calls.set_vt(name, msg_id, vt))
