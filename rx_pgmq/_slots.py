"""Building frozen slotted dataclasses on hot paths, one slot at a time (no I/O).

A frozen dataclass ``__init__`` sets each field through ``object.__setattr__``; where one
instance is built per message from values known to be valid, setting the slots directly
costs about half. :func:`slot_setters` hands out those setters and refuses to if the
class's fields are not the ones the caller lists, so a changed class fails at import
instead of building half-filled instances.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

__all__ = ["slot_setters"]


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
