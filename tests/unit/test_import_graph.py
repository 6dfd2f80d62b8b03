"""The import graph of milco_os has no cycles, and the light entry points stay light.

Every ``import`` / ``from ... import`` in every module counts, function-local ones included (a cycle that
only closes when a function runs is still a cycle), and so do imports under ``if TYPE_CHECKING:``: they do
not run, but a circle hidden that way is still two modules that each need the other (issue 31), and it
closes the moment someone needs the name at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "milco_os"


def module_names() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (``if TYPE_CHECKING:`` blocks included)."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (``from pkg import name`` counts as pkg.name when that is a
    module, else as pkg)."""
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                # ``import a.b.c`` names a.b.c; keep the longest prefix that is a module of the package
                parts = target.split(".")
                while parts and ".".join(parts) not in modules:
                    parts.pop()
                if parts and ".".join(parts) != name:
                    graph[name].add(".".join(parts))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_checker_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_local_and_relative_imports() -> None:
    graph = import_graph()
    assert "milco_os.models.milco" in graph["milco_os.loading"]  # imported inside load_dir
    assert "milco_os.errors" in graph["milco_os.models.files"]
    assert "milco_os.runtime.encoder" in graph["milco_os.opensearch.ingest"]  # under if TYPE_CHECKING:


def test_milco_os_has_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles in milco_os:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_models_and_runtime_do_not_import_the_loading_factory() -> None:
    graph = import_graph()
    offenders = sorted(
        name for name, deps in graph.items()
        if name.startswith(("milco_os.models", "milco_os.runtime")) and "milco_os.loading" in deps
    )
    assert not offenders, offenders


def _imported_modules(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_cli_imports_neither_numpy_nor_torch() -> None:
    heavy = {"numpy", "torch", "transformers"} & _imported_modules("import milco_os.cli")
    assert not heavy, f"`import milco_os.cli` imports {sorted(heavy)}"


def test_the_package_is_import_light_and_its_public_names_resolve() -> None:
    heavy = {"numpy", "torch", "transformers"} & _imported_modules("import milco_os")
    assert not heavy, f"`import milco_os` imports {sorted(heavy)}"
    import milco_os
    from milco_os.pruning import Prune, Pruning
    from milco_os.types import Encoded, SparseVector, Vocab

    assert isinstance(milco_os.__version__, str)
    assert (milco_os.Encoded, milco_os.SparseVector, milco_os.Vocab) == (Encoded, SparseVector, Vocab)
    assert (milco_os.Prune, milco_os.Pruning) == (Prune, Pruning)
    assert set(milco_os.__all__) <= set(dir(milco_os))
    try:
        milco_os.NoSuchName  # noqa: B018
    except AttributeError as e:
        assert "NoSuchName" in str(e)
    else:
        raise AssertionError("unknown names must raise AttributeError")
