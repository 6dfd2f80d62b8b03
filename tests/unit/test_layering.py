"""One owner for engine IO: only ``milco_os/opensearch/`` (and the local node) talk to a client or import an engine's
client library. Front ends (CLI, service, eval, demo, bench) pass a client through to the layer's functions, never
call it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "milco_os" / "opensearch"
LOCAL_NODE = ROOT / "milco_os" / "localnode"  # runs its own node over plain HTTP


def front_end_files() -> list[Path]:
    files = [*(ROOT / "milco_os").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    return sorted(f for f in files if LAYER not in f.parents and LOCAL_NODE not in f.parents)


def client_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """``client.x(...)``, ``client.indices.x(...)``, ``something.client.x(...)``: any call made on a client."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            chain, target = [], node.func
            while isinstance(target, ast.Attribute):
                chain.append(target.attr)
                target = target.value
            if isinstance(target, ast.Name):
                chain.append(target.id)
            if "client" in chain[1:]:  # the call goes through an object named client
                found.append((node.lineno, ".".join(reversed(chain))))
    return found


#: The engines' client libraries (opensearch-py, Elastic's client and its transport).
ENGINE_LIBRARIES = ("opensearchpy", "elasticsearch", "elastic_transport")


def engine_library_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Any import of an engine's client library, its exception types and annotation-only imports included: front
    ends catch the layer's error tuples (:mod:`milco_os.opensearch.engine`) and annotate with its ``Client``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ENGINE_LIBRARIES:
            found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in ENGINE_LIBRARIES]
    return found


def test_front_ends_never_call_the_client() -> None:
    problems = []
    for path in front_end_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, what in client_calls(tree) + engine_library_imports(tree):
            problems.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert not problems, "engine IO outside milco_os/opensearch/:\n" + "\n".join(problems)


def test_the_check_finds_a_client_call() -> None:
    tree = ast.parse("def f(request):\n    request.app.state.client.indices.refresh(index='x')\n    client.info()\n")
    assert [what for _, what in client_calls(tree)] == ["request.app.state.client.indices.refresh", "client.info"]
    assert engine_library_imports(ast.parse("from opensearchpy.helpers import bulk")) == [(1, "opensearchpy.helpers")]
    typing_only = "if TYPE_CHECKING:\n    from elasticsearch import Elasticsearch\nimport elastic_transport\n"
    assert sorted(engine_library_imports(ast.parse(typing_only))) == [(2, "elasticsearch"), (3, "elastic_transport")]
