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
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rx_pgmq"))
    return found


@pytest.mark.parametrize(
    "module", ["message", "_values/_outcome", "_values/_markup", "actions", "errors"]
)
def test_values_do_not_import_the_notebook_html(module: str) -> None:
    """message <-> _html was a cycle hidden by lazy imports: values render with _markup."""
    assert "rx_pgmq._front._html" not in _imports(module)
    assert "rx_pgmq.jupyter" not in _imports(module)


def test_markup_imports_nothing_of_rx_pgmq() -> None:
    """_markup is the bottom of the HTML: plain building blocks."""
    assert _imports("_values/_markup") == set()


def test_read_options_do_not_import_sql() -> None:
    """_options holds FifoMode itself; _sql imports it from there, not the other way."""
    assert "rx_pgmq._pg._sql" not in _imports("_values/_options")
    assert "rx_pgmq._values._options" in _imports("_pg/_sql")


def test_html_imports_the_values_it_renders() -> None:
    """The direction that remains: _html -> message, _outcome, _markup."""
    assert {"rx_pgmq.message", "rx_pgmq._values._outcome", "rx_pgmq._values._markup"} <= _imports(
        "_front/_html"
    )


# The layers of ARCHITECTURE.md, bottom (0) to top. A private module's folder is its layer
# (#15 item 4: the folder listing shows the architecture); the public modules at the top
# of the package are placed one by one.
FOLDERS: dict[str, int] = {
    "_values": 0,
    "_core": 1,
    "_pg": 2,
    "_consumer": 3,
    "_operators": 4,
    "_front": 5,
    "cli": 5,
}
PUBLIC: dict[str, int] = {
    **dict.fromkeys(["message", "actions", "errors", "headers"], 0),
    "client": 2,
    **dict.fromkeys(["operators", "aio"], 4),
    **dict.fromkeys(["jupyter", "embedded", "testing", "telemetry"], 5),
}


def _modules() -> set[str]:
    """Every module of the package as a path without suffix (``_core/_ledger``)."""
    return {
        str(path.relative_to(PACKAGE).with_suffix(""))
        for path in PACKAGE.rglob("*.py")
        if path.stem != "__init__"
    }


def _layer(module: str) -> int:
    folder, _, _ = module.partition("/")
    return FOLDERS[folder] if "/" in module else PUBLIC[module]


LAYERS: dict[str, int] = {
    module: _layer(module) for module in _modules() if "/" in module or module in PUBLIC
}


def test_only_public_modules_at_the_top() -> None:
    """#15 item 4: a private module lives in its layer's folder; the top holds the public API."""
    top = {m for m in _modules() if "/" not in m}
    assert top == set(PUBLIC), "a module at the top of rx_pgmq that is not public"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(FOLDERS), "a folder of rx_pgmq missing from FOLDERS"


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
                base = node.module.removeprefix("rx_pgmq.").replace(".", "/")
                if base in FOLDERS:  # from rx_pgmq._pg import _sql
                    found.update(f"{base}/{alias.name}" for alias in node.names)
                else:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_no_module_imports_a_layer_above_its_own(module: str) -> None:
    """#15: imports point down the layers of ARCHITECTURE.md (TYPE_CHECKING ones aside)."""
    above = {m for m in _runtime_imports(module) if LAYERS.get(m, -1) > LAYERS[module]}
    assert not above, f"{module} (layer {LAYERS[module]}) imports {sorted(above)} from above"
