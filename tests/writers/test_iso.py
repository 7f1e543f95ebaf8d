"""ISO writer: read back with pycdlib and xorriso, byte-identical under any clock, TZ or umask."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import pycdlib
import pytest

from composer.errors import OutputError
from composer.writers import iso as iso_writer
from composer.writers.fat import FatFile, fat_image
from composer.writers.iso import (
    ELTORITO_MAX_SECTORS,
    IsoFile,
    IsoSpec,
    check_volume_id,
    pinned,
    write_iso,
)
from tests.helpers.bootpkgs import FAKE_ISOLINUX

EPOCH = 1725622440
ISOLINUX = FAKE_ISOLINUX


def _spec(*, efi_bytes: int = 0, epoch: int = EPOCH, bios: bool = True,
          label: str = "alpine-virt 3.20.3 x86_64") -> IsoSpec:
    files = [IsoFile("boot/vmlinuz-virt", b"kernel" * 1000),
             IsoFile("boot/initramfs-virt", b"initramfs" * 3000),
             IsoFile("boot/syslinux/syslinux.cfg", b"DEFAULT virt\n"),
             IsoFile("boot/syslinux/a-very-long-file-name.c32", b"1"),
             IsoFile("boot/syslinux/a-very-long-file-name.e64", b"2"),
             IsoFile(".alpine-release", b"alpine-virt-3.20.3 240906\n")]
    if bios:
        files.append(IsoFile("boot/syslinux/isolinux.bin", ISOLINUX))
    efi = fat_image([FatFile("EFI/BOOT/BOOTX64.EFI", b"uki")], serial=7, mtime=epoch,
                    min_bytes=efi_bytes)
    files.append(IsoFile("boot/efi.img", efi))
    return IsoSpec(volume_id=label, files=tuple(files), epoch=epoch,
                   bios_boot="boot/syslinux/isolinux.bin" if bios else None,
                   efi_image="boot/efi.img", boot_catalog="boot/syslinux/boot.cat")


def _write(spec: IsoSpec) -> bytes:
    out = io.BytesIO()
    write_iso(spec, out)
    return out.getvalue()


def _read_back(data: bytes) -> dict[str, bytes]:
    """Every file by its Rock Ridge path, read by pycdlib itself."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    found = {}
    try:
        for root, _dirs, files in iso.walk(rr_path="/"):
            for name in files:
                path = f"{root.rstrip('/')}/{name}"
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=path)
                found[path.lstrip("/")] = buf.getvalue()
        record = iso.get_record(rr_path="/boot/vmlinuz-virt")
        assert iso.pvd.volume_identifier.rstrip() == b"alpine-virt 3.20.3 x86_64"
        assert record.rock_ridge.get_file_mode() == 0o100444
    finally:
        iso.close()
    return found


def test_files_read_back_equal_what_was_given() -> None:
    spec = _spec()
    found = _read_back(_write(spec))
    assert found.pop("boot/syslinux/boot.cat")
    # isolinux.bin carries the boot info table pycdlib patches in at bytes 8-63:
    # the primary volume descriptor's LBA (16), the file's own LBA and its length.
    boot = found["boot/syslinux/isolinux.bin"]
    pvd_lba, _file_lba, length = struct.unpack_from("<III", boot, 8)
    assert (pvd_lba, length) == (16, len(ISOLINUX))
    found["boot/syslinux/isolinux.bin"] = boot[:8] + ISOLINUX[8:64] + boot[64:]
    assert found == {f.path: f.data for f in spec.files}


