"""Exceptions that end a subscription instead of becoming a failed message (no I/O).

``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` raised by a handler or a
subscriber are never turned into a failed ``Outcome`` and never swallowed: the operator
that catches one ends its stream with ``on_error`` carrying the original exception (the
chain is then disposed, which releases unsettled messages), then calls :func:`propagate`.
"""

from __future__ import annotations

import _thread
import threading

__all__ = ["FATAL", "propagate"]

FATAL: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit, GeneratorExit)
"""Exceptions a handler may raise that end the subscription (after ``on_error``)."""


def propagate(exc: BaseException) -> None:
    """Let ``exc`` do what Python does with it, once ``on_error`` carried it downstream.

    On the main thread ``KeyboardInterrupt`` and ``SystemExit`` are raised again, so the
    program stops (or exits) as it would without rx_pgmq. On any other thread (the reader,
    a pool, an event-loop thread) raising would only end that thread, so a
    ``KeyboardInterrupt`` interrupts the main thread instead (``_thread.interrupt_main``: as
    if Ctrl-C were pressed), and ``SystemExit`` ends nothing more (Python's own rule for
    threads). ``GeneratorExit`` is never raised again: it means something only to the
    generator it was thrown into.

    Raises:
        KeyboardInterrupt: ``exc`` itself, on the main thread.
        SystemExit: ``exc`` itself, on the main thread.
    """
    if isinstance(exc, GeneratorExit):
        return
    if threading.current_thread() is threading.main_thread():
        raise exc
    if isinstance(exc, KeyboardInterrupt):
        _thread.interrupt_main()
