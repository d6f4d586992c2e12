"""The record of who holds each message a consumer emitted (no I/O, threads or locks).

A consumer emits *deliveries*: ``(msg_id, read_ct)``. A consumer whose lease ran out may
read a message again while it still processes the earlier delivery; each delivery took one
unit of demand and gives it back on its own. A delivery is, in turn:

- **held**: emitted and not settled (:meth:`Ledger.emitted`);
- **settling**: a settle request for it waits in the ack batcher or in a flush
  (:meth:`Ledger.settle_requested`, or :meth:`Ledger.dropped` for a release);
- **ended**: its flush committed or failed (:meth:`Ledger.settled`), or the consumer closed
  (:meth:`Ledger.close`); its room in the demand window is given back then, exactly once.

The ledger owns the consumer's :class:`~rx_pgmq._core._demand.Demand` for everything that moves
credit: each method that ends deliveries gives their room back itself. The consumer calls
every method with its own lock held and does the I/O the answers ask for::

    with lock: fresh = ledger.emitted(messages, now)         # then emit ``fresh``
    with lock: status = ledger.settle_requested(key)         # None: queue the request
    with lock: ledger.settled(batch.items)                   # after the flush
    with lock: ledger.begin_shutdown(); ids = ledger.to_release(unflushed)
    release(ids)                                             # set_vt 0
    with lock: ledger.close()

It also knows the visibility timeout this consumer last gave each delivery, for the fence
of ``process_in_transaction``: the ``vt`` its read returned (the message carries it) until
the heartbeat moves it (:meth:`Ledger.lease_extended` records the ``vt`` PostgreSQL
returned). A delivery being fenced (:meth:`Ledger.fence_started`) is not extended any more,
so the ``vt`` the fence compares cannot change under it::

    with lock: ids = ledger.lease_expiring(t); ledger.extension_started(ids)
    rows = set_vt(ids)                                       # (msg_id, read_ct, vt) rows
    with lock: ledger.lease_extended(ids, now, rows)         # or extension_failed()
    with lock: wait while ledger.fence_started(key); vt = ledger.lease_vt(key, m.vt)
    ... SELECT ... WHERE read_ct = m.read_ct AND vt = vt FOR UPDATE; commit ...
    with lock: ledger.fence_ended(key)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol, TypeVar

from rx_pgmq._core._demand import Demand
from rx_pgmq.actions import AckStatus

__all__ = ["Delivery", "Ledger"]

Delivery = tuple[int, int]
"""One delivery of a message: ``(msg_id, read_ct)``."""


class Delivered(Protocol):
    """Anything naming one delivery: a message, or a settle request."""

    @property
    def msg_id(self) -> int: ...

    @property
    def read_ct(self) -> int: ...


_M = TypeVar("_M", bound=Delivered)


class Ledger:
    """Who holds each delivery of one consumer, and the credit that goes with it.

    Args:
        demand: The consumer's demand window; the ledger records emitted and ended
            deliveries in it.

    Attributes:
        demand: The demand window.
        ended: How many deliveries ended so far (the consumer notices a window that
            stays full with nothing settled: a pipeline that never acks).
    """

    __slots__ = (
        "_extending",
        "_fencing",
        "_gone",
        "_held",
        "_lease_vt",
        "_settling",
        "_stopped",
        "demand",
        "ended",
    )

    def __init__(self, demand: Demand) -> None:
        self.demand = demand
        # delivery -> when it was read or its lease last extended (monotonic seconds)
        self._held: dict[Delivery, float] = {}
        self._settling: set[Delivery] = set()
        # held deliveries whose messages are gone from the pipeline once closing began (or
        # were never emitted): a closing consumer does not wait for them to settle
        self._gone: set[Delivery] = set()
        # delivery -> the vt this consumer's heartbeat last set (absent: the read's vt)
        self._lease_vt: dict[Delivery, datetime] = {}
        self._fencing: set[Delivery] = set()  # fenced by a transaction: not extended
        self._extending: set[int] = set()  # msg ids of the heartbeat's set_vt in flight
        self._stopped = False
        self.ended = 0  # deliveries ended so far (a full window with no change stalls)

    def __repr__(self) -> str:
        return (
            f"Ledger(held={len(self._held)}, settling={len(self._settling)}, "
            f"stopped={self._stopped}, demand={self.demand!r})"
        )

    def __len__(self) -> int:
        """Return how many deliveries are held (emitted, not ended)."""
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        """Whether the delivery ``(msg_id, read_ct)`` is held."""
        return key in self._held

    @property
    def stopped(self) -> bool:
        """Whether shutdown began: settle requests are no longer accepted."""
        return self._stopped

    # -- the reader --------------------------------------------------------------------

    def emitted(self, messages: list[_M], now: float) -> list[_M]:
        """Record the messages of a read as held deliveries; return those to emit.

        A read can only return a delivery this consumer already holds if the server forgot
        the earlier read (a crash before a read that did not wait for its WAL flush reached
        the disk: ``read_ct`` went back). That copy is left out: the held delivery is being
        processed, and its settle applies to the message (which carries the same
        ``read_ct`` again).

        Args:
            messages: What the read returned (at most the read size the demand allowed).
            now: When the read finished (the start of the lease, for the heartbeat).

        Raises:
            ValueError: If more fresh deliveries arrive than the demand allowed.
        """
        held = self._held
        fresh: list[_M] = []
        keep = fresh.append
        for m in messages:
            key = (m.msg_id, m.read_ct)
            if key not in held:
                held[key] = now
                keep(m)
        self.demand.on_emitted(len(fresh))
        return fresh

    def emitted_deleted(self, n: int) -> None:
        """Record ``n`` messages read with delete-on-read: in flight until emitted.

        They are not held (there is nothing to settle); :meth:`delivered_deleted` gives the
        room of each back once it was emitted.
        """
        self.demand.on_emitted(n)

    def delivered_deleted(self, n: int = 1) -> None:
        """``n`` messages read with delete-on-read were emitted: their room returns."""
        self.demand.on_settled(n)

    # -- settle requests ---------------------------------------------------------------

    def settle_requested(self, key: Delivery) -> AckStatus | None:
        """A settle was requested for ``key``; return its status at once if not to queue.

        Returns:
            ``None``: queue the request (the delivery is now settling); ``"unacked"``:
            shutdown began, nothing is flushed any more; ``"ignored"``: the delivery is not
            held (settled already, or never emitted) or a settle of it is pending.
        """
        if self._stopped:
            return "unacked"
        if key not in self._held or key in self._settling:
            return "ignored"
        self._settling.add(key)
        return None

    def dropped(self, key: Delivery) -> bool:
        """The message of ``key`` is no longer referenced: whether to queue its release.

        True marks the delivery settling (the caller queues a ``SetVisibilityTimeout(0)``
        for it, which ends it through :meth:`settled`); False when it needs nothing:
        already settling or ended, or shutdown began (:meth:`to_release` covers it).
        """
        if self._stopped or key not in self._held or key in self._settling:
            return False
        self._settling.add(key)
        return True

    def settled(self, requests: Iterable[Delivered]) -> int:
        """A flush of ``requests`` finished (committed or failed): end their deliveries.

        Each delivery still held ends and gives its room back; one that already ended (the
        consumer closed meanwhile) gives nothing. A failed flush ends its deliveries too:
        this consumer no longer holds them (they reappear after their timeout).

        Returns:
            The number of deliveries ended (room given back).
        """
        held, settling, lease_vt, gone = self._held, self._settling, self._lease_vt, self._gone
        n = 0
        for p in requests:
            key = (p.msg_id, p.read_ct)
            settling.discard(key)
            if held.pop(key, None) is not None:
                n += 1
                if lease_vt:
                    lease_vt.pop(key, None)
                if gone:
                    gone.discard(key)
        if n:
            self.ended += n
            self.demand.on_settled(n)
        return n

    def gone(self, keys: Iterable[Delivery]) -> None:
        """The messages of ``keys`` left the pipeline unsettled while the consumer closed,
        or were never emitted: nothing downstream will settle them (the close releases
        them with the rest)."""
        held = self._held
        self._gone.update(key for key in keys if key in held)

    def unsettled_alive(self) -> int:
        """How many held deliveries are neither settling nor gone (their messages may still
        be settled downstream): what a closing consumer waits for."""
        settling, gone = self._settling, self._gone
        return sum(1 for key in self._held if key not in settling and key not in gone)

    # -- leases ------------------------------------------------------------------------

    def lease_expiring(self, read_before: float) -> list[int]:
        """Ids of held deliveries read (or extended) at or before ``read_before``, neither
        settling nor being fenced, sorted: the heartbeat extends their visibility timeout."""
        settling, fencing = self._settling, self._fencing
        return sorted(
            {
                key[0]
                for key, t in self._held.items()
                if t <= read_before and key not in settling and key not in fencing
            }
        )

    def outlived(self, requests: Iterable[_M], read_before: float) -> list[_M]:
        """Those of ``requests`` whose lease may have ended: their delivery was read (or its
        lease last extended) at or before ``read_before``, or is no longer held.

        A flush retried after an outage gives these up (issue 14 item 10): another reader
        may hold the message by then, so an unfenced ack of it must not be applied.
        """
        held = self._held
        out: list[_M] = []
        for p in requests:
            t = held.get((p.msg_id, p.read_ct))
            if t is None or t <= read_before:
                out.append(p)
        return out

    def extension_started(self, ids: Iterable[int]) -> None:
        """The heartbeat sends ``set_vt`` for ``ids`` (from :meth:`lease_expiring`): until
        :meth:`lease_extended` or :meth:`extension_failed`, a fence of one of them waits."""
        self._extending = set(ids)

    def lease_extended(
        self, ids: Iterable[int], now: float, rows: Iterable[tuple[int, int, datetime]] = ()
    ) -> bool:
        """The visibility timeout of every held delivery of ``ids`` was extended at ``now``.

        Args:
            ids: The ids the heartbeat extended.
            now: When (monotonic seconds): the start of the new lease.
            rows: ``(msg_id, read_ct, vt)`` of each row ``set_vt`` returned: the new ``vt``
                of a held delivery with that ``read_ct`` is what its fence compares.

        Returns:
            Whether a fence may wait for this extension (notify the consumer's condition).
        """
        extended = set(ids)
        held, lease_vt = self._held, self._lease_vt
        for key in held:
            if key[0] in extended:
                held[key] = now
        for msg_id, read_ct, vt in rows:
            key = (msg_id, read_ct)
            if key in held:
                lease_vt[key] = vt
        return self.extension_failed()

    def extension_failed(self) -> bool:
        """The heartbeat's ``set_vt`` failed (it may still have committed: a fence of one
        of its messages then fails, the safe way). Returns whether a fence may wait."""
        self._extending.clear()
        return bool(self._fencing)

    # -- the fence of process_in_transaction -------------------------------------------

    def fence_started(self, key: Delivery) -> bool:
        """A transaction is about to fence ``key``: the heartbeat no longer extends it.

        Returns:
            Whether a heartbeat extension of its message is in flight: wait until it ended
            (the condition is notified) and ask again, then read :meth:`lease_vt`.
        """
        self._fencing.add(key)
        return key[0] in self._extending

    def lease_vt(self, key: Delivery, read_vt: datetime) -> datetime:
        """The ``vt`` this consumer last gave ``key``: its heartbeat's, else ``read_vt``
        (the ``vt`` its read returned, carried by the message)."""
        return self._lease_vt.get(key, read_vt)

    def fence_ended(self, key: Delivery) -> None:
        """The fencing transaction of ``key`` ended (committed, rolled back or failed)."""
        self._fencing.discard(key)

    # -- shutdown ----------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop accepting settle requests (they report ``"unacked"`` from now on)."""
        self._stopped = True

    def flushes_abandoned(self) -> None:
        """The acknowledger stopped for good (it failed): no flush runs or will run.

        Deliveries it was settling are unsettled again, so :meth:`to_release` releases
        them with the rest; settle requests report ``"unacked"`` from now on. No extension
        is in flight any more either (a fence stops waiting for one).
        """
        self._stopped = True
        self._settling.clear()
        self._extending.clear()

    def to_release(self, unflushed: Iterable[Delivery] = ()) -> list[int]:
        """Ids to release (``set_vt`` 0) at shutdown, sorted.

        Every held delivery, except those a flush still running is settling: releasing
        them would race with it (e.g. undo a ``SetVisibilityTimeout``). A message with one
        delivery being flushed is not released through another either.

        Args:
            unflushed: Settling deliveries whose requests were taken out of the batcher
                without a flush: they are released like any unsettled delivery.
        """
        flushing = self._settling.difference(unflushed)
        busy = {key[0] for key in flushing}
        return sorted({key[0] for key in self._held if key not in flushing} - busy)

    def close(self) -> int:
        """End every delivery still held (released, kept or being flushed); return how many.

        Their room returns. A flush finishing later ends nothing more (:meth:`settled`).
        """
        n = len(self._held)
        self._held.clear()
        self._gone.clear()
        self._settling.clear()
        self._lease_vt.clear()
        if n:
            self.demand.on_settled(n)
        return n
