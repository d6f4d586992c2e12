"""Peeking and metrics for notebooks: lists that show as HTML tables."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from rx_pgmq._front import _html
from rx_pgmq.client import PGMQ
from rx_pgmq.message import Message, QueueMetrics

__all__ = ["Conninfo", "MessageTable", "MetricsTable", "metrics_table", "peek", "peek_messages"]

Conninfo = str | ConnectionPool | psycopg.Connection[Any] | PGMQ
"""Where :func:`peek` and :func:`metrics_table` connect: a conninfo, pool, connection or client."""


class MessageTable(Sequence[Message]):
    """A list of messages that shows as an HTML table in a notebook.

    Attributes:
        messages: The messages, by ``msg_id``.
        caption: The table caption.
    """

    def __init__(self, messages: Sequence[Message], caption: str = "") -> None:
        self.messages = list(messages)
        self.caption = caption

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, index: Any) -> Any:
        return self.messages[index]

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages)

    def __repr__(self) -> str:
        ids = ", ".join(str(m.msg_id) for m in self.messages[:10])
        more = ", ..." if len(self.messages) > 10 else ""
        return f"MessageTable({self.caption!r}, msg_ids=[{ids}{more}])"

    def html(self) -> str:
        """The table as an HTML string."""
        return _html.messages_table(self.messages, caption=self.caption)

    def _repr_html_(self) -> str:
        return self.html()


class MetricsTable(Sequence[QueueMetrics]):
    """Queue metrics that show as an HTML table in a notebook.

    Attributes:
        metrics: One ``QueueMetrics`` per queue, by name.
    """

    def __init__(self, metrics: Sequence[QueueMetrics]) -> None:
        self.metrics = list(metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def __getitem__(self, index: Any) -> Any:
        return self.metrics[index]

    def __iter__(self) -> Iterator[QueueMetrics]:
        return iter(self.metrics)

    def __repr__(self) -> str:
        return f"MetricsTable(queues={[m.queue_name for m in self.metrics]!r})"

    def html(self) -> str:
        """The table as an HTML string."""
        return _html.metrics_table(self.metrics, caption="queues")

    def _repr_html_(self) -> str:
        return self.html()


def peek_messages(
    conninfo: Conninfo, queue: str, n: int = 20, *, archive: bool = False
) -> list[Message]:
    """The first ``n`` messages of a queue (by ``msg_id``), **without claiming them**.

    :meth:`rx_pgmq.PGMQ.peek` on a client made for the call (or the client given).

    Args:
        conninfo: A conninfo string, pool, connection or :class:`rx_pgmq.PGMQ` client.
        queue: The queue.
        n: Most messages to return, >= 1.
        archive: Browse the queue's archive (``pgmq.a_<queue>``) instead.

    Returns:
        The messages (not acknowledgeable); one whose body or headers Python cannot decode
        has ``decode_error`` set and ``body`` ``None``.

    Raises:
        InvalidArgument: On a bad queue name, ``n`` or ``archive``.
        QueueNotFound: If the queue does not exist.
    """
    with _client(conninfo) as client:
        return client.peek(queue, n, archive=archive)


def peek(conninfo: Conninfo, queue: str, n: int = 20, *, archive: bool = False) -> MessageTable:
    """Browse a queue without claiming its messages, as an HTML table.

    Args:
        conninfo: A conninfo string, pool, connection or :class:`rx_pgmq.PGMQ` client.
        queue: The queue.
        n: Most messages to show, >= 1.
        archive: Browse the queue's archive instead.

    Returns:
        A :class:`MessageTable` (a sequence of messages that renders as HTML).

    Raises:
        InvalidArgument: On a bad queue name or ``n``.
        QueueNotFound: If the queue does not exist.

    Example:
        >>> peek(dsn, "orders", 5)  # doctest: +SKIP
    """
    messages = peek_messages(conninfo, queue, n, archive=archive)
    where = f"pgmq.a_{queue}" if archive else f"pgmq.q_{queue}"
    return MessageTable(messages, caption=f"{where}: first {len(messages)} (not claimed)")


def metrics_table(conninfo: Conninfo) -> MetricsTable:
    """``pgmq.metrics`` of every queue, as an HTML table.

    Args:
        conninfo: A conninfo string, pool, connection or :class:`rx_pgmq.PGMQ` client.

    Returns:
        A :class:`MetricsTable`.
    """
    with _client(conninfo) as client:
        return MetricsTable(client.metrics_all())


@contextmanager
def _client(conninfo: Conninfo) -> Iterator[PGMQ]:
    """The client given, or one made for the block and closed after it."""
    if isinstance(conninfo, PGMQ):
        yield conninfo
        return
    with PGMQ(conninfo) as client:
        yield client
