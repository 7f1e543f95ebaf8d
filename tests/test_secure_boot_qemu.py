"""Secure Boot under real qemu: OVMF's Secure Boot firmware with a test certificate enrolled
(through the same functions as ``boot --secure-boot``) boots a GPT disk whose ESP holds a
UKI signed with that certificate, and refuses an unsigned or altered one.

The UKI: systemd-boot's stub, Debian's cloud kernel and an initramfs whose /init is a
busybox script that prints a marker on the serial console and powers off."""

from __future__ import annotations

import io
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.errors import ComposerError
from composer.tree import FileTree
from composer.vm import VmSettings
from composer.vm_secboot import prepare_secure_boot, secure_firmware, virt_fw_vars
from composer.writers.authenticode import sign_pe
from composer.writers.cpio import write_cpio
from composer.writers.disk import ESP_TYPE, DiskPartition, write_gpt_disk
from composer.writers.fat import FatFile, build_fat
from composer.writers.qcow2 import write_qcow2
from composer.writers.uki import build_uki
from tests.conftest import run_cli
from tests.helpers.bootpkgs import STUB_FILE, Unavailable, debian_kernel
from tests.helpers.qemu import BootFailure, boot, missing_tools
from tests.helpers.sbkeys import SbKeys, make_identity

pytestmark = pytest.mark.slow

MARKER = "COMPOSER-SECURE-BOOT-OK"
BUSYBOX = Path("/bin/busybox")
EPOCH = 1725622440
TIMEOUT = 240.0


def _skip_reason() -> str | None:
    reason = missing_tools("uefi")
    if reason:
        return reason
    try:
        secure_firmware()
        virt_fw_vars()
    except ComposerError as exc:
        return str(exc)
    if not Path(STUB_FILE).is_file():
        return f"{STUB_FILE} is absent (apt-get install systemd-boot-efi)"
    if not BUSYBOX.is_file():
        return "/bin/busybox is absent (apt-get install busybox-static)"
    return None


@pytest.fixture(scope="module")
def keys() -> SbKeys:
    return make_identity("composer secure boot test")


@pytest.fixture(scope="module")
def uki(request: pytest.FixtureRequest) -> bytes:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        kernel = debian_kernel(request.config.cache.mkdir("debian-kernel"))
    except Unavailable as exc:
        pytest.skip(str(exc))
    tree = FileTree()
    tree.add_dir("bin")
    tree.add_dir("dev")
    tree.add_file("bin/busybox", BUSYBOX.read_bytes(), mode=0o755)
    tree.add_file("init", (f"#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n"
                           "/bin/busybox poweroff -f\n").encode(), mode=0o755)
    initramfs = io.BytesIO()
    write_cpio(tree.walk(), initramfs, mtime=EPOCH)
    stub = Path(STUB_FILE).read_bytes()
    return build_uki(stub, [(".cmdline", b"console=ttyS0 quiet panic=-1"),
                            (".initrd", initramfs.getvalue()), (".linux", kernel.vmlinuz)])


def _disk(folder: Path, efi: bytes) -> Path:
    esp = build_fat([FatFile("EFI/BOOT/BOOTX64.EFI", efi)], serial=0x5EC0B007, mtime=EPOCH)
    path = folder / "disk.img"
    with path.open("wb") as out:
        write_gpt_disk([DiskPartition("esp", ESP_TYPE, len(esp.data), io.BytesIO(esp.data))],
                       out, seed=b"secure boot test")
    return path


@pytest.fixture
def firmware_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "firmware"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder)


