"""Issue 14 item 9: an ISO's boot defaults and boot packages are per architecture."""

from __future__ import annotations

from pathlib import Path

import yaml

from composer.profile.model import Firmware, IsoOutput
from composer.stages.boot_plan import boot_settings, image_packages
from tests.stages.conftest import ContextFor


def test_multi_arch_virt_boots_per_arch(tmp_path: Path, context_for: ContextFor) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"name": "m", "variant": "virt",
                                       "arch": ["x86_64", "aarch64"],
                                       "outputs": [{"format": "iso"}]}))
    ctx = context_for(profile)
    assert image_packages(ctx, "x86_64") == ["gummiboot", "linux-virt", "syslinux"]
    assert image_packages(ctx, "aarch64") == ["gummiboot", "linux-virt"]
    output = ctx.profile.outputs[0]
    assert isinstance(output, IsoOutput)
    x86 = boot_settings(ctx, output, "x86_64", "3.20.3")
    arm = boot_settings(ctx, output, "aarch64", "3.20.3")
    assert x86.firmware == (Firmware.BIOS, Firmware.UEFI)
    assert arm.firmware == (Firmware.UEFI,)
    assert x86.cmdline.startswith("console=ttyS0,115200")
    assert arm.cmdline.startswith("console=ttyAMA0,115200")
    assert (x86.label, arm.label) == ("alpine-virt 3.20.3 x86_64", "alpine-virt 3.20.3 aarch64")
