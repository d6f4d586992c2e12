"""What ``MoveTo`` sends to the destination queue: body and headers as JSON text (no I/O).

The copy keeps the body and adds header :data:`MOVED_HEADER`. Headers that are a JSON
object keep their keys; anything else (a JSON array or scalar, or headers that could not
be decoded in Python) is kept as it was stored under :data:`ORIGINAL_HEADERS_KEY`, so a
move never fails or loses data because of what a producer put in the headers. A message
whose body could not be decoded moves its body exactly as stored.
"""

from __future__ import annotations

import json
from typing import Any

from rx_pgmq.headers import MOVED, ORIGINAL_HEADERS
from rx_pgmq.message import Message

__all__ = ["MOVED_HEADER", "ORIGINAL_HEADERS_KEY", "moved_json"]

MOVED_HEADER = MOVED
"""Header a moved copy gains: ``{"from": queue, "reason": text or null, "attempts": n}``."""
ORIGINAL_HEADERS_KEY = ORIGINAL_HEADERS
"""Header under which a moved copy keeps original headers that were not a JSON object."""


def moved_json(message: Message, queue: str, reason: str | None) -> tuple[str, str]:
    """The body and headers (JSON text) of ``message``'s copy when it moves from ``queue``.

    Args:
        message: The message to move (as read from ``queue``).
        queue: The queue it is moved from.
        reason: The failure reason, if any.

    Returns:
        ``(body, headers)`` as JSON text for ``pgmq.send_batch``.
    """
    moved = {"from": queue, "reason": reason, "attempts": message.read_ct}
    error = message.decode_error
    headers: Any
    if error is None:
        body = json.dumps(message.body)
        headers = message.headers
        headers_text = None if headers is None else json.dumps(headers)
    else:  # the text as stored: valid JSON that Python could not decode
        body = error.body_text if error.body_text is not None else "null"
        headers_text = error.headers_text
        headers = _object_or_none(headers_text)
    if headers_text is None:
        return body, json.dumps({MOVED_HEADER: moved})
    if isinstance(headers, dict):
        return body, json.dumps({**headers, MOVED_HEADER: moved})
    original = json.dumps(ORIGINAL_HEADERS_KEY)
    return body, f"{{{original}:{headers_text},{json.dumps(MOVED_HEADER)}:{json.dumps(moved)}}}"


def _object_or_none(text: str | None) -> dict[str, Any] | None:
    """``text`` decoded if it is a JSON object Python can decode, else None."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except Exception:  # undecodable (too deep, too many digits): kept as text
        return None
    return value if isinstance(value, dict) else None
