"""Topic routing keys and binding patterns, checked by PGMQ's own rules (no I/O).

PGMQ 1.11+ routes a message sent with a routing key (``logs.api.error``) to every queue
bound with a matching pattern (``logs.*.error``, ``logs.#``): ``*`` matches one
dot-separated segment, ``#`` any number of them. The rules below are those of
``pgmq.validate_routing_key`` and ``pgmq.validate_topic_pattern`` (PGMQ 1.13), applied
before any SQL so a bad key is an :class:`~rx_pgmq.errors.InvalidArgument` naming the
argument, not a server exception.
"""

from __future__ import annotations

import re

from rx_pgmq.errors import InvalidArgument

__all__ = ["MAX_TOPIC_LENGTH", "check_routing_key", "check_topic_pattern"]

MAX_TOPIC_LENGTH = 255
"""Longest routing key or pattern PGMQ accepts."""

_KEY_CHARS = re.compile(r"[a-zA-Z0-9._-]+")
_PATTERN_CHARS = re.compile(r"[a-zA-Z0-9._\-*#]+")


def _check_common(value: object, argument: str, what: str, chars: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(argument, f"must be a non-empty string, got {value!r}")
    if len(value) > MAX_TOPIC_LENGTH:
        raise InvalidArgument(
            argument, f"is {len(value)} characters long; at most {MAX_TOPIC_LENGTH} allowed"
        )
    if chars.fullmatch(value) is None:
        allowed = "letters, digits, '.', '-', '_'" + (", '*', '#'" if "#" in what else "")
        raise InvalidArgument(argument, f"may only hold {allowed}; got {value!r}")
    if value.startswith(".") or value.endswith("."):
        raise InvalidArgument(argument, f"may not start or end with a dot; got {value!r}")
    if ".." in value:
        raise InvalidArgument(argument, f"may not hold an empty segment (..); got {value!r}")
    return value


def check_routing_key(value: object, argument: str = "routing_key") -> str:
    """Return ``value`` if it is a routing key PGMQ accepts (``logs.api.error``).

    Dot-separated segments of ASCII letters, digits, ``-`` and ``_``; no wildcards; at
    most 255 characters.

    Raises:
        InvalidArgument: Otherwise.
    """
    return _check_common(value, argument, "routing key", _KEY_CHARS)


def check_topic_pattern(value: object, argument: str = "pattern") -> str:
    """Return ``value`` if it is a binding pattern PGMQ accepts (``logs.*.error``, ``#``).

    Like a routing key, plus the wildcards ``*`` (one segment) and ``#`` (any number of
    segments), never doubled (``**``, ``##``) or adjacent (``*#``, ``#*``).

    Raises:
        InvalidArgument: Otherwise.
    """
    pattern = _check_common(value, argument, "pattern (*, #)", _PATTERN_CHARS)
    for pair, why in (
        ("**", "use # to match several segments"),
        ("##", "one # already matches any number of segments"),
        ("*#", "separate wildcards with dots"),
        ("#*", "separate wildcards with dots"),
    ):
        if pair in pattern:
            raise InvalidArgument(argument, f"may not contain {pair!r} ({why}); got {pattern!r}")
    return pattern
