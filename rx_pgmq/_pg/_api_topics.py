"""Topic routing on the clients (PGMQ 1.11+): bind queues to patterns, send by key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg

from rx_pgmq._pg import _sql_api
from rx_pgmq._pg._api_base import AsyncClientAPI, ClientAPI, Delay, batch_payload, delay_or_time
from rx_pgmq._pg._plan import Call, Plan, Step, flag, one, rows, run
from rx_pgmq._values._bodytype import encode_body
from rx_pgmq._values._records import RouteMatch, TopicBinding
from rx_pgmq._values._routing import check_routing_key, check_topic_pattern
from rx_pgmq._values._validate import check_body, check_headers, check_queue_name
from rx_pgmq.errors import InvalidArgument

__all__ = [
    "AsyncTopicsAPI",
    "TopicsAPI",
    "bind_topic",
    "list_topic_bindings",
    "send_batch_topic",
    "send_topic",
    "test_routing",
    "unbind_topic",
    "validate_routing_key",
    "validate_topic_pattern",
]


# -- the calls (no I/O) ------------------------------------------------------------------


def bind_topic(pattern: str, queue: str) -> Call[None]:
    """``bind_topic``."""
    check_topic_pattern(pattern)
    check_queue_name(queue)
    return Call(queue, run(Step(_sql_api.BIND_TOPIC, (pattern, queue))))


def unbind_topic(pattern: str, queue: str) -> Call[bool]:
    """``unbind_topic``: whether the binding existed."""
    check_topic_pattern(pattern)
    check_queue_name(queue)
    return Call(queue, flag(Step(_sql_api.UNBIND_TOPIC, (pattern, queue))))


def list_topic_bindings(queue: str | None) -> Call[list[TopicBinding]]:
    """``list_topic_bindings``: every binding, or one queue's."""
    if queue is None:
        return Call(None, _bindings(Step(_sql_api.LIST_TOPIC_BINDINGS)))
    check_queue_name(queue)
    return Call(queue, _bindings(Step(_sql_api.LIST_TOPIC_BINDINGS_OF, (queue,))))


def _bindings(step: Step) -> Plan[list[TopicBinding]]:
    return [_sql_api.topic_binding_from_row(r) for r in (yield from rows(step))]


def test_routing(routing_key: str) -> Call[list[RouteMatch]]:
    """``test_routing``: the bindings a key matches."""
    check_routing_key(routing_key)
    return Call(None, _matches(Step(_sql_api.TEST_ROUTING, (routing_key,))))


def _matches(step: Step) -> Plan[list[RouteMatch]]:
    return [_sql_api.route_match_from_row(r) for r in (yield from rows(step))]


def validate_routing_key(routing_key: str) -> Call[None]:
    """``validate_routing_key``: by PGMQ's rules here, then by the server."""
    check_routing_key(routing_key)
    return Call(None, _server_check(_sql_api.VALIDATE_ROUTING_KEY, routing_key, "routing_key"))


def validate_topic_pattern(pattern: str) -> Call[None]:
    """``validate_topic_pattern``: by PGMQ's rules here, then by the server."""
    check_topic_pattern(pattern)
    return Call(None, _server_check(_sql_api.VALIDATE_TOPIC_PATTERN, pattern, "pattern"))


def _server_check(stmt: str, value: str, argument: str) -> Plan[None]:
    try:
        yield Step(stmt, (value,))
    except psycopg.errors.RaiseException as exc:
        raise InvalidArgument(argument, exc.diag.message_primary or str(exc)) from exc


def send_topic(
    routing_key: str, body: Any, headers: Mapping[str, Any] | None, delay: Delay
) -> Call[int]:
    """``send_topic``: how many queues received the message."""
    check_routing_key(routing_key)
    text = check_body(encode_body(body))
    head = check_headers(headers)
    when = delay_or_time(delay, "delay")
    stmt = _sql_api.SEND_TOPIC_AT if isinstance(when, datetime) else _sql_api.SEND_TOPIC
    return Call(None, _count(Step(stmt, (routing_key, text, head, when))))


def _count(step: Step) -> Plan[int]:
    return int((yield from one(step)) or 0)


def send_batch_topic(
    routing_key: str,
    bodies: Sequence[Any],
    headers: Sequence[Mapping[str, Any] | None] | None,
    delay: Delay,
) -> Call[dict[str, list[int]]]:
    """``send_batch_topic``: the new ids by queue (sorted by name, ids in body order)."""
    check_routing_key(routing_key)
    texts, heads = batch_payload(bodies, headers)
    when = delay_or_time(delay, "delay")
    at = isinstance(when, datetime)
    stmt = _sql_api.SEND_BATCH_TOPIC_AT if at else _sql_api.SEND_BATCH_TOPIC
    return Call(None, _by_queue(Step(stmt, (routing_key, texts, heads, when))))


def _by_queue(step: Step) -> Plan[dict[str, list[int]]]:
    sent: dict[str, list[int]] = {}
    for queue, msg_id in (yield from rows(step)):
        sent.setdefault(queue, []).append(int(msg_id))
    return {q: sorted(ids) for q, ids in sorted(sent.items())}


# -- the sync client ---------------------------------------------------------------------


