"""What a live view counts from the items that flow: messages, outcomes, settled records."""

from __future__ import annotations

from collections import Counter, deque

from rx_pgmq._front import _html
from rx_pgmq._values._outcome import Outcome, Settled
from rx_pgmq.message import Message

__all__ = ["Tally"]


class Tally:
    """What the view counts from the items that flow (guarded by the view's lock).

    Attributes:
        recent: The last ``rows`` messages with their state, oldest first.
    """

    def __init__(self, rows: int) -> None:
        self.items = 0
        self.messages = 0
        self.succeeded = 0
        self.failed = 0
        self.acked: Counter[str] = Counter()
        self.not_acked = 0
        self.recent: deque[_html.LiveRow] = deque(maxlen=rows)

    def add(self, item: object) -> None:
        """Count one item: a message, an ``Outcome`` or a ``Settled`` (others: items only)."""
        self.items += 1
        if isinstance(item, Message):
            self.messages += 1
            self.recent.append(_html.LiveRow(item, "received"))
            return
        if not isinstance(item, Outcome | Settled):
            return
        message, ok = item.message, item.ok
        self.messages += 1
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        reason = "" if ok else (item.reason or "")
        if isinstance(item, Outcome):
            state = "ok" if ok else f"failed: {reason}"
            self.recent.append(_html.LiveRow(message, state, bad=not ok))
            return
        action, status = item.action.name, item.status
        if status == "acked":
            self.acked[action] += 1
        else:
            self.not_acked += 1
        state = f"{action} {status}" + ("" if ok else f" ({reason})")
        self.recent.append(_html.LiveRow(message, state, bad=not ok or status != "acked"))
