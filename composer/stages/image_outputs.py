"""Image output kinds: OCI layout, oci-archive and docker-archive.

Turns the profile's ``config:`` and each architecture's tree into writer inputs
and writes into the staging folder; one OutputRecord per file.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from composer.context import BuildContext
from composer.errors import NotSupportedError
from composer.hashing import hash_file
from composer.manifest import OutputRecord
from composer.profile.model import DockerArchiveOutput, OciOutput
from composer.stages.kind import OutputJob, artifact_name, base_url
from composer.writers.layers import split_layers
from composer.writers.oci import OciImageSpec, OciResult, image_annotations, write_oci_layout
from composer.writers.oci_archive import write_docker_archive, write_oci_archive
from composer.writers.stream import HashingWriter

if TYPE_CHECKING:
    from composer.stages.compose import ComposedArch

OCI_DIR = "oci"


def image_specs(ctx: BuildContext, builds: Sequence[ComposedArch], epoch: int,
                compression: str, layering: str = "single") -> list[OciImageSpec]:
    config = ctx.profile.config
    specs = []
    for build in builds:
        layers = split_layers(build.stages, build.tree.entries,
                              f"accounts, services and overlay of profile {ctx.profile.name}") \
            if layering == "stages" else []
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        env.update(config.env)
        specs.append(OciImageSpec(
            tree=build.tree, arch=build.arch, created=epoch, compression=compression,
            entrypoint=config.entrypoint, cmd=config.cmd, env=env, labels=dict(config.labels),
            working_dir=config.working_dir, user=config.user,
            exposed_ports=tuple(config.exposed_ports), volumes=tuple(config.volumes),
            stop_signal=config.stop_signal, tool_version=ctx.tool_version,
            history_comment=f"alpine-composer profile {ctx.profile.name}", layers=layers))
    return specs


def annotations_for(ctx: BuildContext, builds: Sequence[ComposedArch], epoch: int) -> dict[str, str]:
    config = ctx.profile.config
    first = builds[0]
    base_name = base_digest = None
    if len(builds) == 1 and first.minirootfs is not None:
        base_name = base_url(ctx, first)
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
        sha256, size = hash_file(path)
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
        records.append(OutputRecord(path=rel, sha256=sha256, size=size,
                                    format=fmt, arch=arch, digest=digest))
    return records


class OciLayoutKind:
    """``format: oci``: an OCI image layout folder, one manifest per architecture."""

    def check(self, ctx: BuildContext, output: OciOutput) -> None:
        return None

    def claim(self, ctx: BuildContext, output: OciOutput) -> str:
        return OCI_DIR + "/"

    def write(self, job: OutputJob, output: OciOutput) -> list[OutputRecord]:
        ctx = job.ctx
        specs = image_specs(ctx, job.arches, job.epoch, output.compression.value, output.layering)
        annotations = annotations_for(ctx, job.arches, job.epoch)
        ctx.log(f"==> writing OCI layout {OCI_DIR}/ (tag {output.tag})")
        layout = job.stage / OCI_DIR
        result = write_oci_layout(layout, specs, tag=output.tag, annotations=annotations)
        return _records_for_layout(job.stage, layout, result)


class OciArchiveKind:
    """``format: oci-archive``: the OCI layout as one deterministic tar."""

    def check(self, ctx: BuildContext, output: OciOutput) -> None:
        return None

    def claim(self, ctx: BuildContext, output: OciOutput) -> str:
        return artifact_name(ctx, "<release>", None, ".oci.tar")

    def write(self, job: OutputJob, output: OciOutput) -> list[OutputRecord]:
        ctx = job.ctx
        specs = image_specs(ctx, job.arches, job.epoch, output.compression.value, output.layering)
        annotations = annotations_for(ctx, job.arches, job.epoch)
        name = artifact_name(ctx, job.arches[0].release, None, ".oci.tar")
        ctx.log(f"==> writing {name}")
        scratch = job.stage / ".oci-archive"
        try:
            result = write_oci_layout(scratch, specs, tag=output.tag, annotations=annotations)
            with open(job.stage / name, "wb") as fh:
                hashed = HashingWriter(fh)
                write_oci_archive(scratch, hashed, mtime=job.epoch)  # type: ignore[arg-type]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return [OutputRecord(path=name, sha256=hashed.hexdigest, size=hashed.size,
                             format="oci-archive", digest=result.image.digest)]


class DockerArchiveKind:
    """``format: docker-archive``: ``docker load`` format, one platform only."""

    def check(self, ctx: BuildContext, output: DockerArchiveOutput) -> None:
        profile = ctx.profile
        if len(profile.arch) > 1:
            raise NotSupportedError(
                f"{ctx.loaded.path}: outputs: docker-archive holds one platform, but arch lists "
                f"{', '.join(a.value for a in profile.arch)}; use oci or oci-archive for multi-arch")

    def claim(self, ctx: BuildContext, output: DockerArchiveOutput) -> str:
        return artifact_name(ctx, "<release>", "<arch>", ".docker.tar")

    def write(self, job: OutputJob, output: DockerArchiveOutput) -> list[OutputRecord]:
        ctx = job.ctx
        first = job.arches[0]
        specs = image_specs(ctx, job.arches, job.epoch, "none")
        name = artifact_name(ctx, first.release, first.arch, ".docker.tar")
        ctx.log(f"==> writing {name}")
        with open(job.stage / name, "wb") as fh:
            hashed = HashingWriter(fh)
            write_docker_archive(specs, hashed,  # type: ignore[arg-type]
                                 tag=f"{ctx.profile.name}:{output.tag}")
        return [OutputRecord(path=name, sha256=hashed.hexdigest, size=hashed.size,
                             format="docker-archive", arch=first.arch)]
