"""The sweeper stays readable in parts: no module over 400 lines, no class over 150, no function
over 50 (the limits the loop outgrew once, unnoticed)."""

from __future__ import annotations

import ast
from pathlib import Path

import hydra_study_sweeper
import pytest

PACKAGE = Path(hydra_study_sweeper.__file__).parent
LIMITS = {"module": 400, "class": 150, "function": 50}


def over_limits(path: Path) -> list[str]:
    source = path.read_text()
    found = []
    if len(source.splitlines()) > LIMITS["module"]:
        found.append(f"{path.name}: {len(source.splitlines())} lines")
    for node in ast.walk(ast.parse(source)):
        kind = {ast.ClassDef: "class", ast.FunctionDef: "function", ast.AsyncFunctionDef: "function"}.get(type(node))
        if kind and node.end_lineno - node.lineno + 1 > LIMITS[kind]:
            found.append(f"{path.name}: {kind} {node.name} {node.end_lineno - node.lineno + 1} lines")
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_module_class_or_function_of_the_sweeper_is_over_its_limit(path):
    assert over_limits(path) == []


def test_the_limits_are_measured_as_written(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * 60 + "\n\nclass C:\n    pass\n")
    assert over_limits(long) == ["long.py: function f 61 lines"]
