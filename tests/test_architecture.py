"""The import arrows of design.md, checked on the source: pure layers stay pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "composer"

# module prefix → prefixes it must never import (directly)
FORBIDDEN = {
    "composer.tree": ("composer.sources", "composer.apk", "composer.writers", "composer.pipeline",
                      "composer.cli", "requests"),
    "composer.archive": ("composer.sources", "composer.pipeline", "composer.cli", "requests"),
    "composer.profile": ("composer.sources", "composer.apk", "composer.writers",
                         "composer.pipeline", "composer.cli", "requests"),
    "composer.writers": ("composer.sources", "composer.apk.resolver", "composer.apk.install",
                         "composer.pipeline", "composer.cli", "requests"),
    "composer.apk": ("composer.sources", "composer.writers", "composer.pipeline", "composer.cli",
                     "requests", "subprocess", "socket"),
    "composer.tarread": ("composer.sources", "composer.apk", "composer.writers", "composer.tree",
                         "composer.pipeline", "composer.cli", "requests"),
    "composer.numbers": ("composer.",),
    "composer.profile.yamlsafe": ("composer.sources", "composer.apk", "composer.profile.model",
                                  "requests"),
    "composer.errors": ("composer.",),
}
NETWORK = ("requests", "urllib.request", "http.client", "socket")


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        found.append((name, path))
    return found


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("name", "path"), modules(), ids=[m[0] for m in modules()])
def test_layers(name: str, path: Path) -> None:
    found = imports_of(path)
    for prefix, banned in FORBIDDEN.items():
        if name == prefix or name.startswith(prefix + "."):
            bad = sorted(i for i in found for b in banned if i == b.rstrip(".") or i.startswith(b))
            assert not bad, f"{name} imports {bad}, which its layer must not"


def test_only_sources_touch_the_network() -> None:
    offenders = [name for name, path in modules()
                 if not name.startswith("composer.sources")
                 and any(i == n or i.startswith(n + ".") for i in imports_of(path) for n in NETWORK)]
    assert offenders == []


def test_modules_stay_small() -> None:
    large = {name: n for name, path in modules()
             if (n := len(path.read_text().splitlines())) > 650}
    assert large == {}, f"split these by responsibility: {large}"
