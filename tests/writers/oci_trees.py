"""Trees and layout surgery shared by the OCI tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.tree import Entry, EntryType, FileTree
from composer.writers.oci import canonical_json

CREATED = 1700000000
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MINIROOTFS = SHARED / "fixtures/alpine-real/minirootfs/alpine-minirootfs-3.20.3-x86_64.tar.gz"


def small_tree() -> FileTree:
    """Dirs, modes incl. setuid/sticky, symlinks, a hard link pair, uid/gid 1000, an xattr-free mix."""
    tree = FileTree()
    tree.add_dir("bin")
    tree.add_file("bin/busybox", b"\x7fELF fake busybox\n" * 10, mode=0o755)
    tree.add_file("bin/su", b"setuid helper\n", mode=0o4755)
    tree.add_symlink("bin/sh", "/bin/busybox")
    tree.add_symlink("bin/ls", "busybox")
    tree.add_dir("etc")
    tree.add_file("etc/os-release", b"ID=alpine\nVERSION_ID=3.20.3\n")
    tree.add_file("etc/shadow", b"root:*::0:::::\n", mode=0o640, gid=42)
    tree.add_dir("home")
    tree.add_dir("home/user", mode=0o700, uid=1000, gid=1000)
    tree.add_file("home/user/.profile", b"export PS1='$ '\n", uid=1000, gid=1000, mode=0o600)
    tree.add_dir("tmp", mode=0o1777)
    tree.add_dir("dev")
    tree.add_dir("usr/lib", mode=0o755)
    link_id = tree.new_link_id()
    blob = tree.store.from_bytes(b"shared library bytes\n" * 50)
    for path in ("usr/lib/libz.so.1", "usr/lib/libz.so.1.3.1"):
        tree.put(Entry(path=path, type=EntryType.FILE, mode=0o755, blob=blob, link_id=link_id))
    tree.add_file("usr/lib/empty", b"")
    return tree


def mirrored_trees(count: int) -> tuple[FileTree, FileTree]:
    """Two trees with the same files added in opposite orders: a writer must not tell them apart."""
    forward, backward = FileTree(), FileTree()
    paths = [f"d{i % 3}/f{i}" for i in range(count)]
    for path in paths:
        forward.add_file(path, path.encode())
    for path in reversed(paths):
        backward.add_file(path, path.encode())
    return forward, backward


def golden_tree() -> FileTree:
    """The tiny fixed tree behind the golden digests: change it and the goldens change."""
    tree = FileTree()
    tree.add_dir("etc")
    tree.add_file("etc/hostname", b"alpine\n")
    tree.add_symlink("etc/mtab", "../proc/mounts")
    tree.add_dir("root", mode=0o700)
    return tree


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def write_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob_path(layout, digest).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def single_manifest(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    index = read_json(layout / "index.json")
    desc = index["manifests"][0]
    return desc, read_json(blob_path(layout, desc["digest"]))


def replace_manifest(layout: Path, mutate: Callable[[dict[str, Any]], None]) -> str:
    """Rewrite the single-arch manifest through ``mutate`` and re-point index.json at it."""
    index = read_json(layout / "index.json")
    desc = index["manifests"][0]
    manifest = read_json(blob_path(layout, desc["digest"]))
    mutate(manifest)
    desc.update(write_blob(layout, canonical_json(manifest)))
    (layout / "index.json").write_bytes(canonical_json(index))
    return str(desc["digest"])


def replace_config(layout: Path, mutate: Callable[[dict[str, Any]], None]) -> str:
    """Rewrite the config through ``mutate``; the manifest and index.json follow."""
    _, manifest = single_manifest(layout)
    config = read_json(blob_path(layout, manifest["config"]["digest"]))
    mutate(config)
    new = write_blob(layout, canonical_json(config))

    def point(m: dict[str, Any]) -> None:
        m["config"].update(new)

    replace_manifest(layout, point)
    return str(new["digest"])
