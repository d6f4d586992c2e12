"""HTML for notebooks: messages, outcomes, queue metrics and the live view (no I/O).

Every function here turns plain values into an HTML string, so notebooks show rich tables
and tests check the markup without a browser. Values are always escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from rx_pgmq.message import Message, QueueMetrics

__all__ = [
    "LiveRow",
    "LiveSnapshot",
    "OutcomeLike",
    "SettledLike",
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

_STYLE = (
    "<style>"
    ".rx-pgmq{font-family:var(--jp-code-font-family,monospace);font-size:12px}"
    ".rx-pgmq table{border-collapse:collapse;margin:2px 0}"
    ".rx-pgmq th,.rx-pgmq td{padding:2px 8px;text-align:left;border-bottom:1px solid #8884}"
    ".rx-pgmq th{font-weight:600}"
    ".rx-pgmq .num{text-align:right}"
    ".rx-pgmq .ok{color:#2a7d2a}"
    ".rx-pgmq .bad{color:#c0392b}"
    ".rx-pgmq .dim{opacity:.65}"
    ".rx-pgmq .counters td{border:none;padding:1px 10px 1px 0}"
    "</style>"
)


class OutcomeLike(Protocol):
    """What :func:`outcome_html` reads from an ``rx_pgmq.Outcome``."""

    @property
    def message(self) -> Message:
        """The message processed."""
        ...

    @property
    def ok(self) -> bool:
        """Whether processing succeeded."""
        ...

    @property
    def value(self) -> Any:
        """The processing result (successes)."""
        ...

    @property
    def error(self) -> Any:
        """The failure reason or exception (failures)."""
        ...


class SettledLike(Protocol):
    """What :func:`settled_html` reads from an ``rx_pgmq.operators`` ``Settled`` value."""

    @property
    def message(self) -> Message:
        """The message settled."""
        ...

    @property
    def ok(self) -> bool:
        """Whether processing succeeded."""
        ...

    @property
    def error(self) -> Any:
        """The failure reason or exception (failures)."""
        ...

    @property
    def action(self) -> Any:
        """The action applied (an ``rx_pgmq.actions`` value)."""
        ...

    @property
    def status(self) -> str:
        """How the settle request ended (``acked``, ``unacked``, ...)."""
        ...


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _wrap(inner: str) -> str:
    return f'<div class="rx-pgmq">{_STYLE}{inner}</div>'


def body_preview(body: Any, limit: int = 60) -> str:
    """Compact JSON of a message body, cut to ``limit`` characters (plain text, unescaped).

    Args:
        body: The parsed JSON body.
        limit: Longest preview; longer text ends with an ellipsis.

    Returns:
        The preview text.
    """
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(body)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def time_left(vt: datetime, now: datetime | None = None) -> str:
    """Time until ``vt`` as text (``"12.3s"``), or ``"visible"`` once it has passed.

    Args:
        vt: The visibility timeout (timezone-aware; naive is taken as UTC).
        now: The current time (default: now, UTC).

    Returns:
        The remaining time, one decimal.
    """
    current = now if now is not None else datetime.now(UTC)
    if vt.tzinfo is None:
        vt = vt.replace(tzinfo=UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    left = (vt - current).total_seconds()
    return "visible" if left <= 0 else f"{left:.1f}s"


def _clock(value: datetime | None) -> str:
    if value is None:
        return '<span class="dim">-</span>'
    return f'<span title="{_e(value.isoformat())}">{_e(value.strftime("%H:%M:%S.%f")[:-3])}</span>'


def _reason(error: Any, reason: Any = None) -> str:
    if isinstance(error, BaseException):
        text = str(error)
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    if reason:
        return str(reason)
    return "" if error is None else str(error)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Iterable[int] = (),
    caption: str | None = None,
    empty: str = "(none)",
) -> str:
    """An HTML table; cells are **already-escaped** HTML fragments.

    Args:
        headers: Column titles (plain text, escaped here).
        rows: One sequence of cell HTML per row.
        numeric: Indexes of right-aligned columns.
        caption: A caption (plain text, escaped here).
        empty: Text of the single row shown when there are no rows.

    Returns:
        ``<table>`` markup (not wrapped in the style block).
    """
    nums = set(numeric)
    head = "".join(
        f'<th class="num">{_e(h)}</th>' if i in nums else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in nums else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="dim">{_e(empty)}</td></tr>')
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_MESSAGE_HEADERS = ("msg_id", "read_ct", "enqueued_at", "vt in", "body")


def _message_cells(message: Message, now: datetime | None, preview: int) -> list[str]:
    return [
        _e(message.msg_id),
        _e(message.read_ct),
        _clock(message.enqueued_at),
        _e(time_left(message.vt, now)),
        f"<code>{_e(body_preview(message.body, preview))}</code>",
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
    rows = [_message_cells(m, now, preview) for m in messages]
    return _wrap(
        table(_MESSAGE_HEADERS, rows, numeric=(0, 1), caption=caption, empty="(no messages)")
    )


def message_html(message: Message, *, now: datetime | None = None) -> str:
    """One message as HTML: its fields, headers and full body.

    Args:
        message: The message.
        now: The time ``vt`` is compared with (default: now).

    Returns:
        Styled HTML (``Message._repr_html_``).
    """
    rows = [
        ("queue", _e(message.queue)),
        ("msg_id", _e(message.msg_id)),
        ("read_ct", _e(message.read_ct)),
        ("enqueued_at", _e(message.enqueued_at.isoformat())),
        ("last_read_at", _e(message.last_read_at.isoformat()) if message.last_read_at else "-"),
        ("vt", f"{_e(message.vt.isoformat())} ({_e(time_left(message.vt, now))})"),
        ("headers", f"<code>{_e(body_preview(message.headers, 400))}</code>"),
        ("body", f"<code>{_e(body_preview(message.body, 400))}</code>"),
    ]
    inner = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return _wrap(f"<table><caption>Message</caption><tbody>{inner}</tbody></table>")


def outcome_html(outcome: OutcomeLike, *, now: datetime | None = None) -> str:
    """An ``Outcome`` as HTML: success or failure (with its reason) and its message.

    Args:
        outcome: The outcome (anything with ``message``, ``ok``, ``value``, ``error``).
        now: The time ``vt`` is compared with (default: now).

    Returns:
        Styled HTML (``Outcome._repr_html_``).
    """
    if outcome.ok:
        verdict = '<span class="ok">success</span>'
        detail = f"<code>{_e(body_preview(outcome.value, 200))}</code>"
        label = "value"
    else:
        verdict = '<span class="bad">failure</span>'
        detail = _e(_reason(outcome.error, getattr(outcome, "reason", None)))
        label = "reason"
    head = f"<table><tbody><tr><th>outcome</th><td>{verdict}</td></tr>"
    head += f"<tr><th>{label}</th><td>{detail}</td></tr></tbody></table>"
    msg = outcome.message
    return _wrap(head + table(_MESSAGE_HEADERS, [_message_cells(msg, now, 60)], numeric=(0, 1)))


def _action_text(action: Any) -> str:
    name = getattr(action, "name", None)
    if name == "set_vt":
        return f"set_vt({getattr(action, 'vt', '?')}s)"
    if name == "move":
        return f"move({getattr(action, 'queue', '?')})"
    return str(name) if name is not None else str(action)


def settled_html(settled: SettledLike, *, now: datetime | None = None) -> str:
    """A ``Settled`` value as HTML: outcome, action, ack status and the message.

    Args:
        settled: Anything with ``message``, ``ok``, ``error``, ``action`` and ``status``.
        now: The time ``vt`` is compared with (default: now).

    Returns:
        Styled HTML (``Settled._repr_html_``).
    """
    verdict = (
        '<span class="ok">success</span>'
        if settled.ok
        else f'<span class="bad">failure</span> '
        f"{_e(_reason(settled.error, getattr(settled, 'reason', None)))}"
    )
    status_cls = "ok" if settled.status == "acked" else "bad"
    rows = [
        ("outcome", verdict),
        ("action", _e(_action_text(settled.action))),
        ("status", f'<span class="{status_cls}">{_e(settled.status)}</span>'),
    ]
    head = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    msg_table = table(_MESSAGE_HEADERS, [_message_cells(settled.message, now, 60)], numeric=(0, 1))
    return _wrap(f"<table><tbody>{head}</tbody></table>{msg_table}")


_METRICS_HEADERS = (
    "queue",
    "length",
    "visible",
    "oldest (s)",
    "newest (s)",
    "total sent",
)


def _metrics_cells(m: QueueMetrics) -> list[str]:
    def age(v: int | None) -> str:
        return '<span class="dim">-</span>' if v is None else _e(v)

    return [
        _e(m.queue_name),
        _e(m.queue_length),
        _e(m.queue_visible_length),
        age(m.oldest_msg_age_sec),
        age(m.newest_msg_age_sec),
        _e(m.total_messages),
    ]


def metrics_table(metrics: Iterable[QueueMetrics], *, caption: str | None = None) -> str:
    """Queue metrics as an HTML table, one row per queue.

    Args:
        metrics: ``QueueMetrics`` values (e.g. ``PGMQ.metrics_all()``).
        caption: A caption for the table.

    Returns:
        Styled HTML.
    """
    rows = [_metrics_cells(m) for m in metrics]
    return _wrap(
        table(_METRICS_HEADERS, rows, numeric=(1, 2, 3, 4, 5), caption=caption, empty="(no queues)")
    )


def metrics_html(metrics: QueueMetrics) -> str:
    """One queue's metrics as HTML (``QueueMetrics._repr_html_``)."""
    return metrics_table([metrics])


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
        f"<div><b>{_e(snapshot.title)}</b> · "
        f'<span class="{status_cls}" data-status="{_e(snapshot.status)}">'
        f"{_e(snapshot.status)}</span> · "
        f'<span data-rate="{snapshot.rate:.1f}">{snapshot.rate:.1f} msg/s</span> '
        f'<span class="dim">(avg {snapshot.average:.1f} msg/s over {snapshot.elapsed:.1f}s)'
        "</span></div>"
    )
    cells = "".join(
        f'<td><span class="dim">{_e(label)}</span> '
        f'<b data-counter="{_e(label)}">{"-" if value is None else _e(value)}</b></td>'
        for label, value in snapshot.counters
    )
    counters = f'<table class="counters"><tbody><tr>{cells}</tr></tbody></table>'
    rows = []
    for row in snapshot.rows:
        cells_ = _message_cells(row.message, now, 60)
        cls = "bad" if row.bad else "dim"
        rows.append([*cells_[:4], f'<span class="{cls}">{_e(row.state)}</span>', cells_[4]])
    recent = table(
        ("msg_id", "read_ct", "enqueued_at", "vt in", "state", "body"),
        rows,
        numeric=(0, 1),
        caption=f"last {len(snapshot.rows)} messages",
        empty="(nothing yet)",
    )
    return _wrap(line + counters + recent)
