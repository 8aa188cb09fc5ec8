"""Size limits that keep the code readable: no module over 400 lines, no function over 60 lines.

Counted on every ``.py`` file under audit/, training/, benchmarks/ and tests/: a module's lines are its
newlines, a function's (methods and nested functions included) run from its ``def`` line to its last
line, decorators excluded. A file over a limit is split into well-named helpers or sibling modules.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MODULES = sorted(p for d in ("audit", "training", "benchmarks", "tests") for p in (ROOT / d).rglob("*.py"))


def test_modules_are_found():
    assert len(MODULES) > 50 and ROOT / "tests" / "test_layout.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=[p.relative_to(ROOT).as_posix() for p in MODULES])
def test_module_and_function_sizes(path):
    src = path.read_text(encoding="utf-8")
    name = path.relative_to(ROOT).as_posix()
    lines = src.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines (limit {MAX_MODULE_LINES}): split it"
    functions = [n for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    long = [f"{f.name} (line {f.lineno}: {f.end_lineno - f.lineno + 1} lines)" for f in functions
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines in {name}: {', '.join(long)}; split them into helpers"
