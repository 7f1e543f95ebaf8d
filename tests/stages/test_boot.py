"""The boot stage: what it puts on the ISO, and what it refuses before anything is written."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pycdlib
import pytest

from composer.apk import db
from composer.errors import InstallError, ProfileError
from composer.profile.model import EfiLoader, Firmware
from composer.stages.boot import (
    BootSettings,
    boot_media,
    check_settings,
    check_tree,
    default_label,
    initramfs_entries,
    syslinux_config,
)
from composer.tree import EntryType, FileTree
from composer.writers.iso import write_iso
from composer.writers.uki import pe_sections
from tests.helpers.bootpkgs import FAKE_ISOHDPFX, FAKE_ISOLINUX
from tests.helpers.clock import another_clock
from tests.stages.conftest import ComposeTree

EPOCH = 1725622440
ISOLINUX = FAKE_ISOLINUX
X86 = BootSettings(arch="x86_64", kernel="virt", firmware=(Firmware.BIOS, Firmware.UEFI),
                   cmdline="console=ttyS0,115200 quiet", label="alpine-virt 3.20.3 x86_64",
                   timeout=3, release="3.20.3", variant="virt")
ARM = BootSettings(arch="aarch64", kernel="virt", firmware=(Firmware.UEFI,),
                   cmdline="console=ttyAMA0", label="alpine-virt 3.20.3 aarch64", timeout=1,
                   release="3.20.3", variant="virt")


def tiny_stub(machine: int) -> bytes:
    """A minimal PE32+ image (one .text section, room for more headers) standing in for
    gummiboot's EFI stub in tests that never execute it."""
    pe = 0x80
    header = bytearray(0x400)
    header[:2] = b"MZ"
    struct.pack_into("<I", header, 0x3C, pe)
    header[pe:pe + 4] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", header, pe + 4, machine, 1, 0, 0, 0, 240, 0x22)
    optional = pe + 24
    struct.pack_into("<H", header, optional, 0x20B)
    struct.pack_into("<II", header, optional + 32, 512, 512)
    struct.pack_into("<II", header, optional + 56, 0x2000, 0x400)
    struct.pack_into("<8sIIII", header, optional + 240, b".text", 0x10, 0x1000, 0x200, 0x400)
    return bytes(header) + b"\xc3" * 0x200


def boot_tree(arch: str = "x86_64", *, skip: tuple[str, ...] = ()) -> FileTree:
    tree = FileTree()
    tree.add_symlink("sbin/init", "/bin/busybox")
    tree.add_file("bin/busybox", b"busybox", mode=0o755)
    tree.add_file("etc/os-release", b"ID=alpine\n")
    files = {"boot/vmlinuz-virt": b"kernel image",
             "usr/share/syslinux/isolinux.bin": ISOLINUX,
             "usr/share/syslinux/isohdpfx.bin": FAKE_ISOHDPFX,
             "usr/share/syslinux/ldlinux.c32": b"ldlinux",
             "usr/lib/gummiboot/linuxx64.efi.stub": tiny_stub(0x8664),
             "usr/lib/gummiboot/linuxaa64.efi.stub": tiny_stub(0xAA64)}
    for path, data in files.items():
        if path not in skip:
            tree.add_file(path, data)
    return tree


def test_missing_kernel_names_the_package() -> None:
    with pytest.raises(InstallError) as info:
        check_tree(boot_tree(skip=("boot/vmlinuz-virt",)), X86)
    assert str(info.value) == ("ISO boot files missing from the image: /boot/vmlinuz-virt "
                               "(add package linux-virt)")
    assert info.value.exit_code == 6


def test_missing_loaders_name_files_and_packages() -> None:
    tree = boot_tree(skip=("usr/share/syslinux/isolinux.bin", "usr/share/syslinux/ldlinux.c32",
                           "usr/share/syslinux/isohdpfx.bin",
                           "usr/lib/gummiboot/linuxx64.efi.stub"))
    with pytest.raises(InstallError) as info:
        check_tree(tree, X86)
    assert str(info.value) == (
        "ISO boot files missing from the image: /usr/lib/gummiboot/linuxx64.efi.stub "
        "(add package gummiboot); /usr/share/syslinux/isolinux.bin, "
        "/usr/share/syslinux/ldlinux.c32, /usr/share/syslinux/isohdpfx.bin (add package "
        "syslinux)")


