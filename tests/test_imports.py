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


# The layers of ARCHITECTURE.md, bottom (0) to top. A module missing here is not checked.
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ["message", "actions", "errors", "_outcome", "_options", "_channels", "_validate"], 0
    ),
    **dict.fromkeys(["_markup", "_slots", "headers", "_records", "_bodytype", "_routing"], 0),
    **dict.fromkeys(["_moved", "_inbox", "_fatal", "_loop"], 0),
    **dict.fromkeys(
        ["_ledger", "_demand", "_planner", "_ackbatch", "_backoff", "_settle", "_stats"], 1
    ),
    **dict.fromkeys(["_fairshare"], 1),
    **dict.fromkeys(
        ["client", "_consumer_sql", "_sql", "_queues", "_link", "_conn", "_listener"], 2
    ),
    **dict.fromkeys(["_wakeup", "_dberrors", "_install", "_listener_thread"], 2),
    **dict.fromkeys(["_api_base", "_api_fifo", "_api_queues", "_api_topics", "_sql_api"], 2),
    "_aclient": 2,
    **dict.fromkeys(["_source", "_consumer", "_reader", "_acker", "_iterate", "_multi"], 3),
    **dict.fromkeys(
        ["operators", "_operators/_process", "_operators/_ack", "_operators/_backpressure"], 4
    ),
    **dict.fromkeys(["_operators/_batch", "_operators/_batchresult", "_operators/_keyed"], 4),
    "_operators/_transaction": 4,
    "_telemetry": 0,
    "telemetry": 5,
    **dict.fromkeys(["_operators/_serial", "_policy", "aio"], 4),
    **dict.fromkeys(["jupyter", "_live", "_tally", "_tables", "_html"], 5),
    **dict.fromkeys(["embedded", "_embedded", "testing", "_fakes"], 5),
    **dict.fromkeys(["cli/__main__", "cli/_errors", "cli/_common", "cli/_runs", "cli/_server"], 5),
    **dict.fromkeys(["cli/_admin", "cli/_send", "cli/_peek", "cli/_topics", "cli/_tail"], 5),
    **dict.fromkeys(["cli/_demo", "cli/_bench"], 5),
    **dict.fromkeys(["_operators/_gate", "_operators/_process_loop"], 4),
    "_scalebench": 5,
    "_operators/_skip": 4,
    "_operators/_seen": 4,
}


def test_every_module_has_a_layer() -> None:
    """#15: a new module must be placed in the layer map (and ARCHITECTURE.md), so the
    direction check covers the whole package."""
    modules = {
        str(path.relative_to(PACKAGE).with_suffix(""))
        for path in PACKAGE.rglob("*.py")
        if path.stem != "__init__"
    }
    assert modules - set(LAYERS) == set(), "modules missing from LAYERS"
    assert set(LAYERS) - modules == set(), "LAYERS names modules that do not exist"


def _runtime_imports(module: str) -> set[str]:
    """The ``rx_pgmq`` modules ``module`` imports, leaving out ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.orelse:
                visit(stmt)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rx_pgmq"):
            if node.module == "rx_pgmq":
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.removeprefix("rx_pgmq.").replace(".", "/"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_no_module_imports_a_layer_above_its_own(module: str) -> None:
    """#15: imports point down the layers of ARCHITECTURE.md (TYPE_CHECKING ones aside)."""
    above = {m for m in _runtime_imports(module) if LAYERS.get(m, -1) > LAYERS[module]}
    assert not above, f"{module} (layer {LAYERS[module]}) imports {sorted(above)} from above"
