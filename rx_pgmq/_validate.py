"""Argument validation shared by every public entry point (no I/O)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import timedelta

from rx_pgmq.errors import InvalidArgument

__all__ = [
    "LONGEST_WAIT",
    "MAX_INT4",
    "MAX_INT8",
    "QUEUE_NAME_RULE",
    "check_body",
    "check_headers",
    "check_non_negative_int",
    "check_positive_int",
    "check_queue_name",
    "seconds",
    "whole_seconds",
]

QUEUE_NAME_RULE = "must match ^[a-z_][a-z0-9_]{0,46}$ (lower-case letters, digits, underscore)"
_QUEUE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,46}")


def check_queue_name(name: object, argument: str = "queue") -> str:
    """Return ``name`` if it is a valid PGMQ queue name.

    Raises:
        InvalidArgument: If the name is not a string matching the rule.
    """
    if not isinstance(name, str) or _QUEUE_NAME.fullmatch(name) is None:
        raise InvalidArgument(argument, f"{name!r} {QUEUE_NAME_RULE}")
    return name


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


MAX_INT4 = 2**31 - 1
"""Largest PostgreSQL ``integer`` (counts, seconds, milliseconds)."""
MAX_INT8 = 2**63 - 1
"""Largest PostgreSQL ``bigint`` (message ids)."""


def check_positive_int(value: object, argument: str, maximum: int = MAX_INT4) -> int:
    """Return ``value`` if it is an int from 1 to ``maximum`` (PostgreSQL ``integer``).

    Raises:
        InvalidArgument: Otherwise.
    """
    if not _is_int(value) or not 1 <= value <= maximum:  # type: ignore[operator]
        raise InvalidArgument(argument, f"must be an int >= 1 (at most {maximum}), got {value!r}")
    return value  # type: ignore[return-value]


def check_non_negative_int(value: object, argument: str, maximum: int = MAX_INT4) -> int:
    """Return ``value`` if it is an int from 0 to ``maximum`` (PostgreSQL ``integer``).

    Raises:
        InvalidArgument: Otherwise.
    """
    if not _is_int(value) or not 0 <= value <= maximum:  # type: ignore[operator]
        raise InvalidArgument(argument, f"must be an int >= 0 (at most {maximum}), got {value!r}")
    return value  # type: ignore[return-value]


LONGEST_WAIT = 1_000_000.0
"""Longest duration accepted for waits (~11.5 days): the OS refuses much longer timeouts
(``OverflowError`` in a background thread), and nothing needs them."""


def seconds(value: object, argument: str, *, allow_zero: bool = True) -> float:
    """Return a duration (int/float seconds or ``timedelta``) as float seconds.

    Raises:
        InvalidArgument: If it is not a finite, non-negative duration of at most
            :data:`LONGEST_WAIT` seconds.
    """
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif (_is_int(value) or isinstance(value, float)) and math.isfinite(value):  # type: ignore[arg-type]
        result = float(value)  # type: ignore[arg-type]
    else:
        raise InvalidArgument(
            argument, f"must be seconds (int or float) or a timedelta, got {value!r}"
        )
    if result < 0 or (result == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArgument(argument, f"must be {bound} seconds, got {value!r}")
    if result > LONGEST_WAIT:
        raise InvalidArgument(
            argument, f"must be at most {LONGEST_WAIT:.0f} seconds, got {value!r}"
        )
    return result


def whole_seconds(value: object, argument: str) -> int:
    """Return a visibility timeout or delay as whole seconds (int or ``timedelta``).

    PGMQ takes these as ``integer`` seconds; a ``timedelta`` is rounded up so a timeout
    is never shorter than asked.

    Raises:
        InvalidArgument: If negative, fractional (for plain numbers), or too large.
    """
    if isinstance(value, timedelta):
        total = value.total_seconds()
        if total < 0:
            raise InvalidArgument(argument, f"must be >= 0 seconds, got {value!r}")
        result = math.ceil(total)
    elif _is_int(value):
        result = value  # type: ignore[assignment]
        if result < 0:
            raise InvalidArgument(argument, f"must be >= 0 seconds, got {value!r}")
    else:
        raise InvalidArgument(
            argument, f"must be whole seconds (int) or a timedelta, got {value!r}"
        )
    if result > MAX_INT4:
        raise InvalidArgument(argument, f"must be at most {MAX_INT4} seconds, got {value!r}")
    return result


def _jsonb_unstorable(value: object) -> str | None:
    """Describe the first string jsonb cannot store (NUL), or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return f"strings may not contain NUL (\\u0000), which jsonb cannot store: {item!r}"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def check_body(body: object, argument: str = "body") -> str:
    """Serialize a message body to JSON text that PostgreSQL's ``jsonb`` accepts.

    Raises:
        InvalidArgument: If the body is not JSON-serializable, holds NaN/Infinity, a NUL
            character or a lone surrogate (all of which jsonb rejects).
    """
    try:
        text = json.dumps(body, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(
            argument, "must be valid Unicode: it holds a lone surrogate, which jsonb rejects"
        ) from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgument(argument, f"must be JSON-serializable: {exc}") from None
    if "\\u0000" in text:
        problem = _jsonb_unstorable(body)
        if problem is not None:
            raise InvalidArgument(argument, problem)
    return text


def check_headers(headers: object, argument: str = "headers") -> str | None:
    """Serialize message headers (a JSON object or ``None``) to JSON text.

    Raises:
        InvalidArgument: If headers are not a mapping with string keys, or not serializable.
    """
    if headers is None:
        return None
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) for k in headers):
        raise InvalidArgument(argument, f"must be a dict with str keys or None, got {headers!r}")
    return check_body(dict(headers), argument)
