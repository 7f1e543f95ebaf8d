"""What an ISO or disk output boots with on one architecture, decided from the profile
alone: its settings with the defaults filled in, and the packages that ship its kernel,
loaders and boot tools (planned with the profile's packages, so an aarch64 image never asks
for syslinux and a disk without verity never gets device-mapper).
"""

from __future__ import annotations

from composer.context import BuildContext
from composer.profile.model import DiskOutput, IsoOutput
from composer.profile.variants import iso_defaults
from composer.stages.boot import BootSettings, boot_packages, default_firmware, default_label
from composer.stages.disk_boot import DiskSettings, disk_packages


def boot_settings(ctx: BuildContext, output: IsoOutput, arch: str, release: str) -> BootSettings:
    """The output's settings for one arch, defaults filled in (the firmware and the serial
    console differ by arch)."""
    variant = str(ctx.profile.variant)
    defaults = iso_defaults(variant, arch)
    return BootSettings(arch=arch, kernel=output.kernel or defaults["kernel"],
                        firmware=tuple(output.boot) if output.boot else default_firmware(arch),
                        cmdline=defaults["cmdline"] if output.cmdline is None else output.cmdline,
                        label=output.label or default_label(variant, release, arch),
                        timeout=output.timeout, efi_loader=output.efi_loader,
                        release=release, variant=variant)


def disk_settings(ctx: BuildContext, output: DiskOutput, arch: str, release: str) -> DiskSettings:
    """A disk output's settings for one arch, defaults (the variant's kernel and consoles)
    filled in."""
    defaults = iso_defaults(str(ctx.profile.variant), arch)
    return DiskSettings(arch=arch, kernel=output.kernel or defaults["kernel"],
                        cmdline=defaults["cmdline"] if output.cmdline is None else output.cmdline,
                        image=str(output.image),
                        size=int(output.size) if output.size is not None else None,
                        verity=output.verity,
                        data_mount=output.data.mount if output.data is not None else None,
                        data_size=int(output.data.size) if output.data is not None else 0,
                        release=release)


def image_packages(ctx: BuildContext, arch: str) -> list[str]:
    """What the profile's ISO and disk outputs boot with on ``arch`` (kernel, loaders, boot
    tools), to be installed with the profile's packages."""
    wanted: set[str] = set()
    for output in ctx.profile.outputs:
        if isinstance(output, IsoOutput):
            wanted.update(boot_packages(boot_settings(ctx, output, arch, "0")))
        elif isinstance(output, DiskOutput):
            wanted.update(disk_packages(disk_settings(ctx, output, arch, "0")))
    return sorted(wanted)
