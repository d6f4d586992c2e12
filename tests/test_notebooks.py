"""Every notebook in ``notebooks/`` runs top to bottom without an error (nbclient, kernel
``python3``), against the test server (``RX_PGMQ_DSN`` is set for the kernel)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from nbformat import NotebookNode

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.notebooks


def read_notebook(path: Path) -> NotebookNode:
    """``nbformat.read(path, as_version=4)``, called through a typed name (nbformat.read has
    no annotations)."""
    import nbformat

    read: Callable[..., NotebookNode] = nbformat.read
    return read(path, as_version=4)


def test_the_four_tutorial_notebooks_exist() -> None:
    """The quickstart, backpressure, ack-policy and live-exploration notebooks are there."""
    names = [p.stem for p in NOTEBOOKS]
    for wanted in ("01_quickstart", "02_backpressure", "03_ack_policies", "04_live_exploration"):
        assert wanted in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_outputs_cleared(path: Path) -> None:
    """Notebooks are committed without outputs or execution counts."""
    import nbformat

    book = read_notebook(path)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell has outputs"
            assert cell.execution_count is None, f"{path.name}: a cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(
    path: Path, pgmq_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executing every cell in order raises no error (nbclient stops at the first one)."""
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silence jupyter_core's path warning
    monkeypatch.setenv("RX_PGMQ_DSN", pgmq_dsn)  # the kernel inherits the environment
    monkeypatch.delenv("DATABASE_URL", raising=False)
    from nbclient import NotebookClient

    book = read_notebook(path)
    client = NotebookClient(
        book,
        timeout=90,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [
        out
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert errors == []
