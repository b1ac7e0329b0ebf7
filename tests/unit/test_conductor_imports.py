"""The conductor's task modules take a TaskEnv: none of them imports the service that runs them."""

from __future__ import annotations

import ast
from pathlib import Path

import canopy.conductor

CONDUCTOR = Path(canopy.conductor.__file__).parent
SERVICE = "canopy.conductor.service"
ENTRY_POINTS = {"service.py"}  # the module that builds the Conductor


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(tree: ast.AST, *, runtime_only: bool) -> set[str]:
    """The modules a module imports (with `runtime_only`, not those under `if TYPE_CHECKING:`)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if runtime_only and isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _importers_of_service(runtime_only: bool) -> list[str]:
    out = []
    for path in sorted(CONDUCTOR.glob("*.py")):
        if path.name in ENTRY_POINTS:
            continue
        if SERVICE in imported_modules(ast.parse(path.read_text()), runtime_only=runtime_only):
            out.append(path.name)
    return out


def test_no_conductor_module_imports_the_service_at_run_time() -> None:
    assert _importers_of_service(runtime_only=True) == []


def test_not_even_for_type_checking() -> None:
    assert _importers_of_service(runtime_only=False) == []


def test_the_check_sees_an_import_inside_a_function_and_skips_type_checking_blocks() -> None:
    code = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from canopy.conductor.service import C\n"
            "def f():\n    from canopy.conductor import service\n")
    tree = ast.parse(code)
    assert SERVICE in imported_modules(tree, runtime_only=True)  # the function's import
    assert "canopy.conductor.service.C" not in imported_modules(tree, runtime_only=True)
    assert "canopy.conductor.service.C" in imported_modules(tree, runtime_only=False)
