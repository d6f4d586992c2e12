"""asyncio: an async PGMQ client, and ``async for`` over any Observable with demand kept.

Example:
    >>> async with AsyncPGMQ(dsn) as client:  # doctest: +SKIP
    ...     await client.send("orders", {"id": 1})
    >>> async for message in rx_pgmq.read_queue(dsn, "orders", visibility_timeout=30):
    ...     await handle(message.body)  # doctest: +SKIP
    ...     await message.asettle()
"""

from rx_pgmq._consumer._iterate import iterate
from rx_pgmq._pg._aclient import AsyncConninfo, AsyncPGMQ

__all__ = ["AsyncConninfo", "AsyncPGMQ", "iterate"]
