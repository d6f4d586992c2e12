"""Outcome, succeeded/failed, Settled and the in-memory test doubles (no I/O)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest
from reactivex.testing import TestScheduler

import rx_pgmq
from rx_pgmq import Outcome, Settled, failed, succeeded
from rx_pgmq._values._outcome import as_outcome, settled_of, success_of
from rx_pgmq._values._slots import slot_setters
from rx_pgmq.actions import Archive, Delete, MoveTo, Nothing, SetVisibilityTimeout
from rx_pgmq.errors import InvalidArgument, NotAcknowledgeable, RxPgmqError
from rx_pgmq.operators import NotAnOutcome
from rx_pgmq.testing import RecordingAcknowledger, make_message


def test_succeeded_carries_the_value_and_no_error() -> None:
    """succeeded(m, v) is ok, keeps v, has no error, no reason and no override."""
    m = make_message({"id": 1})
    outcome = succeeded(m, {"total": 3})
    assert outcome == Outcome(m, True, {"total": 3})
    assert outcome.ok and outcome.value == {"total": 3}
    assert outcome.error is None and outcome.reason is None and outcome.ack is None


def test_failed_with_an_exception_keeps_it_and_its_text_is_the_reason() -> None:
    """failed(m, exc) keeps the exception; reason is str(exc)."""
    m = make_message()
    exc = ValueError("bad total")
    outcome = failed(m, exc)
    assert not outcome.ok and outcome.error is exc and outcome.reason == "bad total"


def test_failed_with_an_empty_exception_uses_its_class_name_as_reason() -> None:
    """An exception with no text gives its class name as reason (never an empty string)."""
    assert failed(make_message(), KeyError()).reason == "KeyError"


def test_failed_with_a_string_reason_has_no_error() -> None:
    """failed(m, "text") records the text as reason and no exception."""
    outcome = failed(make_message(), "customer unknown")
    assert not outcome.ok and outcome.error is None and outcome.reason == "customer unknown"


def test_failures_with_different_reasons_are_different() -> None:
    """Outcome equality includes a string reason (and repr shows it)."""
    m = make_message()
    assert failed(m, "a") != failed(m, "b") and failed(m, "a") == failed(m, "a")
    assert "'a'" in repr(failed(m, "a"))


def test_failed_rejects_a_reason_that_is_neither_exception_nor_text() -> None:
    """failed(m, 42) raises InvalidArgument('reason')."""
    with pytest.raises(InvalidArgument) as info:
        failed(make_message(), 42)  # type: ignore[arg-type]
    assert info.value.argument == "reason"


def test_with_ack_returns_a_copy_with_the_override() -> None:
    """with_ack sets the override on a copy; the original is unchanged."""
    outcome = succeeded(make_message())
    archived = outcome.with_ack(Archive())
    assert archived.ack == Archive() and outcome.ack is None
    assert archived.message is outcome.message and archived.ok


def test_with_ack_keeps_the_string_reason() -> None:
    """Overriding the ack of a failure built from a string keeps its reason."""
    outcome = failed(make_message(), "nope").with_ack(MoveTo("dlq"))
    assert outcome.reason == "nope" and outcome.ack == MoveTo("dlq")


@pytest.mark.parametrize("bad", [None, "delete", Delete, 3])
def test_with_ack_rejects_non_actions(bad: Any) -> None:
    """with_ack of something that is not an action instance raises InvalidArgument."""
    with pytest.raises(InvalidArgument):
        succeeded(make_message()).with_ack(bad)


def test_outcome_validates_its_fields() -> None:
    """A non-Message, a non-bool ok, a success with an error or a bad ack are rejected."""
    m = make_message()
    with pytest.raises(InvalidArgument):
        Outcome({"id": 1}, True)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Outcome(m, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Outcome(m, True, error=ValueError("x"))
    with pytest.raises(InvalidArgument):
        Outcome(m, False, error="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Outcome(m, False, ack="archive")  # type: ignore[arg-type]


def test_outcome_is_frozen() -> None:
    """Outcomes are immutable values."""
    outcome = succeeded(make_message())
    with pytest.raises(FrozenInstanceError):
        outcome.ok = False  # type: ignore[misc]


def test_as_outcome_turns_a_message_into_a_success() -> None:
    """A plain Message counts as a success; an Outcome passes through; anything else fails."""
    m = make_message()
    assert as_outcome(m) == succeeded(m)
    outcome = failed(m, "x")
    assert as_outcome(outcome) is outcome
    with pytest.raises(NotAnOutcome) as info:
        as_outcome({"id": 1})
    assert isinstance(info.value, RxPgmqError) and isinstance(info.value, TypeError)
    assert "read_queue" in str(info.value)


def test_settled_exposes_message_ok_error_and_reason() -> None:
    """Settled's properties read through to its outcome."""
    m = make_message()
    exc = RuntimeError("down")
    record = Settled(failed(m, exc), SetVisibilityTimeout(5), "acked")
    assert record.message is m and not record.ok and record.error is exc
    assert record.reason == "down" and record.acked
    assert not Settled(succeeded(m), Delete(), "unacked").acked


