"""``with`` for the objects that hold connections or a server: leaving it calls ``close``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """A context manager whose ``__exit__`` calls :meth:`close` (``__enter__`` returns it).

    Mixed into the client, the listener and the embedded server's handle.
    """

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError  # pragma: no cover - every user overrides it

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
