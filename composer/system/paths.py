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


def resolve_entry(tree: FileTree, path: str) -> Entry | None:
    """The entry ``path`` names once every symlink on the way and at the end is followed
    inside the tree (at most 40 of them, as the kernel allows), or None."""
    pending = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    entry = tree.get("")
    while pending:
        done.append(pending.pop(0))
        current = "/".join(done)
        entry = tree.get(current)
        if entry is None:
            return None
        if entry.type == EntryType.SYMLINK:
            hops += 1
            resolved = resolve_symlink_target(current, entry.target)
            if resolved is None or hops > 40:
                return None
            done = []
            pending = [p for p in resolved.split("/") if p] + pending
    return entry


def is_executable(tree: FileTree, path: str) -> bool:
    """Whether ``path`` resolves to a regular file with an execute bit."""
    entry = resolve_entry(tree, path)
    return entry is not None and entry.type == EntryType.FILE and bool(entry.mode & 0o111)
