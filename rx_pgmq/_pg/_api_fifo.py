"""FIFO group reads and indexes on the PGMQ client (PGMQ 1.9+; ``read_grouped_head`` 1.11+).

A message's group is its header ``x-pgmq-group`` (messages without one share a default
group). Within a group messages are read in ``msg_id`` order, and none while an earlier
one of its group is still invisible. The reads return messages in the order PGMQ selects
them, across groups too (see :func:`rx_pgmq._pg._sql.read_grouped`).
"""

from __future__ import annotations

from datetime import timedelta

from rx_pgmq._pg import _sql, _sql_api
from rx_pgmq._pg._api_base import AsyncClientAPI, ClientAPI
from rx_pgmq._pg._calls import check_poll, on_existing
from rx_pgmq._pg._plan import Call, Step, messages, run
from rx_pgmq._values._bodytype import body_decoder
from rx_pgmq._values._options import FifoMode
from rx_pgmq._values._validate import check_positive_int, check_queue_name, whole_seconds
from rx_pgmq.message import BodyT, Message

__all__ = ["AsyncFifoAPI", "FifoAPI", "create_fifo_index", "create_fifo_indexes_all", "grouped"]

Poll = tuple[int, int]
"""``(max_poll_seconds, poll_interval_ms)`` of a ``…_with_poll`` read."""


# -- the calls (no I/O) ------------------------------------------------------------------


def create_fifo_index(name: str) -> Call[None]:
    """``create_fifo_index``; ``QueueNotFound`` if there is no queue."""
    check_queue_name(name, "name")
    return Call(name, on_existing(name, Step(_sql_api.CREATE_FIFO_INDEX, (name,))))


def create_fifo_indexes_all() -> Call[None]:
    """``create_fifo_indexes_all``."""
    return Call(None, run(Step(_sql_api.CREATE_FIFO_INDEXES_ALL)))


def grouped(
    mode: FifoMode,
    name: str,
    vt: int | timedelta,
    qty: int,
    poll: Poll | None,
    body_type: type[BodyT] | None,
) -> Call[list[Message[BodyT]]]:
    """A FIFO group read (``read_<mode>``, or ``read_<mode>_with_poll`` with ``poll``)."""
    check_queue_name(name, "name")
    params: tuple[object, ...] = (name, whole_seconds(vt, "vt"), check_positive_int(qty, "qty"))
    if poll is not None:
        params += check_poll(poll)
    step = Step(_sql.read_grouped(mode, poll=poll is not None), params)
    return Call(name, messages(name, step, body_decoder(body_type), in_order=True))


