"""How rx_pgmq installs, as a user's tools see it (#13 item 5)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

USER_CODE = '''\
"""A user's module: it must type-check against the installed rx_pgmq."""

from reactivex import Observable

import rx_pgmq
from rx_pgmq import operators as pgops
from rx_pgmq.actions import Archive, Delete


def handle(message: rx_pgmq.Message) -> int:
    return len(str(message.body))


def pipeline(dsn: str) -> Observable[rx_pgmq.Settled]:
    source = rx_pgmq.read_queue(dsn, "orders", visibility_timeout=30)
    return source.pipe(
        pgops.windowed(10),
        pgops.process(handle),
        pgops.ack(on_success=Delete(), on_failure=Archive()),
    )
'''


@pytest.mark.slow
def test_a_users_code_type_checks_against_the_installed_package(tmp_path: Path) -> None:
    """`mypy --strict` on a user's file outside the project finds rx_pgmq where pip put it
    (an editable install included: setuptools' import-hook editable mode hides packages from
    static tools, so the project installs editable as a plain path) and reads its types
    (py.typed)."""
    if shutil.which("mypy") is None and not _has_module("mypy"):
        pytest.skip("mypy is not installed (it comes with the dev extra)")
    (tmp_path / "user_pipeline.py").write_text(textwrap.dedent(USER_CODE))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-executable",
            sys.executable,
            "user_pipeline.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
