"""Layering: what the running server imports, no import cycles among the project's packages, and
nothing but the toy tooling's own users importing the toy tooling (`toy/`).

The import graph is read from the source with `ast`: every import statement, at module level and
inside functions alike (an import inside a function still makes the module depend on the other;
moving it there only hides a cycle from the interpreter), except `if TYPE_CHECKING:` blocks,
which never run."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from persona_steer.config import PROJECT_ROOT


def test_server_app_does_not_import_the_toy_tooling(tmp_path):
    # the toy trainer, corpus and evaluator are a development tool (toy/); the server needs only
    # persona_steer.toy_demo. A fresh interpreter (this one may have imported them) imports the
    # app and seeds an empty store on the toy model, as a first start does.
    code = f"""
import sys
import server.app
from persona_steer.config import load_config
from persona_steer.store import VectorStore
settings = load_config(None, overrides=["model.name=builtin:toy-persona"], environ={{}})
print(server.app.seed_demo_vectors(settings, VectorStore({str(tmp_path / "vectors")!r})))
print(sorted(m for m in sys.modules if m == "toy" or m.startswith("toy.")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seeded, toy_modules = out.stdout.split("\n")[:2]
    assert int(seeded) > 0
    assert toy_modules == "[]", toy_modules


# --- the import graph ------------------------------------------------------------------------
PACKAGES = ("persona_steer", "steering_plugin", "extraction", "server", "clients", "toy")
# what runs in the server, the engine, the clients and extraction: none of it may import toy/
RUNTIME_PACKAGES = ("persona_steer", "steering_plugin", "extraction", "server", "clients")
TOOLING = "toy"


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


def _imports(node: ast.AST, in_function: bool = False):
    """(import statement, whether it is inside a function) for every import under `node`, at
    any depth, except the body of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
        elif isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]), in_function)
        else:
            yield from _imports(child, in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The project module `name` loads (its longest prefix that is one), else None."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in mods:
            return ".".join(parts)
        parts.pop()
    return None


def import_edges() -> dict[tuple[str, str], list[str]]:
    """{(importer, imported): ["path:line (in a function)", ...]} over the project's modules."""
    mods = _project_modules()
    edges: dict[tuple[str, str], list[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node, in_function in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                # `from pkg import sub` loads pkg.sub when that is a module, else pkg
                targets = [f"{base}.{a.name}" for a in node.names]
            where = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}" + (
                " (in a function)" if in_function else "")
            for target in targets:
                found = _resolve(target, mods)
                if found is not None and found != mod:
                    edges.setdefault((mod, found), []).append(where)
    return edges


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in _project_modules()}
    for a, b in import_edges():
        graph[a].add(b)
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


def test_the_graph_sees_module_and_function_level_imports():
    edges = import_edges()
    assert any("(in a function)" not in w for w in edges[("server.state", "server.think")])
    # inside register(), and only there
    assert all("(in a function)" in w
               for w in edges[("steering_plugin", "steering_plugin.admission")])
    assert ("server.state", "server.generation") not in edges      # not imported at all
    assert ("clients.repl", "clients.cli_shared") in edges
    assert ("toy.cli", "toy.eval") in edges                        # the tooling is in the graph
    # `if TYPE_CHECKING:` never runs: no edge
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n"
                     "else:\n    import b\ndef f():\n    import c\n")
    assert [(getattr(n, "module", None) or n.names[0].name, inside)
            for n, inside in _imports(tree)] == [
        ("typing", False), ("b", False), ("c", True)]


def _describe(cycle: tuple[str, ...], edges) -> str:
    members = set(cycle)
    return "; ".join(f"{a} -> {b} at {', '.join(w)}" for (a, b), w in sorted(edges.items())
                     if a in members and b in members)


def test_no_import_cycles_among_the_project_packages():
    edges = import_edges()
    found = cycles(import_graph())
    assert not found, "import cycles: " + " | ".join(_describe(c, edges) for c in found)


def test_nothing_at_run_time_imports_the_toy_tooling():
    """server, the plugin, persona_steer, the clients and extraction take what they need of the
    toy model from persona_steer (toy_demo, toy_language, toy_topics); toy/ is a development
    tool on top of them. (persona_steer.cli names the `toy` command's module as a string, so
    `persona-steer toy ...` works; registering it imports nothing of the tools: next test.)"""
    bad = {f"{a} -> {b}": w for (a, b), w in import_edges().items()
           if a.split(".")[0] in RUNTIME_PACKAGES and b.split(".")[0] == TOOLING}
    assert not bad, bad
    assert any(a.startswith("toy") and b.startswith("persona_steer") for a, b in import_edges())


def test_building_the_command_line_loads_no_toy_tool():
    # every `persona-steer` command (serve too) builds the whole parser, the toy command's too
    code = """
import sys
from persona_steer.cli import build_parser
build_parser()
print(sorted(m for m in sys.modules if m == "toy" or m.startswith("toy.")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['toy', 'toy.cli']", out.stdout


# the tune job's worker process is a client of its own server (loopback HTTP, extraction/tune.py)
SERVER_USES_CLIENT = {("server.jobs", "clients.client")}


def test_clients_and_server_share_constants_without_importing_each_other():
    # both read persona_steer (job states, steering fields); neither imports the other, but for
    # the job that talks to the server as a client
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith("clients"):
            assert not {d for d in deps if d.startswith("server")}, mod
        if mod.startswith("server"):
            assert not {(mod, d) for d in deps if d.startswith("clients")} - SERVER_USES_CLIENT, mod
    assert all("(in a function)" in w for w in import_edges()[("server.jobs", "clients.client")])
    assert "persona_steer.job_states" in graph["clients.client"]
    assert "persona_steer.job_states" in graph["server.jobs"]


def test_route_modules_take_request_dependencies_from_deps_not_each_other():
    graph = import_graph()
    routes = {m for m in graph if m.startswith("server.routes_")}
    assert routes >= {"server.routes_api", "server.routes_jobs", "server.routes_openai"}
    for mod in routes:
        assert not graph[mod] & routes, (mod, graph[mod] & routes)
        assert "server.deps" in graph[mod]
