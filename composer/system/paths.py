"""Folder helpers for OS configuration: follow symlinked folders and create missing ones
inside a tree, the way the shell commands they stand in for would."""

from __future__ import annotations

from composer.tree import Entry, EntryType, FileTree, resolve_symlink_target


def resolve_dir(tree: FileTree, path: str) -> str | None:
    """``path`` with symlinked directories followed inside the tree; None if it is not a dir."""
    resolved = ""
    for _ in range(40):
        parts = [p for p in path.split("/") if p]
        resolved = ""
        for i, part in enumerate(parts):
            candidate = f"{resolved}/{part}" if resolved else part
            entry = tree.get(candidate)
            if entry is not None and entry.type == EntryType.SYMLINK:
                target = resolve_symlink_target(candidate, entry.target)
                if target is None:
                    return None
                path = "/".join([target, *parts[i + 1:]])
                break
            resolved = candidate
        else:
            entry = tree.get(resolved)
            return resolved if entry is not None and entry.type == EntryType.DIR else None
    return None


def make_dirs(tree: FileTree, directory: str, mtime: int) -> None:
    """``mkdir -p``: each missing folder of ``directory`` (0755, root, ``mtime``)."""
    parts = [p for p in directory.split("/") if p]
    for i in range(1, len(parts) + 1):
        path = "/".join(parts[:i])
        if resolve_dir(tree, path) is None and path not in tree:
            tree.put(Entry(path=path, type=EntryType.DIR, mode=0o755, mtime=mtime))
