"""Whether a queue exists, as one check shared by the client, the consumer and the notebook."""

from __future__ import annotations

from typing import Any

import psycopg

from rx_pgmq._pg import _sql
from rx_pgmq.errors import QueueNotFound

__all__ = ["check_queue_exists"]


def check_queue_exists(conn: psycopg.Connection[Any] | psycopg.Cursor[Any], queue: str) -> None:
    """Raise :class:`~rx_pgmq.errors.QueueNotFound` unless ``queue`` exists.

    Args:
        conn: A connection or cursor to run the check on.
        queue: The queue name.

    Raises:
        QueueNotFound: If PGMQ has no queue of that name.
    """
    row = conn.execute(_sql.QUEUE_EXISTS, (queue,)).fetchone()
    if not row or not row[0]:
        raise QueueNotFound(queue)