def test_missing_isohybrid_mbr_code_names_file_and_package() -> None:
    with pytest.raises(InstallError) as info:
        check_tree(boot_tree(skip=("usr/share/syslinux/isohdpfx.bin",)), X86)
    assert str(info.value) == ("ISO boot files missing from the image: "
                               "/usr/share/syslinux/isohdpfx.bin (add package syslinux)")
    uefi_only = BootSettings(**{**X86.__dict__, "firmware": (Firmware.UEFI,)})
    check_tree(boot_tree(skip=("usr/share/syslinux/isohdpfx.bin",)), uefi_only)
    short = boot_tree()
    short.add_file("usr/share/syslinux/isohdpfx.bin", b"\x33\xed" * 10)
    with pytest.raises(InstallError) as info:
        check_tree(short, X86)
    assert str(info.value) == ("/usr/share/syslinux/isohdpfx.bin is 20 bytes, not the 432-byte "
                               "isohybrid MBR code (package syslinux)")


def test_stub_of_the_wrong_arch_is_refused() -> None:
    tree = boot_tree()
    tree.add_file("usr/lib/gummiboot/linuxx64.efi.stub", tiny_stub(0xAA64))
    with pytest.raises(InstallError, match="^/usr/lib/gummiboot/linuxx64.efi.stub is an EFI "
                                           "stub for aarch64, not x86_64$"):
        check_tree(tree, X86)


def test_stub_that_is_not_a_pe_image_is_refused() -> None:
    tree = boot_tree()
    tree.add_file("usr/lib/gummiboot/linuxx64.efi.stub", b"#!/bin/sh\n")
    with pytest.raises(InstallError) as info:
        check_tree(tree, X86)
    assert str(info.value) == ("/usr/lib/gummiboot/linuxx64.efi.stub: not a PE image "
                               "(no MZ header)") and info.value.exit_code == 6


@pytest.mark.parametrize(("changes", "message"), [
    ({"label": "alpine-standard 3.20.3 x86_64 plus"},
     "p.yaml: outputs[0]: label 'alpine-standard 3.20.3 x86_64 plus' must be 1 to 32 "
     "characters (got 34)"),
    ({"label": "alpine:virt"},
     "p.yaml: outputs[0]: label 'alpine:virt' may hold only letters, digits, space, '_', '.' "
     "and '-'"),
    ({"arch": "ppc64le", "firmware": (Firmware.UEFI,)},
     "p.yaml: outputs[0]: boot: uefi has no uki loader for ppc64le (available for aarch64, "
     "x86_64)"),
    ({"efi_loader": EfiLoader.SYSLINUX},
     "p.yaml: outputs[0]: efi_loader: syslinux is refused: syslinux.efi faults under UEFI "
     "firmware when the ISO starts from a CD drive; use efi_loader: uki (the default)"),
    ({"arch": "aarch64", "efi_loader": EfiLoader.SYSLINUX, "firmware": (Firmware.UEFI,)},
     "p.yaml: outputs[0]: efi_loader: syslinux is refused: syslinux.efi faults under UEFI "
     "firmware when the ISO starts from a CD drive; use efi_loader: uki (the default)"),
    ({"arch": "aarch64"},
     "p.yaml: outputs[0]: boot: bios is not possible on aarch64 (BIOS boot exists on x86 only); "
     "use boot: [uefi]"),
    ({"firmware": ()}, "p.yaml: outputs[0]: boot: name at least one of bios, uefi"),
])
def test_settings_no_tree_can_satisfy(changes: dict[str, object], message: str) -> None:
    settings = BootSettings(**{**X86.__dict__, **changes})  # type: ignore[arg-type]
    with pytest.raises(ProfileError) as info:
        check_settings(settings, where="p.yaml: outputs[0]")
    assert str(info.value) == message and info.value.exit_code == 2


