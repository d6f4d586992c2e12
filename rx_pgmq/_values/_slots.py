"""The hot path's performance tricks, in one place (no I/O).

The path read -> emit -> settle -> ack batching runs once per message, so a few things on
it are done in a less obvious way than elsewhere. Each one here says what it buys; the
measurements are in BENCHMARKS.md ("Python time per message", both parts):

- :func:`slot_setters` (and :func:`slot_setter`): a frozen dataclass built per message
  (``Message`` per read row, ``Outcome`` and ``Settled`` per processed message) is filled
  through its slots instead of its ``__init__``, which calls ``object.__setattr__`` once
  per field: about half the cost. It refuses a field list that does not match the class,
  so a changed class fails at import instead of building half-filled instances.
- :data:`new_tuple` (``tuple.__new__``): a settle request (``_ackbatch.Pending``, a named
  tuple) is built without the named tuple's own Python ``__new__``: one call less per
  message.
- :func:`decode_json_text`: the body and headers of a read come as JSON text and are
  decoded by the ``json`` scanner directly, without ``decode``'s whitespace matches and
  two Python frames (PostgreSQL prints jsonb without surrounding whitespace).
- A dropped message is noticed by its own finalizer (``Message.__del__`` calls the hook
  the consumer set in its ``_on_drop`` slot when it emitted it, and cleared when a settle
  of it was queued) instead of a weak reference with a callback and a dict entry per
  message: a settled message costs one attribute test on its way out.
- Elsewhere, each with a pointer back here: statements rendered to bytes once
  (``_sql.rendered``), ids sent as one ``bigint[]`` literal (``_sql.id_array``), and the
  second settle API without a ``Future`` per message (``Consumer.settle_callback``, used
  by the ack operators).
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Final, cast

__all__ = ["decode_json_text", "new_tuple", "slot_setter", "slot_setters"]

new_tuple: Final = tuple.__new__
"""``tuple.__new__``: ``new_tuple(Pending, (...))`` builds a named tuple in one C call."""

_DECODE: Final = json.JSONDecoder().decode
"""``json.loads`` for a ``str`` without its argument checks (the same decoder settings)."""
_SCAN: Final = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))
"""The decoder's scanner: ``(value, end) = _SCAN(text, index)``."""


def slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The slot setter of the field ``name`` of dataclass ``cls`` (``slots=True``).

    Raises:
        RuntimeError: If ``cls`` has no such field.
    """
    if name not in {f.name for f in fields(cls)}:
        raise RuntimeError(f"{cls.__name__} has no field {name!r}")
    return cast("Callable[[Any, Any], None]", getattr(cls, name).__set__)


def slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    """The slot setters of dataclass ``cls``'s fields, in the order of ``names``.

    Args:
        cls: A dataclass with ``slots=True``.
        names: All of its field names, in declaration order.

    Raises:
        RuntimeError: If ``names`` are not exactly the fields of ``cls``.
    """
    actual = tuple(f.name for f in fields(cls))
    if actual != names:
        raise RuntimeError(
            f"{cls.__name__} fields are {actual}, not {names}: update the code that builds "
            f"{cls.__name__} through slot_setters"
        )
    return tuple(getattr(cls, name).__set__ for name in names)


def decode_json_text(text: str) -> Any:
    """``json.loads(text)`` for the text PostgreSQL prints for a jsonb value.

    That text has no whitespace around the value, so the decoder's scanner is called
    directly. Any other text (never seen from the server) goes through ``json.loads``'s own
    path, which also raises its usual errors.
    """
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return _DECODE(text)  # raises JSONDecodeError for invalid text
    if end != len(text):
        return _DECODE(text)
    return value
