"""The architecture holds: layered imports without a circle, and every citation of docs/ARCHITECTURE.md resolves.

The layers are those of docs/ARCHITECTURE.md §3, lowest first. An import may point to its own layer or a
lower one. Imports are read from the source (every ``import`` of ``audit`` or ``training``, at module level
or inside a function); those under ``if TYPE_CHECKING:`` are annotations only and do not count.
"""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"

LAYERS = (  # docs/ARCHITECTURE.md §3, lowest first; a package name covers its submodules
    ("foundation", ("audit", "audit.errors", "audit.stats", "audit.settings", "audit.svg", "audit.progress",
                    "audit.transforms", "audit.power", "audit.clusters", "audit.sequential", "audit.rowstore",
                    "audit.graph", "audit.onnxwire", "audit.features", "audit.discovery", "audit.shift", "audit.copies",
                    "audit.packed", "audit.resample")),
    ("records", ("audit.verdict", "audit.text", "audit.findings", "audit.predictions", "audit.model", "audit.preprocess",
                 "audit.card_schema", "audit.imaging", "audit.colour_match", "audit.duplicates", "audit.duplicate_sets",
                 "audit.predictions_file", "audit.sources", "audit.loadgen", "audit.paired", "audit.run_folder")),
    ("execution", ("audit.engines", "audit.context", "audit.contract", "audit.thumbnails")),
    ("checks", ("audit.checks.",)),  # the check modules, not the registry package itself
    ("registry", ("audit.checks", "audit.config")),
    ("results", ("audit.result",)),
    ("application", ("audit.pipeline", "audit.comparison", "audit.render", "audit.serve")),
    ("training", ("training",)),
    ("entry points", ("audit.cli", "audit.__main__", "training.cli", "training.__main__")),
)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in ("audit", "training"):
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = p
    return out


MODULES = modules()


def layer(module: str) -> int:
    """The layer of a module: the most specific entry of LAYERS that covers it."""
    best, best_len = None, -1
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            covers = module.startswith(n) if n.endswith(".") else (module == n or module.startswith(n + "."))
            if covers and len(n) > best_len:
                best, best_len = i, len(n)
    assert best is not None, f"{module} is in no layer of docs/ARCHITECTURE.md §3: add it to LAYERS"
    return best


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports at run time."""
    out = set()
    for node in _runtime_nodes(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {r for n in names if n.split(".")[0] in ("audit", "training") and (r := _resolve(n))}
    out.discard(module)
    return out


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    assert len(MODULES) > 80
    for m in MODULES:
        layer(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_points_up(module):
    up = [f"{t} ({LAYERS[layer(t)][0]})" for t in sorted(GRAPH[module]) if layer(t) > layer(module)]
    assert not up, f"{module} ({LAYERS[layer(module)][0]}) imports a higher layer: {', '.join(up)}"


def test_the_import_graph_has_no_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(t):], t]))
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def test_audit_never_imports_training():
    assert not [m for m in GRAPH if m.startswith("audit") and any(t.startswith("training") for t in GRAPH[m])]


SECTION = re.compile(r"^#+ §(\d+(?:\.\d+)*) ", re.M)
CITATION = re.compile(r"ARCHITECTURE\.md §(\d+(?:\.\d+)*)")
OUTSIDE = "DESIGN " + "§"  # the owners' design notes live outside the repository; the code cites its own document
CITING = sorted(p for d in ("audit", "training", "benchmarks", "tests", "templates", "scripts", "examples")
                for p in (ROOT / d).rglob("*") if p.is_file() and p.suffix in (".py", ".j2", ".md", ".sh", ".toml"))


def test_the_document_numbers_its_sections_in_order():
    numbers = SECTION.findall(DOC.read_text(encoding="utf-8"))
    top = [int(n) for n in numbers if "." not in n]
    assert top == list(range(1, len(top) + 1)), numbers


@pytest.mark.parametrize("path", [*CITING, ROOT / "README.md"], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_citation_resolves(path):
    sections = set(SECTION.findall(DOC.read_text(encoding="utf-8")))
    text = path.read_text(encoding="utf-8")
    missing = sorted(set(CITATION.findall(text)) - sections)
    assert not missing, f"{path.name} cites docs/ARCHITECTURE.md §{', §'.join(missing)}, which does not exist"
    assert OUTSIDE not in text, f"{path.name} cites a design document that is not in the repository"


def test_the_code_cites_the_document():
    assert sum(bool(CITATION.search(p.read_text(encoding="utf-8"))) for p in CITING) >= 20


def test_the_audit_needs_no_plotting_library_nor_http_client():
    """matplotlib (training's charts) and httpx (the server tests' client) are extras, and the audit imports neither."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["dependencies"]}
    assert not {"matplotlib", "httpx"} & core
    assert any(d.startswith("matplotlib") for d in project["optional-dependencies"]["train"])
    assert any(d.startswith("httpx") for d in project["optional-dependencies"]["dev"])
    for path in (ROOT / "audit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in ("matplotlib", "httpx")], path


def test_ci_runs_every_test_and_contributors_have_a_fast_tier():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    script = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert "scripts/test.sh" in ci and "--fast" not in ci and "-m " not in ci
    assert 'then fast=1' in script and 'args=(-m fast' in script
    marked = [p.name for p in (ROOT / "tests").glob("test_*.py") if "pytest.mark.fast" in p.read_text(encoding="utf-8")]
    assert len(marked) >= 20, marked


def reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for t in GRAPH[todo.pop()] - seen:
            seen.add(t)
            todo.append(t)
    return seen


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("audit.render")))
def test_renderers_read_results_without_the_machinery_that_made_them(module):
    machinery = {"audit.pipeline", "audit.comparison", "audit.sources", "audit.engines", "audit.checks",
                 "audit.config", "audit.context"}
    assert not reachable(module) & machinery, f"{module} reaches {sorted(reachable(module) & machinery)}"
