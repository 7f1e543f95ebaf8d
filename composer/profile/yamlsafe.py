"""A bounded, strict YAML loader for profiles and mirror metadata.

PyYAML's safe loader still lets through what a hostile or careless file can
do: nesting deep enough for a RecursionError, aliases that expand a few lines
into billions of values (the "billion laughs"), implicit conversions that raise
ValueError (``2001-99-99``, ``!!int abc``), integers of thousands of digits,
and duplicate keys that silently keep the last value. :func:`load_yaml` refuses
each of them with one line naming the file and line, raised as the caller's
:class:`ComposerError` subclass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from composer.errors import ComposerError, ProfileError

MAX_DEPTH = 64
MAX_NODES = 100_000
"""Values in the document once every alias is expanded."""
MAX_INT_DIGITS = 30
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Bounds:
    """Depth, size, expansion and duplicate-key checks shared by both loaders.

    Depth and the number of values are counted while the document is composed, so a
    file past a limit stops costing time and memory at the value that passes it; alias
    expansion and duplicate keys are checked on the composed graph."""

    max_depth = MAX_DEPTH
    max_nodes = MAX_NODES
    _depth = 0
    _nodes = 0

    def compose_node(self, parent: Node | None, index: object) -> Node:
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                mark = self.peek_event().start_mark  # type: ignore[attr-defined]
                raise _Refused(mark.line + 1, f"nested more than {self.max_depth} levels deep")
            if not self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
                self._nodes += 1
                if self._nodes > self.max_nodes:
                    mark = self.peek_event().start_mark  # type: ignore[attr-defined]
                    raise _Refused(mark.line + 1, f"more than {self.max_nodes} values")
            node: Node = super().compose_node(parent, index)  # type: ignore[misc]
            return node
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (_Refused, yaml.YAMLError):
            raise
        except (ValueError, TypeError, AttributeError, OverflowError, KeyError,
                IndexError) as exc:
            shown = node.value if isinstance(node, ScalarNode) else node.tag
            raise _Refused(_line(node), f"cannot read {_short(shown)} as "
                                        f"{node.tag.rsplit(':', 1)[-1]}") from exc


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


class _TypedResolver(yaml.resolver.Resolver):
    """YAML 1.1 implicit types, except that dates stay strings."""


_TypedResolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}


class _PythonEvents(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    def __init__(self, stream: str | bytes) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


# What turns bytes into parse events: libyaml's scanner and parser when PyYAML was built
# with it (C, five to ten times faster), else PyYAML's own. Composing stays in Python
# either way, so the bounds of _Bounds apply to both.
if TYPE_CHECKING:
    _Events = _PythonEvents
else:
    try:
        from yaml._yaml import CParser as _Events
    except ImportError:
        _Events = _PythonEvents


class _TypedLoader(_Bounds, yaml.composer.Composer, _Events, yaml.constructor.SafeConstructor,
                   _TypedResolver):
    def __init__(self, stream: str | bytes) -> None:
        _Events.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        _TypedResolver.__init__(self)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        digits = sum(c.isalnum() for c in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _Refused(_line(node), f"number with more than {MAX_INT_DIGITS} digits")
        value: int = super().construct_yaml_int(node)
        return WrittenInt(value, str(node.value))


_TypedLoader.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:int", _TypedLoader.construct_yaml_int)


class WrittenInt(int):
    """An integer that remembers how the file wrote it: ``mode: 644`` and ``mode: 0644`` are
    different numbers to YAML, but a user means the same thing by both."""

    written: str

    def __new__(cls, value: int, written: str) -> WrittenInt:
        number = super().__new__(cls, value)
        number.written = written
        return number


class _TextLoader(_Bounds, yaml.composer.Composer, _Events, yaml.constructor.BaseConstructor,
                  yaml.resolver.BaseResolver):
    """Every scalar stays a string (``version: 3.20`` must not become 3.2)."""

    def __init__(self, stream: str | bytes) -> None:
        _Events.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.BaseConstructor.__init__(self)
        yaml.resolver.BaseResolver.__init__(self)


def _check_graph(root: Node, max_nodes: int, duplicates: bool) -> None:
    """Count the document's values with aliases expanded; refuse cycles and duplicate keys."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            visiting.discard(key)
            children = _children(node)
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > max_nodes:
                raise _Refused(_line(node), f"expands to more than {max_nodes} values "
                                            "(aliases repeated too often)")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in visiting:
            raise _Refused(_line(node), "an alias refers to the collection that contains it")
        visiting.add(key)
        if duplicates and isinstance(node, MappingNode):
            _check_duplicates(node)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_duplicates(node: MappingNode) -> None:
    first: dict[tuple[str, str], int] = {}
    for key_node, _value in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
            continue
        key = (key_node.tag, key_node.value)
        line = _line(key_node)
        if key in first:
            raise _Refused(line, f"duplicate key {_short(key_node.value)} (first at line "
                                 f"{first[key]})")
        first[key] = line


def load_yaml(text: str | bytes, *, source: str, typed: bool = True,
              error_cls: type[ComposerError] = ProfileError, allow_duplicates: bool = False,
              max_nodes: int = MAX_NODES) -> Any:
    """Parse one YAML document within bounds; every failure is ``error_cls`` naming ``source``.

    ``typed`` False keeps every scalar a string. Duplicate keys are refused unless
    ``allow_duplicates``.
    """
    loader: _TypedLoader | _TextLoader | None = None
    try:
        loader = (_TypedLoader if typed else _TextLoader)(text)
        loader.max_nodes = max_nodes
        root = loader.get_single_node()
        if root is None:
            return None
        _check_graph(root, max_nodes, not allow_duplicates)
        return loader.construct_document(root)
    except _Refused as exc:
        raise error_cls(f"{source}:{exc.line}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["invalid YAML"])[0]
        if mark and "maximum nesting depth" in problem:  # libyaml's own limit, past ours
            raise error_cls(f"{source}:{mark.line + 1}: nested more than {MAX_DEPTH} levels "
                            "deep") from None
        raise error_cls(f"{source}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise error_cls(f"{source}: invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
