"""PGMQ SQL statements and row conversion (no I/O).

Queue names reach PGMQ functions as bound ``text`` values; the few statements that touch
queue tables directly build the table identifier with :mod:`psycopg.sql`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, Final, Literal

from psycopg import sql

from rx_pgmq.message import Acknowledger, Message, QueueInfo, QueueMetrics

__all__ = [
    "ARCHIVE_MANY",
    "ARCHIVE_ONE",
    "CREATE",
    "CREATE_UNLOGGED",
    "DELETE_MANY",
    "DELETE_ONE",
    "DISABLE_NOTIFY",
    "DROP",
    "ENABLE_NOTIFY",
    "LIST_QUEUES",
    "METRICS",
    "METRICS_ALL",
    "NOTIFY_THROTTLE",
    "POP",
    "PURGE",
    "QUEUES_EXISTING",
    "QUEUE_EXISTS",
    "READ",
    "READ_WITH_POLL",
    "SEND",
    "SEND_BATCH",
    "SET_VT_MANY",
    "SET_VT_ONE",
    "FifoMode",
    "message_from_row",
    "messages_from_rows",
    "metrics_from_row",
    "queue_info_from_row",
    "queue_table",
    "read_grouped",
]

_COLUMNS: Final = "msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers"

CREATE: Final = "SELECT pgmq.create(%s)"
CREATE_UNLOGGED: Final = "SELECT pgmq.create_unlogged(%s)"
DROP: Final = "SELECT pgmq.drop_queue(%s)"
PURGE: Final = "SELECT pgmq.purge_queue(%s)"
QUEUE_EXISTS: Final = "SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = %s)"
QUEUES_EXISTING: Final = "SELECT queue_name FROM pgmq.meta WHERE queue_name = ANY(%s::text[])"
LIST_QUEUES: Final = (
    "SELECT queue_name, is_partitioned, is_unlogged, created_at FROM pgmq.list_queues() "
    "ORDER BY queue_name"
)
METRICS: Final = (
    "SELECT queue_name, queue_length, newest_msg_age_sec, oldest_msg_age_sec, total_messages,"
    " scrape_time, queue_visible_length FROM pgmq.metrics(%s)"
)
METRICS_ALL: Final = (
    "SELECT queue_name, queue_length, newest_msg_age_sec, oldest_msg_age_sec, total_messages,"
    " scrape_time, queue_visible_length FROM pgmq.metrics_all() ORDER BY queue_name"
)
SEND: Final = "SELECT * FROM pgmq.send(%s, %s::jsonb, %s::jsonb, %s::integer)"
SEND_BATCH: Final = "SELECT * FROM pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[], %s::integer)"
ENABLE_NOTIFY: Final = "SELECT pgmq.enable_notify_insert(%s, %s)"
DISABLE_NOTIFY: Final = "SELECT pgmq.disable_notify_insert(%s)"
NOTIFY_THROTTLE: Final = (
    "SELECT throttle_interval_ms FROM pgmq.notify_insert_throttle WHERE queue_name = %s"
)
READ: Final = (
    "SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers"
    " FROM pgmq.read(%s, %s::integer, %s::integer, %s::jsonb)"
)
READ_WITH_POLL: Final = (
    "SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers"
    " FROM pgmq.read_with_poll("
    "%s, %s::integer, %s::integer, %s::integer, %s::integer, %s::jsonb)"
)
POP: Final = (
    "SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers"
    " FROM pgmq.pop(%s, %s::integer)"
)
DELETE_ONE: Final = "SELECT pgmq.delete(%s, %s::bigint)"
DELETE_MANY: Final = "SELECT * FROM pgmq.delete(%s, %s::bigint[])"
ARCHIVE_ONE: Final = "SELECT pgmq.archive(%s, %s::bigint)"
ARCHIVE_MANY: Final = "SELECT * FROM pgmq.archive(%s, %s::bigint[])"
SET_VT_ONE: Final = (
    "SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers"
    " FROM pgmq.set_vt(%s, %s::bigint, %s::integer)"
)
SET_VT_MANY: Final = (
    "SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers"
    " FROM pgmq.set_vt(%s, %s::bigint[], %s::integer)"
)

FifoMode = Literal["grouped", "grouped_rr", "grouped_head"]


def read_grouped(mode: FifoMode, *, poll: bool) -> sql.Composed:
    """The FIFO read statement for ``mode`` (``pgmq.read_grouped*``), optionally long-polling.

    Parameters: queue, vt, qty (+ max_poll_seconds, poll_interval_ms when ``poll``).
    """
    name = f"read_{mode}_with_poll" if poll else f"read_{mode}"
    template = (
        "SELECT {cols} FROM {fn}(%s, %s::integer, %s::integer, %s::integer, %s::integer)"
        if poll
        else "SELECT {cols} FROM {fn}(%s, %s::integer, %s::integer)"
    )
    return sql.SQL(template).format(cols=sql.SQL(_COLUMNS), fn=sql.Identifier("pgmq", name))


def queue_table(queue: str, prefix: Literal["q", "a"] = "q") -> sql.Identifier:
    """The table of a queue (``pgmq.q_<queue>``) or of its archive (``pgmq.a_<queue>``)."""
    return sql.Identifier("pgmq", f"{prefix}_{queue}")


def message_from_row(
    row: Sequence[Any], queue: str, acknowledger: Acknowledger | None = None
) -> Message:
    """Build a :class:`Message` from a ``pgmq.message_record`` row."""
    return Message(
        msg_id=row[0],
        read_ct=row[1],
        enqueued_at=row[2],
        last_read_at=row[3],
        vt=row[4],
        body=row[5],
        headers=row[6],
        queue=queue,
        _acknowledger=acknowledger,
    )


_MESSAGE_FIELDS = (
    "msg_id",
    "read_ct",
    "enqueued_at",
    "last_read_at",
    "vt",
    "body",
    "headers",
    "queue",
    "_acknowledger",
)
if tuple(f.name for f in fields(Message)) != _MESSAGE_FIELDS:  # pragma: no cover - guard
    raise RuntimeError("Message fields changed: update rx_pgmq._sql.messages_from_rows")
_SETTERS = tuple(getattr(Message, name).__set__ for name in _MESSAGE_FIELDS)


def messages_from_rows(
    rows: Sequence[Sequence[Any]], queue: str, acknowledger: Acknowledger | None = None
) -> list[Message]:
    """Build messages from rows, in ``msg_id`` order.

    The same values as :func:`message_from_row`, set through the slots directly instead
    of the frozen dataclass ``__init__`` (one ``object.__setattr__`` per field, the main
    per-message cost of a read): the rows are PGMQ ``message_record`` rows, nothing to check.
    """
    s_id, s_rc, s_enq, s_last, s_vt, s_body, s_head, s_queue, s_ack = _SETTERS
    new = object.__new__
    msgs = []
    for r in rows:
        m = new(Message)
        s_id(m, r[0])
        s_rc(m, r[1])
        s_enq(m, r[2])
        s_last(m, r[3])
        s_vt(m, r[4])
        s_body(m, r[5])
        s_head(m, r[6])
        s_queue(m, queue)
        s_ack(m, acknowledger)
        msgs.append(m)
    msgs.sort(key=_msg_id)
    return msgs


def _msg_id(m: Message) -> int:
    return m.msg_id


def metrics_from_row(row: Sequence[Any]) -> QueueMetrics:
    """Build :class:`QueueMetrics` from a ``pgmq.metrics_result`` row."""
    return QueueMetrics(*row[:7])


def queue_info_from_row(row: Sequence[Any]) -> QueueInfo:
    """Build :class:`QueueInfo` from a ``pgmq.queue_record`` row."""
    return QueueInfo(*row[:4])