class TopicsAPI(ClientAPI):
    """PGMQ's topics: a message sent with a routing key goes to every queue bound to a
    pattern it matches (``*`` one segment, ``#`` any number). Mixed into ``PGMQ``.

    Routing keys and patterns are checked by PGMQ's rules before any SQL
    (``InvalidArgument``); a PGMQ older than 1.11 raises ``PGMQOutdated``.
    """

    def bind_topic(self, pattern: str, queue: str) -> None:
        """Route messages whose routing key matches ``pattern`` to ``queue`` (idempotent).

        Args:
            pattern: e.g. ``"orders.*"``, ``"logs.#"``, ``"#"``.
            queue: The queue that receives them.

        Raises:
            InvalidArgument: On a bad pattern or queue name.
            QueueNotFound: If the queue does not exist.
        """
        self._run(bind_topic(pattern, queue))

    def unbind_topic(self, pattern: str, queue: str) -> bool:
        """Remove a binding. Returns whether it existed.

        Raises:
            InvalidArgument: On a bad pattern or queue name.
        """
        return self._run(unbind_topic(pattern, queue))

    def list_topic_bindings(self, queue: str | None = None) -> list[TopicBinding]:
        """Every binding, or those of one queue (newest first, as PGMQ lists them).

        Raises:
            InvalidArgument: On a bad queue name.
        """
        return self._run(list_topic_bindings(queue))

    def test_routing(self, routing_key: str) -> list[RouteMatch]:
        """The bindings a routing key matches (by pattern), without sending anything.

        Raises:
            InvalidArgument: On a bad routing key.
        """
        return self._run(test_routing(routing_key))

    def validate_routing_key(self, routing_key: str) -> None:
        """Check a routing key by PGMQ's rules, here and then with ``pgmq.validate_routing_key``.

        Raises:
            InvalidArgument: If either refuses it.
        """
        self._run(validate_routing_key(routing_key))

    def validate_topic_pattern(self, pattern: str) -> None:
        """Check a binding pattern by PGMQ's rules, here and with ``pgmq.validate_topic_pattern``.

        Raises:
            InvalidArgument: If either refuses it.
        """
        self._run(validate_topic_pattern(pattern))

    def send_topic(
        self,
        routing_key: str,
        body: Any,
        headers: Mapping[str, Any] | None = None,
        delay: Delay = 0,
    ) -> int:
        """Send one message to every queue bound to a pattern the key matches.

        All of it happens in one transaction: every matching queue gets the message, or
        none does.

        Args:
            routing_key: e.g. ``"orders.eu.created"``.
            body: Any JSON-serializable value.
            headers: A JSON object or None.
            delay: Seconds (int) or timedelta from now, or an aware datetime.

        Returns:
            How many queues received it (0 when no binding matches).

        Raises:
            InvalidArgument: On a bad routing key, body, headers or delay.
        """
        return self._run(send_topic(routing_key, body, headers, delay))

    def send_batch_topic(
        self,
        routing_key: str,
        bodies: Sequence[Any],
        headers: Sequence[Mapping[str, Any] | None] | None = None,
        delay: Delay = 0,
    ) -> dict[str, list[int]]:
        """Send several messages to every queue bound to a pattern the key matches.

        Args:
            routing_key: e.g. ``"orders.eu.created"``.
            bodies: JSON-serializable values (at least one).
            headers: None, or one header object (or None) per body.
            delay: Seconds (int) or timedelta from now, or an aware datetime.

        Returns:
            The new message ids by queue (queues sorted by name, ids in body order);
            empty when no binding matches.

        Raises:
            InvalidArgument: On a bad routing key, body, headers or delay.
        """
        return self._run(send_batch_topic(routing_key, bodies, headers, delay))


# -- the asyncio client ------------------------------------------------------------------


class AsyncTopicsAPI(AsyncClientAPI):
    """:class:`TopicsAPI` as coroutines. Mixed into ``AsyncPGMQ``; see ``PGMQ``'s methods."""

    async def bind_topic(self, pattern: str, queue: str) -> None:
        """``PGMQ.bind_topic``: route keys matching ``pattern`` to ``queue``."""
        await self._run(bind_topic(pattern, queue))

    async def unbind_topic(self, pattern: str, queue: str) -> bool:
        """``PGMQ.unbind_topic``: remove a binding; whether it existed."""
        return await self._run(unbind_topic(pattern, queue))

    async def list_topic_bindings(self, queue: str | None = None) -> list[TopicBinding]:
        """``PGMQ.list_topic_bindings``: every binding, or one queue's."""
        return await self._run(list_topic_bindings(queue))

    async def test_routing(self, routing_key: str) -> list[RouteMatch]:
        """``PGMQ.test_routing``: the bindings a routing key matches."""
        return await self._run(test_routing(routing_key))

    async def validate_routing_key(self, routing_key: str) -> None:
        """``PGMQ.validate_routing_key``."""
        await self._run(validate_routing_key(routing_key))

    async def validate_topic_pattern(self, pattern: str) -> None:
        """``PGMQ.validate_topic_pattern``."""
        await self._run(validate_topic_pattern(pattern))

    async def send_topic(
        self,
        routing_key: str,
        body: Any,
        headers: Mapping[str, Any] | None = None,
        delay: Delay = 0,
    ) -> int:
        """``PGMQ.send_topic``: how many queues received the message."""
        return await self._run(send_topic(routing_key, body, headers, delay))

    async def send_batch_topic(
        self,
        routing_key: str,
        bodies: Sequence[Any],
        headers: Sequence[Mapping[str, Any] | None] | None = None,
        delay: Delay = 0,
    ) -> dict[str, list[int]]:
        """``PGMQ.send_batch_topic``: the new ids by queue."""
        return await self._run(send_batch_topic(routing_key, bodies, headers, delay))
