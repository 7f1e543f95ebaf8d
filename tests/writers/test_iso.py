"""ISO writer: read back with pycdlib, xorriso and sgdisk; byte-identical under any clock,
TZ, random state or umask."""

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
from composer.writers.fat import FatFile, build_fat
from composer.writers.iso import (
    ELTORITO_MAX_SECTORS,
    IsoAlias,
    IsoFile,
    IsoSpec,
    check_volume_id,
    pinned,
    write_iso,
)
from tests.conftest import require_shared
from tests.helpers.bootpkgs import ALPINE_SYSLINUX, FAKE_ISOHDPFX, FAKE_ISOLINUX
from tests.helpers.clock import another_clock
from tests.helpers.isoread import files_of

EPOCH = 1725622440
ISOLINUX = FAKE_ISOLINUX
KERNEL = b"kernel" * 1000
INITRAMFS = b"initramfs" * 3000


def _spec(*, efi_bytes: int = 0, epoch: int = EPOCH, bios: bool = True,
          label: str = "alpine-virt 3.20.3 x86_64", isolinux: bytes = ISOLINUX,
          mbr_code: bytes = FAKE_ISOHDPFX) -> IsoSpec:
    """An ISO laid out as the boot stage lays it out: the kernel and initramfs are files of
    the EFI image, and ISO 9660 names them where they lie."""
    files = [IsoFile("boot/syslinux/syslinux.cfg", b"DEFAULT virt\n"),
             IsoFile("boot/syslinux/a-very-long-file-name.c32", b"1"),
             IsoFile("boot/syslinux/a-very-long-file-name.e64", b"2"),
             IsoFile(".alpine-release", b"alpine-virt-3.20.3 240906\n")]
    if bios:
        files.append(IsoFile("boot/syslinux/isolinux.bin", isolinux))
    efi = build_fat([FatFile("EFI/BOOT/BOOTX64.EFI", b"uki"), FatFile("KERNEL", KERNEL),
                     FatFile("INITRD", INITRAMFS)], serial=7, mtime=epoch,
                    min_bytes=efi_bytes, align=2048)
    files.append(IsoFile("boot/efi.img", efi.data))
    aliases = (IsoAlias("boot/vmlinuz-virt", "boot/efi.img", efi.offsets["KERNEL"], len(KERNEL)),
               IsoAlias("boot/initramfs-virt", "boot/efi.img", efi.offsets["INITRD"],
                        len(INITRAMFS)))
    return IsoSpec(volume_id=label, files=tuple(files), epoch=epoch,
                   bios_boot="boot/syslinux/isolinux.bin" if bios else None,
                   mbr_code=mbr_code if bios else b"", efi_image="boot/efi.img",
                   boot_catalog="boot/syslinux/boot.cat", aliases=aliases)


def _write(spec: IsoSpec) -> bytes:
    out = io.BytesIO()
    write_iso(spec, out)
    return out.getvalue()


