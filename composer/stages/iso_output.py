"""``format: iso``: a bootable hybrid ISO per architecture (BIOS + UEFI, CD + disk).

``check`` refuses settings no tree can satisfy before any download; ``write`` hands
each composed tree to the boot stage (:mod:`composer.stages.boot`), which checks the
tree's boot files and returns a plain spec, and masters it with the ISO writer.
"""

from __future__ import annotations

from dataclasses import replace

from composer.context import BuildContext
from composer.manifest import OutputRecord
from composer.profile.model import IsoOutput
from composer.stages.boot import boot_media, check_settings, with_panic
from composer.stages.boot_plan import boot_settings
from composer.stages.kind import OutputJob, artifact_name, output_where

SUFFIX = ".iso"


class IsoKind:
    """``format: iso``: ``<name>-<release>-<arch>.iso`` for every architecture."""

    def check(self, ctx: BuildContext, output: IsoOutput) -> None:
        for arch in ctx.profile.arch:
            # The release is not known yet; a default label always fits, a given one is checked.
            check_settings(boot_settings(ctx, output, arch.value, "0"), where=output_where(ctx, output))

    def claim(self, ctx: BuildContext, output: IsoOutput) -> str:
        return artifact_name(ctx, "<release>", "<arch>", SUFFIX)

    def write(self, job: OutputJob, output: IsoOutput) -> list[OutputRecord]:
        from composer.hashing import hash_file
        from composer.writers.iso import write_iso

        ctx = job.ctx
        records = []
        for arch in job.arches:
            settings = boot_settings(ctx, output, arch.arch, arch.release)
            check_settings(settings, where=output_where(ctx, output))
            settings = replace(settings, cmdline=with_panic(settings.cmdline))
            spec = boot_media(arch.tree, settings, epoch=job.epoch)
            name = artifact_name(ctx, arch.release, arch.arch, SUFFIX)
            ctx.log(f"==> writing {name}")
            with open(job.stage / name, "w+b") as fh:
                write_iso(spec, fh)
            digest, size = hash_file(job.stage / name)
            records.append(OutputRecord(path=name, sha256=digest, size=size, format="iso",
                                        arch=arch.arch))
        return records
