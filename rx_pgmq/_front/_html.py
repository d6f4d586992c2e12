"""HTML for notebooks: tables of messages and queue metrics, and the live view (no I/O).

Every function here turns plain values into an HTML string, so notebooks show rich tables
and tests check the markup without a browser. Values are always escaped. Each value renders
itself (``_repr_html_``, in :mod:`rx_pgmq.message` and :mod:`rx_pgmq._values._outcome`, from the
blocks of :mod:`rx_pgmq._values._markup`); this module imports them, never the other way round, and
re-exports their renderers for the notebook module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rx_pgmq._values._markup import MESSAGE_HEADERS, body_preview, escape, table, time_left, wrap
from rx_pgmq._values._outcome import outcome_html, settled_html
from rx_pgmq.message import (
    METRICS_HEADERS,
    Message,
    QueueMetrics,
    message_cells,
    message_html,
    metrics_cells,
    metrics_html,
)

__all__ = [
    "LiveRow",
    "LiveSnapshot",
    "body_preview",
    "live_html",
    "message_html",
    "messages_table",
    "metrics_html",
    "metrics_table",
    "outcome_html",
    "settled_html",
    "table",
    "time_left",
]


def messages_table(
    messages: Iterable[Message],
    *,
    now: datetime | None = None,
    caption: str | None = None,
    preview: int = 60,
) -> str:
    """Messages as an HTML table: msg_id, read_ct, enqueued_at, time before vt, body.

    Args:
        messages: The messages.
        now: The time ``vt`` is compared with (default: now).
        caption: A caption for the table.
        preview: Longest body preview (characters).

    Returns:
        Styled HTML.
    """
    rows = [message_cells(m, now, preview) for m in messages]
    return wrap(
        table(MESSAGE_HEADERS, rows, numeric=(0, 1), caption=caption, empty="(no messages)")
    )


def metrics_table(metrics: Iterable[QueueMetrics], *, caption: str | None = None) -> str:
    """Queue metrics as an HTML table, one row per queue.

    Args:
        metrics: ``QueueMetrics`` values (e.g. ``PGMQ.metrics_all()``).
        caption: A caption for the table.

    Returns:
        Styled HTML.
    """
    rows = [metrics_cells(m) for m in metrics]
    return wrap(
        table(METRICS_HEADERS, rows, numeric=(1, 2, 3, 4, 5), caption=caption, empty="(no queues)")
    )


@dataclass(frozen=True, slots=True)
class LiveRow:
    """One recent message in the live view.

    Attributes:
        message: The message.
        state: What happened to it so far (``received``, ``ok``, ``failed: ...``,
            ``delete acked``...).
        bad: Whether to show the state as a problem.
    """

    message: Message
    state: str
    bad: bool = False


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    """Everything the live view shows at one instant.

    Attributes:
        title: The heading (e.g. the queue name).
        status: ``running``, ``paused``, ``completed``, ``stopped`` or ``failed: ...``.
        counters: ``(label, value)`` pairs, in display order; ``None`` shows as ``-``.
        rate: Recent throughput, messages per second.
        average: Throughput since the start, messages per second.
        elapsed: Seconds since the start.
        rows: The most recent messages, newest first.
    """

    title: str
    status: str
    counters: Sequence[tuple[str, int | None]] = ()
    rate: float = 0.0
    average: float = 0.0
    elapsed: float = 0.0
    rows: Sequence[LiveRow] = field(default_factory=tuple)


def live_html(snapshot: LiveSnapshot, *, now: datetime | None = None) -> str:
    """The live view's HTML for one snapshot.

    Args:
        snapshot: The counters, rates and recent messages.
        now: The time ``vt`` is compared with (default: now).

    Returns:
        Styled HTML with a status line, a counters table and a recent-messages table.
    """
    status_cls = "bad" if snapshot.status.startswith("failed") else "ok"
    line = (
        f"<div><b>{escape(snapshot.title)}</b> · "
        f'<span class="{status_cls}" data-status="{escape(snapshot.status)}">'
        f"{escape(snapshot.status)}</span> · "
        f'<span data-rate="{snapshot.rate:.1f}">{snapshot.rate:.1f} msg/s</span> '
        f'<span class="dim">(avg {snapshot.average:.1f} msg/s over {snapshot.elapsed:.1f}s)'
        "</span></div>"
    )
    cells = "".join(
        f'<td><span class="dim">{escape(label)}</span> '
        f'<b data-counter="{escape(label)}">{"-" if value is None else escape(value)}</b></td>'
        for label, value in snapshot.counters
    )
    counters = f'<table class="counters"><tbody><tr>{cells}</tr></tbody></table>'
    rows = []
    for row in snapshot.rows:
        cells_ = message_cells(row.message, now, 60)
        cls = "bad" if row.bad else "dim"
        rows.append([*cells_[:4], f'<span class="{cls}">{escape(row.state)}</span>', cells_[4]])
    recent = table(
        ("msg_id", "read_ct", "enqueued_at", "vt in", "state", "body"),
        rows,
        numeric=(0, 1),
        caption=f"last {len(snapshot.rows)} messages",
        empty="(nothing yet)",
    )
    return wrap(line + counters + recent)
