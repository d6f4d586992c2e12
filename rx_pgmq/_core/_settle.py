"""Reporting a settle request's status to whoever asked (a ``Future`` or a callback)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import cast

from rx_pgmq.actions import AckStatus

__all__ = ["Token", "report", "resolve"]

_log = logging.getLogger("rx_pgmq")

Token = Future[AckStatus] | Callable[[AckStatus], None]
"""What a settle request reports its status to: a ``Future``, or a callback."""


def report(token: object, status: AckStatus) -> None:
    """Report ``status`` to one settle request: a ``Future`` gets it, a callback is called."""
    if isinstance(token, Future):
        if not token.done():
            token.set_result(status)
        return
    try:
        # A string type: ``Callable[[...], None]`` would build a generic alias per call.
        cast("Callable[[AckStatus], None]", token)(status)
    except Exception:  # like a Future's done-callback: logged, never raised into our threads
        _log.exception("a settle callback raised")


def resolve(tokens: list[tuple[object, AckStatus]]) -> None:
    """Report each ``(token, status)`` pair."""
    for token, status in tokens:
        report(token, status)
