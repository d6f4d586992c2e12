"""HTML building blocks shared by the values' notebook views (no I/O, no rx_pgmq imports).

:mod:`rx_pgmq.message` and :mod:`rx_pgmq._values._outcome` render themselves with these
(``_repr_html_``); :mod:`rx_pgmq._front._html` builds the notebook's tables and live view from
them and from those values. Values are always escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "MESSAGE_HEADERS",
    "STYLE",
    "body_preview",
    "clock",
    "escape",
    "reason_text",
    "table",
    "time_left",
    "wrap",
]

STYLE = (
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


MESSAGE_HEADERS = ("msg_id", "read_ct", "enqueued_at", "vt in", "body")
"""The columns of a message row (see ``rx_pgmq.message.message_cells``)."""


def escape(value: object) -> str:
    """``value`` as text, HTML-escaped (quotes too)."""
    return html.escape(str(value), quote=True)


def wrap(inner: str) -> str:
    """``inner`` in the styled ``rx-pgmq`` block."""
    return f'<div class="rx-pgmq">{STYLE}{inner}</div>'


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


def clock(value: datetime | None) -> str:
    """A time as ``HH:MM:SS.mmm`` with the full ISO time as its title."""
    if value is None:
        return '<span class="dim">-</span>'
    short = value.strftime("%H:%M:%S.%f")[:-3]
    return f'<span title="{escape(value.isoformat())}">{escape(short)}</span>'


def reason_text(error: Any, reason: Any = None) -> str:
    """Why something failed: ``Type: text`` of an exception, else ``reason``."""
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
        f'<th class="num">{escape(h)}</th>' if i in nums else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in nums else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="dim">{escape(empty)}</td></tr>')
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