def test_default_label_is_alpines_cut_to_32() -> None:
    assert default_label("virt", "3.20.3", "x86_64") == "alpine-virt 3.20.3 x86_64"
    assert default_label("standard", "3.20.10", "aarch64") == "alpine-standard 3.20.10 aarch64"
    assert len(default_label("standard", "20240923", "aarch64")) == 32


def test_initramfs_is_the_tree_plus_console_and_init() -> None:
    tree = boot_tree()
    entries = {e.path: e for e in initramfs_entries(tree)}
    assert set(entries) == set(tree.entries) | {"dev", "dev/console", "init"}
    console = entries["dev/console"]
    assert (console.type, console.devmajor, console.devminor, console.mode) == (
        EntryType.CHAR, 5, 1, 0o600)
    assert entries["init"].target == "/sbin/init"


def _database(*files: str) -> bytes:
    dirs: dict[str, list[db.DbFile]] = {}
    for path in files:
        folder, _, name = path.rpartition("/")
        dirs.setdefault(folder, []).append(db.DbFile(name, digest="Q1" + "A" * 26 + "="))
    return db.format_installed([db.InstalledPackage(
        checksum="Q1" + "B" * 26 + "=", name="linux-virt", version="6.6.1-r0",
        dirs=[db.DbDir(folder, files=names) for folder, names in dirs.items()])])


def test_initramfs_leaves_the_kernel_out_of_files_and_database() -> None:
    """The booted system does not read /boot/vmlinuz-virt (it is on the boot medium); its apk
    database must not list a file the system does not have."""
    tree = boot_tree()
    tree.add_file(db.INSTALLED_PATH, _database("boot/config-virt", "boot/vmlinuz-virt",
                                               "lib/modules/6.6.1-0-virt/modules.order"))
    entries = {e.path: e for e in initramfs_entries(tree, leave_out={"boot/vmlinuz-virt"})}
    assert "boot/vmlinuz-virt" not in entries and "boot" in entries
    database = entries[db.INSTALLED_PATH]
    assert database.blob is not None
    assert database.blob.read() == _database("boot/config-virt",
                                             "lib/modules/6.6.1-0-virt/modules.order")
    assert tree.read_file(db.INSTALLED_PATH) == _database(
        "boot/config-virt", "boot/vmlinuz-virt", "lib/modules/6.6.1-0-virt/modules.order")
    # A kernel no package owns (an overlay's) leaves the database as it is, byte for byte.
    tree.add_file(db.INSTALLED_PATH, b"C:Q1x=\nP:other\nV:1\n\n")
    entries = {e.path: e for e in initramfs_entries(tree, leave_out={"boot/vmlinuz-virt"})}
    assert entries[db.INSTALLED_PATH] is tree.get(db.INSTALLED_PATH)


def test_composed_database_loses_only_the_kernels_lines(compose_tree: ComposeTree) -> None:
    """On a real composed system (minirootfs + packages), rewriting the database changes
    nothing but the kernel's own R:/a:/Z: lines."""
    with compose_tree() as tree:
        before = tree.read_file(db.INSTALLED_PATH).decode().split("\n")
        entries = {e.path: e for e in initramfs_entries(tree, leave_out={"boot/vmlinuz-virt"})}
        database = entries[db.INSTALLED_PATH]
        assert database.blob is not None
        after = database.blob.read().decode().split("\n")
    index = before.index("R:vmlinuz-virt")
    assert before[index + 1].startswith("Z:") and after == before[:index] + before[index + 2:]


def test_syslinux_config() -> None:
    assert syslinux_config(X86, kernel="/boot/vmlinuz-virt", initrd="/boot/initramfs-virt") == (
        b"SERIAL 0 115200\nPROMPT 1\nTIMEOUT 30\nDEFAULT virt\n\nLABEL virt\n"
        b"\tMENU LABEL Linux virt\n\tKERNEL /boot/vmlinuz-virt\n\tINITRD /boot/initramfs-virt\n"
        b"\tAPPEND console=ttyS0,115200 quiet\n")
    no_wait = BootSettings(**{**X86.__dict__, "timeout": 0})
    assert b"PROMPT 0\nDEFAULT" in syslinux_config(no_wait, kernel="k", initrd="i")


