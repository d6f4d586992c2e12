"""Pipeline operators: backpressure on the source, processing and ack policies downstream.

Example:
    >>> from rx_pgmq import operators as pgops  # doctest: +SKIP
    >>> rx_pgmq.read_queue(dsn, "orders", visibility_timeout=30).pipe(
    ...     pgops.windowed(10), pgops.process(handle), pgops.ack()
    ... ).subscribe(print)  # doctest: +SKIP
"""

from rx_pgmq._core._policy import Policy, PolicyError, backoff, max_attempts, resolve
from rx_pgmq._operators._ack import ack, ack_with, failures, successes
from rx_pgmq._operators._backpressure import controlled, pausable, stop_and_wait, windowed
from rx_pgmq._operators._batch import process_batch
from rx_pgmq._operators._batchresult import InvalidBatchResult
from rx_pgmq._operators._process import process
from rx_pgmq._operators._skip import skip
from rx_pgmq._operators._transaction import LeaseLost, process_in_transaction
from rx_pgmq._values._outcome import NotAnOutcome

__all__ = [
    "InvalidBatchResult",
    "LeaseLost",
    "NotAnOutcome",
    "Policy",
    "PolicyError",
    "ack",
    "ack_with",
    "backoff",
    "controlled",
    "failures",
    "max_attempts",
    "pausable",
    "process",
    "process_batch",
    "process_in_transaction",
    "resolve",
    "skip",
    "stop_and_wait",
    "successes",
    "windowed",
]
