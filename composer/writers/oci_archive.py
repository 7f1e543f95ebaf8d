"""Single-file forms of an image: an OCI archive (a tar of the layout) and a `docker load` tar.

Both are deterministic tars: entries sorted, one mtime, owners 0:0, modes 0644/0755.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from composer.errors import NotSupportedError, OutputError
from composer.tree import Blob, Entry, EntryType, FileTree
from composer.writers.oci import OciImageSpec, canonical_json, image_config
from composer.writers.stream import HashingWriter
from composer.writers.tar import BLOCK, LAYER_STYLE, RECORD, write_tar


def layout_tree(layout_dir: Path) -> FileTree:
    """A FileTree over an OCI layout's files; blob contents are read only when written out.

    Blob files are named by their digest, so their sha256 is taken from the name
    rather than by reading them.
    """
    tree = FileTree()
    for name in ("oci-layout", "index.json"):
        path = layout_dir / name
        if not path.is_file():
            raise OutputError(f"OCI archive: {path} is missing; not an OCI layout")
        tree.add_file(name, path.read_bytes(), mode=0o644)
    tree.add_dir("blobs", mode=0o755)
    for algorithm_dir in sorted((layout_dir / "blobs").iterdir()):
        if not algorithm_dir.is_dir():
            continue
        tree.add_dir(f"blobs/{algorithm_dir.name}", mode=0o755)
        for blob_path in sorted(algorithm_dir.iterdir()):
            if blob_path.name.startswith(".") or not blob_path.is_file():
                continue
            blob = Blob(data=None, path=str(blob_path), size=blob_path.stat().st_size,
                        sha256=blob_path.name)
            tree.put(Entry(path=f"blobs/{algorithm_dir.name}/{blob_path.name}",
                           type=EntryType.FILE, mode=0o644, blob=blob))
    return tree


def write_oci_archive(layout_dir: Path, out: BinaryIO, *, mtime: int) -> int:
    """Tar an OCI layout (``oci-archive:``); entries sorted, ``mtime`` the image's created epoch."""
    tree = layout_tree(layout_dir)
    sink = HashingWriter(out)
    write_tar(tree, sink, mtime=mtime, style=LAYER_STYLE)  # type: ignore[arg-type]
    return sink.size


def _member_header(name: str, *, size: int, mtime: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = 0 if directory else size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _TarOut:
    """Appends members to a tar stream and pads it to the record size at the end."""

    def __init__(self, out: BinaryIO, mtime: int) -> None:
        self.out = HashingWriter(out)
        self.mtime = mtime

    def directory(self, name: str) -> None:
        self.out.write(_member_header(name, size=0, mtime=self.mtime, directory=True))

    def file(self, name: str, data: bytes) -> None:
        self.out.write(_member_header(name, size=len(data), mtime=self.mtime))
        self.out.write(data)
        self._pad(len(data))

    def _pad(self, size: int) -> None:
        pad = (BLOCK - size % BLOCK) % BLOCK
        if pad:
            self.out.write(b"\0" * pad)

    def finish(self) -> int:
        end = 2 * BLOCK
        padding = (RECORD - (self.out.size + end) % RECORD) % RECORD
        self.out.write(b"\0" * (end + padding))
        return self.out.size


def write_docker_archive(images: Sequence[OciImageSpec], out: BinaryIO, *, tag: str) -> int:
    """A `docker load` tar: ``manifest.json``, ``<config>.json``, ``<diff_id>/layer.tar``.

    The layer tar's size and DiffID must precede it, so the layer is produced
    twice: once into a hash-only sink, once into the archive. Its bytes are
    identical both times because the tar writer is deterministic.
    """
    if len(images) != 1:
        arches = ", ".join(spec.arch for spec in images)
        raise NotSupportedError(
            f"docker-archive output holds a single platform, but the image has {len(images)} "
            f"({arches}); build one architecture or use the OCI outputs")
    if ":" not in tag.rsplit("/", 1)[-1]:
        raise OutputError(f"docker-archive output: tag {tag!r} must look like NAME:TAG")
    spec = images[0]
    probe = HashingWriter(None)
    write_tar(spec.tree, probe, mtime=spec.created, style=LAYER_STYLE)  # type: ignore[arg-type]
    diff_id = probe.digest
    config_bytes = canonical_json(image_config(spec, [diff_id]))
    config_hex = HashingWriter(None)
    config_hex.write(config_bytes)
    config_name = f"{config_hex.hexdigest}.json"
    layer_name = f"{probe.hexdigest}/layer.tar"
    manifest: list[dict[str, Any]] = [
        {"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]
    repo, _, short_tag = tag.rpartition(":")
    repositories = {repo: {short_tag: probe.hexdigest}}

    tar = _TarOut(out, spec.created)
    tar.directory(f"{probe.hexdigest}/")
    tar.out.write(_member_header(layer_name, size=probe.size, mtime=spec.created))
    layer = HashingWriter(tar.out)  # type: ignore[arg-type]
    write_tar(spec.tree, layer, mtime=spec.created, style=LAYER_STYLE)  # type: ignore[arg-type]
    if layer.digest != diff_id or layer.size != probe.size:
        raise OutputError(
            f"docker-archive output: the layer of {spec.arch} changed between two writes "
            "(tree contents changed while writing)")
    tar._pad(layer.size)
    tar.file(config_name, config_bytes)
    tar.file("manifest.json", canonical_json(manifest))
    tar.file("repositories", canonical_json(repositories))
    return tar.finish()


__all__ = ["layout_tree", "write_docker_archive", "write_oci_archive"]
