"""Issue 17 on aarch64: Alpine's real 3.20.3 aarch64 minirootfs with Debian's arm64 cloud
kernel (and its disk modules) and systemd-boot's arm64 stub wrapped as ``linux-virt`` and
``gummiboot``: the disk is checked structurally with verity and Secure Boot signing (GPT types
for arm64, the signed UKI at EFI/BOOT/BOOTAA64.EFI passing ``sbverify``, ``veritysetup verify``), and without verity (no arm64 dmsetup here) it
boots under qemu-system-aarch64 with AAVMF from its squashfs root."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from composer.stages.disk_boot import DiskSettings, write_disk
from composer.tree import FileTree
from composer.writers.authenticode import sign_pe
from composer.writers.disk import ROOT_TYPES, ROOT_VERITY_TYPES
from composer.writers.uki import stub_arch
from tests.helpers.apkrepo import FileSpec, PackageSpec
from tests.helpers.bootpkgs import (
    BOOT_MARKER,
)
from tests.helpers.qemu import boot, missing_tools
from tests.helpers.sbkeys import make_identity
from tests.stages.conftest import EPOCH, aarch64_marker_tree

pytestmark = pytest.mark.slow

STAND_IN_DMSETUP = PackageSpec(
    name="device-mapper", version="2.03.23-r1", arch="aarch64", license="GPL-2.0-only",
    description="a stand-in for structural checks (never run)",
    files={"sbin/dmsetup": FileSpec(b"#!/bin/sh\nexit 1\n", mode=0o755)})


def _tree(request: pytest.FixtureRequest, *, verity: bool) -> FileTree:
    return aarch64_marker_tree(request, [STAND_IN_DMSETUP] if verity else [])


def _settings(verity: bool) -> DiskSettings:
    return DiskSettings(arch="aarch64", kernel="virt", cmdline="console=ttyAMA0,115200 quiet",
                        verity=verity, release="3.20.3")


def _sgdisk_types(image: Path) -> dict[str, tuple[str, int, int]]:
    found = {}
    for number in range(1, 5):
        info = subprocess.run(["sgdisk", "-i", str(number), str(image)], capture_output=True,
                              text=True, check=True).stdout
        if "does not exist" in info:
            break
        fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
        name = fields["Partition name"].strip("'")
        first = int(fields["First sector"].split()[0])
        last = int(fields["Last sector"].split()[0])
        found[name] = (fields["Partition GUID code"].split()[0], first * 512,
                       (last - first + 1) * 512)
    return found


def test_aarch64_disk_with_verity_is_well_formed(request: pytest.FixtureRequest,
                                                 tmp_path: Path) -> None:
    for tool in ("sgdisk", "veritysetup", "mcopy", "sbverify"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    tree = _tree(request, verity=True)
    image = tmp_path / "disk.img"
    keys = make_identity()
    _, cert = keys.write(tmp_path)
    with image.open("w+b") as out:
        built = write_disk(tree, _settings(True), out, epoch=EPOCH, scratch=tmp_path,
                           sign=lambda uki: sign_pe(uki, keys.identity))
    assert subprocess.run(["sgdisk", "-v", str(image)], capture_output=True,
                          text=True).returncode == 0
    parts = _sgdisk_types(image)
    assert set(parts) == {"esp", "root-arm64", "root-arm64-verity"}
    assert uuid.UUID(parts["root-arm64"][0]) == ROOT_TYPES["aarch64"]
    assert uuid.UUID(parts["root-arm64-verity"][0]) == ROOT_VERITY_TYPES["aarch64"]
    data = image.read_bytes()
    _, esp_at, esp_size = parts["esp"]
    esp = tmp_path / "esp.fat"
    esp.write_bytes(data[esp_at:esp_at + esp_size])
    subprocess.run(["mcopy", "-n", "-i", str(esp), "::EFI/BOOT/BOOTAA64.EFI",
                    str(tmp_path / "uki.efi")], check=True)
    assert stub_arch((tmp_path / "uki.efi").read_bytes()) == "aarch64"
    verified = subprocess.run(["sbverify", "--cert", str(cert), str(tmp_path / "uki.efi")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert built.verity is not None
    assert f"roothash={built.verity.root_hash.hex()}" in built.cmdline.split()
    for name in ("root-arm64", "root-arm64-verity"):
        _, at, size = parts[name]
        (tmp_path / name).write_bytes(data[at:at + size])
    checked = subprocess.run(["veritysetup", "verify", str(tmp_path / "root-arm64"),
                              str(tmp_path / "root-arm64-verity"),
                              built.verity.root_hash.hex()], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr



def test_aarch64_disk_boots_with_aavmf(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    reason = missing_tools("uefi", "aarch64")
    if reason:
        pytest.skip(reason)
    tree = _tree(request, verity=False)
    image = tmp_path / "disk.img"
    with image.open("w+b") as out:
        write_disk(tree, _settings(False), out, epoch=EPOCH, scratch=tmp_path)
    result = boot(image, firmware="uefi", medium="disk", marker=f"{BOOT_MARKER}-UEFI",
                  timeout=240, arch="aarch64")
    print(f"aarch64 disk: {result.seconds:.1f} s")
