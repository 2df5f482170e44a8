"""The house style that can be checked mechanically: at most two levels of block nesting inside
any function of the library, so that each function reads top to bottom; and ruff's checks as
pyproject.toml sets them (unused or undefined names, lines of at most 100 characters, sorted
imports) over the library, its tests and its scripts."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

BLOCKS = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try)
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
ROOT = Path(__file__).parent.parent
LIBRARY = sorted((ROOT / "climit").rglob("*.py"))


def nesting(node: ast.AST, depth: int = 0) -> int:
    """Deepest block nesting below ``node``, not entering nested functions or classes (they
    are checked on their own); an ``elif`` continues its ``if`` instead of nesting."""
    deepest = depth
    for child in ast.iter_child_nodes(node):
        if isinstance(child, SCOPES):
            continue
        is_elif = isinstance(node, ast.If) and isinstance(child, ast.If) and node.orelse == [child]
        nested = isinstance(child, BLOCKS) and not is_elif
        deepest = max(deepest, nesting(child, depth + nested))
    return deepest


def too_deep(source: str) -> list[str]:
    """'name:line (depth)' of every function nested more than two blocks deep."""
    tree = ast.parse(source)
    return [f"{f.name}:{f.lineno} ({nesting(f)})" for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and nesting(f) > 2]


def test_checker_sees_three_levels_and_not_elif_chains():
    deep = "def f(x):\n for a in x:\n  if a:\n   with a:\n    pass\n"
    flat = ("def g(x):\n for a in x:\n  if a:\n   pass\n  elif x:\n   pass\n  elif a:\n   pass\n"
            "  def inner():\n   for b in x:\n    if b:\n     pass\n")
    assert too_deep(deep) == ["f:1 (3)"]
    assert too_deep(flat) == []


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_at_most_two_levels_of_nesting(path):
    assert too_deep(path.read_text()) == [], f"{path}: split these functions"


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args],
                          cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing():
    # ruff comes with the dev extra (`pip install -e ".[dev]"`, as the README installs).
    done = ruff("climit", "tests", "scripts")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_settings_report_unused_imports_and_lines_over_100_characters(tmp_path):
    # The check above is only as strict as pyproject.toml's settings.
    (tmp_path / "ok.py").write_text("x = '" + "a" * 94 + "'\n")  # 100 characters
    (tmp_path / "bad.py").write_text("import os\n\nx = '" + "a" * 95 + "'\n")
    config = f"--config={ROOT / 'pyproject.toml'}"
    assert ruff(config, str(tmp_path / "ok.py")).returncode == 0
    done = ruff(config, str(tmp_path / "bad.py"))
    assert done.returncode == 1
    assert "F401" in done.stdout and "E501" in done.stdout, done.stdout
