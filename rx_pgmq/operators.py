"""Pipeline operators: backpressure on the source, processing and ack policies downstream.

Example:
    >>> from rx_pgmq import operators as pgops  # doctest: +SKIP
    >>> rx_pgmq.read_queue(dsn, "orders", visibility_timeout=30).pipe(
    ...     pgops.windowed(10), pgops.process(handle), pgops.ack()
    ... ).subscribe(print)  # doctest: +SKIP
"""

from rx_pgmq._operators._backpressure import controlled, pausable, stop_and_wait, windowed

__all__ = ["controlled", "pausable", "stop_and_wait", "windowed"]
