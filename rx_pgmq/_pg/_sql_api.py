"""SQL of the PGMQ functions beyond reads and acks: topics, FIFO indexes, time-based
sends, notification throttles, partitioned queues and queue details (no I/O).

Values always travel as bound parameters; the only identifier (:func:`peek`) is built
with :mod:`psycopg.sql`. Row builders turn the functions' rows into rx_pgmq's records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from psycopg import sql

from rx_pgmq._pg._sql import TEXT_COLUMNS, metrics_from_row, queue_table
from rx_pgmq._values._records import (
    NotifyThrottle,
    QueueDetails,
    QueueKind,
    RouteMatch,
    TopicBinding,
)

__all__ = [
    "BIND_TOPIC",
    "CONVERT_ARCHIVE_PARTITIONED",
    "CREATE_FIFO_INDEX",
    "CREATE_FIFO_INDEXES_ALL",
    "CREATE_PARTITIONED",
    "CREATE_PARTITIONED_PREMAKE",
    "HAS_EXTENSION",
    "LIST_NOTIFY_THROTTLES",
    "LIST_TOPIC_BINDINGS",
    "LIST_TOPIC_BINDINGS_OF",
    "QUEUE_DETAILS",
    "SEND_AT",
    "SEND_BATCH_AT",
    "SEND_BATCH_TOPIC",
    "SEND_BATCH_TOPIC_AT",
    "SEND_TOPIC",
    "SEND_TOPIC_AT",
    "SET_VT_MANY_AT",
    "SET_VT_ONE_AT",
    "TEST_ROUTING",
    "UNBIND_TOPIC",
    "UPDATE_NOTIFY",
    "VALIDATE_ROUTING_KEY",
    "VALIDATE_TOPIC_PATTERN",
    "notify_throttle_from_row",
    "peek",
    "queue_details_from_row",
    "route_match_from_row",
    "topic_binding_from_row",
]

# -- FIFO --------------------------------------------------------------------------------
CREATE_FIFO_INDEX: Final = "SELECT pgmq.create_fifo_index(%s)"
CREATE_FIFO_INDEXES_ALL: Final = "SELECT pgmq.create_fifo_indexes_all()"

# -- sending at a point in time (``timestamptz`` overloads) --------------------------------
SEND_AT: Final = "SELECT * FROM pgmq.send(%s, %s::jsonb, %s::jsonb, %s::timestamptz)"
SEND_BATCH_AT: Final = (
    "SELECT * FROM pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[], %s::timestamptz)"
)
_COLUMNS: Final = "SELECT " + TEXT_COLUMNS + " FROM "  # noqa: S608 - constants only
SET_VT_ONE_AT: Final = _COLUMNS + "pgmq.set_vt(%s, %s::bigint, %s::timestamptz)"
SET_VT_MANY_AT: Final = _COLUMNS + "pgmq.set_vt(%s, %s::bigint[], %s::timestamptz)"

# -- topics (PGMQ 1.11+) ---------------------------------------------------------------------
BIND_TOPIC: Final = "SELECT pgmq.bind_topic(%s, %s)"
UNBIND_TOPIC: Final = "SELECT pgmq.unbind_topic(%s, %s)"
SEND_TOPIC: Final = "SELECT pgmq.send_topic(%s, %s::jsonb, %s::jsonb, %s::integer)"
SEND_TOPIC_AT: Final = (
    "SELECT pgmq.send_topic(%s, %s::jsonb, %s::jsonb, greatest(0, ceil(extract(epoch FROM "
    "%s::timestamptz - clock_timestamp())))::integer)"
)
"""``send_topic`` has no ``timestamptz`` overload: the delay is computed on the server's
clock, rounded up to whole seconds."""
SEND_BATCH_TOPIC: Final = (
    "SELECT queue_name, msg_id FROM "
    "pgmq.send_batch_topic(%s, %s::jsonb[], %s::jsonb[], %s::integer)"
)
SEND_BATCH_TOPIC_AT: Final = (
    "SELECT queue_name, msg_id FROM "
    "pgmq.send_batch_topic(%s, %s::jsonb[], %s::jsonb[], %s::timestamptz)"
)
VALIDATE_ROUTING_KEY: Final = "SELECT pgmq.validate_routing_key(%s)"
VALIDATE_TOPIC_PATTERN: Final = "SELECT pgmq.validate_topic_pattern(%s)"
TEST_ROUTING: Final = "SELECT pattern, queue_name, compiled_regex FROM pgmq.test_routing(%s)"
LIST_TOPIC_BINDINGS: Final = (
    "SELECT pattern, queue_name, bound_at, compiled_regex FROM pgmq.list_topic_bindings()"
)
LIST_TOPIC_BINDINGS_OF: Final = (
    "SELECT pattern, queue_name, bound_at, compiled_regex FROM pgmq.list_topic_bindings(%s)"
)

# -- notifications -----------------------------------------------------------------------
UPDATE_NOTIFY: Final = "SELECT pgmq.update_notify_insert(%s, %s::integer)"
LIST_NOTIFY_THROTTLES: Final = (
    "SELECT queue_name, throttle_interval_ms, last_notified_at "
    "FROM pgmq.list_notify_insert_throttles()"
)

# -- partitioned queues (pg_partman) ---------------------------------------------------------
HAS_EXTENSION: Final = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = %s)"
CREATE_PARTITIONED: Final = "SELECT pgmq.create_partitioned(%s, %s, %s)"
CREATE_PARTITIONED_PREMAKE: Final = "SELECT pgmq.create_partitioned(%s, %s, %s, %s::integer)"
"""With ``premake`` (PGMQ 1.13); the three-argument form also runs on older versions."""
CONVERT_ARCHIVE_PARTITIONED: Final = (
    "SELECT pgmq.convert_archive_partitioned(%s, %s, %s, %s::integer)"
)

# -- queue details ------------------------------------------------------------------------
QUEUE_DETAILS: Final = """SELECT q.queue_name, q.is_partitioned, q.is_unlogged, q.created_at,
    m.queue_name, m.queue_length, m.newest_msg_age_sec, m.oldest_msg_age_sec,
    m.total_messages, m.scrape_time, m.queue_visible_length,
    t.throttle_interval_ms,
    ARRAY(SELECT b.pattern FROM pgmq.list_topic_bindings(q.queue_name) b ORDER BY b.pattern)