def test_x86_media_layout() -> None:
    spec = boot_media(boot_tree(), X86, epoch=EPOCH)
    files = {f.path: f.data for f in spec.files}
    assert sorted(files) == [".alpine-release", "boot/efi.img", "boot/syslinux/isolinux.bin",
                             "boot/syslinux/ldlinux.c32", "boot/syslinux/syslinux.cfg"]
    assert files[".alpine-release"] == b"alpine-virt-3.20.3 240906\n"
    assert (spec.bios_boot, spec.efi_image) == ("boot/syslinux/isolinux.bin", "boot/efi.img")
    assert spec.mbr_code == FAKE_ISOHDPFX
    # Kernel and initramfs are stored once: in the UKI, in the EFI image; ISO 9660 names them.
    image = files["boot/efi.img"]
    named = {a.path: image[a.offset:a.offset + a.length] for a in spec.aliases}
    assert sorted(named) == ["boot/initramfs-virt", "boot/vmlinuz-virt"]
    assert named["boot/vmlinuz-virt"] == b"kernel image"
    assert all(a.source == "boot/efi.img" and a.offset % 2048 == 0 for a in spec.aliases)
    initramfs = named["boot/initramfs-virt"]
    assert initramfs[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
    unpacked = gzip.decompress(initramfs)
    assert b"dev/console\0" in unpacked and b"boot/vmlinuz-virt\0" not in unpacked
    assert boot_media(boot_tree(), X86, epoch=EPOCH) == spec
    with another_clock():
        assert boot_media(boot_tree(), X86, epoch=EPOCH) == spec


def test_bios_only_media_keep_kernel_and_initramfs_as_files() -> None:
    bios = BootSettings(**{**X86.__dict__, "firmware": (Firmware.BIOS,)})
    spec = boot_media(boot_tree(), bios, epoch=EPOCH)
    files = {f.path: f.data for f in spec.files}
    assert spec.efi_image is None and spec.aliases == ()
    assert files["boot/vmlinuz-virt"] == b"kernel image"
    assert b"boot/vmlinuz-virt\0" not in gzip.decompress(files["boot/initramfs-virt"])


def _efi_files(image: bytes, tmp_path: Path) -> dict[str, bytes]:
    if shutil.which("mcopy") is None:
        pytest.skip("mtools is not installed (apt-get install mtools)")
    (tmp_path / "efi.img").write_bytes(image)
    out = tmp_path / "efi"
    out.mkdir()
    subprocess.run(["mcopy", "-s", "-n", "-i", str(tmp_path / "efi.img"), "::", str(out)],
                   check=True, capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_aarch64_is_uefi_only_with_bootaa64(tmp_path: Path) -> None:
    spec = boot_media(boot_tree("aarch64"), ARM, epoch=EPOCH)
    assert spec.bios_boot is None and spec.efi_image == "boot/efi.img"
    assert not any(f.path.startswith("boot/syslinux/") for f in spec.files)
    out = io.BytesIO()
    write_iso(spec, out)
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(out.getvalue()))
    try:
        catalog = iso.eltorito_boot_catalog
        assert catalog.validation_entry.platform_id == 0xEF and catalog.sections == []
        assert catalog.initial_entry.load_rba == iso.get_record(
            rr_path="/boot/efi.img").extent_location()
        efi = io.BytesIO()
        iso.get_file_from_iso_fp(efi, rr_path="/boot/efi.img")
    finally:
        iso.close()
    files = _efi_files(efi.getvalue(), tmp_path)
    assert list(files) == ["EFI/BOOT/BOOTAA64.EFI"]
    uki = files["EFI/BOOT/BOOTAA64.EFI"]
    pe = struct.unpack_from("<I", uki, 0x3C)[0]
    assert struct.unpack_from("<H", uki, pe + 4)[0] == 0xAA64
    assert [s.name for s in pe_sections(uki)] == [".text", ".osrel", ".cmdline", ".initrd",
                                                  ".linux"]
    assert b"console=ttyAMA0" in uki and b"kernel image" in uki
