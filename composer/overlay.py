"""The profile's overlay laid onto a FileTree: removals, folders, files, links, hostname.

Overlay paths go through the same checks as archive members: nothing may pass
through a symlink or leave the root. Host files are read in sorted order so the
result never depends on the order a filesystem lists them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from composer.archive import check_symlink_target
from composer.errors import ArchiveError, ProfileError
from composer.profile.model import Overlay
from composer.tree import Entry, EntryType, FileTree, normalize_path


@dataclass(frozen=True)
class OverlayInput:
    """A host file the overlay read, for the manifest's input list."""

    path: str
    size: int
    sha256: str
    mode: int = 0o644


def _tree_path(image_path: str) -> str:
    return normalize_path(image_path.lstrip("/"), what="overlay path")


def _put(tree: FileTree, entry: Entry, what: str) -> None:
    try:
        tree.put(entry, what=what)
    except ArchiveError as exc:
        raise ProfileError(f"overlay: {exc}") from None


def host_path(base_dir: Path, relative: str, what: str,
              allowed_roots: Sequence[Path] | None) -> Path:
    """A ``source``/``tree`` path of the profile on the host, refused when it (or a symlink on
    the way) leads out of every allowed folder: a profile must not copy /etc/shadow."""
    path = base_dir / relative
    if allowed_roots is None:
        return path
    real = path.resolve()
    if not any(real == root or real.is_relative_to(root) for root in allowed_roots):
        raise ProfileError(f"{what}: {relative} leads outside the profile's folder (to {real}); "
                           "keep overlay sources beside the profile, or build with "
                           "--allow-host-paths")
    return path


def apply_overlay(tree: FileTree, overlay: Overlay, *, base_dir: Path,
                  allowed_roots: Sequence[Path] | None = None) -> list[OverlayInput]:
    """Apply ``overlay`` to ``tree``; return the host files read (relative to ``base_dir``).

    ``allowed_roots`` are the folders host files may come from (those of the profile files);
    None allows any path.
    """
    roots = None if allowed_roots is None else [r.resolve() for r in allowed_roots]
    inputs: list[OverlayInput] = []
    for image_path in overlay.remove:
        path = _tree_path(image_path)
        if not tree.remove(path):
            raise ProfileError(f"overlay.remove: {image_path} does not exist in the image")
    for folder in overlay.tree:
        root = host_path(base_dir, folder, "overlay.tree", roots)
        inputs.extend(_copy_tree(tree, root, folder))
    for directory in overlay.directories:
        path = _tree_path(directory.path)
        existing = tree.get(path)
        if existing is not None and existing.type != EntryType.DIR:
            raise ProfileError(f"overlay.directories: {directory.path} is a {existing.type.value} "
                               "in the image, not a folder (remove it first with overlay.remove)")
        _put(tree, Entry(path=path, type=EntryType.DIR, mode=directory.mode, uid=directory.uid,
                         gid=directory.gid), f"overlay.directories {directory.path}")
    for spec in overlay.files:
        path = _tree_path(spec.path)
        if spec.content is not None:
            data = spec.content.encode("utf-8")
        else:
            assert spec.source is not None
            source = host_path(base_dir, spec.source, f"overlay.files {spec.path}: source", roots)
            data = _read_host_file(source, f"overlay.files {spec.path}: source {spec.source}")
            inputs.append(_file_input(spec.source, data))
        _put(tree, Entry(path=path, type=EntryType.FILE, mode=spec.mode, uid=spec.uid,
                         gid=spec.gid, blob=tree.store.from_bytes(data)),
             f"overlay.files {spec.path}")
    for link in overlay.symlinks:
        path = _tree_path(link.path)
        try:
            check_symlink_target(path, link.target, source="overlay.symlinks")
        except ArchiveError as exc:
            raise ProfileError(str(exc)) from None
        _put(tree, Entry(path=path, type=EntryType.SYMLINK, mode=0o777, target=link.target),
             f"overlay.symlinks {link.path}")
    if overlay.hostname is not None:
        _put(tree, Entry(path="etc/hostname", type=EntryType.FILE, mode=0o644,
                         blob=tree.store.from_bytes(overlay.hostname.encode() + b"\n")),
             "overlay.hostname")
    return inputs