def test_xorriso_reports_both_boot_entries(tmp_path: Path) -> None:
    if shutil.which("xorriso") is None:
        pytest.skip("xorriso is not installed (apt-get install xorriso)")
    path = tmp_path / "x.iso"
    path.write_bytes(_write(_spec()))
    report = subprocess.run(["xorriso", "-indev", str(path), "-report_el_torito", "plain"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            check=True).stdout
    assert "Boot record  : El Torito , MBR isohybrid cyl-align-on GPT" in report
    assert "El Torito cat path : /boot/syslinux/boot.cat" in report
    lines = [line.split() for line in report.splitlines() if line.startswith("El Torito boot img")]
    assert [(cols[5], cols[6], cols[7], cols[11]) for cols in lines] == [
        ("1", "BIOS", "y", "4"), ("2", "UEFI", "y", str(-(-len(_spec().files[-1].data) // 512)))]
    assert "El Torito img opts :   1  boot-info-table isohybrid-suitable" in report
    assert "El Torito img path :   2  /boot/efi.img" in report


def test_uefi_only_iso_has_one_efi_entry(tmp_path: Path) -> None:
    data = _write(_spec(bios=False))
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        catalog = iso.eltorito_boot_catalog
        assert catalog.validation_entry.platform_id == 0xEF and catalog.sections == []
    finally:
        iso.close()
    assert data[510:512] != b"\x55\xaa"  # no MBR: there is no BIOS to read one


def test_two_writes_are_byte_identical_and_the_epoch_matters() -> None:
    first = _write(_spec())
    assert first == _write(_spec())
    assert hashlib.sha256(first).digest() != hashlib.sha256(_write(_spec(epoch=EPOCH + 1))).digest()


def test_time_zone_umask_and_cwd_do_not_matter(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _write(_spec())
    monkeypatch.setenv("TZ", "Pacific/Chatham")
    time.tzset()
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o077)
    try:
        path = tmp_path / "x.iso"
        with path.open("wb") as out:
            write_iso(_spec(), out)
        assert path.read_bytes() == expected
    finally:
        os.umask(old)
        monkeypatch.undo()
        time.tzset()


def test_pinning_stays_inside_pycdlib_and_is_undone() -> None:
    """Other threads keep the real clock while a write is pinned; the names come back after."""
    for module in iso_writer.CLOCK_MODULES:
        assert module.time is time
    for module in iso_writer.RANDOM_MODULES:
        assert module.uuid.uuid4 and module.random.getrandbits
    seen: list[float] = []
    with pinned(EPOCH, b"seed"):
        assert pycdlib.headervd.time.time() == EPOCH
        assert pycdlib.dates.time.localtime(0).tm_hour == 0
        worker = threading.Thread(target=lambda: seen.append(time.time()))
        worker.start()
        worker.join()
        first = pycdlib.isohybrid.uuid.uuid4()
    assert seen[0] > EPOCH and time.time() > EPOCH
    with pinned(EPOCH, b"seed"):
        assert pycdlib.isohybrid.uuid.uuid4() == first
    for module in iso_writer.CLOCK_MODULES:
        assert module.time is time


def test_efi_image_beyond_the_el_torito_count(tmp_path: Path) -> None:
    """The catalog says 1 (to the end of the medium); MBR and GPT carry the real size."""
    spec = _spec(efi_bytes=40 * 1024 * 1024)
    efi = next(f for f in spec.files if f.path == "boot/efi.img")
    sectors = -(-len(efi.data) // 512)
    assert sectors > ELTORITO_MAX_SECTORS
    data = _write(spec)
    mbr_start, mbr_count = struct.unpack_from("<II", data, 446 + 16 + 8)
    assert data[446 + 16 + 4] == 0xEF and mbr_count == sectors
    assert data[mbr_start * 512:mbr_start * 512 + len(efi.data)] == efi.data
    assert data[512:520] == b"EFI PART"
    entries = struct.unpack_from("<Q", data, 512 + 72)[0]
    first, last = struct.unpack_from("<QQ", data, entries * 512 + 128 + 32)
    assert (first, last - first + 1) == (mbr_start, sectors)
    if shutil.which("xorriso"):
        (tmp_path / "big.iso").write_bytes(data)
        report = subprocess.run(["xorriso", "-indev", str(tmp_path / "big.iso"),
                                 "-report_el_torito", "plain"], capture_output=True, text=True,
                                check=True).stdout
        assert "El Torito boot img :   2  UEFI  y   none  0x0000  0x00      1" in report


@pytest.mark.parametrize(("label", "problem"), [
    ("", "must be 1 to 32 characters (got 0)"),
    ("alpine-standard 3.20.3 x86_64 extra", "must be 1 to 32 characters (got 35)"),
    ("alpine/virt", "may hold only letters, digits, space, '_', '.' and '-'"),
])
def test_bad_volume_ids(label: str, problem: str) -> None:
    assert check_volume_id(label) == problem
    with pytest.raises(OutputError) as info:
        _write(_spec(label=label))
    assert str(info.value) == f"ISO volume id {label!r} {problem}"
