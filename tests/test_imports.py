"""Imports point one way (issue #15 item 7): values never import the notebook HTML or SQL.

Checked statically on the source (every ``import`` statement, also inside functions), since
importing any ``rx_pgmq`` module runs the package ``__init__``, which imports everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rx_pgmq"


def _imports(module: str) -> set[str]:
    """Every ``rx_pgmq`` module ``module`` imports, wherever the import statement is."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rx_pgmq"):
            found.add(node.module)
            if node.module == "rx_pgmq":
                found.update(f"rx_pgmq.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rx_pgmq"))
    return found


@pytest.mark.parametrize("module", ["message", "_outcome", "_markup", "actions", "errors"])
def test_values_do_not_import_the_notebook_html(module: str) -> None:
    """message <-> _html was a cycle hidden by lazy imports: values render with _markup."""
    assert "rx_pgmq._html" not in _imports(module)
    assert "rx_pgmq.jupyter" not in _imports(module)


def test_markup_imports_nothing_of_rx_pgmq() -> None:
    """_markup is the bottom of the HTML: plain building blocks."""
    assert _imports("_markup") == set()


def test_read_options_do_not_import_sql() -> None:
    """_options holds FifoMode itself; _sql imports it from there, not the other way."""
    assert "rx_pgmq._sql" not in _imports("_options")
    assert "rx_pgmq._options" in _imports("_sql")


def test_html_imports_the_values_it_renders() -> None:
    """The direction that remains: _html -> message, _outcome, _markup."""
    assert {"rx_pgmq.message", "rx_pgmq._outcome", "rx_pgmq._markup"} <= _imports("_html")
