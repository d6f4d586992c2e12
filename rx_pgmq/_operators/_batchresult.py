"""What a ``process_batch`` handler returned, as one Outcome per message (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rx_pgmq._values._outcome import Outcome, success_of
from rx_pgmq.errors import RxPgmqError
from rx_pgmq.message import Message

__all__ = ["InvalidBatchResult", "outcomes_of"]


class InvalidBatchResult(RxPgmqError, ValueError):
    """A ``process_batch`` handler returned results that do not match its group.

    It is the error of the outcomes it fails (the whole group, or a message missing from a
    mapping), never a stream error: the stream goes on.
    """

    __module__ = "rx_pgmq.operators"


def outcomes_of(messages: list[Message], result: Any) -> list[Outcome]:
    """The outcomes of ``messages`` from what a batch handler returned (see process_batch).

    Never raises: a result that does not match the group fails its messages with
    :class:`InvalidBatchResult`.
    """
    if isinstance(result, Mapping):
        return _from_mapping(messages, result)
    if isinstance(result, list):
        if len(result) != len(messages):
            error = InvalidBatchResult(
                f"process_batch: fn returned a list of {len(result)} results for a group of "
                f"{len(messages)} messages; return one result per message in order, a "
                "mapping of msg_id to result or exception, or a non-list value for all"
            )
            return [Outcome(m, False, error=error) for m in messages]
        return [_one(m, r) for m, r in zip(messages, result, strict=True)]
    return [success_of(m, result) for m in messages]


def _from_mapping(messages: list[Message], result: Mapping[Any, Any]) -> list[Outcome]:
    ids = {m.msg_id for m in messages}
    unknown = [k for k in result if k not in ids]
    if unknown:
        error = InvalidBatchResult(
            f"process_batch: fn's mapping names {len(unknown)} key(s) that are not msg_ids "
            f"of its group: {unknown[:5]!r:.200}; key the mapping by message.msg_id"
        )
        return [Outcome(m, False, error=error) for m in messages]
    outcomes = []
    for m in messages:
        if m.msg_id in result:
            outcomes.append(_one(m, result[m.msg_id]))
        else:
            error = InvalidBatchResult(
                f"process_batch: fn's mapping has no entry for msg_id {m.msg_id}; give "
                "every message of the group a result or an exception"
            )
            outcomes.append(Outcome(m, False, error=error))
    return outcomes


def _one(message: Message, result: Any) -> Outcome:
    if isinstance(result, BaseException):
        return Outcome(message, False, error=result)
    if isinstance(result, Outcome):
        if result.message.msg_id == message.msg_id:
            return result
        error = InvalidBatchResult(
            f"process_batch: fn returned an Outcome of msg_id {result.message.msg_id} as "
            f"the result of msg_id {message.msg_id}"
        )
        return Outcome(message, False, error=error)
    return success_of(message, result)
