"""The import arrows of design.md, checked on the source: pure layers stay pure, no cycles.

    python -m composer → cli → stages/{validate, plan, compose, outputs} → writers
                                 ↘ sources (network, cache)   ↘ apk, system, overlay
                                                               → tree, profile → errors
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "composer"

NETWORK = ("requests", "urllib.request", "http.client", "socket")
PROCESS_AND_TERMINAL = ("subprocess", "tqdm", "composer.cli")
# The pure layers: format code and models, taking bytes, streams and values.
PURE = ("composer.tree", "composer.archive", "composer.profile", "composer.writers",
        "composer.apk", "composer.system", "composer.urls", "composer.hashing", "composer.errors",
        "composer.tarread", "composer.numbers", "composer.jsonsafe", "composer.inflate",
        "composer.squashfsread",
        "composer.publish.reference", "composer.publish.wire", "composer.lockfile",
        "composer.provenance", "composer.diff", "composer.secure_boot")
# The edges that talk to the network: mirrors and caches, and registries (push).
NETWORK_EDGES = ("composer.sources", "composer.publish")

# module prefix → prefixes it must never import (directly)
FORBIDDEN = {
    "composer.tree": ("composer.sources", "composer.apk", "composer.writers", "composer.stages",
                      "composer.system"),
    "composer.archive": ("composer.sources", "composer.stages"),
    "composer.profile": ("composer.sources", "composer.apk", "composer.writers", "composer.stages",
                         "composer.system"),
    # Writers take a tree or plain records from the stage that calls them: no APK engine.
    "composer.writers": ("composer.sources", "composer.apk", "composer.stages", "composer.lockfile"),
    "composer.apk": ("composer.sources", "composer.writers", "composer.stages", "composer.profile"),
    "composer.system": ("composer.sources", "composer.apk", "composer.writers", "composer.stages"),
    "composer.sources": ("composer.stages", "composer.apk", "composer.writers"),
    "composer.stages": ("composer.cli", "composer.verify", "composer.publish"),
    # push reads what a build wrote; it never builds, and builds never push
    "composer.publish": ("composer.stages", "composer.cli", "composer.apk", "composer.system",
                         "composer.profile"),
    # the diff reads what others built: format readers over bytes, never a build or a fetch
    "composer.diff": ("composer.sources", "composer.stages", "composer.writers", "composer.publish",
                      "composer.verify", "composer.tree", "composer.apk.install"),
    "composer.tarread": ("composer.sources", "composer.apk", "composer.writers", "composer.tree",
                         "composer.stages", "composer.system"),
    "composer.squashfsread": ("composer.sources", "composer.apk", "composer.writers",
                              "composer.tree", "composer.stages", "composer.system"),
    "composer.numbers": ("composer.",),
    "composer.inflate": ("composer.",),
    "composer.profile.yamlsafe": ("composer.profile.model",),
    "composer.errors": ("composer.",),
    "composer.lockfile": ("composer.sources", "composer.stages", "composer.apk", "composer.writers",
                          "composer.profile", "composer.tree"),
    "composer.provenance": ("composer.sources", "composer.stages", "composer.apk",
                            "composer.writers"),
    **{pure: (*NETWORK, *PROCESS_AND_TERMINAL) for pure in PURE if pure != "composer.errors"},
}


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        found.append((name, path))
    return found


def imports_of(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (lazy and TYPE_CHECKING ones
    too); ``from a import b`` names ``a`` and, when it is a module, ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _prefix_matches(name: str, prefix: str) -> bool:
    prefix = prefix.rstrip(".")
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize(("name", "path"), modules(), ids=[m[0] for m in modules()])
def test_layers(name: str, path: Path) -> None:
    found = {i for i in imports_of(path) if i != name}
    for prefix, banned in FORBIDDEN.items():
        if _prefix_matches(name, prefix):
            bad = sorted(i for i in found for b in banned
                         if _prefix_matches(i, b) and not _prefix_matches(i, prefix))
            assert not bad, f"{name} imports {bad}, which its layer must not"


def test_only_sources_touch_the_network() -> None:
    offenders = [name for name, path in modules()
                 if not any(_prefix_matches(name, edge) for edge in NETWORK_EDGES)
                 and any(_prefix_matches(i, n) for i in imports_of(path) for n in NETWORK)]
    assert offenders == []


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each import cycle found by a depth-first walk, as the path that closes it."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles() -> None:
    """No module reaches itself through imports, lazy or for type checking alone."""
    known = {name for name, _ in modules()}
    graph = {name: sorted(i for i in imports_of(path) if i in known and i != name)
             for name, path in modules()}
    assert find_cycles(graph) == []


def test_cycle_check_finds_cycles(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("if True:\n    from composer.b import c\nimport composer.d\n")
    assert imports_of(tmp_path / "a.py") == {"composer.b", "composer.b.c", "composer.d"}
    assert find_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": ["b", "c"], "b": ["c"], "c": []}) == []


def test_output_kinds_are_rows_of_real_classes() -> None:
    import importlib

    from composer.stages.outputs import OUTPUT_KINDS

    for fmt, (module, name) in OUTPUT_KINDS.items():
        kind = getattr(importlib.import_module(module), name)
        assert all(callable(getattr(kind, m, None)) for m in ("check", "claim", "write")), fmt


def test_modules_stay_small() -> None:
    large = {name: n for name, path in modules()
             if (n := len(path.read_text().splitlines())) > 650}
    assert large == {}, f"split these by responsibility: {large}"


def test_only_the_iso_writer_imports_pycdlib() -> None:
    users = [name for name, path in modules()
             if any(i == "pycdlib" or i.startswith("pycdlib.") for i in imports_of(path))]
    assert users == ["composer.writers.iso"]
