"""Reporting a settle request's status to whoever asked (a ``Future`` or a callback)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol, cast

from rx_pgmq.actions import AckStatus

__all__ = ["Grouped", "ReportSink", "Token", "report", "resolve"]

_log = logging.getLogger("rx_pgmq")

Token = Future[AckStatus] | Callable[[AckStatus], None]
"""What a settle request reports its status to: a ``Future``, or a callback."""


class ReportSink(Protocol):
    """Takes the statuses of several :class:`Grouped` callbacks at once."""

    def report_many(self, run: list[tuple[Grouped, AckStatus | Exception]]) -> None:
        """Report each ``(callback, status)`` of ``run``, in order; must not raise."""


class Grouped:
    """A settle callback whose statuses of one flush can be reported together.

    :func:`resolve` hands every run of consecutive ``Grouped`` callbacks with the same
    :attr:`sink` to ``sink.report_many`` in one call (the ack operator then takes its lock
    and hands its records on once per flush instead of once per message); called alone
    (a status reported at once, or by another acknowledger), it reports a run of one.
    """

    __slots__ = ("sink",)

    sink: ReportSink

    def __call__(self, status: AckStatus | Exception) -> None:
        self.sink.report_many([(self, status)])


def report(token: object, status: AckStatus) -> None:
    """Report ``status`` to one settle request: a ``Future`` gets it, a callback is called."""
    if isinstance(token, Future):
        if not token.done():
            token.set_result(status)
        return
    try:
        token(status)  # type: ignore[operator]  # a callback (a cast would cost a call)
    except Exception:  # like a Future's done-callback: logged, never raised into our threads
        _log.exception("a settle callback raised")


def resolve(tokens: list[tuple[object, AckStatus]]) -> None:
    """Report each ``(token, status)`` pair, in order; runs of :class:`Grouped` callbacks
    with the same sink in one ``report_many`` call each."""
    run: list[tuple[Grouped, AckStatus | Exception]] = []
    sink: ReportSink | None = None
    for token, status in tokens:
        if isinstance(token, Grouped):
            if token.sink is not sink:
                if run:
                    _report_run(sink, run)
                    run = []
                sink = token.sink
            run.append((token, status))
            continue
        if run:
            _report_run(sink, run)
            run, sink = [], None
        report(token, status)
    if run:
        _report_run(sink, run)


def _report_run(sink: ReportSink | None, run: list[tuple[Grouped, AckStatus | Exception]]) -> None:
    try:
        cast(ReportSink, sink).report_many(run)
    except Exception:  # like a callback: logged, never raised into our threads
        _log.exception("a settle callback raised")
