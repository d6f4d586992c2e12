"""Run a pipeline until it is done, and fill a queue with numbered messages (demo, bench)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from reactivex import Observable

from rx_pgmq._values._outcome import Settled
from rx_pgmq.client import PGMQ

__all__ = ["run_until", "send_numbered"]


def send_numbered(client: PGMQ, queue: str, numbers: range) -> None:
    """Send one message ``{"n": n}`` per number, 1,000 to a batch."""
    for start in range(0, len(numbers), 1000):
        client.send_batch(queue, [{"n": n} for n in numbers[start : start + 1000]])


def run_until(
    pipeline: Observable[Settled], on_settled: Callable[[Settled], bool], timeout: float
) -> bool:
    """Subscribe ``pipeline`` until ``on_settled`` returns True, the pipeline fails, or
    ``timeout`` seconds pass; the subscription is disposed in every case.

    Returns:
        Whether ``on_settled`` returned True in time.

    Raises:
        Exception: The pipeline's error, if it failed.
    """
    done = threading.Event()
    errors: list[Exception] = []

    def on_next(record: Settled) -> None:
        if on_settled(record):
            done.set()

    def on_error(error: Exception) -> None:
        errors.append(error)
        done.set()

    subscription = pipeline.subscribe(on_next=on_next, on_error=on_error)
    try:
        finished = done.wait(timeout)
    finally:
        subscription.dispose()
    if errors:
        raise errors[0]
    return finished