FROM pgmq.list_queues() q
CROSS JOIN LATERAL pgmq.metrics(q.queue_name) m
LEFT JOIN pgmq.list_notify_insert_throttles() t ON t.queue_name = q.queue_name
WHERE q.queue_name = coalesce(%s::text, q.queue_name)
ORDER BY q.queue_name"""
"""Parameter: one queue name, or NULL for every queue."""


def peek(queue: str, *, archive: bool) -> sql.Composed:
    """The first rows of a queue (or its archive) by ``msg_id``, without claiming them.

    Parameter: how many.
    """
    return sql.SQL("SELECT {cols} FROM {table} ORDER BY msg_id LIMIT %s").format(
        cols=sql.SQL(TEXT_COLUMNS), table=queue_table(queue, "a" if archive else "q")
    )


def topic_binding_from_row(row: Sequence[Any]) -> TopicBinding:
    """Build a :class:`TopicBinding` from a ``pgmq.list_topic_bindings`` row."""
    return TopicBinding(*row[:4])


def route_match_from_row(row: Sequence[Any]) -> RouteMatch:
    """Build a :class:`RouteMatch` from a ``pgmq.test_routing`` row."""
    return RouteMatch(*row[:3])


def notify_throttle_from_row(row: Sequence[Any]) -> NotifyThrottle:
    """Build a :class:`NotifyThrottle` from a ``pgmq.list_notify_insert_throttles`` row."""
    return NotifyThrottle(*row[:3])


def queue_details_from_row(row: Sequence[Any]) -> QueueDetails:
    """Build :class:`QueueDetails` from a :data:`QUEUE_DETAILS` row."""
    name, partitioned, unlogged, created_at = row[:4]
    kind: QueueKind = "partitioned" if partitioned else "unlogged" if unlogged else "logged"
    return QueueDetails(
        queue_name=name,
        kind=kind,
        created_at=created_at,
        metrics=metrics_from_row(row[4:11]),
        notify_throttle_ms=row[11],
        bindings=tuple(row[12]),
    )