def _read_back(data: bytes) -> dict[str, bytes]:
    """Every file by its Rock Ridge path, read by pycdlib itself."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        found = files_of(iso)
        record = iso.get_record(rr_path="/boot/vmlinuz-virt")
        assert iso.pvd.volume_identifier.rstrip() == b"alpine-virt 3.20.3 x86_64"
        assert record.rock_ridge.get_file_mode() == 0o100444
    finally:
        iso.close()
    return found


def _tool(name: str, package: str) -> None:
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed (apt-get install {package})")


def _run(*args: str | Path) -> str:
    result = subprocess.run([os.fspath(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout
    return result.stdout


def _xorriso_report(path: Path) -> str:
    _tool("xorriso", "xorriso")
    return _run("xorriso", "-indev", path, "-report_el_torito", "plain",
                "-report_system_area", "plain")


def _sgdisk_verify(path: Path) -> str:
    _tool("sgdisk", "gdisk")
    report = _run("sgdisk", "-v", path)
    assert "No problems found" in report and "Creating new GPT" not in report, report
    return report


def _partx(path: Path) -> list[list[str]]:
    """The partitions util-linux's libblkid finds (it falls back to the MBR's own entries
    when the GPT or its protective MBR is not valid)."""
    _tool("partx", "util-linux")
    return [line.split(None, 4) for line in _run("partx", "--show", "-g", "-o",
                                                  "NR,START,SECTORS,TYPE,NAME", path).splitlines()]


def _report_value(report: str, key: str) -> list[list[str]]:
    return [line.split(":", 1)[1].split() for line in report.splitlines()
            if line.split(":", 1)[0].strip() == key]


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
    expected = {f.path: f.data for f in spec.files}
    expected.update({"boot/vmlinuz-virt": KERNEL, "boot/initramfs-virt": INITRAMFS})
    assert found == expected


def test_aliases_are_stored_once_and_extract_with_osirrox(tmp_path: Path) -> None:
    """The kernel lies once on the ISO, inside the EFI image; ISO 9660 and Joliet name it."""
    spec = _spec()
    data = _write(spec)
    assert data.count(KERNEL) == 1 and data.count(INITRAMFS) == 1
    path = tmp_path / "x.iso"
    path.write_bytes(data)
    _tool("osirrox", "xorriso")
    out = tmp_path / "out"
    _run("osirrox", "-indev", path, "-extract", "/boot", out)
    assert (out / "vmlinuz-virt").read_bytes() == KERNEL
    assert (out / "initramfs-virt").read_bytes() == INITRAMFS
    joliet = tmp_path / "joliet"
    _run("osirrox", "-rockridge", "off", "-indev", path, "-extract", "/boot", joliet)
    assert (joliet / "vmlinuz-virt").read_bytes() == KERNEL
    efi = next(f for f in spec.files if f.path == "boot/efi.img")
    listing = _run("xorriso", "-indev", path, "-find", "/boot", "-type", "f", "-exec",
                   "report_lba", "--")
    # "File data lba:  0 ,  37 ,  29 ,  59392 , '/boot/efi.img'": start block, blocks, size.
    lbas = {cols[-1].strip(): (int(cols[1]), int(cols[3])) for cols in (
        line.split(":", 1)[1].split(",") for line in listing.splitlines()
        if line.startswith("File data lba:"))}
    start = data.index(efi.data) // 2048
    assert lbas["'/boot/efi.img'"] == (start, len(efi.data))
    assert lbas["'/boot/vmlinuz-virt'"] == (data.index(KERNEL) // 2048, len(KERNEL))
    assert start < data.index(KERNEL) // 2048 < start + len(efi.data) // 2048


def test_partition_tables_pass_sgdisk_and_xorriso(tmp_path: Path) -> None:
    """Protective MBR + GPT: whole-array CRCs, one disk GUID, the ESP over the EFI image."""
    spec = _spec()
    path = tmp_path / "x.iso"
    data = _write(spec)
    path.write_bytes(data)
    _sgdisk_verify(path)
    report = _xorriso_report(path)
    # A stand-in MBR code: xorriso says isohybrid only for code it knows (see the tests below).
    assert "Boot record  : El Torito , MBR protective-msdos-label cyl-align-off GPT" in report
    assert "GPT array CRC wrong" not in report and "GPT backup problems" not in report
    assert _report_value(report, "MBR partition") == [["1", "0x00", "0xee", "1",
                                                       str(len(data) // 512 - 1)],
                                                      ["2", "0x80", "0x00", "0", "1"]]
    efi = next(f for f in spec.files if f.path == "boot/efi.img")
    start = data.index(efi.data) // 512
    assert _report_value(report, "GPT start and size") == [
        ["1", str(start), str(-(-len(efi.data) // 2048) * 4)]]
    assert _report_value(report, "GPT partition path") == [["1", "/boot/efi.img"]]
    assert _report_value(report, "GPT type GUID") == [["1", "28732ac11ff8d211ba4b00a0c93ec93b"]]
    assert _partx(path) == [["1", str(start), str(-(-len(efi.data) // 2048) * 4),
                             "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI boot partition"]]
    assert len(data) % 2048 == 0
    assert data[512 + 56:512 + 72] == data[-512 + 56:-512 + 72]  # one disk GUID


def test_xorriso_reports_both_boot_entries(tmp_path: Path) -> None:
    path = tmp_path / "x.iso"
    path.write_bytes(_write(_spec()))
    report = _xorriso_report(path)
    assert "El Torito cat path : /boot/syslinux/boot.cat" in report
    lines = [line.split() for line in report.splitlines() if line.startswith("El Torito boot img")]
    assert [(cols[5], cols[6], cols[7], cols[11]) for cols in lines] == [
        ("1", "BIOS", "y", "4"), ("2", "UEFI", "y", str(-(-len(_spec().files[-1].data) // 512)))]
    assert "El Torito img opts :   1  boot-info-table isohybrid-suitable" in report
    assert "El Torito img path :   2  /boot/efi.img" in report


def test_mbr_code_is_the_packages_isohdpfx(tmp_path: Path) -> None:
    """The MBR is the given isohdpfx.bin (Debian's differs from pycdlib's built-in copy in 218
    of 432 bytes), then the LBA of isolinux.bin in 512-byte sectors at byte 432."""
    debian = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
    if not debian.exists():
        pytest.skip("/usr/lib/ISOLINUX/isohdpfx.bin is missing (apt-get install isolinux)")
    code = debian.read_bytes()
    data = _write(_spec(mbr_code=code))
    assert data[:432] == code and data[436:440] == bytes(4)
    path = tmp_path / "x.iso"
    path.write_bytes(data)
    report = _xorriso_report(path)
    bios = next(cols for cols in _report_value(report, "El Torito boot img") if cols[1] == "BIOS")
    assert struct.unpack_from("<I", data, 432)[0] == int(bios[-1]) * 4
    assert "MBR isohybrid" in report


def test_alpines_isolinux_and_isohdpfx(tmp_path: Path) -> None:
    """Alpine's own ISOLINUX 6.04 files: the MBR holds exactly its isohdpfx.bin code."""
    folder = require_shared() / ALPINE_SYSLINUX
    code = (folder / "isohdpfx.bin").read_bytes()
    assert len(code) == 432
    data = _write(_spec(isolinux=(folder / "isolinux.bin").read_bytes(), mbr_code=code))
    assert data[:432] == code
    path = tmp_path / "alpine.iso"
    path.write_bytes(data)
    report = _xorriso_report(path)
    assert "System area summary: MBR isohybrid cyl-align-off GPT" in report
    bios = next(cols for cols in _report_value(report, "El Torito boot img") if cols[1] == "BIOS")
    assert struct.unpack_from("<I", data, 432)[0] == int(bios[-1]) * 4
    _sgdisk_verify(path)


