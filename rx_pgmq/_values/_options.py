"""Read options of a consumer: delete-on-read, conditional reads, long polls, FIFO groups."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from rx_pgmq._values._validate import check_body, check_positive_int
from rx_pgmq.errors import InvalidArgument

__all__ = ["FifoMode", "LongPoll", "ReadOptions"]

FifoMode = Literal["grouped", "grouped_rr", "grouped_head"]
"""How a FIFO read picks messages (``pgmq.read_grouped``, ``_rr``, ``_head``)."""
_FIFO_MODES: tuple[str, ...] = get_args(FifoMode)


@dataclass(frozen=True, slots=True)
class LongPoll:
    """Server-side long poll (``pgmq.read_with_poll``): the read waits in the database.

    Args:
        max_seconds: Longest a read waits for a message (>= 1).
        interval_ms: How often the server looks again while waiting (>= 1).
    """

    max_seconds: int = 5
    interval_ms: int = 100

    def __post_init__(self) -> None:
        check_positive_int(self.max_seconds, "max_seconds")
        check_positive_int(self.interval_ms, "interval_ms")


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How a consumer reads.

    Args:
        delete_on_read: Read with ``pgmq.pop`` (at-most-once): messages are deleted as they
            are read, count as settled when emitted, and acks are ignored. Messages of a
            batch not yet emitted when the subscription is disposed are lost with it, so
            keep ``batch_size`` small in this mode.
        conditional: A jsonb containment filter: only messages whose body contains it.
        long_poll: Wait in the server for messages (``pgmq.read_with_poll``).
        fifo: FIFO group reads by header ``x-pgmq-group``: ``"grouped"``
            (``read_grouped``), ``"grouped_rr"`` (round robin) or ``"grouped_head"``.
        durable_reads: Make each read's commit wait for the WAL flush, as acks always do.
            By default a read commits without waiting (``synchronous_commit = off`` for
            the read's own transaction; acks, pops and every other statement keep the
            server's setting). A server crash can then forget the reads of its last
            moments (at most about three ``wal_writer_delay``): their messages become
            visible again with their earlier ``read_ct``, as if never read, and are
            delivered again, as at-least-once delivery allows. Nothing is lost. Since the
            forgotten read's ``read_ct`` increment is gone, ``max_attempts`` may allow one
            more attempt after a crash, and with ``fenced=True`` an ack of a message whose
            read was forgotten reports ``lost_lease`` until it is read again. Set it when a
            redelivery after a server crash must also count as an attempt in ``read_ct``.
            Pops (``delete_on_read``) always wait: a forgotten pop would deliver a message
            twice.

    Raises:
        InvalidArgument: For combinations PGMQ has no function for.

    Example:
        >>> opts = ReadOptions(conditional={"kind": "order"})
        >>> opts.conditional, opts.durable_reads
        ({'kind': 'order'}, False)
    """

    delete_on_read: bool = False
    conditional: Mapping[str, Any] | None = None
    long_poll: LongPoll | None = None
    fifo: FifoMode | None = None
    durable_reads: bool = False
    conditional_json: str = field(default="{}", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_types()
        self._check_combination()

    def _check_types(self) -> None:
        """Each option on its own (and the conditional filter's JSON text, kept)."""
        if not isinstance(self.delete_on_read, bool):
            raise InvalidArgument("delete_on_read", f"must be a bool, got {self.delete_on_read!r}")
        if not isinstance(self.durable_reads, bool):
            raise InvalidArgument("durable_reads", f"must be a bool, got {self.durable_reads!r}")
        if self.conditional is not None:
            if not isinstance(self.conditional, Mapping):
                raise InvalidArgument(
                    "conditional", f"must be a dict (jsonb filter), got {self.conditional!r}"
                )
            object.__setattr__(
                self, "conditional_json", check_body(dict(self.conditional), "conditional")
            )
        if self.long_poll is not None and not isinstance(self.long_poll, LongPoll):
            raise InvalidArgument("long_poll", f"must be a LongPoll, got {self.long_poll!r}")
        if self.fifo is not None and self.fifo not in _FIFO_MODES:
            raise InvalidArgument("fifo", f"must be one of {_FIFO_MODES}, got {self.fifo!r}")

    def _check_combination(self) -> None:
        """The options together: only combinations PGMQ has a function for."""
        if self.delete_on_read and (self.conditional or self.long_poll or self.fifo):
            raise InvalidArgument(
                "delete_on_read",
                "pgmq.pop supports no conditional, long_poll or fifo; drop those options",
            )
        if self.fifo is not None and self.conditional:
            raise InvalidArgument("conditional", "PGMQ's FIFO reads take no conditional filter")
