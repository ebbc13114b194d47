"""hwpoisond/core stays pure: stdlib-only imports, no I/O, clock, logging or pydantic."""

from __future__ import annotations

import ast
from pathlib import Path

import hwpoisond.core

CORE_DIR = Path(hwpoisond.core.__file__).parent
ALLOWED = {"__future__", "dataclasses", "typing", "collections", "heapq", "errno", "bisect", "math"}
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__"}


def _modules() -> list[Path]:
    files = sorted(CORE_DIR.glob("*.py"))
    assert len(files) >= 5  # model, params, state, policy, __init__
    return files


def test_core_imports_only_allowed_stdlib_and_itself() -> None:
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: relative import"
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = (
                    top in ALLOWED or name == "hwpoisond.core" or name.startswith("hwpoisond.core.")
                )
                assert ok, f"{path.name} imports {name}"


def test_core_calls_no_io_builtins() -> None:
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in FORBIDDEN_CALLS, f"{path.name} calls {node.func.id}"


def test_checker_rejects_a_forbidden_import(tmp_path: Path) -> None:
    # The checker itself must be able to fail.
    bad = ast.parse("import time\nfrom pydantic import BaseModel\n")
    found = [a.name for n in ast.walk(bad) if isinstance(n, ast.Import) for a in n.names] + [
        n.module for n in ast.walk(bad) if isinstance(n, ast.ImportFrom)
    ]
    assert [m for m in found if m and m.split(".")[0] not in ALLOWED] == ["time", "pydantic"]
