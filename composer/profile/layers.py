"""How the layers of a profile combine: a variant's preset at the bottom, then each file of
an ``extends`` chain, the named profile on top.

One rule for every layer, so that a preset behaves like a parent profile:

* mappings (``overlay``, ``trust``, ``config``, ``services`` …) merge key by key;
* name lists (``packages``, each runlevel of ``services``) accumulate: an upper layer's
  names are added to the lower ones', and an entry ``-name`` removes ``name`` that a lower
  layer added;
* path lists (``overlay.files``, ``overlay.directories``, ``overlay.symlinks``) merge by
  path: an upper entry replaces every lower entry with the same ``path``, and an entry
  ``-/some/path`` drops the lower ones without writing anything there;
* every other value (scalars, ``outputs``, ``repositories``, ``keys`` …) is replaced whole.

A removal that matches nothing below is kept, so that a layer further down (the preset)
can still satisfy it; one that is still there at the end is a profile error, raised by
the model with the field's location.
"""

from __future__ import annotations

import re
from typing import Any

NAME_LISTS = (("packages",), ("services", "*"))
PATH_LISTS = (("overlay", "files"), ("overlay", "directories"), ("overlay", "symlinks"))
REMOVE = "-"
_NAME_END = re.compile(r"[<>=~@ ]")


def is_removal(item: object) -> bool:
    """Whether a list entry is a removal (``-name`` or ``-/path``)."""
    return isinstance(item, str) and item.startswith(REMOVE)


def package_name(item: str) -> str:
    """The name of a package entry (``python3>=3.11`` → ``python3``, ``-jq`` → ``jq``)."""
    return _NAME_END.split(item.removeprefix(REMOVE).lstrip("!"), maxsplit=1)[0]


def _matches(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    return len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path,
                                                                            strict=True))


def merge_layers(lower: dict[str, Any], upper: dict[str, Any],
                 _path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Lay ``upper`` over ``lower`` (neither is changed)."""
    merged = dict(lower)
    for key, value in upper.items():
        path = (*_path, key)
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            merged[key] = merge_layers(below, value, path)
        elif isinstance(value, list) and isinstance(below, list) and \
                any(_matches(p, path) for p in NAME_LISTS):
            merged[key] = _merge_names(below, value)
        elif isinstance(value, list) and isinstance(below, list) and path in PATH_LISTS:
            merged[key] = _merge_paths(below, value)
        else:
            merged[key] = value
    return merged


def _merge_names(lower: list[Any], upper: list[Any]) -> list[Any]:
    result = list(lower)
    for item in upper:
        if is_removal(item):
            name = package_name(item)
            found = [x for x in result if isinstance(x, str) and not is_removal(x)
                     and not x.startswith("!") and package_name(x) == name]
            if found:
                result = [x for x in result if x not in found]
                continue
        if item not in result:
            result.append(item)
    return result


def _entry_path(item: object) -> str | None:
    if is_removal(item):
        assert isinstance(item, str)
        return item[len(REMOVE):].rstrip("/") or "/"
    if isinstance(item, dict) and isinstance(item.get("path"), str):
        return str(item["path"]).rstrip("/") or "/"
    if isinstance(item, str):  # a bare folder path in overlay.directories
        return item.rstrip("/") or "/"
    return None


def _merge_paths(lower: list[Any], upper: list[Any]) -> list[Any]:
    named = {_entry_path(item) for item in upper} - {None}
    kept = [item for item in lower if _entry_path(item) not in named]
    removed_below = {_entry_path(item) for item in lower} & named
    satisfied = [item for item in upper if is_removal(item) and _entry_path(item) in removed_below]
    return [*kept, *(item for item in upper if not any(item is s for s in satisfied))]
