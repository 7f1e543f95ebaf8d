"""The composed system boots in real qemu, four ways, to a marker its own init prints."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from composer.profile.model import Firmware
from composer.stages.boot import BootSettings, boot_media
from composer.writers.iso import ELTORITO_MAX_SECTORS, write_iso
from tests.conftest import require_shared
from tests.helpers.bootpkgs import ALPINE_SYSLINUX, BOOT_MARKER
from tests.helpers.qemu import MODE_IDS, MODES, boot, boot_to_marker, missing_tools
from tests.stages.conftest import EPOCH, ComposeTree

pytestmark = pytest.mark.slow

SETTINGS = BootSettings(arch="x86_64", kernel="virt", firmware=(Firmware.BIOS, Firmware.UEFI),
                        cmdline="console=ttyS0,115200 panic=-1 quiet",
                        label="alpine-virt 3.20.3 x86_64", timeout=0, release="3.20.3",
                        variant="virt")


@pytest.fixture(scope="module")
def virt_iso(tmp_path_factory: pytest.TempPathFactory, compose_tree: ComposeTree) -> Path:
    path = tmp_path_factory.mktemp("iso") / "virt.iso"
    with compose_tree() as tree, path.open("w+b") as out:
        write_iso(boot_media(tree, SETTINGS, epoch=EPOCH), out)
    return path


@pytest.mark.parametrize(("firmware", "medium"), MODES, ids=MODE_IDS)
def test_iso_boots_to_the_images_own_init(virt_iso: Path, firmware: str, medium: str) -> None:
    boot_to_marker(virt_iso, firmware, medium, BOOT_MARKER)


def test_efi_image_beyond_32_mib_boots_from_cd_and_disk(compose_tree: ComposeTree,
                                                        tmp_path: Path) -> None:
    """An EFI image too large for the 16-bit El Torito count still boots both ways."""
    reason = missing_tools("uefi")
    if reason:
        pytest.skip(reason)
    settings = BootSettings(**{**SETTINGS.__dict__, "firmware": (Firmware.BIOS, Firmware.UEFI)})
    path = tmp_path / "big.iso"
    with compose_tree() as tree:
        # Incompressible ballast makes the initramfs, and so the UKI, larger than 32 MiB.
        tree.add_file("usr/share/ballast", os.urandom(24 * 1024 * 1024))
        spec = boot_media(tree, settings, epoch=EPOCH)
        with path.open("w+b") as out:
            write_iso(spec, out)
    efi = next(f for f in spec.files if f.path == spec.efi_image)
    assert len(efi.data) // 512 > ELTORITO_MAX_SECTORS
    for medium in ("cd", "disk"):
        boot(path, firmware="uefi", medium=medium, marker=f"{BOOT_MARKER}-UEFI", timeout=200)


def test_uefi_only_iso_boots_as_a_disk(compose_tree: ComposeTree, tmp_path: Path) -> None:
    """A UEFI-only ISO (every aarch64 ISO) has a protective MBR and a GPT whose EFI system
    partition covers the EFI image: OVMF boots it as a disk, and from the CD drive."""
    settings = BootSettings(**{**SETTINGS.__dict__, "firmware": (Firmware.UEFI,)})
    path = tmp_path / "uefi.iso"
    with compose_tree(packages=("linux-virt", "gummiboot")) as tree, path.open("w+b") as out:
        write_iso(boot_media(tree, settings, epoch=EPOCH), out)
    if shutil.which("sgdisk"):
        report = subprocess.run(["sgdisk", "-v", str(path)], capture_output=True, text=True,
                                check=True).stdout
        assert "No problems found" in report and "Creating new GPT" not in report, report
    for medium in ("disk", "cd"):
        boot_to_marker(path, "uefi", medium, BOOT_MARKER)


def test_bios_only_iso_boots_as_a_disk(compose_tree: ComposeTree, tmp_path: Path) -> None:
    """BIOS only: isohdpfx.bin in a protective MBR, an empty GPT, kernel and initramfs as
    plain ISO 9660 files."""
    settings = BootSettings(**{**SETTINGS.__dict__, "firmware": (Firmware.BIOS,)})
    path = tmp_path / "bios.iso"
    with compose_tree(packages=("linux-virt", "syslinux")) as tree, path.open("w+b") as out:
        write_iso(boot_media(tree, settings, epoch=EPOCH), out)
    boot_to_marker(path, "bios", "disk", BOOT_MARKER)


def test_alpines_isolinux_boots_as_a_disk(compose_tree: ComposeTree, tmp_path: Path) -> None:
    """Alpine's own ISOLINUX 6.04 (isolinux.bin, ldlinux.c32 and its isohdpfx.bin as MBR
    code) boots the ISO as a disk: the MBR code matches the isolinux.bin beside it."""
    folder = require_shared() / ALPINE_SYSLINUX
    path = tmp_path / "alpine-isolinux.iso"
    with compose_tree(packages=("linux-virt", "gummiboot")) as tree, path.open("w+b") as out:
        for name in ("isolinux.bin", "ldlinux.c32", "isohdpfx.bin"):
            tree.add_file(f"usr/share/syslinux/{name}", (folder / name).read_bytes())
        write_iso(boot_media(tree, SETTINGS, epoch=EPOCH), out)
    assert path.read_bytes()[:432] == (folder / "isohdpfx.bin").read_bytes()
    boot_to_marker(path, "bios", "disk", BOOT_MARKER)


def test_two_builds_of_the_composed_system_are_identical(compose_tree: ComposeTree,
                                                         virt_iso: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.iso"
    with compose_tree() as tree, again.open("w+b") as out:
        write_iso(boot_media(tree, SETTINGS, epoch=EPOCH, workers=1), out)
    assert again.read_bytes() == virt_iso.read_bytes()
