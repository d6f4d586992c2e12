"""Plain values the client returns for topics, notifications and queue details."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import QueueMetrics

__all__ = [
    "DEFAULT_PREMAKE",
    "NotifyThrottle",
    "Partitioning",
    "QueueDetails",
    "QueueKind",
    "RouteMatch",
    "TopicBinding",
]

QueueKind = Literal["logged", "unlogged", "partitioned"]
"""How a queue's table is stored: a plain (WAL-logged) table, ``UNLOGGED``, or
partitioned by ``pg_partman``."""


@dataclass(frozen=True, slots=True)
class TopicBinding:
    """One row of ``pgmq.list_topic_bindings``: ``queue_name`` receives what matches."""

    pattern: str
    queue_name: str
    bound_at: datetime
    compiled_regex: str


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """One row of ``pgmq.test_routing``: a binding a routing key matches."""

    pattern: str
    queue_name: str
    compiled_regex: str


@dataclass(frozen=True, slots=True)
class NotifyThrottle:
    """One row of ``pgmq.list_notify_insert_throttles``: a queue with insert notifications."""

    queue_name: str
    throttle_interval_ms: int
    last_notified_at: datetime


@dataclass(frozen=True, slots=True)
class QueueDetails:
    """Everything about one queue in one record (:meth:`rx_pgmq.PGMQ.queue`).

    Attributes:
        queue_name: The queue.
        kind: ``"logged"``, ``"unlogged"`` or ``"partitioned"``.
        created_at: When it was created.
        metrics: Its ``pgmq.metrics``.
        notify_throttle_ms: Its insert-notification throttle in ms, None when off.
        bindings: The topic patterns bound to it, sorted.
    """

    queue_name: str
    kind: QueueKind
    created_at: datetime
    metrics: QueueMetrics
    notify_throttle_ms: int | None
    bindings: tuple[str, ...]


def _interval(value: object, argument: str) -> str:
    """A partition interval as PGMQ takes it: digits (a msg_id range) or a time interval."""
    if isinstance(value, bool) or not isinstance(value, int | timedelta):
        raise InvalidArgument(
            argument, f"must be an int (messages) or a timedelta (time), got {value!r}"
        )
    if isinstance(value, int):
        if value < 1:
            raise InvalidArgument(argument, f"must be >= 1 message, got {value!r}")
        return str(value)
    seconds = value.total_seconds()
    if seconds < 1 or seconds != int(seconds):
        raise InvalidArgument(argument, f"must be whole seconds >= 1, got {value!r}")
    return f"{int(seconds)} seconds"


DEFAULT_PREMAKE = 4
"""PGMQ's default number of partitions made ahead."""


@dataclass(frozen=True, slots=True)
class Partitioning:
    """How ``pg_partman`` partitions a queue (``pgmq.create_partitioned``).

    Both intervals are ints (a number of messages: partition by ``msg_id``) or both
    timedeltas (partition by ``enqueued_at``, archive by ``archived_at``).

    Attributes:
        interval: Size of one partition.
        retention: Partitions older than this are dropped.
        premake: Partitions made ahead of time (>= 1).

    Raises:
        InvalidArgument: On a bad or mixed interval, or ``premake < 1``.
    """

    interval: int | timedelta = 10_000
    retention: int | timedelta = 100_000
    premake: int = DEFAULT_PREMAKE

    def __post_init__(self) -> None:
        self.sql_args()

    def sql_args(self) -> tuple[str, str, int]:
        """``(partition_interval, retention_interval, premake)`` for PGMQ's functions."""
        interval = _interval(self.interval, "interval")
        retention = _interval(self.retention, "retention")
        if isinstance(self.interval, int) != isinstance(self.retention, int):
            raise InvalidArgument(
                "retention", "must be of the same kind as interval (both ints or timedeltas)"
            )
        premake = self.premake
        if isinstance(premake, bool) or not isinstance(premake, int) or premake < 1:
            raise InvalidArgument("premake", f"must be an int >= 1, got {premake!r}")
        return interval, retention, premake
