"""Queue details, notification throttles, partitioned queues and peeking on the client."""

from __future__ import annotations

from typing import Any

import psycopg

from rx_pgmq._pg import _sql, _sql_api
from rx_pgmq._pg._api_base import ClientAPI
from rx_pgmq._values._records import DEFAULT_PREMAKE, NotifyThrottle, Partitioning, QueueDetails
from rx_pgmq._values._validate import (
    check_bool,
    check_non_negative_int,
    check_positive_int,
    check_queue_name,
)
from rx_pgmq.errors import InvalidArgument, PGMQFeatureMissing, QueueNotFound
from rx_pgmq.message import Message

__all__ = ["QueuesAPI"]


class QueuesAPI(ClientAPI):
    """One record per queue, notification throttles, ``pg_partman`` partitioning and
    peeking without claiming. Mixed into ``PGMQ``."""

    # -- queue details -----------------------------------------------------------------

    def queue(self, name: str) -> QueueDetails:
        """Everything about one queue: metrics, kind, notification throttle, bindings.

        Raises:
            InvalidArgument: On a bad name.
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        with self._cursor(name) as cur:
            row = cur.execute(_sql_api.QUEUE_DETAILS, (name,)).fetchone()
        if row is None:
            raise QueueNotFound(name)
        return _sql_api.queue_details_from_row(row)

    def queues(self) -> list[QueueDetails]:
        """:meth:`queue` of every queue, by name."""
        with self._cursor() as cur:
            rows = cur.execute(_sql_api.QUEUE_DETAILS, (None,)).fetchall()
        return [_sql_api.queue_details_from_row(r) for r in rows]

    def peek(self, queue: str, n: int = 20, archive: bool = False) -> list[Message]:
        """The first ``n`` messages of a queue by ``msg_id``, **without claiming them**.

        A plain ``SELECT`` on the queue's table: unlike a read it changes neither ``vt``
        nor ``read_ct``, and it sees messages that are invisible too.

        Args:
            queue: The queue.
            n: Most messages to return, >= 1.
            archive: Browse the queue's archive (``pgmq.a_<queue>``) instead.

        Returns:
            The messages (not acknowledgeable); one whose body or headers Python cannot
            decode has ``decode_error`` set and ``body`` ``None``.

        Raises:
            InvalidArgument: On a bad queue name, ``n`` or ``archive``.
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(queue)
        check_positive_int(n, "n")
        check_bool(archive, "archive")
        with self._cursor(queue) as cur:
            self._exists_or_raise(cur, queue)
            rows = cur.execute(_sql_api.peek(queue, archive=archive), (n,)).fetchall()
            loads = _sql.json_loads(cur.connection)
        # Per message: a body that cannot be decoded is shown with decode_error set.
        return _sql.messages_from_rows(rows, queue, loads=loads)

    # -- notifications -----------------------------------------------------------------

    def update_notify(self, name: str, throttle_ms: int) -> None:
        """Change the throttle of a queue whose insert notifications are on.

        Args:
            name: The queue.
            throttle_ms: At most one notification per this many ms (leading edge); 0 = all.

        Raises:
            InvalidArgument: On a bad name or throttle, or if the queue's notifications
                are off (turn them on with ``enable_notify``).
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        check_non_negative_int(throttle_ms, "throttle_ms")
        with self._cursor(name) as cur:
            self._exists_or_raise(cur, name)
            row = cur.execute(_sql.NOTIFY_THROTTLE, (name,)).fetchone()
            if row is None:
                raise InvalidArgument(
                    "name",
                    f"queue {name!r} has insert notifications off; turn them on with "
                    f"PGMQ.enable_notify({name!r}, throttle_ms={throttle_ms})",
                )
            cur.execute(_sql_api.UPDATE_NOTIFY, (name, throttle_ms))

    def list_notify_throttles(self) -> list[NotifyThrottle]:
        """Every queue with insert notifications on, by name, with its throttle."""
        with self._cursor() as cur:
            rows = cur.execute(_sql_api.LIST_NOTIFY_THROTTLES).fetchall()
        return [_sql_api.notify_throttle_from_row(r) for r in rows]

    # -- partitioned queues --------------------------------------------------------------

    def _create_partitioned(self, name: str, partitioning: Partitioning) -> None:
        interval, retention, premake = partitioning.sql_args()
        with self._cursor(name) as cur:
            _require_partman(cur, "partitioned queues")
            if premake == DEFAULT_PREMAKE:
                cur.execute(_sql_api.CREATE_PARTITIONED, (name, interval, retention))
            else:
                params = (name, interval, retention, premake)
                cur.execute(_sql_api.CREATE_PARTITIONED_PREMAKE, params)

    def convert_archive_partitioned(
        self, name: str, partitioning: Partitioning | None = None, leading_partition: int = 10
    ) -> None:
        """Turn a queue's archive into a ``pg_partman`` partitioned table (kept rows stay).

        A no-op if the archive is partitioned already.

        Args:
            name: The queue.
            partitioning: Interval and retention (``premake`` is not used here).
            leading_partition: Partitions pg_partman makes ahead.

        Raises:
            InvalidArgument: On a bad argument.
            QueueNotFound: If the queue does not exist.
            PGMQFeatureMissing: If the database lacks ``pg_partman``.
        """
        check_queue_name(name, "name")
        interval, retention, _ = (partitioning or Partitioning()).sql_args()
        check_positive_int(leading_partition, "leading_partition")
        params = (name, interval, retention, leading_partition)
        with self._cursor(name) as cur:
            self._exists_or_raise(cur, name)
            _require_partman(cur, "partitioned archives")
            cur.execute(_sql_api.CONVERT_ARCHIVE_PARTITIONED, params)


def _require_partman(cur: psycopg.Cursor[Any], feature: str) -> None:
    row = cur.execute(_sql_api.HAS_EXTENSION, ("pg_partman",)).fetchone()
    if not row or not row[0]:
        raise PGMQFeatureMissing("pg_partman", feature)
