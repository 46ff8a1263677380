"""jaxlab's packages import one way: no cycle between them.

Walks every ``import`` in ``jaxlab/`` (module level and inside functions), maps each to
the top-level unit it names (a package such as ``jaxlab.optim`` or a module such as
``jaxlab.partition``) and fails on any strongly connected group of two or more units,
printing the imports that close the cycle. Parameter labelling (``jaxlab.partition``)
sits below ``optim`` and ``sparse``; the model (``nn``) below ``sparse``; assembling an
optimizer from a config (``jaxlab.train.optimizer``) above both.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "jaxlab"


def _unit(module: str) -> str | None:
    """``jaxlab.optim.muon`` -> ``optim``; None outside jaxlab or for ``jaxlab`` itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "jaxlab" and len(parts) > 1 else None


def import_graph(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """``{unit: {imported unit: ["file:line", ...]}}`` over every .py file under root."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        src = _unit(".".join(rel.with_suffix("").parts))
        if src is None or src == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from jaxlab import partition` names the unit in the alias.
                targets = ([f"jaxlab.{a.name}" for a in node.names]
                           if node.module == "jaxlab" else [node.module])
            for t in targets:
                dst = _unit(t)
                if dst is not None and dst != src:
                    graph[src][dst].append(f"{rel}:{node.lineno}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_packages():
    graph = import_graph()
    found = cycles(graph)
    detail = [f"{a} -> {b}: {', '.join(graph[a][b][:3])}"
              for comp in found for a in comp for b in comp if b in graph.get(a, {})]
    assert not found, "import cycles between jaxlab packages:\n" + "\n".join(detail)


def test_the_layers_named_in_the_design():
    graph = import_graph()
    assert "partition" in graph["optim"] and "partition" in graph["sparse"]
    for low, high in [("nn", "sparse"), ("optim", "sparse"), ("sparse", "optim"),
                      ("partition", "optim"), ("partition", "sparse"), ("nn", "optim"),
                      ("optim", "train"), ("sparse", "train"), ("nn", "train")]:
        assert high not in graph.get(low, {}), f"{low} imports {high}: {graph[low][high]}"


def test_the_walker_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "jaxlab"
    for name, body in [("a/x.py", "from jaxlab.b import y\n"),
                       ("b/y.py", "def f():\n    from jaxlab import a\n"),
                       ("c.py", "import jaxlab.a.x\n")]:
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(body)
    graph = import_graph(pkg)
    assert cycles(graph) == [["a", "b"]]
    assert graph["c"]["a"] == ["jaxlab/c.py:1"]
