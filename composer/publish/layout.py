"""What a push sends, read from a build folder (``out/<name>/``) or a bare OCI layout.

Manifests and indexes are sent as the exact bytes of their blob files, so the digest a
registry stores is the digest the build recorded. Each manifest is hashed here before it
is sent; layers are checked by the registry as they arrive (it refuses a blob whose bytes
do not match its digest). In a build folder, the image is the one ``manifest.json`` records
for ``oci/index.json``, and each architecture's SBOM files become OCI artifacts whose
``subject`` is that architecture's image manifest.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from composer.errors import UsageError, VerificationError
from composer.jsonsafe import JsonValue, load_json
from composer.manifest import MANIFEST_NAME
from composer.publish.reference import DIGEST
from composer.writers.oci import (
    ALPINE_PLATFORMS,
    ANNOTATION_CREATED,
    EMPTY_JSON,
    MEDIA_EMPTY,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    Descriptor,
    OciArtifact,
    artifact_manifest,
)

MAX_MANIFEST = 4 << 20
MAX_RECORD = 64 << 20
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (MEDIA_MANIFEST, MEDIA_DOCKER_MANIFEST)
INDEX_TYPES = (MEDIA_INDEX, MEDIA_DOCKER_LIST)
SBOM_TYPES = {"spdx": "application/spdx+json", "cyclonedx": "application/vnd.cyclonedx+json"}


@dataclass(frozen=True)
class Blob:
    """A blob to send: a file of the layout, or bytes made for the push (artifact payloads)."""

    digest: str
    size: int
    role: str
    path: Path | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Manifest:
    """A manifest or index, with the exact bytes to PUT."""

    digest: str
    media_type: str
    data: bytes
    role: str
    subject: str | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))


@dataclass(frozen=True)
class PushPlan:
    """Everything one push sends, in the order it goes up: blobs, then ``children`` (by
    digest), then ``artifacts`` (by digest, with their referrers), then ``image`` (by tag)."""

    source: Path
    image: Manifest
    children: tuple[Manifest, ...]
    blobs: tuple[Blob, ...]
    artifacts: tuple[Manifest, ...] = ()

    @property
    def digest(self) -> str:
        return self.image.digest


def read_plan(folder: Path) -> PushPlan:
    """The push plan of a build folder or an OCI layout; UsageError when it is neither,
    VerificationError when its files disagree with their names or records."""
    if (folder / MANIFEST_NAME).is_file() and (folder / "oci" / "index.json").is_file():
        return _Reader(folder / "oci").build_folder(folder)
    if (folder / "index.json").is_file() and (folder / "oci-layout").is_file():
        return _Reader(folder).bare()
    raise UsageError(f"{folder}: neither a build folder with an OCI layout (out/<name>/ of a profile "
                     "with an `oci` output) nor an OCI image layout (oci-layout, index.json)")


class _Reader:
    def __init__(self, layout: Path) -> None:
        self.layout = layout
        self.blobs: dict[str, Blob] = {}
        self.children: list[Manifest] = []
        self.platforms: dict[str, Manifest] = {}

    def bare(self) -> PushPlan:
        index = self._index()
        entries = list(index.field("manifests").items(max_items=10_000))
        if not entries:
            index.fail("no manifests")
        image = self._image(entries[0])
        return self._plan(image, self._layout_artifacts(entries, image))

    def build_folder(self, folder: Path) -> PushPlan:
        record = load_json(read_small(folder / MANIFEST_NAME, MAX_RECORD),
                           what=str(folder / MANIFEST_NAME), error=VerificationError,
                           max_bytes=MAX_RECORD)
        outputs = list(record.field("outputs").items(max_items=1_000_000))
        recorded = None
        for output in outputs:
            if output.field("path").str() == "oci/index.json":
                digest = output.optional("digest")
                recorded = digest.str() if digest is not None else None
        if recorded is None:
            raise VerificationError(f"{folder / MANIFEST_NAME}: records no image digest for "
                                    "oci/index.json")
        index = self._index()
        entries = list(index.field("manifests").items(max_items=10_000))
        chosen = [e for e in entries if e.field("digest").str() == recorded]
        if not chosen:
            raise VerificationError(f"{self.layout / 'index.json'}: does not name the image "
                                    f"{recorded} that {folder / MANIFEST_NAME} records")
        image = self._image(chosen[0])
        artifacts = self._layout_artifacts(entries, image)
        artifacts += self._sbom_artifacts(folder, outputs, image)
        return self._plan(image, artifacts)

    def _plan(self, image: Manifest, artifacts: list[Manifest]) -> PushPlan:
        unique = {a.digest: a for a in artifacts}
        return PushPlan(source=self.layout, image=image, children=tuple(self.children),
                        blobs=tuple(self.blobs.values()), artifacts=tuple(unique.values()))

    # -- documents -----------------------------------------------------------

    def _index(self) -> JsonValue:
        path = self.layout / "index.json"
        data = read_small(path, MAX_MANIFEST)
        return load_json(data, what=str(path), error=VerificationError, max_bytes=MAX_MANIFEST)

    def _read_manifest(self, desc: JsonValue, role: str) -> tuple[Manifest, JsonValue]:
        digest, size, media_type = _descriptor(desc)
        path = self._blob_path(digest)
        try:
            data = read_small(path, MAX_MANIFEST)
        except FileNotFoundError:
            raise VerificationError(f"{path}: missing ({role} {digest})") from None
        if len(data) != size:
            raise VerificationError(f"{path}: {os.path.getsize(path)} bytes, but its descriptor "
                                    f"says {size}")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise VerificationError(f"{path}: content hashes to {actual}, not to its name "
                                    "(run alpine-composer verify)")
        doc = load_json(data, what=str(path), error=VerificationError, max_bytes=MAX_MANIFEST)
        declared = doc.optional("mediaType")
        if declared is not None and declared.str() != media_type:
            doc.fail(f"mediaType {declared.str()!r} differs from its descriptor's {media_type!r}")
        subject = doc.optional("subject")
        artifact_type = doc.optional("artifactType")
        manifest = Manifest(digest, media_type, data, role,
                            subject=subject.field("digest").str() if subject is not None else None,
                            artifact_type=artifact_type.str() if artifact_type is not None else None,
                            annotations=_annotations(doc))
        return manifest, doc

    def _image(self, desc: JsonValue) -> Manifest:
        _, _, media_type = _descriptor(desc)
        if media_type in INDEX_TYPES:
            image, doc = self._read_manifest(desc, "image index")
            for entry in doc.field("manifests").items(max_items=1000):
                _, _, child_type = _descriptor(entry)
                if child_type not in MANIFEST_TYPES:
                    entry.fail(f"nested {child_type!r} is not supported (one level of index only)")
                self._image_manifest(entry)
            return image
        if media_type in MANIFEST_TYPES:
            return self._image_manifest(desc, top=True)
        desc.fail(f"{media_type!r} is not an image manifest or index")

    def _image_manifest(self, desc: JsonValue, *, top: bool = False) -> Manifest:
        manifest, doc = self._read_manifest(desc, "image manifest")
        config = doc.field("config")
        self._blob(config, "config")
        for layer in doc.field("layers").items(max_items=1000):
            self._blob(layer, "layer")
        arch = self._alpine_arch(doc, desc)
        if arch is not None:
            self.platforms.setdefault(arch, manifest)
        if not top:
            self.children.append(manifest)
        return manifest

    def _blob(self, desc: JsonValue, role: str) -> None:
        digest, size, _ = _descriptor(desc)
        path = self._blob_path(digest)
        try:
            actual = os.path.getsize(path)
        except FileNotFoundError:
            raise VerificationError(f"{path}: missing ({role} {digest})") from None
        if actual != size:
            raise VerificationError(f"{path}: {actual} bytes, but its descriptor says {size}")
        self.blobs.setdefault(digest, Blob(digest, size, role, path=path))

    def _blob_path(self, digest: str) -> Path:
        return self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def _alpine_arch(self, doc: JsonValue, desc: JsonValue) -> str | None:
        """The Alpine architecture of an image manifest, from its descriptor's platform (index
        entries) or, for a single image, from its config."""
        platform = desc.optional("platform")
        if platform is None:
            config_digest = doc.field("config").field("digest").str()
            path = self._blob_path(config_digest)
            platform = load_json(read_small(path, MAX_MANIFEST), what=str(path),
                                 error=VerificationError, max_bytes=MAX_MANIFEST)
        architecture = platform.optional("architecture")
        variant = platform.optional("variant")
        if architecture is None:
            return None
        for alpine, known in ALPINE_PLATFORMS.items():
            if known.architecture == architecture.str() and (
                    variant is None or known.variant in (None, variant.str())):
                return alpine
        return None

    # -- artifacts -----------------------------------------------------------

    def _layout_artifacts(self, entries: list[JsonValue], image: Manifest) -> list[Manifest]:
        """Artifact manifests ``index.json`` lists whose subject is one of the pushed manifests."""
        subjects = {image.digest, *(c.digest for c in self.children)}
        found = []
        for entry in entries[1:]:
            _, _, media_type = _descriptor(entry)
            if media_type not in MANIFEST_TYPES or not entry.has("artifactType"):
                continue
            manifest, doc = self._read_manifest(entry, "artifact manifest")
            if manifest.subject in subjects:
                self._blob(doc.field("config"), "artifact config")
                for layer in doc.field("layers").items(max_items=1000):
                    self._blob(layer, "artifact")
                found.append(manifest)
        return found

    def _sbom_artifacts(self, folder: Path, outputs: list[JsonValue],
                        image: Manifest) -> list[Manifest]:
        """Each SBOM file the build recorded, as an artifact of its architecture's manifest."""
        found: list[Manifest] = []
        for output in outputs:
            fmt = output.field("format").str()
            if fmt not in SBOM_TYPES or output.optional("arch") is None:
                continue
            arch = output.field("arch").str()
            subject = self.platforms.get(arch) or (image if not self.children else None)
            if subject is None:
                continue
            rel = output.field("path").str()
            path = folder / rel
            if "/" in rel or not path.is_file():
                output.fail(f"SBOM {rel!r} is not a file of {folder}")
            data = read_small(path, MAX_RECORD)
            if hashlib.sha256(data).hexdigest() != output.field("sha256").str():
                raise VerificationError(f"{path}: does not match its sha256 in {MANIFEST_NAME} "
                                        "(run alpine-composer verify)")
            media_type = SBOM_TYPES[fmt]
            payload = Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), f"{fmt} SBOM",
                           data=data)
            empty = Blob("sha256:" + hashlib.sha256(EMPTY_JSON).hexdigest(), len(EMPTY_JSON),
                         "empty config", data=EMPTY_JSON)
            self.blobs.setdefault(payload.digest, payload)
            self.blobs.setdefault(empty.digest, empty)
            artifact = OciArtifact(arch, media_type, data,
                                   annotations={"org.opencontainers.image.title": rel})
            created = subject.annotations.get(ANNOTATION_CREATED, "1970-01-01T00:00:00Z")
            data = artifact_manifest(artifact, subject.descriptor,
                                     empty=Descriptor(MEDIA_EMPTY, empty.digest, empty.size),
                                     payload=Descriptor(media_type, payload.digest, payload.size),
                                     created=created)
            found.append(Manifest("sha256:" + hashlib.sha256(data).hexdigest(), MEDIA_MANIFEST,
                                  data, f"{fmt} SBOM of {arch}", subject=subject.digest,
                                  artifact_type=media_type,
                                  annotations={ANNOTATION_CREATED: created,
                                               "org.opencontainers.image.title": rel}))
        return found


def read_small(path: Path, limit: int) -> bytes:
    """A file's bytes, but never more than ``limit`` + 1 of them (then the size check fails)."""
    with open(path, "rb") as fh:
        return fh.read(limit + 1)


def _descriptor(desc: JsonValue) -> tuple[str, int, str]:
    digest = desc.field("digest").str(max_len=100)
    if not DIGEST.fullmatch(digest):
        desc.fail(f"digest {digest!r} is not sha256: and 64 lowercase hex digits")
    return digest, desc.field("size").int(), desc.field("mediaType").str(max_len=255)


def _annotations(doc: JsonValue) -> dict[str, str]:
    value = doc.optional("annotations")
    if value is None:
        return {}
    return {k: v.str(max_len=65536) for k, v in value.members()}
