"""Layering: what the running server imports, and no import cycles among the project's packages."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from persona_steer.config import PROJECT_ROOT


def test_server_app_does_not_import_the_toy_tooling(tmp_path):
    # the toy trainer, corpus and evaluator are a development tool; the server needs only
    # persona_steer.toy_demo. A fresh interpreter (this one may have imported them) imports the
    # app and seeds an empty store on the toy model, as a first start does.
    code = f"""
import sys
import server.app
from persona_steer.config import load_config
from persona_steer.store import VectorStore
settings = load_config(None, overrides=["model.name=builtin:toy-persona"], environ={{}})
print(server.app.seed_demo_vectors(settings, VectorStore({str(tmp_path / "vectors")!r})))
print(sorted(m for m in sys.modules if m.startswith("extraction.toy")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seeded, toy_modules = out.stdout.split("\n")[:2]
    assert int(seeded) > 0
    assert toy_modules == "[]", toy_modules


# --- import cycles ---------------------------------------------------------------------------
PACKAGES = ("persona_steer", "steering_plugin", "extraction", "server", "clients")
# cycles that remain on purpose, each as the sorted modules of one strongly connected group
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (PROJECT_ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(body: list[ast.stmt]):
    """Import statements that run when the module is imported: the module body and the blocks
    it runs (if/try/with, class bodies), not function bodies or `if TYPE_CHECKING:`."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _top_level_imports(node.orelse)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []) or []:
                    yield from _top_level_imports(child.body if isinstance(
                        child, ast.ExceptHandler) else [child])


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The project module `name` loads (its longest prefix that is one), else None."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in mods:
            return ".".join(parts)
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    mods = _project_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _top_level_imports(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                # `from pkg import sub` loads pkg.sub when that is a module, else pkg
                targets = [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                found = _resolve(target, mods)
                if found is not None and found != mod:
                    graph[mod].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(tuple(sorted(group)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [("a", "b", "c")]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_top_level_imports_only():
    graph = import_graph()
    assert "server.think" in graph["server.state"]            # module level
    assert "server.generation" not in graph["server.state"]    # no longer imported at all
    assert "steering_plugin.model" not in graph["steering_plugin"]   # inside register()
    assert "clients.cli_shared" in graph["clients.repl"]


def test_no_import_cycles_among_the_project_packages():
    assert set(cycles(import_graph())) == KNOWN_CYCLES


def test_clients_and_server_share_constants_without_importing_each_other():
    # both read persona_steer (job states, steering fields); neither imports the other
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith("clients"):
            assert not {d for d in deps if d.startswith("server")}, mod
        if mod.startswith("server"):
            assert not {d for d in deps if d.startswith("clients")}, mod
    assert "persona_steer.job_states" in graph["clients.client"]
    assert "persona_steer.job_states" in graph["server.jobs"]


def test_route_modules_take_request_dependencies_from_deps_not_each_other():
    graph = import_graph()
    routes = {m for m in graph if m.startswith("server.routes_")}
    assert routes >= {"server.routes_api", "server.routes_jobs", "server.routes_openai"}
    for mod in routes:
        assert not graph[mod] & routes, (mod, graph[mod] & routes)
        assert "server.deps" in graph[mod]
