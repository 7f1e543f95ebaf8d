"""An output folder as `build` writes it, and surgery on its OCI layout, for verify and boot.

``write_output_folder`` lays a minirootfs tarball into a tar artifact, an ISO stand-in
and a two-platform OCI layout (``index.json`` → image index → manifests, an SBOM
attached to the first), with ``SHA256SUMS`` and ``manifest.json`` naming them all.
``rechain`` replaces one document or layer of the first platform and rewrites every
descriptor above it, so the blob hashes stay valid and the replaced bytes reach the
reader behind them; ``nested_indexes`` builds a chain of image indexes.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from composer.archive import load_tar
from composer.manifest import BuildManifest, OutputRecord, format_sha256sums
from composer.tree import FileTree
from composer.writers.oci import OciArtifact, OciImageSpec, canonical_json, write_oci_layout

INDEX = "application/vnd.oci.image.index.v1+json"
EPOCH = 1725622440


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_output_folder(folder: Path, minirootfs: bytes) -> Path:
    """``folder`` filled as a build of profile ``t`` fills it; returns ``folder``."""
    folder.mkdir(parents=True)
    specs = []
    for arch in ("x86_64", "aarch64"):
        tree = FileTree()
        load_tar(io.BytesIO(minirootfs), tree, source="minirootfs")
        specs.append(OciImageSpec(tree=tree, arch=arch, created=EPOCH))
    sbom = OciArtifact("x86_64", "application/spdx+json", b'{"spdxVersion": "SPDX-2.3"}')
    write_oci_layout(folder / "oci", specs, tag="3.20", artifacts=[sbom])
    files = {"t-3.20.3-x86_64.tar.gz": minirootfs, "t-3.20.3-x86_64.iso": b"\0" * 4096}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    records = [OutputRecord(path=name, sha256=sha256(data), size=len(data),
                            format="iso" if name.endswith(".iso") else "tar", arch="x86_64")
               for name, data in files.items()]
    write_records(folder, records + _layout_records(folder))
    return folder


def _layout_records(folder: Path) -> list[OutputRecord]:
    records = []
    for path in sorted((folder / "oci").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            records.append(OutputRecord(path=path.relative_to(folder).as_posix(),
                                        sha256=sha256(data), size=len(data), format="oci"))
    return records


def write_records(folder: Path, records: list[OutputRecord]) -> None:
    """``manifest.json`` and ``SHA256SUMS`` listing ``records``, as a build writes them."""
    manifest = BuildManifest(
        tool_version="0.1.0", profile_name="t", profile_digest="ab" * 32, variant="minirootfs",
        branch="v3.20", mirror="https://dl-cdn.alpinelinux.org/alpine",
        releases={"x86_64": "3.20.3"}, source_date_epoch=EPOCH, epoch_source="profile",
        inputs=(), outputs=tuple(records))
    (folder / "manifest.json").write_bytes(manifest.to_json())
    (folder / "SHA256SUMS").write_bytes(format_sha256sums(records))


def relist(folder: Path) -> None:
    """Rewrite ``manifest.json`` and ``SHA256SUMS`` for the files now in ``folder``, so that
    only what ``verify`` reads inside them can fail."""
    old = json.loads((folder / "manifest.json").read_bytes())["outputs"]
    records = []
    for entry in old:
        if entry["format"] == "oci":
            continue
        data = (folder / entry["path"]).read_bytes()
        records.append(OutputRecord(path=entry["path"], sha256=sha256(data), size=len(data),
                                    format=entry["format"], arch=entry.get("arch")))
    write_records(folder, records + _layout_records(folder))


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def chain(layout: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """index.json, the image index it names, and the first platform's manifest."""
    top = json.loads((layout / "index.json").read_bytes())
    nested = json.loads(blob(layout, top["manifests"][0]["digest"]))
    manifest = json.loads(blob(layout, nested["manifests"][0]["digest"]))
    return top, nested, manifest


def put(layout: Path, data: bytes) -> dict[str, Any]:
    """Store ``data`` as a blob; its digest and size, for a descriptor."""
    digest = sha256(data)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def rechain(original: Path, layout: Path, part: str, data: bytes) -> None:
    """Make ``data`` the ``part`` (``nested`` index, ``manifest``, ``config`` or ``layer``) of
    the first platform in ``layout``, a copy of ``original``, with every descriptor above
    it rewritten."""
    top, nested, manifest = chain(original)
    if part in ("config", "layer"):
        (manifest["config"] if part == "config" else manifest["layers"][0]).update(
            put(layout, data))
        data = canonical_json(manifest)
        part = "manifest"
    if part == "manifest":
        nested["manifests"][0].update(put(layout, data))
        data = canonical_json(nested)
    top["manifests"][0].update(put(layout, data))
    (layout / "index.json").write_bytes(canonical_json(top))


def nested_indexes(layout: Path, depth: int) -> bytes:
    """index.json heading a chain of ``depth`` image indexes above the real one, each stored
    under its digest (``layout`` gains the blobs, not the index.json)."""
    top, nested, _ = chain(layout)
    data = canonical_json(nested)
    for _ in range(depth):
        data = canonical_json({"schemaVersion": 2, "mediaType": INDEX,
                               "manifests": [{"mediaType": INDEX, **put(layout, data)}]})
    top["manifests"][0].update(put(layout, data))
    return canonical_json(top)
