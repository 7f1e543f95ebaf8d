"""An aarch64 ISO boots under qemu-system-aarch64 with AAVMF, from the CD drive and as a
disk (issue 14 item 9): Alpine's real 3.20.3 aarch64 minirootfs, Debian's arm64 cloud
kernel and systemd-boot's arm64 stub wrapped as ``linux-virt`` and ``gummiboot``."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.apk import db
from composer.apk.install import install_packages
from composer.apk.package import verify_apk
from composer.archive import load_tar
from composer.profile.model import Firmware
from composer.stages.boot import BootSettings, boot_media
from composer.tree import FileTree
from composer.writers.iso import write_iso
from tests.conftest import require_shared
from tests.helpers.apkrepo import build_apk
from tests.helpers.bootpkgs import (
    BOOT_MARKER,
    Unavailable,
    debian_arm64_boot,
    gummiboot_package,
    kernel_package,
    marker_inittab,
)
from tests.helpers.qemu import boot, missing_tools
from tests.stages.conftest import EPOCH, KEY

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
    fixtures = require_shared()
    assert request.config.cache is not None
    try:
        debian = debian_arm64_boot(request.config.cache.mkdir("debian-arm64"))
    except Unavailable as exc:
        pytest.skip(str(exc))
    packages = [verify_apk(build_apk(spec, KEY), KEY.trusted(), source=spec.file_name)
                for spec in (kernel_package(debian.kernel, "virt", arch="aarch64"),
                             gummiboot_package(arm64_stub=debian.stub))]
    minirootfs = fixtures / "minirootfs" / "alpine-minirootfs-3.20.3-aarch64.tar.gz"
    tree = FileTree()
    with minirootfs.open("rb") as fh:
        load_tar(fh, tree, source=minirootfs.name)
    world = db.parse_world(tree.read_file(db.WORLD_PATH)) + ["linux-virt", "gummiboot"]
    install_packages(tree, packages, world=world, arch="aarch64", keys={KEY.name: KEY.public_pem},
                     epoch=EPOCH)
    tree.add_file("etc/inittab", marker_inittab(port="ttyAMA0"), mtime=EPOCH)
    path = tmp_path_factory.mktemp("arm") / "virt-aarch64.iso"
    with path.open("w+b") as out:
        write_iso(boot_media(tree, SETTINGS, epoch=EPOCH), out)
    return path


@pytest.mark.parametrize("medium", ["cd", "disk"])
def test_aarch64_iso_boots_with_aavmf(arm_iso: Path, medium: str) -> None:
    result = boot(arm_iso, firmware="uefi", medium=medium, marker=f"{BOOT_MARKER}-UEFI",
                  timeout=240, arch="aarch64")
    print(f"aarch64 uefi/{medium}: {result.seconds:.1f} s")
