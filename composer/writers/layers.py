"""Split a finished tree into a few OCI layers, one per build stage, as a container build would.

The first layer is the tree as the base stage left it (the minirootfs as Alpine released
it), so every image built from the same base release and architecture carries the same
first layer, digest for digest, whatever it adds on top: a registry stores it once and a
node pulls it once. Each later layer is the change its stage made to the one before:
entries added or changed (content, type, mode, owner, target, xattrs; mtimes are not
compared, every member gets the build timestamp), a whiteout ``.wh.<name>`` for each
path removed, and the parent directories of all of those repeated with their final
metadata, so each layer is a complete tar on its own. A path whose type changes from or to
a directory gets a whiteout and its new entry in the same layer (image-spec ``layer.md``:
a whiteout hides only what lower layers hold). Whiteouts come first in their layer, so
no extractor can apply one to its own layer's replacement. Empty layers are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from composer.errors import OutputError
from composer.tree import (
    BlobStore,
    Entry,
    EntryType,
    FileTree,
    StageSnapshot,
    parent_of,
    sort_key,
)

WHITEOUT = ".wh."


class LayerTree(FileTree):
    """One layer's entries for the tar writer: whiteouts first, then parents before children."""

    def walk(self) -> list[Entry]:
        paths = sorted(self.entries, key=sort_key)
        outs = [p for p in paths if _is_whiteout(p)]
        rest = [p for p in paths if not _is_whiteout(p)]
        return [self.entries[p] for p in (*outs, *rest)]


@dataclass(frozen=True)
class Layer:
    """A layer to write: its entries (as a tree) and the history comment that names it."""

    tree: LayerTree
    comment: str


def _is_whiteout(path: str) -> bool:
    return path.rsplit("/", 1)[-1].startswith(WHITEOUT)


def same_entry(a: Entry, b: Entry) -> bool:
    """Whether two entries would be written as the same tar member (mtime aside)."""
    if (a.type, a.mode, a.uid, a.gid, a.target, a.devmajor, a.devminor, a.xattrs) != \
            (b.type, b.mode, b.uid, b.gid, b.target, b.devmajor, b.devminor, b.xattrs):
        return False
    if a.type != EntryType.FILE or a.blob is b.blob:
        return True
    if a.blob is None or b.blob is None:
        return a.size == b.size == 0
    return a.blob.size == b.blob.size and a.blob.sha256 == b.blob.sha256


def _whiteout_entry(path: str) -> Entry:
    parent = parent_of(path)
    name = path.rsplit("/", 1)[-1]
    return Entry(path=f"{parent}/{WHITEOUT}{name}" if parent else f"{WHITEOUT}{name}",
                 type=EntryType.FILE, mode=0o644)


def diff_entries(lower: Mapping[str, Entry], upper: Mapping[str, Entry]) -> dict[str, Entry]:
    """The entries of the layer that turns ``lower`` into ``upper`` (root excluded)."""
    out: dict[str, Entry] = {}
    for path, entry in upper.items():
        if path == "":
            continue
        old = lower.get(path)
        if old is not None and same_entry(old, entry):
            continue
        out[path] = entry
        if old is not None and old.type != entry.type and EntryType.DIR in (old.type, entry.type):
            white = _whiteout_entry(path)
            out[white.path] = white
    for path in lower:
        if not path or path in upper:
            continue
        holder = upper.get(parent_of(path))
        if holder is not None and holder.type == EntryType.DIR:  # else its parent's whiteout hides it
            white = _whiteout_entry(path)
            out[white.path] = white
    for path in list(out):
        parent = parent_of(path)
        while parent and parent not in out:
            out[parent] = upper[parent]
            parent = parent_of(parent)
    return out


def split_layers(stages: Sequence[StageSnapshot], final: Mapping[str, Entry],
                 final_comment: str) -> list[Layer]:
    """Layers for ``stages`` (in build order) and the finished tree; empty ones left out."""
    for path in final:
        if _is_whiteout(path):
            raise OutputError(f"OCI output: /{path} is named like an OCI whiteout (.wh.*), which "
                              "a layered image cannot carry; use layering: single")
    layers: list[Layer] = []
    lower: Mapping[str, Entry] = {}
    store = BlobStore()
    steps = [(s.entries, s.comment) for s in stages] + [(final, final_comment)]
    for upper, comment in steps:
        entries = diff_entries(lower, upper)
        if entries:
            layers.append(Layer(LayerTree(store=store, entries={"": upper[""], **entries}), comment))
        lower = upper
    return layers
