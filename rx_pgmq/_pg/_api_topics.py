"""Topic routing on the PGMQ client (PGMQ 1.11+): bind queues to patterns, send by key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg

from rx_pgmq._pg import _sql_api
from rx_pgmq._pg._api_base import ClientAPI, Delay, batch_payload, delay_or_time
from rx_pgmq._values._bodytype import encode_body
from rx_pgmq._values._records import RouteMatch, TopicBinding
from rx_pgmq._values._routing import check_routing_key, check_topic_pattern
from rx_pgmq._values._validate import check_body, check_headers, check_queue_name
from rx_pgmq.errors import InvalidArgument

__all__ = ["TopicsAPI"]


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
        check_topic_pattern(pattern)
        check_queue_name(queue)
        with self._cursor(queue) as cur:
            cur.execute(_sql_api.BIND_TOPIC, (pattern, queue))

    def unbind_topic(self, pattern: str, queue: str) -> bool:
        """Remove a binding. Returns whether it existed.

        Raises:
            InvalidArgument: On a bad pattern or queue name.
        """
        check_topic_pattern(pattern)
        check_queue_name(queue)
        with self._cursor(queue) as cur:
            row = cur.execute(_sql_api.UNBIND_TOPIC, (pattern, queue)).fetchone()
            return bool(row and row[0])

    def list_topic_bindings(self, queue: str | None = None) -> list[TopicBinding]:
        """Every binding, or those of one queue (newest first, as PGMQ lists them).

        Raises:
            InvalidArgument: On a bad queue name.
        """
        if queue is not None:
            check_queue_name(queue)
        with self._cursor(queue) as cur:
            if queue is None:
                rows = cur.execute(_sql_api.LIST_TOPIC_BINDINGS).fetchall()
            else:
                rows = cur.execute(_sql_api.LIST_TOPIC_BINDINGS_OF, (queue,)).fetchall()
        return [_sql_api.topic_binding_from_row(r) for r in rows]

    def test_routing(self, routing_key: str) -> list[RouteMatch]:
        """The bindings a routing key matches (by pattern), without sending anything.

        Raises:
            InvalidArgument: On a bad routing key.
        """
        check_routing_key(routing_key)
        with self._cursor() as cur:
            rows = cur.execute(_sql_api.TEST_ROUTING, (routing_key,)).fetchall()
        return [_sql_api.route_match_from_row(r) for r in rows]

    def validate_routing_key(self, routing_key: str) -> None:
        """Check a routing key by PGMQ's rules, here and then with ``pgmq.validate_routing_key``.

        Raises:
            InvalidArgument: If either refuses it.
        """
        check_routing_key(routing_key)
        self._server_check(_sql_api.VALIDATE_ROUTING_KEY, routing_key, "routing_key")

    def validate_topic_pattern(self, pattern: str) -> None:
        """Check a binding pattern by PGMQ's rules, here and with ``pgmq.validate_topic_pattern``.

        Raises:
            InvalidArgument: If either refuses it.
        """
        check_topic_pattern(pattern)
        self._server_check(_sql_api.VALIDATE_TOPIC_PATTERN, pattern, "pattern")

    def _server_check(self, stmt: str, value: str, argument: str) -> None:
        try:
            with self._cursor() as cur:
                cur.execute(stmt, (value,))
        except psycopg.errors.RaiseException as exc:
            raise InvalidArgument(argument, exc.diag.message_primary or str(exc)) from exc

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
        check_routing_key(routing_key)
        text = check_body(encode_body(body))
        head = check_headers(headers)
        when = delay_or_time(delay, "delay")
        stmt = _sql_api.SEND_TOPIC_AT if isinstance(when, datetime) else _sql_api.SEND_TOPIC
        with self._cursor() as cur:
            row = cur.execute(stmt, (routing_key, text, head, when)).fetchone()
            return int(row[0]) if row else 0

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
        check_routing_key(routing_key)
        texts, heads = batch_payload(bodies, headers)
        when = delay_or_time(delay, "delay")
        at = isinstance(when, datetime)
        stmt = _sql_api.SEND_BATCH_TOPIC_AT if at else _sql_api.SEND_BATCH_TOPIC
        sent: dict[str, list[int]] = {}
        with self._cursor() as cur:
            for queue, msg_id in cur.execute(stmt, (routing_key, texts, heads, when)):
                sent.setdefault(queue, []).append(int(msg_id))
        return {q: sorted(ids) for q, ids in sorted(sent.items())}
