"""Issue 14 item 9: an ISO's boot defaults and boot packages are per architecture; issue 17:
a disk output's, by variant and by what it asks for."""

from __future__ import annotations

from pathlib import Path

import yaml

from composer.profile.model import DiskOutput, Firmware, IsoOutput
from composer.stages.boot_plan import boot_settings, disk_settings, image_packages
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


def test_disk_outputs_plan_their_kernel_and_boot_tools(tmp_path: Path,
                                                       context_for: ContextFor) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "d", "variant": "standard", "arch": ["x86_64", "aarch64"],
        "outputs": [{"format": "disk", "data": {"mount": "/srv", "size": "1GiB"}},
                    {"format": "disk", "image": "qcow2", "verity": False, "kernel": "virt"}]}))
    ctx = context_for(profile)
    assert image_packages(ctx, "x86_64") == ["device-mapper", "e2fsprogs", "gummiboot",
                                             "linux-lts", "linux-virt"]
    first, second = ctx.profile.outputs
    assert isinstance(first, DiskOutput) and isinstance(second, DiskOutput)
    standard = disk_settings(ctx, first, "aarch64", "3.20.3")
    assert (standard.kernel, standard.verity, standard.data_mount, standard.data_size) == (
        "lts", True, "/srv", 1 << 30)
    assert standard.cmdline.startswith("console=ttyAMA0,115200")
    plain = disk_settings(ctx, second, "x86_64", "3.20.3")
    assert (plain.kernel, plain.verity, plain.image, plain.data_mount) == (
        "virt", False, "qcow2", None)