def _boot(disk: Path, keys: SbKeys, folder: Path, *, secure: bool, disk_format: str = "raw",
          nvme: bool = False) -> str:
    cert = folder / "db.crt"
    cert.write_bytes(keys.cert_pem)
    firmware = prepare_secure_boot(cert, folder) if secure else None
    settings = VmSettings(firmware="uefi", medium="disk", disk_format=disk_format, memory_mb=512,
                          secure_boot=firmware, nvme=nvme)
    start = time.monotonic()
    try:
        result = boot(disk, firmware="uefi", medium="disk", marker=MARKER, timeout=TIMEOUT,
                      settings=settings)
    finally:
        print(f"{'secure' if secure else 'plain'} boot of {disk.name}: "
              f"{time.monotonic() - start:.1f} s")
    return result.output


def test_signed_uki_boots_under_secure_boot(uki: bytes, keys: SbKeys, tmp_path: Path,
                                            firmware_dir: Path) -> None:
    disk = _disk(tmp_path, sign_pe(uki, keys.identity))
    before = disk.read_bytes()
    output = _boot(disk, keys, firmware_dir, secure=True)
    assert MARKER in output and "Access Denied" not in output
    assert disk.read_bytes() == before  # snapshot=on


def test_signed_uki_boots_from_qcow2_on_nvme(uki: bytes, keys: SbKeys, tmp_path: Path,
                                             firmware_dir: Path) -> None:
    """The same under Secure Boot, from the project's qcow2 image attached as NVMe."""
    raw = _disk(tmp_path, sign_pe(uki, keys.identity))
    qcow2 = tmp_path / "disk.qcow2"
    with raw.open("rb") as source, qcow2.open("wb") as out:
        write_qcow2(source, raw.stat().st_size, out)
    before = qcow2.read_bytes()
    output = _boot(qcow2, keys, firmware_dir, secure=True, disk_format="qcow2", nvme=True)
    assert MARKER in output
    assert qcow2.read_bytes() == before


def test_signed_uki_boots_without_secure_boot(uki: bytes, keys: SbKeys, tmp_path: Path,
                                              firmware_dir: Path) -> None:
    disk = _disk(tmp_path, sign_pe(uki, keys.identity))
    assert MARKER in _boot(disk, keys, firmware_dir, secure=False)


@pytest.mark.parametrize("case", ["unsigned", "flipped-byte", "other-key"])
def test_secure_boot_refuses(uki: bytes, keys: SbKeys, tmp_path: Path, firmware_dir: Path,
                             case: str) -> None:
    if case == "unsigned":
        efi = uki
    elif case == "other-key":
        efi = sign_pe(uki, make_identity("not enrolled").identity)
    else:
        signed = bytearray(sign_pe(uki, keys.identity))
        signed[len(uki) - 4096] ^= 0x01  # inside the kernel
        efi = bytes(signed)
    disk = _disk(tmp_path, efi)
    with pytest.raises(BootFailure) as failure:
        _boot(disk, keys, firmware_dir, secure=True)
    # OVMF's boot manager, on the serial console, about the virtio disk's EFI/BOOT/BOOTX64.EFI
    assert re.search(r'BdsDxe: failed to load Boot[0-9A-F]{4} "UEFI Misc Device" from '
                     r'PciRoot\(0x0\)/Pci\(0x[0-9A-F]+,0x0\): Access Denied', str(failure.value))
    assert MARKER not in str(failure.value)


def test_boot_command_secure_boot_end_to_end(uki: bytes, keys: SbKeys, tmp_path: Path) -> None:
    """``alpine-composer boot IMAGE.img --secure-boot``: the certificate beside the image is
    enrolled, the signed UKI reaches the marker, and no temporary file is left behind."""
    disk = _disk(tmp_path, sign_pe(uki, keys.identity))
    disk.with_suffix(".crt").write_bytes(keys.cert_pem)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    start = time.monotonic()
    result = run_cli("boot", disk, "--secure-boot", "--memory", "512",
                     env={"TMPDIR": str(scratch)})
    print(f"boot --secure-boot: {time.monotonic() - start:.1f} s")
    assert result.returncode == 0, result.stderr
    assert MARKER in result.stdout and "Access Denied" not in result.stdout
    assert list(scratch.iterdir()) == []
