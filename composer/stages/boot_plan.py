"""What an ISO output boots with on one architecture, decided from the profile alone:
its settings with the defaults filled in, and the packages that ship its kernel and
loaders (planned with the profile's packages, so an aarch64 image never asks for syslinux).
"""

from __future__ import annotations

from composer.context import BuildContext
from composer.profile.model import IsoOutput
from composer.profile.variants import iso_defaults
from composer.stages.boot import BootSettings, boot_packages, default_firmware, default_label


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


def iso_packages(ctx: BuildContext, arch: str) -> list[str]:
    """What the profile's ISO outputs boot with on ``arch`` (its kernel and loaders), to be
    installed with the profile's packages."""
    wanted: set[str] = set()
    for output in ctx.profile.outputs:
        if isinstance(output, IsoOutput):
            wanted.update(boot_packages(boot_settings(ctx, output, arch, "0")))
    return sorted(wanted)
