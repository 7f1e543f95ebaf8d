"""Bridge from the pipeline to the OCI, archive and SBOM writers.

Turns the profile's ``config:`` and each architecture's tree into writer inputs,
writes into the staging folder and returns OutputRecords for the manifest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from composer.apk.db import INSTALLED_PATH, parse_installed
from composer.errors import NotSupportedError, OutputError
from composer.manifest import OutputRecord
from composer.profile.model import DockerArchiveOutput, OciOutput
from composer.writers.oci import OciImageSpec, OciResult, image_annotations, write_oci_layout
from composer.writers.oci_archive import write_docker_archive, write_oci_archive
from composer.writers.sbom import (
    SbomBase,
    SbomDocument,
    sbom_packages_from_installed,
    write_cyclonedx_json,
    write_spdx_json,
)
from composer.writers.stream import HashingWriter

if TYPE_CHECKING:
    from composer.context import BuildContext
    from composer.pipeline import ArchBuild

OCI_DIR = "oci"


def check_image_outputs(ctx: BuildContext) -> None:
    """Refuse, before any download, image outputs that cannot be written for this profile."""
    profile = ctx.profile
    seen: set[str] = set()
    for output in profile.outputs:
        if output.format in seen and output.format != "tar":
            raise OutputError(f"{ctx.loaded.path}: outputs: format {output.format!r} is listed twice")
        seen.add(output.format)
        if isinstance(output, DockerArchiveOutput) and len(profile.arch) > 1:
            raise NotSupportedError(
                f"{ctx.loaded.path}: outputs: docker-archive holds one platform, but arch lists "
                f"{', '.join(a.value for a in profile.arch)}; use oci or oci-archive for multi-arch")


def image_specs(ctx: BuildContext, builds: Sequence[ArchBuild], epoch: int,
                compression: str) -> list[OciImageSpec]:
    config = ctx.profile.config
    specs = []
    for build in builds:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        env.update(config.env)
        specs.append(OciImageSpec(
            tree=build.tree, arch=build.arch, created=epoch, compression=compression,
            entrypoint=config.entrypoint, cmd=config.cmd, env=env, labels=dict(config.labels),
            working_dir=config.working_dir, user=config.user,
            exposed_ports=tuple(config.exposed_ports), volumes=tuple(config.volumes),
            stop_signal=config.stop_signal, tool_version=ctx.tool_version,
            history_comment=f"alpine-composer profile {ctx.profile.name}"))
    return specs


def annotations_for(ctx: BuildContext, builds: Sequence[ArchBuild], epoch: int) -> dict[str, str]:
    config = ctx.profile.config
    first = builds[0]
    base_name = base_digest = None
    if len(builds) == 1 and first.minirootfs is not None:
        base_name = first.minirootfs.url
        base_digest = "sha256:" + first.minirootfs.sha256
    return image_annotations(created=epoch, version=first.release, revision=config.revision,
                             source=config.source, base_name=base_name, base_digest=base_digest)


def _blob_roles(result: OciResult) -> dict[str, tuple[str, str | None]]:
    """digest → (format naming the blob's role, arch) for the manifest's output list."""
    roles: dict[str, tuple[str, str | None]] = {}
    if result.image.media_type.endswith("index.v1+json"):
        roles[result.image.digest] = ("oci-image-index", None)
    for image in result.images:
        roles[image.manifest.digest] = ("oci-image-manifest", image.arch)
        roles[image.config.digest] = ("oci-image-config", image.arch)
        for layer in image.layers:
            roles[layer.descriptor.digest] = ("oci-layer", image.arch)
        for artifact in image.artifacts:
            roles[artifact.digest] = ("oci-artifact", image.arch)
    return roles


def _records_for_layout(stage: Path, layout: Path, result: OciResult) -> list[OutputRecord]:
    """One record per file of the layout, each blob named by its role; index.json carries
    the digest users pin (``image@sha256:…``)."""
    roles = _blob_roles(result)
    records = []
    for path in sorted(p for p in layout.rglob("*") if p.is_file()):
        rel = path.relative_to(stage).as_posix()
        hashed = HashingWriter(None)
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                hashed.write(chunk)
        digest: str | None = None
        fmt, arch = "oci", None
        if path.name == "index.json":
            digest = result.image.digest
            fmt = "oci-index-json"
        elif path.parent.name == "sha256":
            digest = "sha256:" + path.name
            fmt, arch = roles.get(digest, ("oci-blob", None))
        elif path.name == "oci-layout":
            fmt = "oci-layout"
        records.append(OutputRecord(path=rel, sha256=hashed.hexdigest, size=hashed.size,
                                    format=fmt, arch=arch, digest=digest))
    return records


def write_image_output(ctx: BuildContext, stage: Path, builds: Sequence[ArchBuild],
                       output: object, epoch: int) -> list[OutputRecord]:
    """Write one oci, oci-archive or docker-archive output."""
    profile = ctx.profile
    first = builds[0]
    if isinstance(output, OciOutput):
        specs = image_specs(ctx, builds, epoch, output.compression.value)
        annotations = annotations_for(ctx, builds, epoch)
        if output.format == "oci":
            ctx.log(f"==> writing OCI layout {OCI_DIR}/ (tag {output.tag})")
            layout = stage / OCI_DIR
            result = write_oci_layout(layout, specs, tag=output.tag, annotations=annotations)
            return _records_for_layout(stage, layout, result)
        name = f"{profile.name}-{first.release}.oci.tar"
        ctx.log(f"==> writing {name}")
        scratch = stage / ".oci-archive"
        try:
            result = write_oci_layout(scratch, specs, tag=output.tag, annotations=annotations)
            with open(stage / name, "wb") as fh:
                hashed = HashingWriter(fh)
                write_oci_archive(scratch, hashed, mtime=epoch)  # type: ignore[arg-type]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return [OutputRecord(path=name, sha256=hashed.hexdigest, size=hashed.size,
                             format="oci-archive", digest=result.image.digest)]
    if isinstance(output, DockerArchiveOutput):
        specs = image_specs(ctx, builds, epoch, "none")
        name = f"{profile.name}-{first.release}-{first.arch}.docker.tar"
        ctx.log(f"==> writing {name}")
        with open(stage / name, "wb") as fh:
            hashed = HashingWriter(fh)
            write_docker_archive(specs, hashed, tag=f"{profile.name}:{output.tag}")  # type: ignore[arg-type]
        return [OutputRecord(path=name, sha256=hashed.hexdigest, size=hashed.size,
                             format="docker-archive", arch=first.arch)]
    raise NotSupportedError(f"output format {getattr(output, 'format', output)!r} is not supported")


def sbom_document(ctx: BuildContext, build: ArchBuild, epoch: int) -> SbomDocument | None:
    """The SBOM of one tree, from its own apk database; None when the tree has none."""
    entry = build.tree.get(INSTALLED_PATH)
    if entry is None or entry.blob is None:
        return None
    installed = parse_installed(entry.blob.read(), source=f"{build.arch}:/{INSTALLED_PATH}")
    base = None
    if build.minirootfs is not None:
        base = SbomBase(name=os.path.basename(build.minirootfs.url), version=build.release,
                        url=build.minirootfs.url, sha256=build.minirootfs.sha256)
    return SbomDocument(name=f"{ctx.profile.name}-{build.release}-{build.arch}", created=epoch,
                        tool_version=ctx.tool_version, alpine_release=build.release,
                        packages=sbom_packages_from_installed(installed), base=base)


def write_sboms(ctx: BuildContext, stage: Path, builds: Sequence[ArchBuild],
                epoch: int) -> list[OutputRecord]:
    """SPDX 2.3 and CycloneDX 1.5 JSON for each architecture, next to the other outputs."""
    records = []
    for build in builds:
        doc = sbom_document(ctx, build, epoch)
        if doc is None:
            continue
        for suffix, fmt, writer in ((".spdx.json", "spdx", write_spdx_json),
                                    (".cdx.json", "cyclonedx", write_cyclonedx_json)):
            data = writer(doc)
            name = f"{doc.name}{suffix}"
            (stage / name).write_bytes(data)
            records.append(OutputRecord(path=name, sha256=hashlib.sha256(data).hexdigest(),
                                        size=len(data), format=fmt, arch=build.arch))
    return records
