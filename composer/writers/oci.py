"""OCI image layout writer: one FileTree per platform → `oci-layout`, `index.json`, `blobs/sha256/*`.

Every JSON document is serialised once with :func:`canonical_json` and hashed as
written, and each layer is hashed twice in the same pass (the uncompressed tar for
the DiffID, the stored bytes for the blob digest), so no blob is ever read back.
A single platform is listed directly in ``index.json``; several platforms go into a
nested image index that ``index.json`` names by the tag (skopeo picks the platform
from it). umoci cannot choose a platform from an index (it reports the tag as
ambiguous), so a multi-arch ``index.json`` also lists each platform's manifest under
its own ref name ``<tag>-<alpine arch>``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.errors import NotSupportedError, OutputError
from composer.timefmt import rfc3339
from composer.tree import FileTree
from composer.writers.compress import Compression, open_compressor
from composer.writers.layers import Layer
from composer.writers.stream import HashingWriter
from composer.writers.tar import LAYER_STYLE, write_tar

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_EMPTY = "application/vnd.oci.empty.v1+json"
MEDIA_LAYER = {
    Compression.GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
    Compression.ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
    Compression.NONE: "application/vnd.oci.image.layer.v1.tar",
}
LAYOUT_VERSION = "1.0.0"
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
EMPTY_JSON = b"{}"

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_KEYS = {
    "version": "org.opencontainers.image.version",
    "revision": "org.opencontainers.image.revision",
    "source": "org.opencontainers.image.source",
    "title": "org.opencontainers.image.title",
    "description": "org.opencontainers.image.description",
    "licenses": "org.opencontainers.image.licenses",
    "url": "org.opencontainers.image.url",
    "vendor": "org.opencontainers.image.vendor",
    "base_name": "org.opencontainers.image.base.name",
    "base_digest": "org.opencontainers.image.base.digest",
}

ALPINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Platform:
    architecture: str
    variant: str | None = None
    os: str = "linux"

    def as_json(self) -> dict[str, str]:
        value = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            value["variant"] = self.variant
        return value

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


ALPINE_PLATFORMS: dict[str, Platform] = {
    "x86_64": Platform("amd64"),
    "x86": Platform("386"),
    "aarch64": Platform("arm64", "v8"),
    "armv7": Platform("arm", "v7"),
    "armhf": Platform("arm", "v6"),
    "ppc64le": Platform("ppc64le"),
    "s390x": Platform("s390x"),
    "riscv64": Platform("riscv64"),
    "loongarch64": Platform("loong64"),
}


def platform_for_arch(arch: str) -> Platform:
    """The OCI platform of an Alpine architecture name."""
    try:
        return ALPINE_PLATFORMS[arch]
    except KeyError:
        known = ", ".join(sorted(ALPINE_PLATFORMS))
        raise NotSupportedError(
            f"OCI output: Alpine architecture {arch!r} has no OCI platform (known: {known})"
        ) from None


def canonical_json(value: object) -> bytes:
    """The one serialisation every hashed JSON document uses: sorted keys, no spaces, no newline."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def image_annotations(*, created: int | None = None, **fields: str | None) -> dict[str, str]:
    """Standard OCI annotations from short names (version, revision, source, base_name, ...).

    Only the fields given (not None) appear, so the output never carries empty values.
    """
    unknown = sorted(set(fields) - set(ANNOTATION_KEYS))
    if unknown:
        raise ValueError(f"unknown annotation field(s): {', '.join(unknown)}")
    result = {ANNOTATION_KEYS[k]: v for k, v in fields.items() if v is not None}
    if created is not None:
        result[ANNOTATION_CREATED] = rfc3339(created)
    return result


@dataclass(frozen=True)
class OciImageSpec:
    """Everything that goes into one platform's image: the tree and its config."""

    tree: FileTree
    arch: str
    created: int
    compression: Compression | str = Compression.GZIP
    entrypoint: Sequence[str] | None = None
    cmd: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=lambda: {"PATH": ALPINE_PATH})
    labels: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    exposed_ports: Sequence[str] = ()
    volumes: Sequence[str] = ()
    stop_signal: str | None = None
    author: str | None = None
    tool_version: str = "0"
    history_comment: str | None = None
    layers: Sequence[Layer] = ()
    """Several layers (``layering: stages``) instead of the whole ``tree`` as one."""

    @property
    def platform(self) -> Platform:
        return platform_for_arch(self.arch)


@dataclass(frozen=True)
class OciArtifact:
    """A blob attached to one platform's image manifest (an SBOM, for instance)."""

    arch: str
    artifact_type: str
    data: bytes
    media_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class LayerResult:
    descriptor: Descriptor
    diff_id: str
    uncompressed_size: int


@dataclass(frozen=True)
class ImageResult:
    arch: str
    platform: Platform
    manifest: Descriptor
    config: Descriptor
    layers: tuple[LayerResult, ...]
    artifacts: tuple[Descriptor, ...] = ()


