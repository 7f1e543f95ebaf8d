"""`make fuzz` targets for what `verify` and `boot` read, and for the download cache's records.

An output folder is written once from the real minirootfs (a tar artifact, an ISO
stand-in, a two-platform OCI layout with an SBOM attached, ``SHA256SUMS`` and
``manifest.json`` as a build writes them); each worker copies it into a folder of
its own and puts one mutated file into it per case. OCI blobs are re-chained (the
mutated blob stored under its digest and every descriptor above it rewritten), so a
mutation reaches the parser behind the hash checks. The bombs are the shapes of
issue 19: deep nesting, numbers of thousands of digits, a list where a string
belongs, a 300-character name, 1,200 nested indexes with valid digests, a layer
that inflates to 1 GiB.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.archive import load_tar
from composer.manifest import BuildManifest, OutputRecord, format_sha256sums
from composer.sources.cache import ContentCache
from composer.tree import FileTree
from composer.verify import verify_outputs
from composer.verify_oci import verify_oci_layout
from composer.vm import find_iso
from composer.writers.oci import OciArtifact, OciImageSpec, canonical_json, write_oci_layout
from tests.helpers.hostile import deflate_zeros

JSON_TOKENS = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"null", b"true", b"1e999", b"-1",
               b"9" * 30, b"[" * 40, b'"path": ', b'"size": ', b'"../x"', b'"/etc/passwd"',
               b'"' + b"a" * 300 + b'"', b"\\u0000", b'"sha256:', b'"mediaType": ',
               b'"application/vnd.oci.image.index.v1+json"', b"\\n"]
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
URL = "https://mirror.example/v3.20/main/x86_64/APKINDEX.tar.gz"
PAIR = b"\n--SHA256SUMS--\n"
"""Between manifest.json and SHA256SUMS in one case of the verify-outputs target."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _output_folder(root: Path, minirootfs_tar: bytes) -> Path:
    """A complete output folder as ``build`` writes it, from the real minirootfs."""
    folder = root / "out"
    folder.mkdir(parents=True)
    specs = []
    for arch in ("x86_64", "aarch64"):
        tree = FileTree()
        load_tar(io.BytesIO(minirootfs_tar), tree, source="minirootfs")
        specs.append(OciImageSpec(tree=tree, arch=arch, created=1725622440))
    sbom = OciArtifact("x86_64", "application/spdx+json", b'{"spdxVersion": "SPDX-2.3"}')
    write_oci_layout(folder / "oci", specs, tag="3.20", artifacts=[sbom])
    files = {"t-3.20.3-x86_64.tar": minirootfs_tar, "t-3.20.3-x86_64.iso": b"\0" * 4096}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    records = [OutputRecord(path=name, sha256=_sha(data), size=len(data),
                            format=name.rsplit(".", 1)[1], arch="x86_64")
               for name, data in files.items()]
    for path in sorted((folder / "oci").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            records.append(OutputRecord(path=path.relative_to(folder).as_posix(),
                                        sha256=_sha(data), size=len(data), format="oci"))
    manifest = BuildManifest(
        tool_version="0.1.0", profile_name="t", profile_digest="ab" * 32, variant="minirootfs",
        branch="v3.20", mirror="https://dl-cdn.alpinelinux.org/alpine",
        releases={"x86_64": "3.20.3"}, source_date_epoch=1725622440, epoch_source="profile",
        inputs=(), outputs=tuple(records))
    (folder / "manifest.json").write_bytes(manifest.to_json())
    (folder / "SHA256SUMS").write_bytes(format_sha256sums(records))
    return folder


class _Layout:
    """The output folder, copied once per worker process, and its OCI chain."""

    def __init__(self, template: Path) -> None:
        self.template = template
        self._copies: dict[int, Path] = {}

    def folder(self) -> Path:
        pid = os.getpid()
        if pid not in self._copies:
            copy = self.template.parent / f"worker-{pid}"
            shutil.copytree(self.template, copy)
            self._copies[pid] = copy
        return self._copies[pid]

    def blob(self, digest: str) -> bytes:
        return (self.template / "oci" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()

    def chain(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """index.json, the nested image index, the first platform's manifest (originals)."""
        top = json.loads((self.template / "oci" / "index.json").read_bytes())
        nested = json.loads(self.blob(top["manifests"][0]["digest"]))
        manifest = json.loads(self.blob(nested["manifests"][0]["digest"]))
        return top, nested, manifest


def _put(layout_dir: Path, data: bytes) -> dict[str, Any]:
    digest = _sha(data)
    (layout_dir / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def _rechain(layout: _Layout, part: str, data: bytes) -> Path:
    """Store ``data`` as the ``part`` (``nested`` index, ``manifest``, ``config``, ``layer``)
    of the first platform and rewrite every descriptor above it; the layout to verify."""
    oci = layout.folder() / "oci"
    top, nested, manifest = layout.chain()
    if part in ("config", "layer"):
        target = manifest["config"] if part == "config" else manifest["layers"][0]
        target.update(_put(oci, data))
        data = canonical_json(manifest)
        part = "manifest"
    if part == "manifest":
        nested["manifests"][0].update(_put(oci, data))
        data = canonical_json(nested)
    top["manifests"][0].update(_put(oci, data))
    (oci / "index.json").write_bytes(canonical_json(top))
    return oci


def _verify_part(layout: _Layout, part: str) -> Callable[[bytes], None]:
    """Verify the layout with ``part`` replaced, then remove the blobs the case added."""

    def run(data: bytes) -> None:
        oci = layout.folder() / "oci"
        before = set((oci / "blobs" / "sha256").iterdir())
        try:
            verify_oci_layout(_rechain(layout, part, data))
        finally:
            for path in set((oci / "blobs" / "sha256").iterdir()) - before:
                path.unlink()
    return run


def _nested_indexes(layout: _Layout, depth: int) -> bytes:
    """index.json heading a chain of ``depth`` image indexes, each stored under its digest."""
    oci = layout.template / "oci"
    top, nested, _ = layout.chain()
    data = canonical_json(nested)
    for _ in range(depth):
        data = canonical_json({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
            {"mediaType": INDEX, **_put(oci, data)}]})
    top["manifests"][0].update(_put(oci, data))
    return canonical_json(top)


def _json_bombs(document: Any, string_at: tuple[str | int, ...],
                number_at: tuple[str | int, ...],
                dump: Callable[[Any], bytes] = canonical_json) -> list[bytes]:
    """Hostile variants of a JSON document: deep nesting, a number of 5,000 digits at
    ``number_at``, and at ``string_at`` a list, a 300-character name, a path out of the
    folder, a NUL, a deep value."""

    def variant(at: tuple[str | int, ...], value: Any) -> bytes:
        copy = json.loads(json.dumps(document))
        holder = copy
        for step in at[:-1]:
            holder = holder[step]
        holder[at[-1]] = value
        return dump(copy)

    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    return [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a": ' * 5000 + b"1" + b"}" * 5000,
        variant(number_at, "NUMBER").replace(b'"NUMBER"', b"9" * 5000),
        variant(number_at, "NUMBER").replace(b'"NUMBER"', b"1e999"),
        variant(number_at, -1),
        variant(number_at, True),
        variant(string_at, ["x"]),
        variant(string_at, "a" * 300),
        variant(string_at, "../../etc/passwd"),
        variant(string_at, "a\0b"),
        variant(string_at, deep),
        b"\xef\xbb\xbf" + dump(document),
        dump(document) + b"x",
    ]


def artifact_targets(workdir: Path, minirootfs_tar: bytes, target: Callable[..., Any]) -> list[Any]:
    """The verify, OCI, boot and cache-record targets (``target`` builds a fuzz Target)."""
    layout = _Layout(_output_folder(workdir / "verify", minirootfs_tar))
    template = layout.template
    manifest_json = (template / "manifest.json").read_bytes()
    sums = (template / "SHA256SUMS").read_bytes()
    top, nested, manifest = layout.chain()
    config = layout.blob(manifest["config"]["digest"])
    layer = layout.blob(manifest["layers"][0]["digest"])
    chain_1200 = _nested_indexes(layout, 1200)

    def run_outputs(data: bytes) -> None:
        folder = layout.folder()
        listing, _, checksums = data.partition(PAIR)
        (folder / "manifest.json").write_bytes(listing)
        (folder / "SHA256SUMS").write_bytes(checksums)
        try:
            verify_outputs(folder)
        finally:
            for name in ("manifest.json", "SHA256SUMS"):
                shutil.copyfile(template / name, folder / name)

    def run_index(data: bytes) -> None:
        oci = layout.folder() / "oci"
        (oci / "index.json").write_bytes(data)
        verify_oci_layout(oci)

    def run_boot(data: bytes) -> None:
        folder = layout.folder()
        (folder / "manifest.json").write_bytes(data)
        try:
            find_iso(folder)
        finally:
            shutil.copyfile(template / "manifest.json", folder / "manifest.json")

    record = json.dumps({"etag": '"5f3a-61c"', "fetched_at": 1725622440.25,
                         "last_modified": "Fri, 06 Sep 2024 11:34:00 GMT",
                         "sha256": "d4" * 32, "size": 467096, "url": URL},
                        sort_keys=True, separators=(",", ":")).encode()
    caches: dict[int, ContentCache] = {}

    def run_record(data: bytes) -> None:
        cache = caches.setdefault(os.getpid(), ContentCache(workdir / f"cache-{os.getpid()}"))
        path = cache.urls_dir / (_sha(URL.encode()) + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cache.lookup_url(URL)

    listing = json.loads(manifest_json)
    return [
        target("verify-outputs", [manifest_json + PAIR + sums], run_outputs,
               [*JSON_TOKENS, b"  ", b" *", b"../", PAIR],
               bombs=[b + PAIR + sums for b in _json_bombs(
                   listing, ("outputs", 0, "path"), ("outputs", 0, "size"),
                   dump=_dump_manifest)] + _renamed(manifest_json, sums)),
        target("oci-index", [canonical_json(top)], run_index, JSON_TOKENS,
               bombs=[chain_1200, *_json_bombs(top, ("manifests", 0, "digest"),
                                               ("manifests", 0, "size"))]),
        target("oci-nested-index", [canonical_json(nested)], _verify_part(layout, "nested"),
               JSON_TOKENS, bombs=_json_bombs(nested, ("manifests", 0, "mediaType"),
                                              ("manifests", 0, "size"))),
        target("oci-manifest", [canonical_json(manifest)], _verify_part(layout, "manifest"),
               JSON_TOKENS, bombs=_json_bombs(manifest, ("layers", 0, "mediaType"),
                                              ("config", "size"))),
        target("oci-config", [config], _verify_part(layout, "config"), JSON_TOKENS,
               bombs=_json_bombs(json.loads(config), ("rootfs", "diff_ids", 0),
                                 ("rootfs", "diff_ids"))),
        target("oci-layer", [layer], _verify_part(layout, "layer"),
               [b"\x1f\x8b\x08\x00", b"\0" * 512, b"ustar\x0000"],
               bombs=[deflate_zeros(1 << 30), layer[:-8], layer + layer, b"", layer[:10]]),
        target("boot-manifest", [manifest_json], run_boot, JSON_TOKENS,
               bombs=_json_bombs(_iso_listing(listing), ("outputs", 0, "path"),
                                 ("outputs", 0, "arch"), dump=_dump_manifest)),
        target("cache-record", [record], run_record, JSON_TOKENS,
               bombs=[*_json_bombs(json.loads(record), ("url",), ("size",)),
                      record.replace(b'"5f3a-61c"', b'"a\\r\\nX-Injected: 1"'),
                      b"{" + b" " * 70_000 + b"}"]),
    ]


def _renamed(listing: bytes, checksums: bytes) -> list[bytes]:
    """manifest.json and SHA256SUMS agreeing on a name no output folder can hold."""
    first = checksums.split(b"\n", 1)[0].split(b"  ", 1)[1]
    names = [b"a" * 300, b"../../etc/passwd", b"/etc/passwd", b"a/" * 600 + b"b", b"a\x01b",
             b"./" + first, b"x/" * 9 + first]
    return [listing.replace(b'"' + first + b'"', b'"' + json.dumps(name.decode()).encode()[1:-1]
                            + b'"') + PAIR + checksums.replace(first, name, 1) for name in names]


def _dump_manifest(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=2) + "\n").encode()


def _iso_listing(listing: dict[str, Any]) -> dict[str, Any]:
    """manifest.json with the ISO output first, so the bombs land on what boot reads."""
    outputs = sorted(listing["outputs"], key=lambda o: o["format"] != "iso")
    return {**listing, "outputs": outputs}
