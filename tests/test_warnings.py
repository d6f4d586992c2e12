"""The suite's warning policy (#13 item 2): ours fail the run, a dependency's own don't.

pytest's ``filterwarnings`` (pyproject.toml) turns every warning into an error, except a
DeprecationWarning that a dependency raises about its own internals. A warning counts as the
module's that called the warning API, so a deprecated call made by rx_pgmq is rx_pgmq's.
"""

from __future__ import annotations

import warnings

import pytest


def warn_from(module: str, category: type[Warning] = DeprecationWarning) -> list[str]:
    """Raise a warning attributed to ``module``; return what was shown instead of raised."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.warn_explicit("old API", category, f"{module}.py", 1, module=module)
    return [str(w.message) for w in shown]


@pytest.mark.parametrize("module", ["rx_pgmq.cli", "rx_pgmq._consumer._facade", "tests.test_cli"])
def test_a_deprecation_warning_of_ours_fails_the_test(module: str) -> None:
    """A deprecated call in rx_pgmq or its tests is an error, as a new dependency release
    that deprecates what we call must turn CI red, not pass silently."""
    with pytest.raises(DeprecationWarning):
        warn_from(module)


@pytest.mark.parametrize(
    "module", ["psycopg._connection", "reactivex.internal", "click.core", "jupyter_client.session"]
)
def test_a_dependency_deprecating_its_own_internals_only_shows(module: str) -> None:
    """A DeprecationWarning raised inside a dependency about itself is shown, not raised."""
    assert warn_from(module) == ["old API"]


def test_the_dependency_filters_are_narrow() -> None:
    """Only DeprecationWarning of the named packages is let through: another category from a
    dependency, or a module that merely starts with a dependency's name, still fails."""
    with pytest.raises(RuntimeWarning):
        warn_from("psycopg.pool", RuntimeWarning)
    with pytest.raises(DeprecationWarning):
        warn_from("clickhouse_driver")
    with pytest.raises(DeprecationWarning):
        warn_from("rich_user_code.module")
