"""PGMQ SQL statements and row conversion (no I/O).

Queue names reach PGMQ functions as bound ``text`` values; the few statements that touch
queue tables directly build the table identifier with :mod:`psycopg.sql`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal, cast

import psycopg
from psycopg import pq, sql

from rx_pgmq._values._options import FifoMode
from rx_pgmq._values._slots import decode_json_text, slot_setters
from rx_pgmq.errors import BodyMismatch, DecodeError
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
    "MESSAGE_COLUMNS",
    "METRICS",
    "METRICS_ALL",
    "NOTIFY_THROTTLE",
    "POP",
    "POP_CALL",
    "PURGE",
    "QUEUES_EXISTING",
    "QUEUE_EXISTS",
    "READ",
    "READ_CALL",
    "READ_WITH_POLL",
    "READ_WITH_POLL_CALL",
    "SEND",
    "SEND_BATCH",
    "SET_VT_MANY",
    "SET_VT_ONE",
    "TEXT_COLUMNS",
    "delete_inline",
    "id_array",
    "json_loads",
    "messages_from_rows",
    "metrics_from_row",
    "queue_info_from_row",
    "queue_table",
    "read_grouped",
    "read_inline",
    "rendered",
    "select_messages",
]

MESSAGE_COLUMNS: Final = "msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers"
"""The columns of a ``pgmq.message_record`` row, in the order the row builders read them."""
TEXT_COLUMNS: Final = "msg_id, read_ct, enqueued_at, last_read_at, vt, message::text, headers::text"
"""The consumer's read columns: bodies and headers as JSON text, decoded by
:func:`messages_from_rows` with ``loads`` (cheaper than psycopg's jsonb loader; see
:mod:`rx_pgmq._values._slots`)."""

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
_SELECT_METRICS: Final = (
    "SELECT queue_name, queue_length, newest_msg_age_sec, oldest_msg_age_sec, total_messages,"
    " scrape_time, queue_visible_length FROM "
)
METRICS: Final = _SELECT_METRICS + "pgmq.metrics(%s)"
METRICS_ALL: Final = _SELECT_METRICS + "pgmq.metrics_all() ORDER BY queue_name"
SEND: Final = "SELECT * FROM pgmq.send(%s, %s::jsonb, %s::jsonb, %s::integer)"
SEND_BATCH: Final = "SELECT * FROM pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[], %s::integer)"
ENABLE_NOTIFY: Final = "SELECT pgmq.enable_notify_insert(%s, %s)"
DISABLE_NOTIFY: Final = "SELECT pgmq.disable_notify_insert(%s)"
NOTIFY_THROTTLE: Final = (
    "SELECT throttle_interval_ms FROM pgmq.notify_insert_throttle WHERE queue_name = %s"
)
READ_CALL: Final = "pgmq.read(%s, %s::integer, %s::integer, %s::jsonb)"
"""Parameters: queue, vt, qty, conditional."""
READ_WITH_POLL_CALL: Final = (
    "pgmq.read_with_poll(%s, %s::integer, %s::integer, %s::integer, %s::integer, %s::jsonb)"
)
"""Parameters: queue, vt, qty, max_poll_seconds, poll_interval_ms, conditional."""
POP_CALL: Final = "pgmq.pop(%s, %s::integer)"
"""Parameters: queue, qty."""
_SELECT_FROM: Final = "SELECT " + TEXT_COLUMNS + " FROM "  # noqa: S608 - constants only
# The client's reads: constant fragments only (values travel as parameters); bodies and
# headers come as JSON text, decoded per message by messages_from_rows(..., loads=...).
READ: Final = _SELECT_FROM + READ_CALL
READ_WITH_POLL: Final = _SELECT_FROM + READ_WITH_POLL_CALL
POP: Final = _SELECT_FROM + POP_CALL
DELETE_ONE: Final = "SELECT pgmq.delete(%s, %s::bigint)"
DELETE_MANY: Final = "SELECT * FROM pgmq.delete(%s, %s::bigint[])"
ARCHIVE_ONE: Final = "SELECT pgmq.archive(%s, %s::bigint)"
ARCHIVE_MANY: Final = "SELECT * FROM pgmq.archive(%s, %s::bigint[])"
SET_VT_ONE: Final = _SELECT_FROM + "pgmq.set_vt(%s, %s::bigint, %s::integer)"
SET_VT_MANY: Final = _SELECT_FROM + "pgmq.set_vt(%s, %s::bigint[], %s::integer)"


_GROUP_ORDER: Final[dict[str, sql.SQL]] = {
    # read_grouped selects whole groups, the group whose oldest message is oldest first.
    "grouped": sql.SQL(
        " ORDER BY min(r.msg_id) OVER (PARTITION BY"
        " coalesce(r.headers->>'x-pgmq-group', '_default_fifo_group')), r.msg_id"
    ),
    # read_grouped_head selects one head per group, oldest head first.
    "grouped_head": sql.SQL(" ORDER BY r.msg_id"),
    # read_grouped_rr orders its own result (layer by layer); WITH ORDINALITY keeps it.
    "grouped_rr": sql.SQL(" ORDER BY r.ordinality"),
}


def read_grouped(mode: FifoMode, *, poll: bool, durable: bool = True) -> sql.Composed:
    """The FIFO read statement for ``mode`` (``pgmq.read_grouped*``), optionally long-polling.

    Its rows come in the order the function selects them, across groups too:
    ``grouped_rr`` in PGMQ's own round-robin order (A1, B1, A2); ``grouped`` group by
    group (A1, A2, B1), the group with the oldest message first; ``grouped_head`` the
    heads, oldest first. ``read_grouped`` and ``read_grouped_head`` return their rows
    from an ``UPDATE ... RETURNING``, whose order SQL leaves open, so the statement sorts
    them into their selection order; ``read_grouped_rr`` sorts its own result, which
    ``WITH ORDINALITY`` carries through. Build messages from these rows with
    ``messages_from_rows(..., in_order=True)``.

    Parameters: queue, vt, qty (+ max_poll_seconds, poll_interval_ms when ``poll``).
    ``durable=False``: see :func:`select_messages`.
    """
    name = f"read_{mode}_with_poll" if poll else f"read_{mode}"
    args = (
        "(%s, %s::integer, %s::integer, %s::integer, %s::integer)"
        if poll
        else "(%s, %s::integer, %s::integer)"
    )
    call = sql.Composed(
        [sql.Identifier("pgmq", name), sql.SQL(args), sql.SQL(" WITH ORDINALITY AS r")]
    )
    return select_messages(call, durable=durable) + _GROUP_ORDER[mode]


_ASYNC_COMMIT: Final = sql.SQL(
    "(SELECT set_config('synchronous_commit', 'off', true) AS rx_pgmq_commit) AS rx_pgmq"
)
"""A one-row subquery that turns ``synchronous_commit`` off for the current transaction only.

