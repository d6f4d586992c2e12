"""Explore queues and streams in Jupyter: a live view, peeking and metrics tables.

IPython and ipywidgets (extra ``jupyter``) are imported only when something is displayed,
so this module imports anywhere; outside a notebook every object still renders to an HTML
string (``.html()`` / ``_repr_html_``).

Example:
    >>> from rx_pgmq import jupyter  # doctest: +SKIP
    >>> jupyter.peek(dsn, "orders")  # the first 20 messages, not claimed  # doctest: +SKIP
    >>> view = jupyter.live(source.pipe(pgops.process(handle), pgops.ack()), source=source)
    ... # doctest: +SKIP
    >>> view  # counters, rate and the last messages, updated in place  # doctest: +SKIP
"""

from __future__ import annotations

from rx_pgmq._front._live import LiveView, live
from rx_pgmq._front._tables import Conninfo as Conninfo
from rx_pgmq._front._tables import MessageTable, MetricsTable, metrics_table, peek, peek_messages

__all__ = [
    "LiveView",
    "MessageTable",
    "MetricsTable",
    "live",
    "metrics_table",
    "peek",
    "peek_messages",
]