def test_uefi_only_iso_has_a_protective_mbr_and_the_esp(tmp_path: Path) -> None:
    """As xorriso's -efi-boot-part --efi-boot-image: no MBR code, a 0xEE entry, the ESP."""
    data = _write(_spec(bios=False))
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        catalog = iso.eltorito_boot_catalog
        assert catalog.validation_entry.platform_id == 0xEF and catalog.sections == []
    finally:
        iso.close()
    assert data[:440] == bytes(440) and data[510:512] == b"\x55\xaa"
    path = tmp_path / "uefi.iso"
    path.write_bytes(data)
    _sgdisk_verify(path)
    report = _xorriso_report(path)
    assert "System area summary: MBR protective-msdos-label cyl-align-off GPT" in report
    assert _report_value(report, "MBR partition") == [["1", "0x00", "0xee", "1",
                                                       str(len(data) // 512 - 1)]]
    assert _report_value(report, "GPT partition path") == [["1", "/boot/efi.img"]]
    assert [row[3:] for row in _partx(path)] == [["c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
                                                  "EFI boot partition"]]
    info = _run("sgdisk", "-i", "1", path)
    assert "Partition GUID code: C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)" \
        in info


def test_two_writes_are_byte_identical_and_the_epoch_matters() -> None:
    first = _write(_spec())
    assert first == _write(_spec())
    assert hashlib.sha256(first).digest() != hashlib.sha256(_write(_spec(epoch=EPOCH + 1))).digest()


def test_another_clock_time_zone_and_random_state_do_not_matter() -> None:
    """pycdlib reads the clock, the time zone and random numbers: none may reach the bytes."""
    expected = _write(_spec())
    with another_clock():
        again = _write(_spec())
    assert again == expected


def test_time_zone_umask_and_cwd_do_not_matter(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _write(_spec())
    monkeypatch.setenv("TZ", "Pacific/Chatham")
    time.tzset()
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o077)
    try:
        path = tmp_path / "x.iso"
        with path.open("w+b") as out:
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
    """The catalog says 1 (to the end of the medium); the GPT's ESP carries the real size."""
    spec = _spec(efi_bytes=40 * 1024 * 1024)
    efi = next(f for f in spec.files if f.path == "boot/efi.img")
    sectors = -(-len(efi.data) // 512)
    assert sectors > ELTORITO_MAX_SECTORS
    data = _write(spec)
    entries = struct.unpack_from("<Q", data, 512 + 72)[0]
    first, last = struct.unpack_from("<QQ", data, entries * 512 + 32)
    assert data[first * 512:first * 512 + len(efi.data)] == efi.data
    assert last - first + 1 == -(-len(efi.data) // 2048) * 4
    path = tmp_path / "big.iso"
    path.write_bytes(data)
    _sgdisk_verify(path)
    report = _xorriso_report(path)
    assert "El Torito boot img :   2  UEFI  y   none  0x0000  0x00      1" in report


def test_output_must_be_readable(tmp_path: Path) -> None:
    with (tmp_path / "x.iso").open("wb") as out, pytest.raises(OutputError) as info:
        write_iso(_spec(), out)
    assert str(info.value) == "ISO: the output must be open for reading and writing"


@pytest.mark.parametrize(("change", "message"), [
    ({"aliases": (IsoAlias("boot/k", "boot/efi.img", 1000, 10),)},
     "ISO: 'boot/k' is not 10 bytes at a 2048-byte boundary of 'boot/efi.img'"),
    ({"aliases": (IsoAlias("boot/k", "boot/nothing", 0, 10),)},
     "ISO: 'boot/k' is not 10 bytes at a 2048-byte boundary of 'boot/nothing'"),
    ({"aliases": (IsoAlias("boot/k", "boot/efi.img", 0, 1 << 30),)},
     "ISO: 'boot/k' is not 1073741824 bytes at a 2048-byte boundary of 'boot/efi.img'"),
    ({"aliases": (IsoAlias(".alpine-release", "boot/efi.img", 0, 10),)},
     "ISO: a path is given twice"),
    ({"mbr_code": b"\x33\xed"},
     "ISO: BIOS boot needs the 432-byte isohybrid MBR code (isohdpfx.bin), got 2 bytes"),
])
def test_bad_specs(change: dict[str, object], message: str) -> None:
    spec = IsoSpec(**{**_spec().__dict__, **change})  # type: ignore[arg-type]
    with pytest.raises(OutputError) as info:
        _write(spec)
    assert str(info.value) == message


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
