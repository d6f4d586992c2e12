"""Batching of settle requests into few PGMQ calls (no I/O).

Settle requests (one per message: delete, archive, set_vt, move, nothing) collect in an
:class:`AckBatcher`. The consumer flushes when :meth:`AckBatcher.due` says so: by size, by
age (a few milliseconds), at once when its demand window is full (starved of credit), or
when closing. One flush turns a :class:`Batch` into one round trip: one ``pgmq.delete``,
one ``pgmq.archive``, one ``pgmq.set_vt`` per distinct timeout and the moves.

The batcher is a plain state machine: no I/O, no threads, no locks; the caller holds its
lock and passes monotonic time in as ``now``.

Choices:

- Duplicates: within one batch the first request per ``msg_id`` wins and is the only one
  in ``items``; later requests for the same id are returned in ``duplicates`` so their
  tokens can be resolved (with the winner's outcome). One SQL action per id.
- ``Nothing`` needs no SQL. A batch made only of ``Nothing`` requests is due at once, so
  their credit returns without waiting; mixed with other actions they ride along.
- Size is counted in requests (duplicates included).
- A failed batch goes back with :meth:`AckBatcher.requeue`, ahead of newer requests, and can
  be held until a retry time from :class:`rx_pgmq._core._backoff.Backoff`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from rx_pgmq._values._validate import check_positive_int, seconds
from rx_pgmq.actions import Action, Archive, Delete, MoveTo, Nothing, SetVisibilityTimeout
from rx_pgmq.message import Message

__all__ = ["AckBatcher", "Batch", "Pending"]


class Pending(NamedTuple):
    """One settle request (a named tuple: one is built per settled message).

    Attributes:
        msg_id: The message to settle.
        read_ct: Its read count (``MoveTo`` records it as the attempt count).
        action: What to do with it.
        reason: Failure reason, if any (``MoveTo`` records it).
        token: An opaque caller object (e.g. the request's ``Future``), handed back in the
            batch.
        message: The message itself (``MoveTo`` copies its body and headers).
    """

    msg_id: int
    read_ct: int
    action: Action
    reason: str | None
    token: object
    message: Message | None = None


def _empty_map() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Batch:
    """Settle requests taken together, grouped by the SQL they need.

    Attributes:
        delete: Ids for one ``pgmq.delete``.
        archive: Ids for one ``pgmq.archive``.
        set_vt: Timeout seconds -> ids, one ``pgmq.set_vt`` per distinct timeout.
        move: Destination queue -> requests (the consumer looks up body and headers).
        nothing: Ids that need no SQL (their credit just returns).
        items: Every request in the batch, one per ``msg_id`` (the first one wins), in the
            order they were added.
        duplicates: Later requests for an id already in ``items`` (no SQL of their own).

    Ids appear in the order their requests were added.
    """

    delete: tuple[int, ...] = ()
    archive: tuple[int, ...] = ()
    set_vt: Mapping[int, tuple[int, ...]] = field(default_factory=_empty_map)
    move: Mapping[str, tuple[Pending, ...]] = field(default_factory=_empty_map)
    nothing: tuple[int, ...] = ()
    items: tuple[Pending, ...] = ()
    duplicates: tuple[Pending, ...] = ()

    @property
    def sql_needed(self) -> bool:
        """Whether flushing this batch needs any SQL (anything but ``Nothing``)."""
        return bool(self.delete or self.archive or self.set_vt or self.move)

    def __len__(self) -> int:
        """Return the number of distinct messages settled (``len(items)``)."""
        return len(self.items)

    @classmethod
    def of(cls, requests: tuple[Pending, ...] | list[Pending]) -> Batch:
        """Group ``requests`` (in order) into a batch, first request per id winning.

        Raises:
            TypeError: If a request carries something that is not an action.
        """
        seen: set[int] = set()
        items: list[Pending] = []
        duplicates: list[Pending] = []
        delete: list[int] = []
        archive: list[int] = []
        nothing: list[int] = []
        set_vt: dict[int, list[int]] = {}
        move: dict[str, list[Pending]] = {}
        for item in requests:
            if item.msg_id in seen:
                duplicates.append(item)
                continue
            seen.add(item.msg_id)
            items.append(item)
            action = item.action
            if isinstance(action, Delete):
                delete.append(item.msg_id)
            elif isinstance(action, Archive):
                archive.append(item.msg_id)
            elif isinstance(action, Nothing):
                nothing.append(item.msg_id)
            elif isinstance(action, SetVisibilityTimeout):
                set_vt.setdefault(action.vt, []).append(item.msg_id)
            elif isinstance(action, MoveTo):
                move.setdefault(action.queue, []).append(item)
            else:
                raise TypeError(f"not an acknowledgement action: {action!r}")
        return cls(
            delete=tuple(delete),
            archive=tuple(archive),
            set_vt=MappingProxyType({vt: tuple(ids) for vt, ids in set_vt.items()}),
            move=MappingProxyType({q: tuple(ps) for q, ps in move.items()}),
            nothing=tuple(nothing),
            items=tuple(items),
            duplicates=tuple(duplicates),
        )


class AckBatcher:
    """Collects settle requests and says when to flush them.

    Args:
        max_batch: Flush once this many requests are pending (>= 1; the consumer's
            ``batch_size`` is a good value).
        max_age: Flush once the oldest request is this many seconds old (>= 0).

    Raises:
        InvalidArgument: If an argument is out of range.
    """

    __slots__ = (
        "_hold_until",
        "_oldest",
        "_pending",
        "_retrying",
        "_sql_count",
        "max_age",
        "max_batch",
    )

    def __init__(self, *, max_batch: int, max_age: float = 0.005) -> None:
        self.max_batch: int = check_positive_int(max_batch, "max_batch")
        self.max_age: float = seconds(max_age, "max_age")
        self._pending: list[Pending] = []
        self._oldest: float | None = None
        self._sql_count = 0  # pending requests whose action needs SQL
        self._hold_until: float | None = None
        self._retrying = False  # a failed batch waits for its retry time, not for max_age

    def __repr__(self) -> str:
        return (
            f"AckBatcher(max_batch={self.max_batch}, max_age={self.max_age}, "
            f"pending={len(self._pending)}, oldest={self._oldest}, hold_until={self._hold_until})"
        )

    def __len__(self) -> int:
        """Return the number of pending requests (duplicates included)."""
        return len(self._pending)

    def add(self, item: Pending, now: float) -> int:
        """Queue one settle request made at ``now``; return how many are pending now."""
        pending = self._pending
        pending.append(item)
        if not isinstance(item.action, Nothing):
            self._sql_count += 1
        if self._oldest is None or now < self._oldest:
            self._oldest = now
        return len(pending)

    def add_many(self, items: list[Pending], now: float) -> int:
        """Queue several settle requests made at ``now`` (as :meth:`add` each, in order);
        return how many are pending now."""
        pending = self._pending
        pending.extend(items)
        self._sql_count += sum(1 for item in items if not isinstance(item.action, Nothing))
        if self._oldest is None or now < self._oldest:
            self._oldest = now
        return len(pending)

    def due(self, now: float, starved: bool, closing: bool = False) -> bool:
        """Return whether the pending requests should be flushed now.

        Due when anything is pending and: there are ``max_batch`` or more; the oldest is
        ``max_age`` old; the consumer is ``starved`` of credit; it is ``closing``; or every
        pending request is ``Nothing`` (no SQL needed). Never due before the retry time of
        a requeued batch (see :meth:`requeue`).

        Args:
            now: The current monotonic time.
            starved: Whether the consumer's demand window is full.
            closing: Whether the consumer is shutting down.
        """
        if not self._pending or self._oldest is None:
            return False
        if self._hold_until is not None and now < self._hold_until:
            return False
        return (
            self._retrying
            or len(self._pending) >= self.max_batch
            or now >= self._oldest + self.max_age  # same sum as deadline(): no float gap
            or starved
            or closing
            or self._sql_count == 0
        )

    def deadline(self) -> float | None:
        """Return when the pending requests become due by age (``None`` if none pending).

        Accounts for ``Nothing``-only batches (due since they were added) and for the retry
        time of a requeued batch.
        """
        if not self._pending or self._oldest is None:
            return None
        due = (
            self._oldest if self._sql_count == 0 or self._retrying else self._oldest + self.max_age
        )
        if self._hold_until is not None:
            due = max(due, self._hold_until)
        return due

    def take(self) -> Batch:
        """Remove and return every pending request as one batch (empty if none)."""
        pending = self._pending
        self._pending = []
        self._oldest = None
        self._sql_count = 0
        self._hold_until = None
        self._retrying = False
        return Batch.of(pending)

    def requeue(self, batch: Batch, now: float, *, retry_at: float | None = None) -> None:
        """Put a batch whose flush failed back, ahead of newer requests.

        Its requests (winners first, then duplicates) count as added at ``now``, unless
        newer requests are older still. With ``retry_at`` nothing is due before that time,
        and everything is due at that time: the batch was due when it failed, so waiting
        ``max_age`` again would only delay the first ack after an outage (issue 14 item 10).

        Args:
            batch: The batch from :meth:`take` that failed.
            now: The current monotonic time.
            retry_at: Hold the flush until this time (e.g. ``now + backoff.next_delay()``).
        """
        back = list(batch.items) + list(batch.duplicates)
        if not back:
            return
        self._pending[:0] = back
        self._sql_count += sum(1 for p in back if not isinstance(p.action, Nothing))
        if self._oldest is None or now < self._oldest:
            self._oldest = now
        if retry_at is not None:
            self._retrying = True
            self._hold_until = (
                retry_at if self._hold_until is None else max(self._hold_until, retry_at)
            )
