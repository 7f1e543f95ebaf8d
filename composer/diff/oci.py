"""OCI image layouts (a folder or an oci-archive) and docker-archives, walked for a diff.

From ``index.json`` down: every JSON document (index, manifest, config) contributes its
fields by JSON path at the format level, each layer its files (inflated within the
side's budget and read with the bounded tar reader) under ``<platform> layer <n>``, and
the topmost layer holding ``/lib/apk/db/installed`` the platform's packages. JSON is
read with :mod:`composer.jsonsafe`; index chains stop at the nesting limit, and a blob
reached twice (a tag and its per-arch alias) is read once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from composer.diff.compression import HEAD, stream_fields
from composer.diff.model import Snapshot
from composer.diff.packages import INSTALLED, installed_versions
from composer.diff.report import Scalar
from composer.diff.source import Budget, Bytes, open_stream
from composer.diff.tarball import read_tar
from composer.errors import ArchiveError
from composer.jsonsafe import JsonValue, load_json
from composer.numbers import shorten

BlobLookup = Callable[[str], Bytes]
"""digest → its bytes (raises ArchiveError when the blob is missing)."""

MAX_LEAVES = 20_000
"""Values one JSON document may contribute as fields."""
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")


def flatten(value: Any, path: str, out: dict[str, Scalar], *, what: str) -> None:
    """Leaf values of a parsed JSON document by path (``$.config.Env[0]``)."""
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            if not item:
                out[where] = "{}"
            stack.extend((f"{where}.{key}", item[key]) for key in reversed(list(item)))
        elif isinstance(item, list):
            if not item:
                out[where] = "[]"
            stack.extend((f"{where}[{i}]", item[i]) for i in reversed(range(len(item))))
        else:
            out[where] = item if isinstance(item, str | int) and not isinstance(item, bool) \
                else repr(item)
        if len(out) > MAX_LEAVES:
            raise ArchiveError(f"{what}: more than {MAX_LEAVES} JSON values")


def json_document(source: Bytes, budget: Budget) -> JsonValue:
    if source.size > budget.limits.max_json:
        raise ArchiveError(f"{source.what}: {source.size} bytes of JSON, more than the "
                           f"{budget.limits.max_json} a diff reads")
    budget.charge_bytes(source.size, source.what)
    return load_json(source.read_at(0, source.size), what=source.what,
                     max_bytes=budget.limits.max_json)


def add_json(snap: Snapshot, where: str, doc: JsonValue) -> None:
    fields: dict[str, Scalar] = {}
    flatten(doc.raw(), "$", fields, what=doc.what)
    snap.budget.charge_entry(doc.what, sum(len(k) + len(str(v)) for k, v in fields.items()))
    snap.group(where, fields)


def add_layer(snap: Snapshot, scope: str, source: Bytes) -> bool:
    """The files of one layer tar (any compression); True when it holds an apk database."""
    budget = snap.budget
    kind, stream = open_stream(source, budget)
    snap.group(scope, stream_fields(kind, source.read_at(0, min(HEAD, source.size)),
                                    source.size))
    contents = read_tar(stream, source=source.what, budget=budget,
                        keep=lambda path: budget.limits.max_db if path == INSTALLED else 0)
    snap.add_files(scope, contents.entries)
    if INSTALLED in contents.kept:
        snap.packages[scope.rsplit(" layer ", 1)[0]] = installed_versions(
            contents.kept[INSTALLED], source=f"{source.what}: {INSTALLED}")
        return True
    return False


def _platform(desc: JsonValue) -> str | None:
    platform = desc.optional("platform")
    if platform is None:
        return None
    parts = [platform.field("os").str(max_len=64), platform.field("architecture").str(max_len=64)]
    variant = platform.optional("variant")
    if variant is not None:
        parts.append(variant.str(max_len=64))
    return "/".join(parts)


class LayoutWalk:
    """One side's walk from an index document down to the layers."""

    def __init__(self, snap: Snapshot, blobs: BlobLookup, prefix: str) -> None:
        self.snap = snap
        self.blobs = blobs
        self.prefix = prefix
        self.seen: set[str] = set()
        self.scopes: set[str] = set()

    def name(self, text: str) -> str:
        return f"{self.prefix}{text}"

    def index(self, doc: JsonValue, where: str, depth: int) -> None:
        if depth > self.snap.budget.limits.max_nesting:
            doc.fail(f"image indexes nested more than {self.snap.budget.limits.max_nesting} deep")
        add_json(self.snap, self.name(where), doc)
        manifests = doc.optional("manifests")
        for i, desc in enumerate(manifests.items(max_items=10_000) if manifests else ()):
            scope = _platform(desc) or f"{where} manifests[{i}]"
            if scope in self.scopes:
                scope = f"{scope} ({where} manifests[{i}])"
            self.descriptor(desc, scope, depth)

    def _blob(self, desc: JsonValue) -> tuple[str, Bytes] | None:
        field = desc.field("digest")
        digest = field.str(max_len=80)
        if not _DIGEST.fullmatch(digest):
            field.fail(f"{shorten(digest)} is not a sha256 digest")
        if digest in self.seen:
            return None
        self.seen.add(digest)
        self.snap.budget.charge_entry(digest)
        return digest, self.blobs(digest)

    def descriptor(self, desc: JsonValue, scope: str, depth: int) -> None:
        media = desc.field("mediaType").str(max_len=256)
        found = self._blob(desc)
        if found is None:
            return
        digest, blob = found
        if media in _INDEX_TYPES:
            self.index(json_document(blob, self.snap.budget), f"index {digest[7:19]}", depth + 1)
            return
        self.scopes.add(scope)
        manifest = json_document(blob, self.snap.budget)
        add_json(self.snap, self.name(f"{scope} manifest"), manifest)
        config = manifest.optional("config")
        if config is not None:
            found = self._blob(config)
            if found is not None:
                cfg_media = config.field("mediaType").str(max_len=256)
                if cfg_media.endswith("json"):
                    add_json(self.snap, self.name(f"{scope} config"),
                             json_document(found[1], self.snap.budget))
        layers = manifest.optional("layers")
        for n, layer in enumerate(layers.items(max_items=1000) if layers else (), start=1):
            found = self._blob(layer)
            if found is None:
                continue
            layer_media = layer.field("mediaType").str(max_len=256)
            where = self.name(f"{scope} layer {n}")
            if layer_media.endswith("json"):
                add_json(self.snap, where, json_document(found[1], self.snap.budget))
            elif ".tar" in layer_media or "rootfs" in layer_media:
                add_layer(self.snap, where, found[1])
            else:
                self.snap.field(where, "blob", digest)


def read_layout(snap: Snapshot, index: Bytes, blobs: BlobLookup, *, prefix: str = "") -> None:
    """The OCI layout whose ``index.json`` is ``index``."""
    LayoutWalk(snap, blobs, prefix).index(json_document(index, snap.budget), "index.json", 0)


def read_docker_archive(snap: Snapshot, member: Callable[[str], Bytes], *,
                        prefix: str = "") -> None:
    """A ``docker save`` archive: manifest.json, each image's config and layers."""
    budget = snap.budget
    listing = json_document(member("manifest.json"), budget)
    add_json(snap, f"{prefix}manifest.json", listing)
    for i, image in enumerate(listing.items(max_items=64), start=1):
        scope = f"{prefix}image {i}"
        config = image.field("Config").str(max_len=512)
        add_json(snap, f"{scope} config", json_document(member(config), budget))
        for n, layer in enumerate(image.field("Layers").items(max_items=1000), start=1):
            add_layer(snap, f"{scope} layer {n}", member(layer.str(max_len=512)))
