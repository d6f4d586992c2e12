"""Argument validation shared by every public entry point (no I/O)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta

from rx_pgmq.errors import InvalidArgument

__all__ = [
    "LONGEST_WAIT",
    "MAX_INT4",
    "MAX_INT8",
    "MAX_JSONB_BYTES",
    "QUEUE_NAME_RULE",
    "check_batch",
    "check_body",
    "check_bool",
    "check_conditional",
    "check_headers",
    "check_msg_id",
    "check_msg_ids",
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


MAX_JSONB_BYTES = 0x0FFF_FFFF
"""Largest jsonb value PostgreSQL stores (268,435,455 bytes, about 255 MB): bigger bodies
are refused before sending, measured as encoded UTF-8 JSON text."""

# What json.dumps writes for a dict key that is not a str (int, float, bool, None), with
# our separators: a quoted number, true, false or null followed by ':'. A str key can look
# the same ("1"), so a match only means "walk the value to be sure"; no match proves every
# key is a str, at the cost of one C-level scan of the text.
_CONVERTED_KEY = re.compile(r'"(?:-?[0-9][0-9.eE+-]*|true|false|null)":')


def _non_str_key(value: object) -> object:
    """The first dict key in ``value`` that is not a str (``_NO_KEY`` if none)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    return key
            stack.extend(v for v in item.values() if isinstance(v, dict | list | tuple))
        elif isinstance(item, list | tuple):
            stack.extend(v for v in item if isinstance(v, dict | list | tuple))
    return _NO_KEY


_NO_KEY = object()


def check_body(body: object, argument: str = "body") -> str:
    """Serialize a message body to JSON text that PostgreSQL's ``jsonb`` accepts.

    Raises:
        InvalidArgument: If the body is not JSON-serializable, holds NaN/Infinity, a NUL
            character or a lone surrogate (all of which jsonb rejects), a dict key that is
            not a str (JSON would turn ``1`` into ``"1"``, so ``{1: "a", "1": "b"}`` would
            silently keep one value), or is larger than :data:`MAX_JSONB_BYTES` encoded.
    """
    try:
        text = json.dumps(body, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(
            argument, "must be valid Unicode: it holds a lone surrogate, which jsonb rejects"
        ) from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgument(argument, f"must be JSON-serializable: {exc}") from None
    if size > MAX_JSONB_BYTES:
        raise InvalidArgument(
            argument,
            f"is {size:,} bytes as JSON; PostgreSQL's jsonb holds at most "
            f"{MAX_JSONB_BYTES:,} bytes (about 255 MB): store large payloads elsewhere and "
            "send a reference",
        )
    if _CONVERTED_KEY.search(text) is not None:
        key = _non_str_key(body)
        if key is not _NO_KEY:
            raise InvalidArgument(
                argument,
                f"dict keys must be str, got {key!r} ({type(key).__name__}); JSON would "
                "store it as a string, which may silently replace another key",
            )
    if "\\u0000" in text:
        problem = _jsonb_unstorable(body)
        if problem is not None:
            raise InvalidArgument(argument, problem)
    return text


def check_bool(value: object, argument: str) -> bool:
    """Return ``value`` if it is a real bool (``"false"`` is truthy, so it is refused).

    Raises:
        InvalidArgument: Otherwise.
    """
    if not isinstance(value, bool):
        raise InvalidArgument(argument, f"must be a bool (True or False), got {value!r}")
    return value


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


def check_msg_id(value: object, argument: str = "msg_id") -> int:
    """Return ``value`` if it is a message id (an int from 1 to :data:`MAX_INT8`).

    Raises:
        InvalidArgument: Otherwise.
    """
    if not _is_int(value) or not 1 <= value <= MAX_INT8:  # type: ignore[operator]
        raise InvalidArgument(argument, f"must be an int >= 1 (at most {MAX_INT8}), got {value!r}")
    return value  # type: ignore[return-value]


def check_msg_ids(value: object, argument: str = "msg_ids") -> list[int]:
    """Return a sequence of message ids as a list (it may be empty).

    Raises:
        InvalidArgument: If ``value`` is not a sequence of ints >= 1.
    """
    if isinstance(value, int | str | bytes) or not isinstance(value, Sequence):
        raise InvalidArgument(argument, f"must be a list of message ids, got {value!r}")
    ids = list(value)
    for i in ids:
        if not _is_int(i) or not 1 <= i <= MAX_INT8:
            raise InvalidArgument(
                argument, f"message ids must be ints >= 1 (at most {MAX_INT8}), got {i!r}"
            )
    return ids


def check_conditional(value: object) -> str:
    """A read's ``conditional`` filter (a dict, or ``None`` for none) as JSON text.

    Raises:
        InvalidArgument: If it is neither.
    """
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise InvalidArgument(
            "conditional", f"must be a dict (jsonb filter) or None, got {value!r}"
        )
    return check_body(dict(value), "conditional")


def check_batch(bodies: object, headers: object) -> tuple[list[str], list[str] | None]:
    """The JSON texts of a batch's bodies and headers (``send_batch``).

    Returns:
        The bodies, and one headers text per body (``"null"`` where a body has none), or
        ``None`` when no body has headers.

    Raises:
        InvalidArgument: If ``bodies`` is not a non-empty list of JSON values, or
            ``headers`` is not ``None`` or a list of one JSON object (or ``None``) per body.
    """
    if isinstance(bodies, str | bytes | Mapping) or not isinstance(bodies, Sequence):
        raise InvalidArgument("bodies", f"must be a list of message bodies, got {bodies!r}")
    if not bodies:
        raise InvalidArgument("bodies", "must hold at least one message body")
    texts = [check_body(b, f"bodies[{i}]") for i, b in enumerate(bodies)]
    if headers is None:
        return texts, None
    if isinstance(headers, str | bytes | Mapping) or not isinstance(headers, Sequence):
        raise InvalidArgument("headers", "must be a list with one entry per body, or None")
    if len(headers) != len(bodies):
        raise InvalidArgument("headers", f"has {len(headers)} entries for {len(bodies)} bodies")
    heads = [check_headers(h, f"headers[{i}]") for i, h in enumerate(headers)]
    if all(h is None for h in heads):
        return texts, None
    return texts, [h if h is not None else "null" for h in heads]
