"""SBOM outputs: SPDX 2.3 and CycloneDX 1.5 JSON per architecture, from its apk database."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from composer.apk.db import INSTALLED_PATH, InstalledPackage, parse_installed
from composer.context import BuildContext
from composer.manifest import OutputRecord
from composer.stages.kind import OutputJob, artifact_name, base_url
from composer.writers.sbom import (
    SbomBase,
    SbomDocument,
    SbomPackage,
    write_cyclonedx_json,
    write_spdx_json,
)

if TYPE_CHECKING:
    from composer.stages.compose import ComposedArch


def sbom_packages_from_installed(packages: Iterable[InstalledPackage]) -> list[SbomPackage]:
    """Plain SBOM records of an apk installed database: the writer sees values, never the
    APK engine's types."""
    return [SbomPackage(name=p.name, version=p.version, arch=p.arch, license=p.license,
                        origin=p.origin, maintainer=p.maintainer, checksum=p.checksum,
                        url=p.url or None, description=p.description or None)
            for p in packages]


def sbom_document(ctx: BuildContext, build: ComposedArch, epoch: int) -> SbomDocument | None:
    """The SBOM of one tree, from its own apk database; None when the tree has none."""
    entry = build.tree.get(INSTALLED_PATH)
    if entry is None or entry.blob is None:
        return None
    installed = parse_installed(entry.blob.read(), source=f"{build.arch}:/{INSTALLED_PATH}")
    base = None
    url = base_url(ctx, build)
    if build.minirootfs is not None and url is not None:
        base = SbomBase(name=os.path.basename(url), version=build.release, url=url,
                        sha256=build.minirootfs.sha256)
    return SbomDocument(name=artifact_name(ctx, build.release, build.arch, ""), created=epoch,
                        tool_version=ctx.tool_version, alpine_release=build.release,
                        packages=sbom_packages_from_installed(installed), base=base)


def write_sboms(job: OutputJob) -> list[OutputRecord]:
    """SPDX 2.3 and CycloneDX 1.5 JSON for each architecture, next to the other outputs."""
    records = []
    for build in job.arches:
        doc = sbom_document(job.ctx, build, job.epoch)
        if doc is None:
            continue
        for suffix, fmt, writer in ((".spdx.json", "spdx", write_spdx_json),
                                    (".cdx.json", "cyclonedx", write_cyclonedx_json)):
            data = writer(doc)
            name = f"{doc.name}{suffix}"
            (job.stage / name).write_bytes(data)
            records.append(OutputRecord(path=name, sha256=hashlib.sha256(data).hexdigest(),
                                        size=len(data), format=fmt, arch=build.arch))
    return records
