"""The README's tour runs as written against the test database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _example(marker: str = "readme-example") -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README lost its <!-- {marker} --> python block"
    return match.group(1)


def _run(code: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RX_PGMQ_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_readme_commands_come_first() -> None:
    """The README starts with the demo command and the test command CI runs."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks[0].strip() == 'pip install -e ".[dev]" && rx-pgmq demo'
    assert blocks[1].strip() == 'pip install -e ".[dev]" && pytest'
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "pytest" in ci


def test_readme_tour_runs(pgmq_dsn: str) -> None:
    """The tour's pipeline deletes 9 successes, archives the failure and exits cleanly."""
    proc = _run(_example(), pgmq_dsn)
    assert proc.returncode == 0, proc.stderr
    assert "(3, 'archive')" in proc.stdout
    assert proc.stdout.count("'delete')") == 9


def test_readme_batches_example_runs(pgmq_dsn: str) -> None:
    """#17: the "Batches and per-key order" block keeps each account in read order and
    archives the one message its mapping failed."""
    proc = _run(_example("readme-example-batches"), pgmq_dsn)
    assert proc.returncode == 0, proc.stderr
    assert "{'a0': True, 'a1': True, 'a2': True}" in proc.stdout
    assert "[13]" in proc.stdout
