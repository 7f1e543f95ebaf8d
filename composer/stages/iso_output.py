"""``format: iso``: a bootable hybrid ISO per architecture (BIOS + UEFI, CD + disk).

``check`` refuses settings no tree can satisfy before any download; ``write`` hands
each composed tree to the boot stage (:mod:`composer.stages.boot`), which checks the
tree's boot files and returns a plain spec, and masters it with the ISO writer.
"""

from __future__ import annotations

from composer.context import BuildContext
from composer.manifest import OutputRecord
from composer.profile.model import IsoOutput
from composer.profile.variants import iso_defaults
from composer.stages.boot import BootSettings, boot_media, check_settings, default_label
from composer.stages.kind import OutputJob, artifact_name

SUFFIX = ".iso"


def boot_settings(ctx: BuildContext, output: IsoOutput, arch: str, release: str) -> BootSettings:
    """The output's settings for one arch, defaults filled in."""
    variant = str(ctx.profile.variant)
    defaults = iso_defaults(variant)
    return BootSettings(arch=arch, kernel=output.kernel or defaults["kernel"],
                        firmware=tuple(output.boot),
                        cmdline=defaults["cmdline"] if output.cmdline is None else output.cmdline,
                        label=output.label or default_label(variant, release, arch),
                        timeout=output.timeout, efi_loader=output.efi_loader,
                        release=release, variant=variant)


def _where(ctx: BuildContext, output: IsoOutput) -> str:
    index = next(i for i, o in enumerate(ctx.profile.outputs) if o is output)
    return f"{ctx.loaded.path}: outputs[{index}]"


class IsoKind:
    """``format: iso``: ``<name>-<release>-<arch>.iso`` for every architecture."""

    def check(self, ctx: BuildContext, output: IsoOutput) -> None:
        for arch in ctx.profile.arch:
            # The release is not known yet; a default label always fits, a given one is checked.
            check_settings(boot_settings(ctx, output, arch.value, "0"), where=_where(ctx, output))

    def claim(self, ctx: BuildContext, output: IsoOutput) -> str:
        return artifact_name(ctx, "<release>", "<arch>", SUFFIX)

    def write(self, job: OutputJob, output: IsoOutput) -> list[OutputRecord]:
        from composer.hashing import hash_file
        from composer.writers.iso import write_iso

        ctx = job.ctx
        records = []
        for arch in job.arches:
            settings = boot_settings(ctx, output, arch.arch, arch.release)
            check_settings(settings, where=_where(ctx, output))
            spec = boot_media(arch.tree, settings, epoch=job.epoch)
            name = artifact_name(ctx, arch.release, arch.arch, SUFFIX)
            ctx.log(f"==> writing {name}")
            with open(job.stage / name, "w+b") as fh:
                write_iso(spec, fh)
            digest, size = hash_file(job.stage / name)
            records.append(OutputRecord(path=name, sha256=digest, size=size, format="iso",
                                        arch=arch.arch))
        return records