@dataclass(frozen=True)
class OciResult:
    """Digests of what was written. ``image`` is the descriptor index.json points at."""

    index_json_digest: str
    image: Descriptor
    images: tuple[ImageResult, ...]
    blobs: tuple[Descriptor, ...]

    @property
    def index_digest(self) -> str:
        return self.image.digest


class _BlobWriter:
    """Writes content-addressed blobs into ``blobs/sha256`` and remembers each once."""

    def __init__(self, layout: Path) -> None:
        self.dir = layout / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written: dict[str, Descriptor] = {}

    def add_bytes(self, data: bytes, media_type: str) -> Descriptor:
        sink = HashingWriter(None)
        sink.write(data)
        desc = Descriptor(media_type, sink.digest, len(data))
        if sink.digest not in self.written:
            path = self.dir / sink.hexdigest
            tmp = self.dir / f".tmp-{sink.hexdigest}"
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self._remember(desc)
        return desc

    def add_layer(self, tree: FileTree, *, created: int, compression: Compression) -> LayerResult:
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-layer-", dir=self.dir)
        try:
            with os.fdopen(fd, "wb", buffering=1024 * 1024) as fh:
                stored = HashingWriter(fh)
                compressor = open_compressor(stored, compression)  # type: ignore[arg-type]
                with compressor:
                    uncompressed = HashingWriter(compressor)  # type: ignore[arg-type]
                    write_tar(tree, uncompressed, mtime=created,  # type: ignore[arg-type]
                              style=LAYER_STYLE)
            os.replace(tmp_name, self.dir / stored.hexdigest)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise
        desc = Descriptor(MEDIA_LAYER[compression], stored.digest, stored.size)
        self._remember(desc)
        return LayerResult(desc, uncompressed.digest, uncompressed.size)

    def _remember(self, desc: Descriptor) -> None:
        self.written.setdefault(desc.digest, desc)


def image_config(spec: OciImageSpec, diff_ids: Sequence[str]) -> dict[str, Any]:
    """The image config document (config.md) for one platform."""
    platform = spec.platform
    runtime: dict[str, Any] = {}
    if spec.env:
        runtime["Env"] = [f"{k}={v}" for k, v in spec.env.items()]
    if spec.entrypoint is not None:
        runtime["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd is not None:
        runtime["Cmd"] = list(spec.cmd)
    if spec.working_dir:
        runtime["WorkingDir"] = spec.working_dir
    if spec.user:
        runtime["User"] = spec.user
    if spec.labels:
        runtime["Labels"] = dict(spec.labels)
    if spec.exposed_ports:
        runtime["ExposedPorts"] = {port: {} for port in spec.exposed_ports}
    if spec.volumes:
        runtime["Volumes"] = {volume: {} for volume in spec.volumes}
    if spec.stop_signal:
        runtime["StopSignal"] = spec.stop_signal
    comments = [layer.comment for layer in spec.layers] if spec.layers else [spec.history_comment]
    history: list[dict[str, Any]] = []
    for comment in comments:
        entry: dict[str, Any] = {
            "created": rfc3339(spec.created),
            "created_by": f"alpine-composer {spec.tool_version}",
        }
        if comment:
            entry["comment"] = comment
        if spec.author:
            entry["author"] = spec.author
        history.append(entry)
    config: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "created": rfc3339(spec.created),
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": history,
    }
    if platform.variant:
        config["variant"] = platform.variant
    if spec.author:
        config["author"] = spec.author
    return config


def _check_specs(images: Sequence[OciImageSpec], tag: str) -> None:
    if not images:
        raise OutputError("OCI output: no platform images to write")
    if not tag:
        raise OutputError("OCI output: the image tag is empty")
    seen: dict[Platform, str] = {}
    for spec in images:
        platform = spec.platform
        if platform in seen:
            raise OutputError(
                f"OCI output: architectures {seen[platform]!r} and {spec.arch!r} "
                f"both map to platform {platform}")
        seen[platform] = spec.arch
        kind = Compression(spec.compression)
        if kind not in MEDIA_LAYER:
            raise NotSupportedError(
                f"OCI output: layer compression {kind.value!r} is not an OCI layer type "
                "(use gzip, zstd or none)")


