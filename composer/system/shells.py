"""Login shells: ``etc/shells`` as busybox ``add-shell`` edits it."""

from __future__ import annotations

from collections.abc import Iterable

from composer.tree import Entry, EntryType, FileTree


def add_shells(tree: FileTree, shells: Iterable[str], *, mtime: int = 0) -> list[str]:
    """busybox ``add-shell``: append shells missing from ``etc/shells``; returns those added."""
    entry = tree.get("etc/shells")
    lines = (entry.blob.read().decode("utf-8", "surrogateescape").splitlines()
             if entry is not None and entry.blob is not None else [])
    added = [s for s in dict.fromkeys(shells) if s not in lines]
    if not added:
        return []
    data = ("\n".join([*lines, *added]) + "\n").encode("utf-8", "surrogateescape")
    tree.put(Entry(path="etc/shells", type=EntryType.FILE, mode=0o644, mtime=mtime,
                   blob=tree.store.from_bytes(data)))
    return added
