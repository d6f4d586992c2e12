"""A user's typed pipeline, checked by ``mypy --strict`` only (never run): #18 item 4.

``tests/test_typed_pipeline.py`` runs mypy on this file, and CI's ``mypy --strict tests``
checks it too. Each deliberately wrong line carries a ``# type: ignore[...]``: mypy's
``warn_unused_ignores`` (part of ``--strict``) fails the check if the error is gone, which
is what happens when a body type is lost on the way (it becomes ``Any``). The right lines
fail if a body type becomes something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reactivex import Observable

import rx_pgmq
from rx_pgmq import Message, Outcome, QueueSource, Settled
from rx_pgmq import operators as pgops


@dataclass
class Order:
    id: int
    item: str


def handle(message: Message[Order]) -> int:
    item: str = message.body.item
    wrong: int = message.body.item  # type: ignore[assignment]
    return len(item) + wrong


def typed_pipeline(dsn: str) -> None:
    source: QueueSource[Order] = rx_pgmq.read_queue(
        dsn, "orders", visibility_timeout=30, body_type=Order
    )
    not_invoices: QueueSource[int] = source  # type: ignore[assignment]
    messages: Observable[Message[Order]] = source
    outcomes = source.pipe(pgops.process(handle))
    on_outcome: Observable[Outcome[Order]] = outcomes
    settled = source.pipe(pgops.windowed(10), pgops.process(handle), pgops.ack())
    on_settled: Observable[Settled[Order]] = settled

    def show(record: Settled[Order]) -> None:
        item: str = record.message.body.item
        wrong: int = record.outcome.message.body.item  # type: ignore[assignment]
        print(item, wrong)

    def show_outcome(outcome: Outcome[Order]) -> None:
        item: str = outcome.message.body.item
        wrong: int = outcome.message.body.item  # type: ignore[assignment]
        print(item, wrong)

    settled.subscribe(show)
    outcomes.subscribe(show_outcome)
    settled.subscribe(lambda s: print(s.message.body.item + 1))  # type: ignore[operator]
    source.pipe(
        pgops.process(lambda m: m.body), pgops.failures(), pgops.ack_with(pgops.backoff(5))
    ).subscribe(
        lambda s: print(s.outcome.message.body.id + "")  # type: ignore[operator]
    )
    print(not_invoices, messages, on_outcome, on_settled)


async def typed_async_for(dsn: str) -> None:
    """``async for`` over a typed source yields Message[Order]."""
    source = rx_pgmq.read_queue(dsn, "orders", visibility_timeout=30, body_type=Order)
    async for message in source:
        item: str = message.body.item
        wrong: int = message.body.item  # type: ignore[assignment]
        print(item, wrong)
        await message.asettle()


def untyped_pipeline(dsn: str) -> None:
    """Without body_type, bodies stay Any: a lambda handler indexes them freely."""
    source = rx_pgmq.read_queue(dsn, "orders", visibility_timeout=30)
    anything: QueueSource[Any] = source
    source.pipe(pgops.process(lambda m: m.body["item"]), pgops.ack()).subscribe(
        lambda s: print(s.message.body["item"], anything)
    )
