"""An aarch64 ISO boots under qemu-system-aarch64 with AAVMF, from the CD drive and as a
disk (issue 14 item 9): Alpine's real 3.20.3 aarch64 minirootfs, Debian's arm64 cloud
kernel and systemd-boot's arm64 stub wrapped as ``linux-virt`` and ``gummiboot``."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.profile.model import Firmware
from composer.stages.boot import BootSettings, boot_media
from composer.writers.iso import write_iso
from tests.helpers.bootpkgs import (
    BOOT_MARKER,
)
from tests.helpers.qemu import boot, missing_tools
from tests.stages.conftest import EPOCH, aarch64_marker_tree

pytestmark = pytest.mark.slow

SETTINGS = BootSettings(arch="aarch64", kernel="virt", firmware=(Firmware.UEFI,),
                        cmdline="console=ttyAMA0,115200 panic=-1 quiet",
                        label="alpine-virt 3.20.3 aarch64", timeout=0, release="3.20.3",
                        variant="virt")


@pytest.fixture(scope="module")
def arm_iso(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = missing_tools("uefi", "aarch64")
    if reason:
        pytest.skip(reason)
    tree = aarch64_marker_tree(request)
    path = tmp_path_factory.mktemp("arm") / "virt-aarch64.iso"
    with path.open("w+b") as out:
        write_iso(boot_media(tree, SETTINGS, epoch=EPOCH), out)
    return path


@pytest.mark.parametrize("medium", ["cd", "disk"])
def test_aarch64_iso_boots_with_aavmf(arm_iso: Path, medium: str) -> None:
    result = boot(arm_iso, firmware="uefi", medium=medium, marker=f"{BOOT_MARKER}-UEFI",
                  timeout=240, arch="aarch64")
    print(f"aarch64 uefi/{medium}: {result.seconds:.1f} s")