def _read_host_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"{what}: no such file") from None
    except IsADirectoryError:
        raise ProfileError(f"{what}: is a directory, not a file") from None
    except OSError as exc:
        raise ProfileError(f"{what}: cannot read ({exc.strerror})") from None


@dataclass(frozen=True)
class HostEntry:
    """One entry of an ``overlay.tree`` folder on the host, as the image will hold it."""

    host: Path
    image: str
    rel: str
    kind: EntryType
    mode: int


def walk_host_tree(root: Path, folder: str) -> Iterator[HostEntry]:
    """The entries of a host folder in sorted order (the order the host created them in never
    shows); files are 0755 when any execute bit is set, else 0644, as git normalises them."""
    if not root.is_dir():
        raise ProfileError(f"overlay.tree: {folder} is not a folder")

    def visit(host_dir: Path, image_dir: str) -> Iterator[HostEntry]:
        for name in sorted(os.listdir(host_dir)):
            host = host_dir / name
            image = f"{image_dir}/{name}" if image_dir else name
            rel = f"{folder.rstrip('/')}/{image}"
            st = os.lstat(host)
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            if stat.S_ISDIR(st.st_mode):
                yield HostEntry(host, image, rel, EntryType.DIR, 0o755)
                yield from visit(host, image)
            elif stat.S_ISREG(st.st_mode):
                yield HostEntry(host, image, rel, EntryType.FILE, mode)
            elif stat.S_ISLNK(st.st_mode):
                yield HostEntry(host, image, rel, EntryType.SYMLINK, 0o777)
            else:
                raise ProfileError(f"overlay.tree {rel}: only files, folders and symlinks can be "
                                   "copied")

    yield from visit(root, "")


def _file_input(rel: str, data: bytes, mode: int = 0o644) -> OverlayInput:
    return OverlayInput(rel, len(data), hashlib.sha256(data).hexdigest(), mode)


def read_overlay_inputs(overlay: Overlay, *, base_dir: Path,
                        allowed_roots: Sequence[Path] | None = None) -> list[OverlayInput]:
    """The host files :func:`apply_overlay` would read, hashed the same way, without a tree
    (for the lock, which pins the profile before anything is composed)."""
    roots = None if allowed_roots is None else [r.resolve() for r in allowed_roots]
    inputs: list[OverlayInput] = []
    for folder in overlay.tree:
        root = host_path(base_dir, folder, "overlay.tree", roots)
        for item in walk_host_tree(root, folder):
            if item.kind == EntryType.FILE:
                data = _read_host_file(item.host, f"overlay.tree {item.rel}")
                inputs.append(_file_input(item.rel, data, item.mode))
            elif item.kind == EntryType.SYMLINK:
                inputs.append(_file_input(item.rel, os.readlink(item.host).encode()))
    for spec in overlay.files:
        if spec.source is not None:
            source = host_path(base_dir, spec.source, f"overlay.files {spec.path}: source", roots)
            data = _read_host_file(source, f"overlay.files {spec.path}: source {spec.source}")
            inputs.append(_file_input(spec.source, data))
    return inputs


def _copy_tree(tree: FileTree, root: Path, folder: str) -> list[OverlayInput]:
    """Copy a host folder into the image root, owned by root.

    Modes are normalised as git does, so that the host's umask never shows: files are 0755
    when any execute bit is set and 0644 otherwise; new folders are 0755, and folders the
    image already has keep their mode and owner.
    """
    inputs: list[OverlayInput] = []
    for item in walk_host_tree(root, folder):
        what = f"overlay.tree {item.rel}"
        if item.kind == EntryType.DIR:
            existing = tree.get(item.image)
            if existing is None or existing.type != EntryType.DIR:
                _put(tree, Entry(path=item.image, type=EntryType.DIR, mode=0o755), what)
        elif item.kind == EntryType.FILE:
            data = _read_host_file(item.host, what)
            inputs.append(_file_input(item.rel, data, item.mode))
            _put(tree, Entry(path=item.image, type=EntryType.FILE, mode=item.mode,
                             blob=tree.store.from_bytes(data)), what)
        else:
            target = os.readlink(item.host)
            try:
                check_symlink_target(item.image, target, source="overlay.tree")
            except ArchiveError as exc:
                raise ProfileError(str(exc)) from None
            inputs.append(_file_input(item.rel, target.encode()))
            _put(tree, Entry(path=item.image, type=EntryType.SYMLINK, mode=0o777, target=target),
                 what)
    return inputs
