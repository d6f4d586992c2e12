"""The message header keys PGMQ and rx_pgmq give a meaning to.

A message's ``headers`` is a JSON object (or None) stored beside its body; PGMQ copies it
unchanged through reads, ``set_vt``, archiving and topic routing. ``PGMQ.send`` and
``send_batch`` accept a ``dict`` with ``str`` keys and JSON values only (anything else is
``InvalidArgument`` before any SQL); ``Message.headers`` returns it as a ``dict``.

Conventions:

- ``x-pgmq-…``: read by PGMQ itself. Today only :data:`GROUP`.
- ``x-rx-pgmq-…``: written by rx_pgmq: :data:`MOVED` and :data:`ORIGINAL_HEADERS`.
- Any other key is yours; rx_pgmq never reads or changes it.

Example:
    >>> from rx_pgmq import headers
    >>> client.send("orders", {"id": 1}, headers={headers.GROUP: "customer-42"})
    ... # doctest: +SKIP
"""

from __future__ import annotations

from typing import Final

__all__ = ["GROUP", "MOVED", "ORIGINAL_HEADERS", "PGMQ_PREFIX", "RX_PGMQ_PREFIX"]

PGMQ_PREFIX: Final = "x-pgmq-"
"""Keys PGMQ reads."""

RX_PGMQ_PREFIX: Final = "x-rx-pgmq-"
"""Keys rx_pgmq writes."""

GROUP: Final = "x-pgmq-group"
"""The FIFO group of a message (a string). ``read_grouped*`` and
``ReadOptions(fifo=...)`` read a group's messages in ``msg_id`` order and never one while
an earlier message of its group is invisible; messages without it share one default
group."""

MOVED: Final = "x-rx-pgmq-moved"
"""Added by the ``MoveTo(queue)`` action to the copy it sends:
``{"from": <source queue>, "reason": <failure text or null>, "attempts": <read_ct>}``.
Other headers of the message are kept."""

ORIGINAL_HEADERS: Final = "x-rx-pgmq-original-headers"
"""Added by ``MoveTo(queue)`` when the message's headers were not a JSON object (a JSON
array or scalar, or headers Python could not decode): those headers, as stored, so a move
never fails or loses what a producer wrote."""