def test_public_names_are_exported() -> None:
    """rx_pgmq exports Outcome, Settled, failed and succeeded."""
    for name in ("Outcome", "Settled", "failed", "succeeded"):
        assert name in rx_pgmq.__all__ and hasattr(rx_pgmq, name)


def test_recording_acknowledger_records_and_resolves_at_once() -> None:
    """The double records action and reason and resolves to its status immediately."""
    acker = RecordingAcknowledger("lost_lease")
    m = make_message(acknowledger=acker)
    assert m.settle(Nothing(), reason="later").result(timeout=0) == "lost_lease"
    assert [(r.message, r.action, r.reason) for r in acker.requests] == [(m, Nothing(), "later")]


def test_recording_acknowledger_resolves_after_a_virtual_delay() -> None:
    """With a scheduler and delay, futures resolve only when virtual time reaches the delay."""
    scheduler = TestScheduler()
    acker = RecordingAcknowledger(scheduler=scheduler, delay=5.0)
    future = make_message(acknowledger=acker).settle()
    scheduler.advance_to(4.9)
    assert not future.done()
    scheduler.advance_to(5.0)
    assert future.result(timeout=0) == "acked"


def test_recording_acknowledger_manual_mode_resolves_on_request() -> None:
    """auto=False leaves futures open until resolve(status)."""
    acker = RecordingAcknowledger(auto=False)
    futures = [make_message(acknowledger=acker).settle() for _ in range(3)]
    assert not any(f.done() for f in futures)
    assert acker.resolve("unacked") == 3
    assert [f.result(timeout=0) for f in futures] == ["unacked"] * 3
    assert acker.resolve() == 0


def test_make_message_without_acknowledger_is_not_acknowledgeable() -> None:
    """A message without an acknowledger raises NotAcknowledgeable on settle."""
    m = make_message(msg_id=7, read_ct=2, queue="orders", headers={"k": "v"})
    assert (m.msg_id, m.read_ct, m.queue, m.headers) == (7, 2, "orders", {"k": "v"})
    assert not m.acknowledgeable
    with pytest.raises(NotAcknowledgeable):
        m.settle()


@pytest.mark.parametrize("value", [None, 0, ("total", 3), "x"])
def test_success_of_builds_the_same_outcome_as_the_checked_constructor(value: Any) -> None:
    """process' fast constructor gives an Outcome equal, field by field, to
    Outcome(message, True, value), and it is frozen like any other."""
    message = make_message(7)
    fast, checked = success_of(message, value), Outcome(message, True, value)
    assert fast == checked and hash(fast) == hash(checked) and repr(fast) == repr(checked)
    assert (fast.ok, fast.value, fast.error, fast.ack, fast.reason) == (
        True,
        value,
        None,
        None,
        None,
    )
    with pytest.raises(FrozenInstanceError):
        fast.ok = False  # type: ignore[misc]


@pytest.mark.parametrize("status", ["acked", "unacked", "lost_lease", "ignored"])
def test_settled_of_builds_the_same_record_as_the_dataclass_constructor(status: Any) -> None:
    """The ack operators' fast constructor gives a Settled equal, field by field, to
    Settled(outcome, action, status), and it is frozen like any other."""
    outcome = failed(make_message(3), "bad")
    fast, checked = settled_of(outcome, Archive(), status), Settled(outcome, Archive(), status)
    assert fast == checked and hash(fast) == hash(checked) and repr(fast) == repr(checked)
    assert (fast.message, fast.ok, fast.reason, fast.acked) == (
        outcome.message,
        False,
        "bad",
        status == "acked",
    )
    with pytest.raises(FrozenInstanceError):
        fast.status = "acked"  # type: ignore[misc]


def test_slot_setters_refuse_a_field_list_that_does_not_match_the_class() -> None:
    """The fast constructors' setters come only for the exact fields of the class, in
    order, so a changed dataclass fails at import instead of half-filling instances."""
    setters = slot_setters(Settled, ("outcome", "action", "status"))
    assert len(setters) == 3
    with pytest.raises(RuntimeError, match="Settled fields are"):
        slot_setters(Settled, ("outcome", "status", "action"))
    with pytest.raises(RuntimeError, match="update the code"):
        slot_setters(Settled, ("outcome", "action"))
