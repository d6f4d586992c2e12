"""Ack policies: resolve, max_attempts, backoff (no I/O; unit tests and hypothesis)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rx_pgmq import Outcome, failed, succeeded
from rx_pgmq.actions import Action, Archive, Delete, MoveTo, Nothing, SetVisibilityTimeout
from rx_pgmq.errors import InvalidArgument, RxPgmqError
from rx_pgmq.operators import Policy, PolicyError, backoff, max_attempts, resolve
from rx_pgmq.testing import make_message

ACTION_CLASSES = (Delete, Archive, Nothing, SetVisibilityTimeout, MoveTo)

actions: st.SearchStrategy[Action] = st.one_of(
    st.just(Delete()),
    st.just(Archive()),
    st.just(Nothing()),
    st.integers(0, 10_000).map(SetVisibilityTimeout),
    st.sampled_from(["dlq", "errors", "q_2"]).map(MoveTo),
)


@st.composite
def outcomes(draw: st.DrawFn) -> Outcome:
    """Any outcome: success or failure, any read count, with or without an override."""
    message = make_message(
        draw(st.integers()), msg_id=draw(st.integers(1, 2**62)), read_ct=draw(st.integers(1, 10**6))
    )
    reasons: list[BaseException | str] = [ValueError("x"), "reason"]
    outcome = (
        succeeded(message, draw(st.integers()))
        if draw(st.booleans())
        else failed(message, draw(st.sampled_from(reasons)))
    )
    override = draw(st.none() | actions)
    return outcome if override is None else outcome.with_ack(override)


policies: st.SearchStrategy[Policy] = st.one_of(
    actions,
    st.builds(max_attempts, st.integers(1, 20), actions, actions),
    st.builds(backoff, st.integers(0, 100), st.floats(1, 10), st.integers(100, 100_000)),
    st.builds(
        lambda n, b: max_attempts(n, then=MoveTo("dlq"), otherwise=backoff(b)),
        st.integers(1, 20),
        st.integers(0, 60),
    ),
    st.tuples(actions, actions).map(lambda pair: lambda o: pair[0] if o.ok else pair[1]),
)


# -- resolve ---------------------------------------------------------------------------


@given(outcomes(), policies)
def test_every_outcome_gets_exactly_one_action(outcome: Outcome, policy: Policy) -> None:
    """resolve returns one action instance for any outcome and policy, deterministically."""
    action = resolve(policy, outcome)
    assert isinstance(action, ACTION_CLASSES)
    assert resolve(policy, outcome) == action


@given(outcomes(), policies, actions)
def test_an_override_always_wins(outcome: Outcome, policy: Policy, override: Action) -> None:
    """An outcome's with_ack override is the action, whatever the policy."""
    assert resolve(policy, outcome.with_ack(override)) == override


@given(outcomes(), actions)
def test_an_action_policy_applies_to_every_outcome_without_override(
    outcome: Outcome, action: Action
) -> None:
    """A plain action as policy is the action of every outcome that has no override."""
    expected = outcome.ack if outcome.ack is not None else action
    assert resolve(action, outcome) == expected


def test_an_override_wins_without_calling_the_policy() -> None:
    """With an override the policy function is not even called."""
    calls: list[Outcome] = []

    def policy(o: Outcome) -> Action:
        calls.append(o)
        return Delete()

    assert resolve(policy, failed(make_message(), "x").with_ack(Nothing())) == Nothing()
    assert calls == []


@pytest.mark.parametrize("bad", [None, "delete", Delete, 0])
def test_a_policy_returning_a_non_action_raises_policy_error(bad: Any) -> None:
    """A policy function returning something that is not an action raises PolicyError."""
    with pytest.raises(PolicyError) as info:
        resolve(lambda o: bad, succeeded(make_message(msg_id=42, queue="orders")))
    error = info.value
    assert isinstance(error, RxPgmqError) and isinstance(error, TypeError)
    assert "42" in str(error) and "'orders'" in str(error) and "must return an action" in str(error)


# -- max_attempts ----------------------------------------------------------------------


@given(st.integers(1, 50), st.integers(1, 100), actions, actions)
def test_max_attempts_switches_at_read_ct_n(
    n: int, read_ct: int, then: Action, otherwise: Action
) -> None:
    """read_ct >= n gets `then`, earlier reads get `otherwise`."""
    outcome = failed(make_message(read_ct=read_ct), "boom")
    assert max_attempts(n, then, otherwise)(outcome) == (then if read_ct >= n else otherwise)


