"""The README's tour runs as written against the test database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from rx_pgmq.testing import RecordingAcknowledger

README = Path(__file__).resolve().parent.parent / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its <!-- readme-example --> python block"
    return match.group(1)


def test_readme_commands_come_first() -> None:
    """The README starts with the demo command and the test command CI runs."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks[0].strip() == 'pip install -e ".[dev]" && rx-pgmq demo'
    assert blocks[1].strip() == 'pip install -e ".[dev]" && pytest'
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "pytest" in ci


def test_readme_tour_runs(pgmq_dsn: str) -> None:
    """The tour's pipeline deletes 9 successes, archives the failure and exits cleanly."""
    env = {**os.environ, "RX_PGMQ_DSN": pgmq_dsn}
    proc = subprocess.run(
        [sys.executable, "-c", _example()],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "(3, 'archive')" in proc.stdout
    assert proc.stdout.count("'delete')") == 9


def test_readme_marble_test_of_a_user_pipeline_runs() -> None:
    """#15 item 6: the README's marble test (public test doubles, virtual time) passes."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- readme-marble-test -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its <!-- readme-marble-test --> python block"
    namespace: dict[str, object] = {"__name__": "readme_marble_test"}
    exec(compile(match.group(1), "README.md", "exec"), namespace)
    acker = namespace["acker"]
    assert isinstance(acker, RecordingAcknowledger)
    assert len(acker.requests) == 2
