"""The package's layout rules, read from the source (no import runs): which room may import
which, where vLLM and the environment are reached, and how large a module may grow.

The rooms (README, "Layout"): `rag` is the request pipeline on the API server, `server` only
translates HTTP to it, `decoding` runs inside the engine, `compat` alone knows vLLM's internals,
and `envs` alone reads the environment.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "retro_vllm"
MAX_LINES = 450  # "about 400": a module past this is asking to be split along its seam


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def imports(module: str, top_level_only: bool = False) -> frozenset[str]:
    """Absolute names `module` imports (relative imports resolved), at any depth or only at its
    top level (what runs when it is imported)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return frozenset(found)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def offenders(room: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    out = {}
    for module in MODULES:
        if within(module, room):
            bad = sorted(n for n in imports(module) if any(within(n, f) for f in forbidden))
            if bad:
                out[module] = bad
    return out


def test_only_compat_imports_vllm():
    leaks = {m: sorted(n for n in imports(m) if within(n, "vllm"))
             for m in MODULES if not within(m, "retro_vllm.compat")}
    assert {m: n for m, n in leaks.items() if n} == {}


def test_the_pipeline_knows_nothing_of_http():
    assert offenders("retro_vllm.rag", ("retro_vllm.server", "fastapi", "starlette")) == {}


def test_the_engine_side_imports_nothing_of_the_api_server():
    api_server = ("retro_vllm.server", "retro_vllm.rag", "retro_vllm.compat.serving", "retro_vllm.compat.renderers",
                  "retro_vllm.compat.launcher", "fastapi")
    assert offenders("retro_vllm.decoding", api_server) == {}


def test_library_rooms_do_not_reach_up_into_the_server_or_the_cli():
    for room in ("retro_vllm.retrieval", "retro_vllm.adapters", "retro_vllm.routing", "retro_vllm.decoding",
                 "retro_vllm.compat", "retro_vllm.models", "retro_vllm.evaluation", "retro_vllm.rag"):
        assert offenders(room, ("retro_vllm.server", "retro_vllm.cli")) == {}, room


def test_the_pipeline_is_above_the_rooms_it_calls():
    # Training and evaluation render the serving prompt layout (rag.assemble, rag.cite); the
    # stores, the router, the models and vLLM's seams never need the pipeline.
    for room in ("retro_vllm.retrieval", "retro_vllm.routing", "retro_vllm.models", "retro_vllm.compat"):
        assert offenders(room, ("retro_vllm.rag",)) == {}, room
    assert offenders("retro_vllm.evaluation", ("retro_vllm.server",)) == {}
    # Of the pipeline, training needs the layout alone (pure: no vLLM), so it installs without vLLM.
    assert {m: [n for n in names if n != "retro_vllm.rag.layout"]
            for m, names in offenders("retro_vllm.adapters", ("retro_vllm.rag",)).items()
            if any(n != "retro_vllm.rag.layout" for n in names)} == {}
    assert offenders("retro_vllm.rag.layout", ("retro_vllm.compat", "vllm", "torch")) == {}
    importers = {m for m in MODULES if not within(m, "retro_vllm.evaluation") and not within(m, "retro_vllm.cli")
                 and any(within(n, "retro_vllm.evaluation") for n in imports(m))}
    assert importers == set(), "evaluations are never on the request path"


def test_no_import_cycle_at_import_time():
    graph = {m: {n for n in imports(m, top_level_only=True) if n in MODULES and n != m} for m in MODULES}
    # A package's __init__ runs before its modules: an edge to a module implies its package.
    for m in list(graph):
        graph[m] |= {p for n in list(graph[m]) for p in parents(n) if p in MODULES and p != m and not within(m, p)}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def environment_reads(module: str) -> list[str]:
    """Reads of the environment: os.environ.get/[...]/in, os.getenv. Copies for a child process
    (dict(os.environ)) and writes are not reads of a setting."""
    tree = ast.parse(MODULES[module].read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = ast.unparse(node.func)
            if target in ("os.environ.get", "os.getenv"):
                found.append(ast.unparse(node.args[0]) if node.args else target)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" and isinstance(node.ctx, ast.Load):
            found.append(ast.unparse(node.slice))
        elif isinstance(node, ast.Compare) and any(ast.unparse(c) == "os.environ" for c in node.comparators):
            found.append(ast.unparse(node.left))
    return found


def test_only_envs_reads_the_environment():
    reads = {m: environment_reads(m) for m in MODULES if m != "retro_vllm.envs"}
    assert {m: r for m, r in reads.items() if r} == {}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines: split it along its seam"


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"))
def test_each_package_says_what_it_holds(package):
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text()))
    assert doc and len(doc.split()) >= 8, f"{package}/__init__.py needs a docstring: what it holds, what it must not import"