def test_max_attempts_defaults_are_archive_then_nothing() -> None:
    """max_attempts(3): Nothing on reads 1 and 2, Archive from read 3 on."""
    policy = max_attempts(3)
    got = [policy(failed(make_message(read_ct=r), "x")) for r in (1, 2, 3, 4)]
    assert got == [Nothing(), Nothing(), Archive(), Archive()]


def test_max_attempts_branches_may_be_policies() -> None:
    """`otherwise` and `then` accept policies, e.g. backoff before a dead-letter queue."""
    policy = max_attempts(4, then=MoveTo("dlq"), otherwise=backoff(10))
    got = [policy(failed(make_message(read_ct=r), "x")) for r in (1, 2, 3, 4)]
    assert got == [
        SetVisibilityTimeout(10),
        SetVisibilityTimeout(20),
        SetVisibilityTimeout(40),
        MoveTo("dlq"),
    ]


def test_max_attempts_has_a_readable_repr() -> None:
    """The policy's repr shows how it was built (for notebooks and logs)."""
    assert repr(max_attempts(3)) == "max_attempts(3, then=Archive(), otherwise=Nothing())"


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ((0,), "n"),
        ((True,), "n"),
        (("3",), "n"),
        ((3, "archive"), "then"),
        ((3, Archive(), 5), "otherwise"),
    ],
)
def test_max_attempts_validates_its_arguments(args: tuple[Any, ...], argument: str) -> None:
    """A bad n or a branch that is not a policy raises InvalidArgument naming it."""
    with pytest.raises(InvalidArgument) as info:
        max_attempts(*args)
    assert info.value.argument == argument


# -- backoff -----------------------------------------------------------------------------


def _vt(policy: Callable[[Outcome], Action], read_ct: int) -> int:
    action = policy(failed(make_message(read_ct=read_ct), "x"))
    assert isinstance(action, SetVisibilityTimeout)
    return action.vt


def test_backoff_doubles_from_base_and_stops_at_max() -> None:
    """backoff(5, max=60): 5, 10, 20, 40, 60, 60 seconds for reads 1..6."""
    policy = backoff(5, max=60)
    assert [_vt(policy, r) for r in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_backoff_rounds_fractions_up_and_takes_timedeltas() -> None:
    """factor 1.5 from 3 s: 3, 5 (4.5), 7 (6.75); timedelta base and max work."""
    policy = backoff(timedelta(seconds=3), factor=1.5, max=timedelta(minutes=1))
    assert [_vt(policy, r) for r in (1, 2, 3)] == [3, 5, 7]


def test_backoff_survives_huge_read_counts() -> None:
    """A read count far beyond float range gives max, not an OverflowError."""
    assert _vt(backoff(1, max=3600), 2**31 - 1) == 3600
    assert _vt(backoff(1, factor=1, max=3600), 2**31 - 1) == 1


@given(
    st.integers(0, 1000),
    st.floats(1, 100, allow_nan=False),
    st.integers(1000, 10**7),
    st.integers(1, 10**6),
)
def test_backoff_is_monotonic_and_bounded(base: int, factor: float, cap: int, read_ct: int) -> None:
    """Timeouts never shrink with more reads and stay within [base, max]."""
    policy = backoff(base, factor, cap)
    now, later = _vt(policy, read_ct), _vt(policy, read_ct + 1)
    assert base <= now <= later <= cap


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"base": -1}, "base"),
        ({"base": 1.5}, "base"),
        ({"base": 5, "factor": 0.5}, "factor"),
        ({"base": 5, "factor": float("inf")}, "factor"),
        ({"base": 5, "factor": "2"}, "factor"),
        ({"base": 5, "factor": True}, "factor"),
        ({"base": 50, "max": 10}, "max"),
    ],
)
def test_backoff_validates_its_arguments(kwargs: dict[str, Any], argument: str) -> None:
    """Negative or fractional seconds, a factor below 1 and max < base are rejected."""
    with pytest.raises(InvalidArgument) as info:
        backoff(**kwargs)
    assert info.value.argument == argument


def test_backoff_has_a_readable_repr() -> None:
    """The policy's repr shows how it was built."""
    assert repr(backoff(5, max=60)) == "backoff(5, factor=2.0, max=60)"