# -- the sync client ---------------------------------------------------------------------


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
        self._run(create_fifo_index(name))

    def create_fifo_indexes_all(self) -> None:
        """:meth:`create_fifo_index` on every queue."""
        self._run(create_fifo_indexes_all())

    def read_grouped(
        self, name: str, vt: int | timedelta, qty: int = 1, *, body_type: type[BodyT] | None = None
    ) -> list[Message[BodyT]]:
        """Claim up to ``qty`` messages, filling the batch from one group first (SQS FIFO).

        Returns messages group by group, the group with the oldest message first
        (A1, A2, B1), each group in ``msg_id`` order.

        Raises:
            InvalidArgument: On a bad queue name, vt or qty.
            QueueNotFound: If the queue does not exist.
        """
        return self._run(grouped("grouped", name, vt, qty, None, body_type))

    def read_grouped_rr(
        self, name: str, vt: int | timedelta, qty: int = 1, *, body_type: type[BodyT] | None = None
    ) -> list[Message[BodyT]]:
        """Claim up to ``qty`` messages round-robin across groups (A1, B1, A2, B2, ...).

        Returns them in PGMQ's round-robin order.

        Raises:
            InvalidArgument: On a bad queue name, vt or qty.
            QueueNotFound: If the queue does not exist.
        """
        return self._run(grouped("grouped_rr", name, vt, qty, None, body_type))

    def read_grouped_head(
        self, name: str, vt: int | timedelta, qty: int = 1, *, body_type: type[BodyT] | None = None
    ) -> list[Message[BodyT]]:
        """Claim the head (oldest message) of up to ``qty`` groups, oldest head first.

        Raises:
            InvalidArgument: On a bad queue name, vt or qty.
            QueueNotFound: If the queue does not exist.
        """
        return self._run(grouped("grouped_head", name, vt, qty, None, body_type))

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

        :meth:`read_grouped_rr_with_poll` and :meth:`read_grouped_head_with_poll` are the
        same for the other two orders.

        Raises:
            InvalidArgument: On a bad argument.
            QueueNotFound: If the queue does not exist.
        """
        poll = (max_poll_seconds, poll_interval_ms)
        return self._run(grouped("grouped", name, vt, qty, poll, body_type))

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
        """:meth:`read_grouped_rr`, waiting in the server up to ``max_poll_seconds``."""
        poll = (max_poll_seconds, poll_interval_ms)
        return self._run(grouped("grouped_rr", name, vt, qty, poll, body_type))

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
        """:meth:`read_grouped_head`, waiting in the server up to ``max_poll_seconds``."""
        poll = (max_poll_seconds, poll_interval_ms)
        return self._run(grouped("grouped_head", name, vt, qty, poll, body_type))


# -- the asyncio client ------------------------------------------------------------------


class AsyncFifoAPI(AsyncClientAPI):
    """:class:`FifoAPI` as coroutines. Mixed into ``AsyncPGMQ``; see ``PGMQ``'s methods."""

    async def create_fifo_index(self, name: str) -> None:
        """``PGMQ.create_fifo_index``: index the queue's headers for FIFO reads."""
        await self._run(create_fifo_index(name))

    async def create_fifo_indexes_all(self) -> None:
        """``PGMQ.create_fifo_indexes_all``."""
        await self._run(create_fifo_indexes_all())

    async def read_grouped(
        self, name: str, vt: int | timedelta, qty: int = 1, *, body_type: type[BodyT] | None = None
    ) -> list[Message[BodyT]]:
        """``PGMQ.read_grouped``: one group's messages first (SQS FIFO)."""
        return await self._run(grouped("grouped", name, vt, qty, None, body_type))

    async def read_grouped_rr(
        self, name: str, vt: int | timedelta, qty: int = 1, *, body_type: type[BodyT] | None = None
    ) -> list[Message[BodyT]]:
        """``PGMQ.read_grouped_rr``: round robin across groups."""
        return await self._run(grouped("grouped_rr", name, vt, qty, None, body_type))

    async def read_grouped_head(
        self, name: str, vt: int | timedelta, qty: int = 1, *, body_type: type[BodyT] | None = None
    ) -> list[Message[BodyT]]:
        """``PGMQ.read_grouped_head``: the head of up to ``qty`` groups."""
        return await self._run(grouped("grouped_head", name, vt, qty, None, body_type))

    async def read_grouped_with_poll(
        self,
        name: str,
        vt: int | timedelta,
        qty: int = 1,
        max_poll_seconds: int = 5,
        poll_interval_ms: int = 100,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """``PGMQ.read_grouped_with_poll``."""
        poll = (max_poll_seconds, poll_interval_ms)
        return await self._run(grouped("grouped", name, vt, qty, poll, body_type))

    async def read_grouped_rr_with_poll(
        self,
        name: str,
        vt: int | timedelta,
        qty: int = 1,
        max_poll_seconds: int = 5,
        poll_interval_ms: int = 100,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """``PGMQ.read_grouped_rr_with_poll``."""
        poll = (max_poll_seconds, poll_interval_ms)
        return await self._run(grouped("grouped_rr", name, vt, qty, poll, body_type))

    async def read_grouped_head_with_poll(
        self,
        name: str,
        vt: int | timedelta,
        qty: int = 1,
        max_poll_seconds: int = 5,
        poll_interval_ms: int = 100,
        *,
        body_type: type[BodyT] | None = None,
    ) -> list[Message[BodyT]]:
        """``PGMQ.read_grouped_head_with_poll``."""
        poll = (max_poll_seconds, poll_interval_ms)
        return await self._run(grouped("grouped_head", name, vt, qty, poll, body_type))