Joined into a read and its column returned with every row, so PostgreSQL must evaluate it
whenever the read returns a message (a read that returns nothing writes nothing, and has
nothing to commit). The setting only matters when the transaction commits, so the order in
which the server evaluates the join does not matter.
"""

_INLINE_READ: Final = """WITH cte AS (
    SELECT msg_id FROM {table}
    WHERE vt <= clock_timestamp()
    ORDER BY msg_id ASC
    LIMIT {qty}
    FOR UPDATE SKIP LOCKED
)
UPDATE {table} m
SET last_read_at = clock_timestamp(),
    vt = clock_timestamp() + make_interval(secs => {vt}),
    read_ct = m.read_ct + 1
FROM cte{join}
WHERE m.msg_id = cte.msg_id
RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.last_read_at, m.vt, m.message::text,
    m.headers::text{col}"""


def read_inline(
    queue: str, *, durable: bool, qty: int | None = None, vt: int | None = None
) -> sql.Composed:
    """The statement of ``pgmq.read(queue, vt, qty)`` without a conditional, run inline.

    The same ``UPDATE ... FOR UPDATE SKIP LOCKED`` as PGMQ's ``read`` (PGMQ 1.5 and later,
    whose queue tables have ``last_read_at`` and ``headers``), but as one prepared statement
    on the queue table: ``pgmq.read`` builds its query with ``format()`` and ``EXECUTE``,
    so the server parses and plans it on every call (BENCHMARKS.md, "Reads"). Parameters:
    qty, vt.

    With ``qty`` and ``vt`` given, both are written into the statement instead (it then has
    no parameters). On a large queue PostgreSQL plans a prepared read whose ``LIMIT`` is a
    parameter again on every execution, because its plan for an unknown limit is much
    slower; with the limit written in, it keeps one plan (BENCHMARKS.md, "Reads planned
    once"). The consumer uses that form for its usual read size, the batch size.

    With ``durable=False`` the read's transaction commits without waiting for its WAL to
    reach the disk (see :data:`_ASYNC_COMMIT`).

    Raises:
        ValueError: If only one of ``qty`` and ``vt`` is given.
    """
    if (qty is None) != (vt is None):
        raise ValueError("read_inline: give both qty and vt, or neither")
    param = sql.SQL("%s::integer")
    return sql.SQL(_INLINE_READ).format(
        table=queue_table(queue),
        qty=param if qty is None else sql.Literal(int(qty)),
        vt=param if vt is None else sql.Literal(int(vt)),
        join=sql.SQL("") if durable else sql.SQL(", {}").format(_ASYNC_COMMIT),
        col=sql.SQL("" if durable else ", rx_pgmq.rx_pgmq_commit"),
    )


def delete_inline(queue: str) -> sql.Composed:
    """The statement of ``pgmq.delete(queue, msg_ids)``, run inline on the queue table.

    The same ``DELETE ... WHERE msg_id = ANY(...) RETURNING msg_id`` as PGMQ's function,
    without the ``format()`` and ``EXECUTE`` that make the server parse and plan it on
    every call. Parameter: the ids (``bigint[]``, e.g. :func:`id_array`).
    """
    return sql.SQL("DELETE FROM {} WHERE msg_id = ANY(%s::bigint[]) RETURNING msg_id").format(
        queue_table(queue)
    )


def select_messages(source: str | sql.Composable, *, durable: bool = True) -> sql.Composed:
    """``SELECT <message columns> FROM <source>``, where ``source`` is a call of a PGMQ read
    function returning ``pgmq.message_record`` rows; bodies and headers come as JSON text
    (decode them with ``messages_from_rows(..., loads=...)``).

    With ``durable=False`` the transaction commits without waiting for the WAL flush (see
    :data:`_ASYNC_COMMIT`). A server crash may then forget the read: its messages become
    visible again with their earlier ``vt`` and ``read_ct``, as if the read had never
    happened (a redelivery, which at-least-once consumption allows). Never use it for
    ``pgmq.pop``: a forgotten delete-on-read would deliver a message twice.
    """
    src = sql.SQL(source) if isinstance(source, str) else source
    if durable:
        return sql.SQL("SELECT {cols} FROM {src}").format(cols=sql.SQL(TEXT_COLUMNS), src=src)
    return sql.SQL("SELECT {cols}, rx_pgmq.rx_pgmq_commit FROM {src}, {commit}").format(
        cols=sql.SQL(TEXT_COLUMNS), src=src, commit=_ASYNC_COMMIT
    )


def rendered(stmt: str | sql.Composable) -> bytes:
    """``stmt`` as the bytes psycopg sends, rendered once for a statement run many times.

    psycopg renders a :class:`~psycopg.sql.Composable` again on every ``execute``; the
    bytes of a statement whose identifiers are ASCII (queue names are) do not depend on
    the connection, so they are rendered without one (see :mod:`rx_pgmq._values._slots`).
    """
    if isinstance(stmt, str):
        return stmt.encode()
    return stmt.as_bytes(None)


def queue_table(queue: str, prefix: Literal["q", "a"] = "q") -> sql.Identifier:
    """The table of a queue (``pgmq.q_<queue>``) or of its archive (``pgmq.a_<queue>``)."""
    return sql.Identifier("pgmq", f"{prefix}_{queue}")


_SETTERS = slot_setters(
    Message,
    (
        "msg_id",
        "read_ct",
        "enqueued_at",
        "last_read_at",
        "vt",
        "body",
        "headers",
        "queue",
        "_acknowledger",
        "decode_error",
        "_on_drop",
    ),
)


def messages_from_rows(
    rows: Sequence[Sequence[Any]],
    queue: str,
    acknowledger: Acknowledger | None = None,
    loads: Callable[[str], Any] | None = None,
    *,
    in_order: bool = False,
    body_loads: Callable[[str], Any] | None = None,
) -> list[Message]:
    """Build messages from rows, in ``msg_id`` order (or the rows' order if ``in_order``).

    PGMQ's ``read``, ``read_with_poll``, ``pop`` and ``set_vt`` (and the inline read)
    return rows from an ``UPDATE``/``DELETE ... RETURNING``, in no defined order (rows a
    ``set_vt`` moved come last); sorted by ``msg_id`` they come in the order the read
    selected them. FIFO reads (:func:`read_grouped`) are already in their selection
    order, which is not ``msg_id`` order across groups: pass ``in_order=True``.

    Each message is built through its slots directly instead of the frozen dataclass
    ``__init__`` (one ``object.__setattr__`` per field, the main
    per-message cost of a read): the rows are PGMQ ``message_record`` rows, nothing to check.
    With ``loads`` the body and headers columns are JSON text (see :func:`select_messages`)
    and are decoded with it. A message whose body or headers cannot be decoded (or whose
    headers are not a JSON object) gets ``decode_error`` set and ``body`` and ``headers``
    ``None``; the others are unaffected. Good messages pay only the ``try`` and a type
    check of their headers, if any: the failure is diagnosed by :func:`_decode_error`.

    ``body_loads`` (with ``loads``) decodes the bodies instead, e.g. straight into a body
    type (:func:`rx_pgmq._values._bodytype.text_decoder`); a body it refuses with
    :class:`~rx_pgmq.errors.BodyMismatch` gets that error, with the message's id, queue
    and stored text, as its ``decode_error``.
    """
    load_body = body_loads or loads
    s_id, s_rc, s_enq, s_last, s_vt, s_body, s_head, s_queue, s_ack, s_err, s_drop = _SETTERS
    new = object.__new__
    msgs = []
    for r in rows:
        m = new(Message)
        s_drop(m, None)  # first: its finalizer reads it (see Message)
        s_id(m, r[0])
        s_rc(m, r[1])
        s_enq(m, r[2])
        s_last(m, r[3])
        s_vt(m, r[4])
        if loads is None:
            s_body(m, r[5])
            s_head(m, r[6])
            s_err(m, None)
        else:
            try:
                s_body(m, load_body(r[5]))  # type: ignore[misc]  # set when loads is
                head = r[6]
                if head is not None:
                    head = loads(head)
                    if not isinstance(head, dict) and head is not None:  # JSON null is fine
                        raise TypeError("headers are not a JSON object")
                s_head(m, head)
                s_err(m, None)
            except Exception:  # RecursionError, ValueError or a custom loads' own error
                s_body(m, None)
                s_head(m, None)
                s_err(m, _decode_error(r, queue, loads, body_loads))
        s_queue(m, queue)
        s_ack(m, acknowledger)
        msgs.append(m)
    if not in_order:
        msgs.sort(key=_msg_id)
    return msgs


def _decode_error(
    row: Sequence[Any],
    queue: str,
    loads: Callable[[str], Any],
    body_loads: Callable[[str], Any] | None = None,
) -> DecodeError:
    """The :class:`DecodeError` of a row that :func:`messages_from_rows` could not decode.

    Decodes again to tell which part failed and why (only bad rows come here): a body
    ``body_loads`` refuses with :class:`BodyMismatch` gives that error, completed.
    """
    body, head = row[5], row[6]
    part, detail = "body", ""
    try:
        (loads if body_loads is None else body_loads)(body)
    except BodyMismatch as exc:
        return BodyMismatch(exc.body_type, exc.detail, row[0], queue, body, head)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
    if not detail and head is not None:
        part = "headers"
        try:
            value = loads(head)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
        else:
            detail = f"headers must be a JSON object, got {type(value).__name__} {head:.60}"
    return DecodeError(row[0], queue, part, detail or "unknown error", body, head)


JSONB_OID: Final = 3802
"""The type oid of ``jsonb`` (fixed in PostgreSQL's catalog)."""


def json_loads(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
) -> Callable[[str], Any]:
    """The function that decodes jsonb on ``conn``: what ``psycopg.types.json.set_json_loads``
    set for it (globally or on the connection), ``json.loads`` by default."""
    loader = conn.adapters.get_loader(JSONB_OID, pq.Format.TEXT)
    loads = getattr(loader, "_loads", json.loads)
    if loads is json.loads or not callable(loads):
        return decode_json_text
    return cast(Callable[[str], Any], loads)


def id_array(ids: Iterable[int]) -> str:
    """Message ids as a ``bigint[]`` literal (``{1,2,3}``), for a ``%s::bigint[]`` parameter.

    The ids are ints the server returned, so the literal holds digits only. psycopg's list
    adapter looks at every element to choose its type; the acknowledger sends one array
    per flush, on the hot path (see :mod:`rx_pgmq._values._slots`).
    """
    return "{" + ",".join(map(str, ids)) + "}"


def _msg_id(m: Message) -> int:
    return m.msg_id


def metrics_from_row(row: Sequence[Any]) -> QueueMetrics:
    """Build :class:`QueueMetrics` from a ``pgmq.metrics_result`` row."""
    return QueueMetrics(*row[:7])


def queue_info_from_row(row: Sequence[Any]) -> QueueInfo:
    """Build :class:`QueueInfo` from a ``pgmq.queue_record`` row."""
    return QueueInfo(*row[:4])
