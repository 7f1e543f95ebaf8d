"""Check an OCI image layout on disk the way a strict consumer (umoci) would.

Walks from ``index.json`` through nested indexes, manifests, configs and layers;
every referenced blob must exist, hash to its name and have the descriptor's
size; every layer must decompress to a tar whose sha256 is the config's DiffID.
Each blob is read once, streaming. The first problem raises VerificationError.

A layout is someone else's bytes: its JSON is read with the bounded loader and
checked for shape, the walk is a loop with a depth limit (not a recursion), and a
layer may inflate to at most :func:`layer_limit` bytes of its stored size.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from composer.decompress import BoundedDecoder
from composer.errors import ComposerError, VerificationError
from composer.jsonsafe import JsonValue, load_json, load_json_file

CHUNK = 1024 * 1024
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_JSON_BLOB = 4 << 20
"""Largest index, manifest or config (registries refuse manifests above 4 MiB)."""
MAX_DESCRIPTORS = 10_000
"""Entries in one index's ``manifests`` or one manifest's ``layers``."""
MAX_INDEX_DEPTH = 8
MAX_DOCUMENTS = 10_000
"""Indexes, manifests and configs read in one layout."""
LAYER_SLACK = 64 << 20
LAYER_RATIO = 100

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json"}
IMAGE_CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json",
                      "application/vnd.docker.container.image.v1+json"}
LAYER_DECODERS = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
}


def layer_limit(stored: int) -> int:
    """The most a layer of ``stored`` bytes may inflate to: 64 MiB plus 100 times its size
    (the bound composer puts on a minirootfs)."""
    return LAYER_SLACK + LAYER_RATIO * stored


@dataclass(frozen=True)
class _Desc:
    media_type: str
    digest: str
    size: int
    where: str


class _Verifier:
    def __init__(self, layout: Path) -> None:
        self.layout = layout
        self.checked: dict[str, str] = {}
        self.uncompressed: dict[str, str] = {}
        self.documents = 0

    def blob_path(self, desc: _Desc) -> Path:
        return self.layout / "blobs" / "sha256" / desc.digest.split(":", 1)[1]

    def _existing(self, desc: _Desc) -> Path:
        path = self.blob_path(desc)
        if not path.is_file():
            raise VerificationError(f"blob {desc.digest} ({desc.where}) is missing from {path.parent}")
        return path

    def read_json_blob(self, desc: _Desc) -> JsonValue:
        self.documents += 1
        if self.documents > MAX_DOCUMENTS:
            raise VerificationError(f"{self.layout}: more than {MAX_DOCUMENTS} indexes, manifests "
                                    "and configs")
        path = self._existing(desc)
        stored = path.stat().st_size
        if max(stored, desc.size) > MAX_JSON_BLOB:
            raise VerificationError(f"blob {desc.digest} ({desc.where}) is {max(stored, desc.size)} "
                                    f"bytes, more than the {MAX_JSON_BLOB} a JSON document may have")
        with path.open("rb") as fh:
            data = fh.read(MAX_JSON_BLOB + 1)
        self._check_bytes(desc, len(data), hashlib.sha256(data).hexdigest())
        self.checked[desc.digest] = desc.media_type
        return load_json(data, what=f"blob {desc.digest} ({desc.where})", error=VerificationError,
                         max_bytes=MAX_JSON_BLOB)

    def stream_layer(self, desc: _Desc, diff_id: str | None) -> None:
        """Hash the stored bytes and, when a DiffID is expected, the decompressed tar too.

        A decoding failure (corrupt, truncated, over the bound) is raised only once the
        stored bytes are known to be the ones the descriptor names."""
        known = self.uncompressed.get(desc.digest)
        if known is not None or (diff_id is None and desc.digest in self.checked):
            if diff_id is not None and known != diff_id:
                self._diff_mismatch(desc, known or "", diff_id)
            return
        path = self._existing(desc)
        stored = hashlib.sha256()
        size = 0
        decoder = None
        inflated = hashlib.sha256()
        failure: ComposerError | None = None
        if diff_id is not None:
            decoder = BoundedDecoder(
                LAYER_DECODERS[desc.media_type], what=f"layer {desc.digest} ({desc.where})",
                limit=layer_limit(desc.size), error=VerificationError,
                limit_reason=f"64 MiB plus {LAYER_RATIO} times its {desc.size} stored bytes")
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                stored.update(chunk)
                size += len(chunk)
                if decoder is not None and failure is None:
                    try:
                        for piece in decoder.feed(chunk):
                            inflated.update(piece)
                    except ComposerError as exc:
                        failure = exc
        self._check_bytes(desc, size, stored.hexdigest())
        if failure is not None:
            raise failure
        if decoder is not None and diff_id is not None:
            for piece in decoder.finish():
                inflated.update(piece)
            actual = "sha256:" + inflated.hexdigest()
            self.uncompressed[desc.digest] = actual
            if actual != diff_id:
                self._diff_mismatch(desc, actual, diff_id)
        self.checked[desc.digest] = desc.media_type

    @staticmethod
    def _diff_mismatch(desc: _Desc, actual: str, diff_id: str) -> None:
        raise VerificationError(
            f"layer {desc.digest} ({desc.where}) uncompresses to {actual}, "
            f"but the config's diff_id is {diff_id}")

    def _check_bytes(self, desc: _Desc, size: int, hexdigest: str) -> None:
        if "sha256:" + hexdigest != desc.digest:
            raise VerificationError(
                f"blob {desc.digest} ({desc.where}) has content hashing to sha256:{hexdigest}")
        if size != desc.size:
            raise VerificationError(
                f"blob {desc.digest} ({desc.where}) size {size} does not match "
                f"descriptor size {desc.size}")


def _descriptor(value: JsonValue | None, where: str) -> _Desc:
    if value is None:
        raise VerificationError(f"{where}: descriptor is missing")
    media_type = value.field("mediaType").str(max_len=255)
    if not media_type:
        value.fail("descriptor has no mediaType")
    digest_field = value.field("digest")
    digest = digest_field.str(max_len=255)
    if not DIGEST_RE.fullmatch(digest):
        digest_field.fail(f"descriptor digest {digest!r} is not sha256:<64 hex>")
    return _Desc(media_type, digest, value.field("size").int(), where)


def _schema_two(doc: JsonValue) -> bool:
    schema = doc.optional("schemaVersion")
    return schema is not None and type(schema.raw()) is int and schema.raw() == 2


def _entries(doc: JsonValue, key: str) -> list[JsonValue]:
    return list(doc.field(key).items(max_items=MAX_DESCRIPTORS))


def verify_oci_layout(layout_dir: Path) -> list[str]:
    """Verify the layout; return every referenced blob digest (sorted) or raise VerificationError."""
    layout_file = layout_dir / "oci-layout"
    if not layout_file.is_file():
        raise VerificationError(f"{layout_dir}: oci-layout file is missing")
    header = load_json_file(layout_file, what=str(layout_file), error=VerificationError,
                            max_bytes=MAX_JSON_BLOB)
    version = header.optional("imageLayoutVersion")
    if version is None or version.raw() != "1.0.0":
        raise VerificationError(f"{layout_file}: imageLayoutVersion is not \"1.0.0\"")
    index_file = layout_dir / "index.json"
    if not index_file.is_file():
        raise VerificationError(f"{layout_dir}: index.json is missing")
    index = load_json_file(index_file, what=str(index_file), error=VerificationError,
                           max_bytes=MAX_JSON_BLOB)
    verifier = _Verifier(layout_dir)
    _walk(verifier, index)
    return sorted(verifier.checked)


def _walk(verifier: _Verifier, top: JsonValue) -> None:
    """Depth first from ``index.json``, in file order, as a loop: an index may name
    indexes, at most :data:`MAX_INDEX_DEPTH` deep."""
    pending: list[tuple[JsonValue, str, int]] = [(top, "index.json", 1)]
    while pending:
        index, where, depth = pending.pop()
        if not _schema_two(index):
            raise VerificationError(f"{where}: not an image index with schemaVersion 2")
        children: list[tuple[JsonValue, str, int]] = []
        for position, value in enumerate(_entries(index, "manifests")):
            desc = _descriptor(value, f"{where} manifests[{position}]")
            if desc.digest in verifier.checked:
                continue
            if desc.media_type in INDEX_TYPES:
                if depth >= MAX_INDEX_DEPTH:
                    raise VerificationError(f"{desc.where}: image indexes nested more than "
                                            f"{MAX_INDEX_DEPTH} deep")
                children.append((verifier.read_json_blob(desc), f"index {desc.digest}", depth + 1))
            elif desc.media_type in MANIFEST_TYPES:
                _walk_manifest(verifier, verifier.read_json_blob(desc), desc)
            else:
                raise VerificationError(
                    f"{desc.where}: media type {desc.media_type!r} is neither an index nor a manifest")
        pending.extend(reversed(children))


def _walk_manifest(verifier: _Verifier, manifest: JsonValue, own: _Desc) -> None:
    where = f"manifest {own.digest}"
    if not _schema_two(manifest):
        raise VerificationError(f"{where}: not an image manifest with schemaVersion 2")
    config_desc = _descriptor(manifest.optional("config"), f"{where} config")
    layers = [_descriptor(v, f"{where} layers[{i}]")
              for i, v in enumerate(_entries(manifest, "layers"))]
    subject = manifest.optional("subject")
    if subject is not None:
        subject_desc = _descriptor(subject, f"{where} subject")
        if not verifier.blob_path(subject_desc).is_file():
            raise VerificationError(
                f"blob {subject_desc.digest} ({subject_desc.where}) is missing")
    if config_desc.media_type not in IMAGE_CONFIG_TYPES:
        verifier.stream_layer(config_desc, None)
        for layer in layers:
            verifier.stream_layer(layer, None)
        return
    config = verifier.read_json_blob(config_desc)
    rootfs = config.optional("rootfs")
    kind = rootfs.optional("type") if rootfs is not None else None
    if rootfs is None or kind is None or kind.raw() != "layers":
        raise VerificationError(f"config {config_desc.digest}: rootfs.type is not \"layers\"")
    diff_ids = _entries(rootfs, "diff_ids")
    if len(diff_ids) != len(layers):
        raise VerificationError(
            f"config {config_desc.digest} lists {len(diff_ids)} diff_ids for "
            f"{len(layers)} layers in {where}")
    for layer, value in zip(layers, diff_ids, strict=True):
        if layer.media_type not in LAYER_DECODERS:
            raise VerificationError(f"{layer.where}: unknown layer media type {layer.media_type!r}")
        diff_id = value.str(max_len=255)
        if not DIGEST_RE.fullmatch(diff_id):
            value.fail(f"diff_id {diff_id!r} is malformed")
        verifier.stream_layer(layer, diff_id)
