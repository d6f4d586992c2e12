"""The client's core calls as plans (no I/O): administration, sends, reads and acks.

Each function checks its arguments (``InvalidArgument`` before any SQL) and returns the
:class:`~rx_pgmq._pg._plan.Call` that :class:`rx_pgmq.PGMQ` and
:class:`rx_pgmq.aio.AsyncPGMQ` run; their methods document them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from rx_pgmq._pg import _sql, _sql_api
from rx_pgmq._pg._api_base import Delay, batch_payload, delay_or_time
from rx_pgmq._pg._plan import (
    Call,
    Done,
    Headers,
    Plan,
    Runnable,
    Sending,
    Step,
    exists,
    flag,
    messages,
    one,
    rows,
    run,
)
from rx_pgmq._values._bodytype import body_decoder, encode_body
from rx_pgmq._values._records import DEFAULT_PREMAKE, Partitioning
from rx_pgmq._values._validate import (
    check_body,
    check_bool,
    check_conditional,
    check_headers,
    check_msg_id,
    check_msg_ids,
    check_non_negative_int,
    check_positive_int,
    check_queue_name,
    whole_seconds,
)
from rx_pgmq.errors import InvalidArgument, PGMQFeatureMissing
from rx_pgmq.message import BodyT, Message, QueueInfo, QueueMetrics

__all__ = [
    "ack",
    "create_queue",
    "disable_notify",
    "drop_queue",
    "enable_notify",
    "list_queues",
    "metrics",
    "metrics_all",
    "notify_throttle_ms",
    "on_existing",
    "pop",
    "purge_queue",
    "queue_exists",
    "read",
    "read_with_poll",
    "require_partman",
    "send",
    "send_batch",
    "set_vt",
]

Duration = int | timedelta


# -- administration ----------------------------------------------------------------------


def create_queue(name: str, unlogged: bool, partitioned: bool | Partitioning) -> Call[None]:
    """``create_queue``: plain, unlogged, or partitioned with ``pg_partman``."""
    check_queue_name(name, "name")
    check_bool(unlogged, "unlogged")
    if not isinstance(partitioned, bool | Partitioning):
        raise InvalidArgument(
            "partitioned", f"must be a bool or a Partitioning, got {partitioned!r}"
        )
    if not partitioned:
        return Call(name, run(Step(_sql.CREATE_UNLOGGED if unlogged else _sql.CREATE, (name,))))
    if unlogged:
        raise InvalidArgument("unlogged", "a partitioned queue cannot be unlogged")
    plan = partitioned if isinstance(partitioned, Partitioning) else Partitioning()
    return Call(name, _create_partitioned(name, plan))


def _create_partitioned(name: str, partitioning: Partitioning) -> Plan[None]:
    interval, retention, premake = partitioning.sql_args()
    yield from require_partman("partitioned queues")
    if premake == DEFAULT_PREMAKE:
        yield Step(_sql_api.CREATE_PARTITIONED, (name, interval, retention))
    else:
        yield Step(_sql_api.CREATE_PARTITIONED_PREMAKE, (name, interval, retention, premake))


def require_partman(feature: str) -> Plan[None]:
    """Raise ``PGMQFeatureMissing`` unless the database has ``pg_partman``."""
    if not (yield from one(Step(_sql_api.HAS_EXTENSION, ("pg_partman",)))):
        raise PGMQFeatureMissing("pg_partman", feature)


def _flag(name: str, statement: str) -> Call[bool]:
    check_queue_name(name, "name")
    return Call(name, flag(Step(statement, (name,))))


def drop_queue(name: str) -> Call[bool]:
    """``drop_queue``: whether the queue existed."""
    return _flag(name, _sql.DROP)


def queue_exists(name: str) -> Call[bool]:
    """``queue_exists``."""
    return _flag(name, _sql.QUEUE_EXISTS)


def purge_queue(name: str) -> Call[int]:
    """``purge_queue``: how many were deleted; ``QueueNotFound`` if there is no queue."""
    check_queue_name(name, "name")
    return Call(name, _purge(name))


def _purge(name: str) -> Plan[int]:
    yield from exists(name)
    return int((yield from one(Step(_sql.PURGE, (name,)))) or 0)


def list_queues() -> Call[list[QueueInfo]]:
    """``list_queues``."""
    return Call(None, _list_queues())


def _list_queues() -> Plan[list[QueueInfo]]:
    return [_sql.queue_info_from_row(r) for r in (yield from rows(Step(_sql.LIST_QUEUES)))]


def metrics(name: str) -> Call[QueueMetrics]:
    """``metrics`` of one queue; ``QueueNotFound`` if there is none."""
    check_queue_name(name, "name")
    return Call(name, _metrics(name))


def _metrics(name: str) -> Plan[QueueMetrics]:
    yield from exists(name)
    (row,) = yield from rows(Step(_sql.METRICS, (name,)))
    return _sql.metrics_from_row(row)


def metrics_all() -> Call[list[QueueMetrics]]:
    """``metrics_all``."""
    return Call(None, _metrics_all())


def _metrics_all() -> Plan[list[QueueMetrics]]:
    return [_sql.metrics_from_row(r) for r in (yield from rows(Step(_sql.METRICS_ALL)))]


def enable_notify(name: str, throttle_ms: int) -> Call[None]:
    """``enable_notify``; ``QueueNotFound`` if there is no queue."""
    check_queue_name(name, "name")
    check_non_negative_int(throttle_ms, "throttle_ms")
    return Call(name, on_existing(name, Step(_sql.ENABLE_NOTIFY, (name, throttle_ms))))


def disable_notify(name: str) -> Call[None]:
    """``disable_notify``; ``QueueNotFound`` if there is no queue."""
    check_queue_name(name, "name")
    return Call(name, on_existing(name, Step(_sql.DISABLE_NOTIFY, (name,))))


def on_existing(name: str, step: Step) -> Plan[None]:
    """``QueueNotFound`` unless the queue exists, else one statement."""
    yield from exists(name)
    yield from run(step)


def notify_throttle_ms(name: str) -> Call[int | None]:
    """``notify_throttle_ms``: None when notifications are off."""
    check_queue_name(name, "name")
    return Call(name, _throttle(name))


def _throttle(name: str) -> Plan[int | None]:
    found = yield from rows(Step(_sql.NOTIFY_THROTTLE, (name,)))
    return int(found[0][0]) if found else None


# -- producing ---------------------------------------------------------------------------


def send(name: str, body: Any, headers: Headers, delay: Delay) -> Sending:
    """``send``: one message (its id is the only one of the list)."""
    check_queue_name(name, "name")
    text = check_body(encode_body(body))
    checked = check_headers(headers)
    when = delay_or_time(delay, "delay")
    stmt = _sql_api.SEND_AT if isinstance(when, datetime) else _sql.SEND

    def call(traced: list[Headers] | None) -> Call[list[int]]:
        head = checked if traced is None else check_headers(traced[0])
        return Call(name, _ids(Step(stmt, (name, text, head, when))))

    return Sending(name, [headers], call)


def send_batch(
    name: str, bodies: Sequence[Any], headers: Sequence[Headers] | None, delay: Delay
) -> Sending:
    """``send_batch``: the ids in body order."""
    check_queue_name(name, "name")
    texts, heads = batch_payload(bodies, headers)
    when = delay_or_time(delay, "delay")
    stmt = _sql_api.SEND_BATCH_AT if isinstance(when, datetime) else _sql.SEND_BATCH

    def call(traced: list[Headers] | None) -> Call[list[int]]:
        sent = heads if traced is None else batch_payload(bodies, traced)[1]
        return Call(name, _ids(Step(stmt, (name, texts, sent, when))))

    return Sending(name, list(headers or [None] * len(texts)), call)


def _ids(step: Step) -> Plan[list[int]]:
    return [int(r[0]) for r in (yield from rows(step))]


# -- low-level reads ---------------------------------------------------------------------


def read(
    name: str,
    vt: Duration,
    qty: int,
    conditional: Mapping[str, Any] | None,
    body_type: type[BodyT] | None,
) -> Call[list[Message[BodyT]]]:
    """``read``: claim up to ``qty`` messages for ``vt`` seconds."""
    check_queue_name(name, "name")
    params = (name, whole_seconds(vt, "vt"), check_positive_int(qty, "qty"))
    step = Step(_sql.READ, (*params, check_conditional(conditional)))
    return Call(name, messages(name, step, body_decoder(body_type)))


def read_with_poll(
    name: str,
    vt: Duration,
    qty: int,
    poll: tuple[int, int],
    conditional: Mapping[str, Any] | None,
    body_type: type[BodyT] | None,
) -> Call[list[Message[BodyT]]]:
    """``read_with_poll``: ``read`` waiting in the server, ``poll`` =
    (max_poll_seconds, poll_interval_ms)."""
    check_queue_name(name, "name")
    params = (name, whole_seconds(vt, "vt"), check_positive_int(qty, "qty"), *check_poll(poll))
    step = Step(_sql.READ_WITH_POLL, (*params, check_conditional(conditional)))
    return Call(name, messages(name, step, body_decoder(body_type)))


def check_poll(poll: tuple[int, int]) -> tuple[int, int]:
    """``(max_poll_seconds, poll_interval_ms)`` of a ``…_with_poll`` read, checked."""
    check_non_negative_int(poll[0], "max_poll_seconds")
    check_positive_int(poll[1], "poll_interval_ms")
    return poll


def pop(name: str, qty: int, body_type: type[BodyT] | None) -> Call[list[Message[BodyT]]]:
    """``pop``: read and delete up to ``qty`` messages."""
    check_queue_name(name, "name")
    step = Step(_sql.POP, (name, check_positive_int(qty, "qty")))
    return Call(name, messages(name, step, body_decoder(body_type)))


# -- low-level acks ----------------------------------------------------------------------


def ack(
    name: str, msg_id: int | Sequence[int], one_stmt: str, many_stmt: str
) -> Runnable[bool | list[int]]:
    """``delete``/``archive`` of one id (whether it existed) or many (the ids done)."""
    check_queue_name(name, "name")
    if isinstance(msg_id, int):
        return Call(name, flag(Step(one_stmt, (name, check_msg_id(msg_id)))))
    ids = check_msg_ids(msg_id, "msg_id")
    return Call(name, _sorted_ids(Step(many_stmt, (name, ids)))) if ids else Done([])


def _sorted_ids(step: Step) -> Plan[bool | list[int]]:
    return sorted((yield from _ids(step)))


def set_vt(
    name: str, msg_id: int | Sequence[int], vt: Delay
) -> Runnable[Message | list[Message] | None]:
    """``set_vt`` of one id (the message or None) or many (the messages)."""
    check_queue_name(name, "name")
    when = delay_or_time(vt, "vt")
    at = isinstance(when, datetime)
    if isinstance(msg_id, int):
        stmt = _sql_api.SET_VT_ONE_AT if at else _sql.SET_VT_ONE
        return Call(name, _first(name, Step(stmt, (name, check_msg_id(msg_id), when))))
    ids = check_msg_ids(msg_id, "msg_id")
    stmt = _sql_api.SET_VT_MANY_AT if at else _sql.SET_VT_MANY
    return Call(name, _all(name, Step(stmt, (name, ids, when)))) if ids else Done([])


def _first(name: str, step: Step) -> Plan[Message | list[Message] | None]:
    msgs: list[Message] = yield from messages(name, step)
    return msgs[0] if msgs else None


def _all(name: str, step: Step) -> Plan[Message | list[Message] | None]:
    msgs: list[Message] = yield from messages(name, step)
    return msgs
