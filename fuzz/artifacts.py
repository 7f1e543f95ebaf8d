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

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.sources.cache import ContentCache
from composer.verify import verify_outputs
from composer.verify_oci import verify_oci_layout
from composer.vm import find_image
from composer.writers.oci import canonical_json
from tests.helpers.hostile import deflate_zeros
from tests.helpers.outputs import blob, chain, nested_indexes, rechain, sha256, write_output_folder

JSON_TOKENS = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"null", b"true", b"1e999", b"-1",
               b"9" * 30, b"[" * 40, b'"path": ', b'"size": ', b'"../x"', b'"/etc/passwd"',
               b'"' + b"a" * 300 + b'"', b"\\u0000", b'"sha256:', b'"mediaType": ',
               b'"application/vnd.oci.image.index.v1+json"', b"\\n"]
URL = "https://mirror.example/v3.20/main/x86_64/APKINDEX.tar.gz"
PAIR = b"\n--SHA256SUMS--\n"
"""Between manifest.json and SHA256SUMS in one case of the verify-outputs target."""


class _Layout:
    """The output folder, copied once per worker process."""

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


def _verify_part(layout: _Layout, part: str) -> Callable[[bytes], None]:
    """Verify the layout with ``part`` replaced, then remove the blobs the case added."""

    def run(data: bytes) -> None:
        oci = layout.folder() / "oci"
        before = set((oci / "blobs" / "sha256").iterdir())
        try:
            rechain(layout.template / "oci", oci, part, data)
            verify_oci_layout(oci)
        finally:
            for path in set((oci / "blobs" / "sha256").iterdir()) - before:
                path.unlink()
    return run


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
    layout = _Layout(write_output_folder(workdir / "verify" / "out", minirootfs_tar))
    template = layout.template
    manifest_json = (template / "manifest.json").read_bytes()
    sums = (template / "SHA256SUMS").read_bytes()
    top, nested, manifest = chain(template / "oci")
    config = blob(template / "oci", manifest["config"]["digest"])
    layer = blob(template / "oci", manifest["layers"][0]["digest"])
    chain_1200 = nested_indexes(template / "oci", 1200)

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
            find_image(folder)
        finally:
            shutil.copyfile(template / "manifest.json", folder / "manifest.json")

    record = json.dumps({"etag": '"5f3a-61c"', "fetched_at": 1725622440.25,
                         "last_modified": "Fri, 06 Sep 2024 11:34:00 GMT",
                         "sha256": "d4" * 32, "size": 467096, "url": URL},
                        sort_keys=True, separators=(",", ":")).encode()
    caches: dict[int, ContentCache] = {}

    def run_record(data: bytes) -> None:
        cache = caches.setdefault(os.getpid(), ContentCache(workdir / f"cache-{os.getpid()}"))
        path = cache.urls_dir / (sha256(URL.encode()) + ".json")
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
