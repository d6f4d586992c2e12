"""One client call as a plan, free of I/O: the statements it runs and how their rows become
its result, shared by the sync and the asyncio client (as psycopg's ``generators.py``
serve its sync and async connections).

A planner (e.g. :func:`rx_pgmq._pg._calls.read`) checks its arguments at once, before any
SQL, and returns a :class:`Call`: the queue it is about (for the named errors) and a
generator that yields each :class:`Step` and is sent back its :class:`Fetched` rows (or
a :class:`Done` when there is nothing to run). The clients' executors
(``ClientAPI._run``, ``AsyncClientAPI._run``) run every step in one transaction; an
exception the plan raises rolls it back.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeAlias, TypeVar

from psycopg import sql

from rx_pgmq._pg import _sql
from rx_pgmq._values._bodytype import decode_messages
from rx_pgmq.errors import QueueNotFound
from rx_pgmq.message import Message

__all__ = [
    "Call",
    "Done",
    "Fetched",
    "Headers",
    "Plan",
    "Runnable",
    "Sending",
    "Step",
    "exists",
    "flag",
    "messages",
    "one",
    "rows",
    "run",
]

T = TypeVar("T")
Query: TypeAlias = str | sql.Composed
Headers: TypeAlias = Mapping[str, Any] | None


class Step(NamedTuple):
    """One statement of a call and its bound parameters."""

    statement: Query
    params: tuple[Any, ...] = ()


class Fetched(NamedTuple):
    """What a step returned: its rows, and the connection's jsonb loads (for messages)."""

    rows: list[Any]
    loads: Callable[[str], Any]


Plan: TypeAlias = Generator[Step, Fetched, T]
"""Yields the steps of a call, is sent their rows, returns the call's result."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """A checked call: the queue it is about (``None``: none) and its plan."""

    queue: str | None
    plan: Plan[T]


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """A checked call with nothing to run (e.g. acks of no ids): its result, answered
    without a connection."""

    value: T


Runnable: TypeAlias = Call[T] | Done[T]
"""What a planner returns and an executor runs."""


@dataclass(frozen=True, slots=True)
class Sending:
    """A checked send: what the telemetry hooks see, and the call for their headers.

    ``call(None)`` sends with the headers given; ``call(traced)`` with the ones the hooks
    pass (trace context added).
    """

    queue: str
    headers: list[Headers]
    call: Callable[[list[Headers] | None], Call[list[int]]]


def rows(step: Step) -> Plan[list[Any]]:
    """Every row of one statement."""
    fetched = yield step
    return fetched.rows


def run(*steps: Step) -> Plan[None]:
    """Statements whose rows do not matter."""
    for step in steps:  # noqa: UP028 - `yield from` a tuple fails on send()
        yield step


def flag(step: Step) -> Plan[bool]:
    """The first column of one statement's first row as a bool (False if no row)."""
    return bool((yield from one(step)))


def one(step: Step) -> Plan[Any]:
    """The first column of the first row of one statement (``None`` if no row)."""
    fetched = yield step
    return fetched.rows[0][0] if fetched.rows else None


def exists(queue: str) -> Plan[None]:
    """Raise :class:`~rx_pgmq.errors.QueueNotFound` unless ``queue`` exists."""
    if not (yield from one(Step(_sql.QUEUE_EXISTS, (queue,)))):
        raise QueueNotFound(queue)


def messages(
    queue: str,
    step: Step,
    decode: Callable[[Any], T] | None = None,
    *,
    in_order: bool = False,
) -> Plan[list[Message[T]]]:
    """The messages a statement returns (JSON text columns, :data:`_sql.TEXT_COLUMNS`),
    each body decoded with ``decode``.

    Raises:
        DecodeError: The first message whose body or headers cannot be decoded; raised
            inside the call's transaction, so the statement is rolled back (nothing is
            claimed, popped or changed).
        BodyMismatch: If a body does not fit ``decode``'s type (rolled back likewise).
    """
    fetched = yield step
    msgs = _sql.messages_from_rows(fetched.rows, queue, loads=fetched.loads, in_order=in_order)
    for m in msgs:
        if m.decode_error is not None:
            raise m.decode_error
    return decode_messages(msgs, decode)