def write_oci_layout(layout_dir: Path, images: Sequence[OciImageSpec], *, tag: str,
                     annotations: Mapping[str, str] | None = None,
                     artifacts: Sequence[OciArtifact] = ()) -> OciResult:
    """Write a complete OCI image layout for one or more platforms into ``layout_dir``.

    ``annotations`` go on every manifest (and on the nested index); the
    ``ref.name`` annotation carrying ``tag`` goes on the index.json descriptor.
    The caller owns atomicity: pass a fresh temporary folder and rename it after.
    """
    _check_specs(images, tag)
    _check_artifact_arches(images, artifacts)
    layout_dir.mkdir(parents=True, exist_ok=True)
    blobs = _BlobWriter(layout_dir)
    common = dict(annotations or {})
    results: list[ImageResult] = []
    manifest_descs: list[dict[str, Any]] = []
    referrers: list[dict[str, Any]] = []
    for spec in images:
        kind = Compression(spec.compression)
        trees = [layer.tree for layer in spec.layers] if spec.layers else [spec.tree]
        layers = [blobs.add_layer(tree, created=spec.created, compression=kind) for tree in trees]
        config_desc = blobs.add_bytes(
            canonical_json(image_config(spec, [layer.diff_id for layer in layers])), MEDIA_CONFIG)
        manifest_annotations = {ANNOTATION_CREATED: rfc3339(spec.created), **common}
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_desc.as_json(),
            "layers": [layer.descriptor.as_json() for layer in layers],
            "annotations": manifest_annotations,
        }
        manifest_desc = blobs.add_bytes(canonical_json(manifest), MEDIA_MANIFEST)
        attached = _write_artifacts(blobs, spec, manifest_desc, artifacts)
        referrers.extend({**desc.as_json(), "artifactType": artifact.artifact_type}
                         for desc, artifact in attached)
        results.append(ImageResult(spec.arch, spec.platform, manifest_desc, config_desc,
                                   tuple(layers), tuple(desc for desc, _ in attached)))
        manifest_descs.append({**manifest_desc.as_json(), "platform": spec.platform.as_json()})
    per_platform: list[dict[str, Any]] = []
    if len(images) == 1:
        image_desc = results[0].manifest
        entry = {**manifest_descs[0],
                 "annotations": {**common, ANNOTATION_REF_NAME: tag}}
    else:
        nested = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": manifest_descs,
            "annotations": {ANNOTATION_CREATED: rfc3339(max(s.created for s in images)),
                            **common},
        }
        image_desc = blobs.add_bytes(canonical_json(nested), MEDIA_INDEX)
        entry = {**image_desc.as_json(), "annotations": {**common, ANNOTATION_REF_NAME: tag}}
        per_platform = [
            {**desc, "annotations": {**common, ANNOTATION_REF_NAME: platform_tag(tag, spec.arch)}}
            for desc, spec in zip(manifest_descs, images, strict=True)]
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX,
             "manifests": [entry, *per_platform, *referrers]}
    index_bytes = canonical_json(index)
    (layout_dir / "oci-layout").write_bytes(OCI_LAYOUT_BYTES)
    (layout_dir / "index.json").write_bytes(index_bytes)
    index_sink = HashingWriter(None)
    index_sink.write(index_bytes)
    return OciResult(
        index_json_digest=index_sink.digest,
        image=image_desc,
        images=tuple(results),
        blobs=tuple(sorted(blobs.written.values(), key=lambda d: d.digest)),
    )


def platform_tag(tag: str, arch: str) -> str:
    """The extra per-platform ref name of a multi-arch layout (umoci cannot pick a platform)."""
    return f"{tag}-{arch}"


def _check_artifact_arches(images: Sequence[OciImageSpec], artifacts: Sequence[OciArtifact]) -> None:
    arches = {spec.arch for spec in images}
    for artifact in artifacts:
        if artifact.arch not in arches:
            raise OutputError(
                f"OCI output: artifact {artifact.artifact_type!r} is for architecture "
                f"{artifact.arch!r}, which the image does not have")


def _write_artifacts(blobs: _BlobWriter, spec: OciImageSpec, subject: Descriptor,
                     artifacts: Sequence[OciArtifact]) -> list[tuple[Descriptor, OciArtifact]]:
    """Artifact manifests (image-spec 1.1 ``artifactType`` + ``subject``) for one platform."""
    written: list[tuple[Descriptor, OciArtifact]] = []
    for artifact in artifacts:
        if artifact.arch != spec.arch:
            continue
        empty = blobs.add_bytes(EMPTY_JSON, MEDIA_EMPTY)
        payload = blobs.add_bytes(artifact.data, artifact.media_type or artifact.artifact_type)
        manifest = artifact_manifest(artifact, subject, empty=empty, payload=payload,
                                     created=rfc3339(spec.created))
        written.append((blobs.add_bytes(manifest, MEDIA_MANIFEST), artifact))
    return written


def artifact_manifest(artifact: OciArtifact, subject: Descriptor, *, empty: Descriptor,
                      payload: Descriptor, created: str) -> bytes:
    """The image-spec 1.1 artifact manifest of ``artifact`` (``artifactType``, the empty
    config, one layer, ``subject``): the same bytes in a layout and in a registry."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "artifactType": artifact.artifact_type,
        "config": empty.as_json(),
        "layers": [payload.as_json()],
        "subject": subject.as_json(),
        "annotations": {ANNOTATION_CREATED: created, **artifact.annotations},
    }
    return canonical_json(manifest)
