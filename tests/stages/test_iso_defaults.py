"""What an ISO output boots with when the profile leaves it out (issue 14 items 4 and 9):
``panic=`` on the command line, and per-architecture firmware, console and boot packages.

ISOs are built in-process from the synthetic minirootfs and small stand-in boot packages
(a kernel that is a few bytes, the test ISOLINUX and MBR code, a minimal PE stub): enough
to lay out real boot media quickly, never to boot them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from composer.profile.model import Firmware
from composer.stages.boot_plan import boot_settings
from composer.stages.pipeline import build
from composer.stages.plan import requested_packages
from composer.writers.uki import pe_sections
from tests.conftest import write_profile
from tests.helpers.apkrepo import PackageSpec, build_repository, signing_key
from tests.helpers.bootpkgs import FAKE_ISOHDPFX, FAKE_ISOLINUX, base_packages
from tests.helpers.gpg import SigningKey
from tests.helpers.isoread import files_of
from tests.helpers.mirror import build_mirror, minirootfs_without_world
from tests.stages.conftest import ContextFor
from tests.stages.test_boot import tiny_stub

KEY = signing_key()
STUBS = {"x86_64": ("linuxx64.efi.stub", 0x8664), "aarch64": ("linuxaa64.efi.stub", 0xAA64)}
INITTAB = "::sysinit:/bin/sh -c true\n"


def stand_in_boot_packages(arch: str) -> list[PackageSpec]:
    stub, machine = STUBS[arch]
    specs = [PackageSpec(name="linux-virt", version="6.6.1-r0", arch=arch,
                         files={"boot/vmlinuz-virt": b"kernel image"}),
             PackageSpec(name="gummiboot", version="48.1-r6", arch=arch,
                         files={f"usr/lib/gummiboot/{stub}": tiny_stub(machine)})]
    if arch == "x86_64":  # Alpine builds syslinux for x86 only
        specs.append(PackageSpec(name="syslinux", version="6.04_pre1-r15", arch=arch, files={
            "usr/share/syslinux/isolinux.bin": FAKE_ISOLINUX,
            "usr/share/syslinux/ldlinux.c32": b"ldlinux",
            "usr/share/syslinux/isohdpfx.bin": FAKE_ISOHDPFX}))
    return specs


@pytest.fixture
def iso_profile(tmp_path: Path, signing_key: SigningKey) -> Any:
    """``iso_profile(**fields)``: a virt profile over a mirror holding both architectures."""
    root = tmp_path / "mirror"
    for arch in STUBS:
        mirror = build_mirror(root, key=signing_key, arch=arch,
                              tarball=minirootfs_without_world(arch))
        build_repository(root / "v3.20" / "main",
                         [*(replace(p, arch=arch) for p in base_packages()),
                          *stand_in_boot_packages(arch)], KEY, arch=arch)
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / KEY.name).write_bytes(KEY.public_pem)

    def make(**fields: Any) -> Path:
        fields.setdefault("overlay", {"files": [{"path": "/etc/inittab", "content": INITTAB}]})
        return write_profile(folder, mirror_url=mirror.file_url, key=signing_key, name="vm",
                             variant="virt", repositories=["main"], keys=[KEY.name], **fields)

    return make


def iso_files(path: Path) -> dict[str, bytes]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        files = files_of(iso)
        platforms = [iso.eltorito_boot_catalog.validation_entry.platform_id,
                     *(s.platform_id for s in iso.eltorito_boot_catalog.sections)]
    finally:
        iso.close()
    files[".platforms"] = bytes(platforms)
    return files


def uki_cmdline(efi_image: bytes) -> bytes:
    """The UKI's ``.cmdline``: the EFI image holds the UKI uncompressed (FAT data clusters)."""
    start = efi_image.index(b"MZ", efi_image.index(b"EFI"))
    sections = {s.name: s for s in pe_sections(efi_image[start:])}
    cmdline = sections[".cmdline"]
    raw = efi_image[start + cmdline.raw_offset:start + cmdline.raw_offset + cmdline.virtual_size]
    return raw.rstrip(b"\0")


@pytest.mark.parametrize(("cmdline", "expected"), [
    (None, "console=ttyS0,115200 quiet panic=10"),
    ("console=ttyS0 panic=-1", "console=ttyS0 panic=-1"),
])
def test_the_built_iso_boots_with_panic_set(iso_profile: Any, context_for: ContextFor,
                                            cmdline: str | None, expected: str) -> None:
    """A kernel panic reboots (and ``boot``'s -no-reboot qemu stops) instead of hanging."""
    output = {"format": "iso"} if cmdline is None else {"format": "iso", "cmdline": cmdline}
    result = build(context_for(iso_profile(outputs=[output])))
    files = iso_files(result.output_dir / "vm-3.20.3-x86_64.iso")
    config = files["boot/syslinux/syslinux.cfg"].decode()
    assert [line.strip() for line in config.splitlines() if "APPEND" in line] == [
        f"APPEND {expected}"]
    assert uki_cmdline(files["boot/efi.img"]) == expected.encode()


def test_a_bare_aarch64_iso_is_uefi_only_without_syslinux(iso_profile: Any,
                                                          context_for: ContextFor) -> None:
    ctx = context_for(iso_profile(arch="aarch64", outputs=[{"format": "iso"}]))
    assert requested_packages(ctx, "aarch64") == ["alpine-base", "gummiboot", "linux-virt"]
    result = build(ctx)  # the aarch64 repository has no syslinux: asking for it would fail
    files = iso_files(result.output_dir / "vm-3.20.3-aarch64.iso")
    assert sorted(files) == [".alpine-release", ".platforms", "boot/efi.img",
                             "boot/initramfs-virt", "boot/syslinux/boot.cat",  # El Torito
                             "boot/vmlinuz-virt"]  # catalog only: no isolinux, no config
    assert files[".platforms"] == bytes([0xEF])  # El Torito: one UEFI entry, no BIOS
    assert uki_cmdline(files["boot/efi.img"]) == b"console=ttyAMA0,115200 quiet panic=10"
    lock = (result.output_dir / "lock.json").read_text()
    assert "syslinux" not in lock and "gummiboot" in lock


def test_a_multi_arch_profile_gets_boot_defaults_and_packages_per_arch(
        iso_profile: Any, context_for: ContextFor) -> None:
    ctx = context_for(iso_profile(arch=["x86_64", "aarch64"], outputs=[{"format": "iso"}]))
    output = ctx.profile.outputs[0]
    x86, arm = (boot_settings(ctx, output, arch, "3.20.3")  # type: ignore[arg-type]
                for arch in ("x86_64", "aarch64"))
    assert (x86.firmware, x86.cmdline) == ((Firmware.BIOS, Firmware.UEFI),
                                           "console=ttyS0,115200 quiet")
    assert (arm.firmware, arm.cmdline) == ((Firmware.UEFI,), "console=ttyAMA0,115200 quiet")
    assert (x86.kernel, arm.kernel) == ("virt", "virt")
    assert requested_packages(ctx, "x86_64") == ["alpine-base", "gummiboot", "linux-virt",
                                                 "syslinux"]
    assert requested_packages(ctx, "aarch64") == ["alpine-base", "gummiboot", "linux-virt"]
    # The profile's own packages are not touched by the per-arch boot packages.
    assert ctx.profile.packages == ["alpine-base"]
