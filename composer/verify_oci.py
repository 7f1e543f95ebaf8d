"""Check an OCI image layout on disk the way a strict consumer (umoci) would.

Walks from ``index.json`` through nested indexes, manifests, configs and layers;
every referenced blob must exist, hash to its name and have the descriptor's
size; every layer must decompress to a tar whose sha256 is the config's DiffID.
Each blob is read once, streaming. The first problem raises VerificationError.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.errors import VerificationError

CHUNK = 1024 * 1024
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

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

    def blob_path(self, desc: _Desc) -> Path:
        return self.layout / "blobs" / "sha256" / desc.digest.split(":", 1)[1]

    def read_json_blob(self, desc: _Desc) -> Any:
        path = self.blob_path(desc)
        if not path.is_file():
            raise VerificationError(f"blob {desc.digest} ({desc.where}) is missing from {path.parent}")
        data = path.read_bytes()
        self._check_bytes(desc, len(data), hashlib.sha256(data).hexdigest())
        self.checked[desc.digest] = desc.media_type
        return parse_json(data, f"blob {desc.digest} ({desc.where})")

    def stream_layer(self, desc: _Desc, diff_id: str | None) -> None:
        """Hash the stored bytes and, when a DiffID is expected, the decompressed tar too."""
        known = self.uncompressed.get(desc.digest)
        if known is not None or (diff_id is None and desc.digest in self.checked):
            if diff_id is not None and known != diff_id:
                self._diff_mismatch(desc, known or "", diff_id)
            return
        path = self.blob_path(desc)
        if not path.is_file():
            raise VerificationError(f"blob {desc.digest} ({desc.where}) is missing from {path.parent}")
        stored = hashlib.sha256()
        size = 0
        decoder = _Decoder(LAYER_DECODERS[desc.media_type], desc) if diff_id else None
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                stored.update(chunk)
                size += len(chunk)
                if decoder is not None:
                    decoder.feed(chunk)
        self._check_bytes(desc, size, stored.hexdigest())
        if decoder is not None and decoder.error is not None:
            raise decoder.error
        if decoder is not None and diff_id is not None:
            actual = "sha256:" + decoder.finish()
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


class _Decoder:
    """Streaming decompressor that hashes what comes out."""

    def __init__(self, kind: str, desc: _Desc) -> None:
        self.kind = kind
        self.desc = desc
        self.hash = hashlib.sha256()
        self.error: VerificationError | None = None
        self._gzip: Any = zlib.decompressobj(wbits=31) if kind == "gzip" else None
        self._zstd: Any = None
        if kind == "zstd":
            import zstandard

            self._zstd = zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> None:
        """Decompress a chunk; a failure is kept until the stored bytes' hash has been checked."""
        if self.error is not None:
            return
        try:
            if self.kind == "none":
                self.hash.update(data)
            elif self.kind == "gzip":
                while data:
                    self.hash.update(self._gzip.decompress(data))
                    data = self._gzip.unused_data
                    if self._gzip.eof and data:
                        self._gzip = zlib.decompressobj(wbits=31)
            else:
                self.hash.update(self._zstd.decompress(data))
        except Exception as exc:  # zlib.error, zstandard.ZstdError
            self.error = VerificationError(
                f"layer {self.desc.digest} ({self.desc.where}) does not decompress as "
                f"{self.kind}: {exc}")

    def finish(self) -> str:
        if self.kind == "gzip":
            self.hash.update(self._gzip.flush())
            if not self._gzip.eof:
                raise VerificationError(
                    f"layer {self.desc.digest} ({self.desc.where}) is a truncated gzip stream")
        if self.kind == "zstd" and not self._zstd.eof:
            raise VerificationError(
                f"layer {self.desc.digest} ({self.desc.where}) is a truncated zstd stream")
        return self.hash.hexdigest()


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError(f"{what} is not valid JSON: {exc}") from exc


def _descriptor(value: Any, where: str) -> _Desc:
    if not isinstance(value, dict):
        raise VerificationError(f"{where}: descriptor is not a JSON object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise VerificationError(f"{where}: descriptor has no mediaType")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise VerificationError(f"{where}: descriptor digest {digest!r} is not sha256:<64 hex>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise VerificationError(f"{where}: descriptor size {size!r} is not a non-negative integer")
    return _Desc(media_type, digest, size, where)


def _list(doc: Any, key: str, where: str) -> list[Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, list):
        raise VerificationError(f"{where}: {key!r} is missing or not a list")
    return value


def verify_oci_layout(layout_dir: Path) -> list[str]:
    """Verify the layout; return every referenced blob digest (sorted) or raise VerificationError."""
    layout_file = layout_dir / "oci-layout"
    if not layout_file.is_file():
        raise VerificationError(f"{layout_dir}: oci-layout file is missing")
    header = parse_json(layout_file.read_bytes(), f"{layout_file}")
    if not isinstance(header, dict) or header.get("imageLayoutVersion") != "1.0.0":
        raise VerificationError(f"{layout_file}: imageLayoutVersion is not \"1.0.0\"")
    index_file = layout_dir / "index.json"
    if not index_file.is_file():
        raise VerificationError(f"{layout_dir}: index.json is missing")
    index = parse_json(index_file.read_bytes(), f"{index_file}")
    verifier = _Verifier(layout_dir)
    _walk_index(verifier, index, "index.json")
    return sorted(verifier.checked)


def _walk_index(verifier: _Verifier, index: Any, where: str) -> None:
    if not isinstance(index, dict) or index.get("schemaVersion") != 2:
        raise VerificationError(f"{where}: not an image index with schemaVersion 2")
    for position, value in enumerate(_list(index, "manifests", where)):
        desc = _descriptor(value, f"{where} manifests[{position}]")
        if desc.digest in verifier.checked:
            continue
        if desc.media_type in INDEX_TYPES:
            _walk_index(verifier, verifier.read_json_blob(desc), f"index {desc.digest}")
        elif desc.media_type in MANIFEST_TYPES:
            _walk_manifest(verifier, verifier.read_json_blob(desc), desc)
        else:
            raise VerificationError(
                f"{desc.where}: media type {desc.media_type!r} is neither an index nor a manifest")


def _walk_manifest(verifier: _Verifier, manifest: Any, own: _Desc) -> None:
    where = f"manifest {own.digest}"
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        raise VerificationError(f"{where}: not an image manifest with schemaVersion 2")
    config_desc = _descriptor(manifest.get("config"), f"{where} config")
    layers = [_descriptor(v, f"{where} layers[{i}]")
              for i, v in enumerate(_list(manifest, "layers", where))]
    subject = manifest.get("subject")
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
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise VerificationError(f"config {config_desc.digest}: rootfs.type is not \"layers\"")
    diff_ids = _list(rootfs, "diff_ids", f"config {config_desc.digest} rootfs")
    if len(diff_ids) != len(layers):
        raise VerificationError(
            f"config {config_desc.digest} lists {len(diff_ids)} diff_ids for "
            f"{len(layers)} layers in {where}")
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        if layer.media_type not in LAYER_DECODERS:
            raise VerificationError(f"{layer.where}: unknown layer media type {layer.media_type!r}")
        if not isinstance(diff_id, str) or not DIGEST_RE.match(diff_id):
            raise VerificationError(f"config {config_desc.digest}: diff_id {diff_id!r} is malformed")
        verifier.stream_layer(layer, diff_id)
