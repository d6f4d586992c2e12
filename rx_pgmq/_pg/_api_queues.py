"""Queue details, notification throttles, partitioned queues and peeking on the clients."""

from __future__ import annotations

from rx_pgmq._pg import _sql, _sql_api
from rx_pgmq._pg._api_base import AsyncClientAPI, ClientAPI
from rx_pgmq._pg._calls import require_partman
from rx_pgmq._pg._plan import Call, Plan, Step, exists, one, rows
from rx_pgmq._values._records import NotifyThrottle, Partitioning, QueueDetails
from rx_pgmq._values._validate import (
    check_bool,
    check_non_negative_int,
    check_positive_int,
    check_queue_name,
)
from rx_pgmq.errors import InvalidArgument, QueueNotFound
from rx_pgmq.message import Message

__all__ = [
    "AsyncQueuesAPI",
    "QueuesAPI",
    "convert_archive_partitioned",
    "list_notify_throttles",
    "peek",
    "queue",
    "queues",
    "update_notify",
]


# -- the calls (no I/O) ------------------------------------------------------------------


def queue(name: str) -> Call[QueueDetails]:
    """``queue``: one queue's details; ``QueueNotFound`` if there is none."""
    check_queue_name(name, "name")
    return Call(name, _details(name))


def _details(name: str) -> Plan[QueueDetails]:
    found = yield from rows(Step(_sql_api.QUEUE_DETAILS, (name,)))
    if not found:
        raise QueueNotFound(name)
    return _sql_api.queue_details_from_row(found[0])


def queues() -> Call[list[QueueDetails]]:
    """``queues``: every queue's details, by name."""
    return Call(None, _all_details())


def _all_details() -> Plan[list[QueueDetails]]:
    found = yield from rows(Step(_sql_api.QUEUE_DETAILS, (None,)))
    return [_sql_api.queue_details_from_row(r) for r in found]


def peek(name: str, n: int, archive: bool) -> Call[list[Message]]:
    """``peek``: the first ``n`` rows of a queue or its archive, without claiming them."""
    check_queue_name(name)
    check_positive_int(n, "n")
    check_bool(archive, "archive")
    return Call(name, _peek(name, n, archive))


def _peek(name: str, n: int, archive: bool) -> Plan[list[Message]]:
    yield from exists(name)
    fetched = yield Step(_sql_api.peek(name, archive=archive), (n,))
    # Per message: a body that cannot be decoded is shown with decode_error set.
    return _sql.messages_from_rows(fetched.rows, name, loads=fetched.loads)


def update_notify(name: str, throttle_ms: int) -> Call[None]:
    """``update_notify``: ``InvalidArgument`` if the queue's notifications are off."""
    check_queue_name(name, "name")
    check_non_negative_int(throttle_ms, "throttle_ms")
    return Call(name, _update_notify(name, throttle_ms))


def _update_notify(name: str, throttle_ms: int) -> Plan[None]:
    yield from exists(name)
    if not (yield from rows(Step(_sql.NOTIFY_THROTTLE, (name,)))):
        raise InvalidArgument(
            "name",
            f"queue {name!r} has insert notifications off; turn them on with "
            f"PGMQ.enable_notify({name!r}, throttle_ms={throttle_ms})",
        )
    yield Step(_sql_api.UPDATE_NOTIFY, (name, throttle_ms))


def list_notify_throttles() -> Call[list[NotifyThrottle]]:
    """``list_notify_throttles``."""
    return Call(None, _throttles())


def _throttles() -> Plan[list[NotifyThrottle]]:
    found = yield from rows(Step(_sql_api.LIST_NOTIFY_THROTTLES))
    return [_sql_api.notify_throttle_from_row(r) for r in found]


def convert_archive_partitioned(
    name: str, partitioning: Partitioning | None, leading_partition: int
) -> Call[None]:
    """``convert_archive_partitioned``; ``PGMQFeatureMissing`` without ``pg_partman``."""
    check_queue_name(name, "name")
    interval, retention, _ = (partitioning or Partitioning()).sql_args()
    check_positive_int(leading_partition, "leading_partition")
    step = Step(
        _sql_api.CONVERT_ARCHIVE_PARTITIONED, (name, interval, retention, leading_partition)
    )
    return Call(name, _convert(name, step))


def _convert(name: str, step: Step) -> Plan[None]:
    yield from exists(name)
    yield from require_partman("partitioned archives")
    yield from one(step)


# -- the sync client ---------------------------------------------------------------------


class QueuesAPI(ClientAPI):
    """One record per queue, notification throttles, ``pg_partman`` partitioning and
    peeking without claiming. Mixed into ``PGMQ``."""

    def queue(self, name: str) -> QueueDetails:
        """Everything about one queue: metrics, kind, notification throttle, bindings.

        Raises:
            InvalidArgument: On a bad name.
            QueueNotFound: If the queue does not exist.
        """
        return self._run(queue(name))

    def queues(self) -> list[QueueDetails]:
        """:meth:`queue` of every queue, by name."""
        return self._run(queues())

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
        return self._run(peek(queue, n, archive))

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
        self._run(update_notify(name, throttle_ms))

    def list_notify_throttles(self) -> list[NotifyThrottle]:
        """Every queue with insert notifications on, by name, with its throttle."""
        return self._run(list_notify_throttles())

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
        self._run(convert_archive_partitioned(name, partitioning, leading_partition))


# -- the asyncio client ------------------------------------------------------------------


class AsyncQueuesAPI(AsyncClientAPI):
    """:class:`QueuesAPI` as coroutines. Mixed into ``AsyncPGMQ``; see ``PGMQ``'s methods."""

    async def queue(self, name: str) -> QueueDetails:
        """``PGMQ.queue``: everything about one queue (``QueueNotFound`` if none)."""
        return await self._run(queue(name))

    async def queues(self) -> list[QueueDetails]:
        """``PGMQ.queues``: :meth:`queue` of every queue, by name."""
        return await self._run(queues())

    async def peek(self, queue: str, n: int = 20, archive: bool = False) -> list[Message]:
        """``PGMQ.peek``: the first ``n`` messages by ``msg_id``, without claiming them."""
        return await self._run(peek(queue, n, archive))

    async def update_notify(self, name: str, throttle_ms: int) -> None:
        """``PGMQ.update_notify``: change the throttle of a queue whose notifications are on."""
        await self._run(update_notify(name, throttle_ms))

    async def list_notify_throttles(self) -> list[NotifyThrottle]:
        """``PGMQ.list_notify_throttles``."""
        return await self._run(list_notify_throttles())

    async def convert_archive_partitioned(
        self, name: str, partitioning: Partitioning | None = None, leading_partition: int = 10
    ) -> None:
        """``PGMQ.convert_archive_partitioned``: partition the queue's archive."""
        await self._run(convert_archive_partitioned(name, partitioning, leading_partition))
