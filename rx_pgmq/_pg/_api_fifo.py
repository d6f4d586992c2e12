"""FIFO group reads and indexes on the PGMQ client (PGMQ 1.9+; ``read_grouped_head`` 1.11+).

A message's group is its header ``x-pgmq-group`` (messages without one share a default
group). Within a group messages are read in ``msg_id`` order, and none while an earlier
one of its group is still invisible. The reads return messages in the order PGMQ selects
them, across groups too (see :func:`rx_pgmq._pg._sql.read_grouped`).
"""

from __future__ import annotations

from datetime import timedelta

from rx_pgmq._pg import _sql, _sql_api
from rx_pgmq._pg._api_base import ClientAPI, decoded
from rx_pgmq._values._bodytype import body_decoder, decode_messages
from rx_pgmq._values._options import FifoMode
from rx_pgmq._values._validate import (
    check_non_negative_int,
    check_positive_int,
    check_queue_name,
    whole_seconds,
)
from rx_pgmq.message import BodyT, Message

__all__ = ["FifoAPI"]


class FifoAPI(ClientAPI):
    """PGMQ's FIFO group reads and their header index. Mixed into ``PGMQ``.

    Every read takes ``body_type=T`` like :meth:`rx_pgmq.PGMQ.read`: bodies decoded into
    ``T``, and a body that does not fit raises ``BodyMismatch`` with the read rolled back.
    """

    def create_fifo_index(self, name: str) -> None:
        """Index the queue's headers (GIN) so FIFO group reads stay fast (idempotent).

        Raises:
            InvalidArgument: On a bad queue name.
            QueueNotFound: If the queue does not exist.
        """
        check_queue_name(name, "name")
        with self._cursor(name) as cur:
            self._exists_or_raise(cur, name)
            cur.execute(_sql_api.CREATE_FIFO_INDEX, (name,))

    def create_fifo_indexes_all(self) -> None:
        """:meth:`create_fifo_index` on every queue."""
        with self._cursor() as cur:
            cur.execute(_sql_api.CREATE_FIFO_INDEXES_ALL)

    def read_grouped(
        self,
        name: str,
        vt: int | timedelta,
        qty: int = 1,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """Claim up to ``qty`` messages, filling the batch from one group first (SQS FIFO).

        Returns messages group by group, the group with the oldest message first
        (A1, A2, B1), each group in ``msg_id`` order.

        Raises:
            InvalidArgument: On a bad queue name, vt or qty.
            QueueNotFound: If the queue does not exist.
        """
        return self._grouped("grouped", name, vt, qty, None, body_type)

    def read_grouped_rr(
        self,
        name: str,
        vt: int | timedelta,
        qty: int = 1,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """Claim up to ``qty`` messages round-robin across groups (A1, B1, A2, B2, ...).

        Returns them in PGMQ's round-robin order.

        Raises:
            InvalidArgument: On a bad queue name, vt or qty.
            QueueNotFound: If the queue does not exist.
        """
        return self._grouped("grouped_rr", name, vt, qty, None, body_type)

    def read_grouped_head(
        self,
        name: str,
        vt: int | timedelta,
        qty: int = 1,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """Claim the head (oldest message) of up to ``qty`` groups, oldest head first.

        Raises:
            InvalidArgument: On a bad queue name, vt or qty.
            QueueNotFound: If the queue does not exist.
        """
        return self._grouped("grouped_head", name, vt, qty, None, body_type)

    def read_grouped_with_poll(
        self,
        name: str,
        vt: int | timedelta,
        qty: int = 1,
        max_poll_seconds: int = 5,
        poll_interval_ms: int = 100,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """:meth:`read_grouped`, waiting in the server up to ``max_poll_seconds``.

        Raises:
            InvalidArgument: On a bad argument.
            QueueNotFound: If the queue does not exist.
        """
        poll = (max_poll_seconds, poll_interval_ms)
        return self._grouped("grouped", name, vt, qty, poll, body_type)

    def read_grouped_rr_with_poll(
        self,
        name: str,
        vt: int | timedelta,
        qty: int = 1,
        max_poll_seconds: int = 5,
        poll_interval_ms: int = 100,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """:meth:`read_grouped_rr`, waiting in the server up to ``max_poll_seconds``.

        Raises:
            InvalidArgument: On a bad argument.
            QueueNotFound: If the queue does not exist.
        """
        poll = (max_poll_seconds, poll_interval_ms)
        return self._grouped("grouped_rr", name, vt, qty, poll, body_type)

    def read_grouped_head_with_poll(
        self,
        name: str,
        vt: int | timedelta,
        qty: int = 1,
        max_poll_seconds: int = 5,
        poll_interval_ms: int = 100,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """:meth:`read_grouped_head`, waiting in the server up to ``max_poll_seconds``.

        Raises:
            InvalidArgument: On a bad argument.
            QueueNotFound: If the queue does not exist.
        """
        poll = (max_poll_seconds, poll_interval_ms)
        return self._grouped("grouped_head", name, vt, qty, poll, body_type)

    def _grouped(
        self,
        mode: FifoMode,
        name: str,
        vt: int | timedelta,
        qty: int,
        poll: tuple[int, int] | None,
        body_type: type[BodyT] | None,
    ) -> list[Message[BodyT]]:
        check_queue_name(name, "name")
        secs = whole_seconds(vt, "vt")
        check_positive_int(qty, "qty")
        params: tuple[object, ...] = (name, secs, qty)
        if poll is not None:
            check_non_negative_int(poll[0], "max_poll_seconds")
            check_positive_int(poll[1], "poll_interval_ms")
            params += poll
        stmt = _sql.read_grouped(mode, poll=poll is not None)
        decode = body_decoder(body_type)
        with self._cursor(name) as cur:
            messages = decoded(cur, cur.execute(stmt, params), name, in_order=True)
            return decode_messages(messages, decode)
