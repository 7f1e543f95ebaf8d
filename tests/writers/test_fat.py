"""FAT writer: fsck.fat finds nothing wrong, mtools reads every file back, bytes are stable."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from composer.errors import OutputError
from composer.writers.fat import FatFile, build_fat, fat_image
from tests.helpers.clock import another_clock

MTIME = 1725622440
FILES = [FatFile("EFI/BOOT/BOOTX64.EFI", bytes(range(256)) * 40),
         FatFile("EFI/BOOT/ldlinux.e64", b"core" * 5000),
         FatFile("EFI/BOOT/empty.cfg", b""),
         FatFile("syslinux.cfg", b"DEFAULT virt\n")]


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install {package})")


@pytest.mark.parametrize("min_bytes", [0, 8 * 1024 * 1024], ids=["fat12", "fat16"])
def test_fsck_and_mtools_read_it_back(tmp_path: Path, min_bytes: int) -> None:
    _need("fsck.vfat", "dosfstools")
    _need("mcopy", "mtools")
    image = fat_image(FILES, serial=0xC0FFEE, mtime=MTIME, min_bytes=min_bytes)
    assert image[54:62] == (b"FAT16   " if min_bytes else b"FAT12   ")
    assert struct.unpack_from("<I", image, 39)[0] == 0xC0FFEE
    path = tmp_path / "efi.img"
    path.write_bytes(image)
    check = subprocess.run(["fsck.vfat", "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mcopy", "-s", "-n", "-i", str(path), "::/EFI", "::/SYSLINUX.CFG", str(out)],
                   check=True, env=env, capture_output=True)
    got = {p.relative_to(out).as_posix().upper(): p.read_bytes()
           for p in out.rglob("*") if p.is_file()}
    assert got == {f.path.upper(): f.data for f in FILES}
    listing = subprocess.run(["mdir", "-i", str(path), "::/EFI/BOOT"], check=True, env=env,
                             capture_output=True, text=True).stdout
    assert "2024-09-06  11:34" in listing


def _fsck(tmp_path: Path, image: bytes) -> None:
    _need("fsck.vfat", "dosfstools")
    path = tmp_path / "check.img"
    path.write_bytes(image)
    check = subprocess.run(["fsck.vfat", "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def _read_back(tmp_path: Path, image: bytes) -> dict[str, bytes]:
    _need("mcopy", "mtools")
    path = tmp_path / "read.img"
    path.write_bytes(image)
    out = tmp_path / "read"
    out.mkdir()
    subprocess.run(["mcopy", "-s", "-n", "-i", str(path), "::", str(out)], check=True,
                   env=dict(os.environ, MTOOLS_SKIP_CHECK="1"), capture_output=True)
    return {p.relative_to(out).as_posix().upper(): p.read_bytes()
            for p in out.rglob("*") if p.is_file()}


def test_same_input_same_bytes() -> None:
    one = fat_image(FILES, serial=1, mtime=MTIME)
    assert one == fat_image(list(reversed(FILES)), serial=1, mtime=MTIME)
    with another_clock():
        assert fat_image(FILES, serial=1, mtime=MTIME) == one
    assert hashlib.sha256(one).hexdigest() != hashlib.sha256(
        fat_image(FILES, serial=2, mtime=MTIME)).hexdigest()


def test_dates_before_1980_are_clamped() -> None:
    image = fat_image(FILES[:1], serial=1, mtime=0)
    root = image.index(b"EFI        ")
    assert struct.unpack_from("<H", image, root + 24)[0] == (0 << 9) | (1 << 5) | 1  # 1980-01-01


@pytest.mark.parametrize("mtime", [4354819198, 4354819199, 1 << 33])
def test_dates_after_2107_are_clamped(tmp_path: Path, mtime: int) -> None:
    """FAT's 7-bit year ends in 2107: later timestamps become 2107-12-31 23:59:58."""
    image = fat_image(FILES[:1], serial=1, mtime=mtime)
    root = image.index(b"EFI        ")
    clock, date = struct.unpack_from("<HH", image, root + 22)
    assert date == (127 << 9) | (12 << 5) | 31
    assert clock == (23 << 11) | (59 << 5) | (58 // 2)
    _fsck(tmp_path, image)


def test_only_empty_files_make_a_valid_file_system(tmp_path: Path) -> None:
    """Empty files own no cluster, but a FAT needs one data cluster for fsck.fat."""
    files = [FatFile("EMPTY.CFG", b""), FatFile("NOTHING", b"")]
    image = fat_image(files, serial=1, mtime=MTIME)
    _fsck(tmp_path, image)
    assert _read_back(tmp_path, image) == {"EMPTY.CFG": b"", "NOTHING": b""}


@pytest.mark.parametrize("align", [2048, 4096])
def test_aligned_files_start_where_the_offsets_say(tmp_path: Path, align: int) -> None:
    image = build_fat(FILES, serial=3, mtime=MTIME, align=align)
    for file in FILES:
        offset = image.offsets[file.path]
        if file.data:
            assert offset % align == 0
            assert image.data[offset:offset + len(file.data)] == file.data
    _fsck(tmp_path, image.data)
    assert _read_back(tmp_path, image.data) == {f.path.upper(): f.data for f in FILES}
    assert build_fat(FILES, serial=3, mtime=MTIME).data == fat_image(FILES, serial=3, mtime=MTIME)


def test_bad_alignment_is_refused() -> None:
    with pytest.raises(OutputError, match="^EFI image: alignment 3000 is not a power of two"):
        build_fat(FILES, serial=1, mtime=MTIME, align=3000)


@pytest.mark.parametrize(("path", "message"), [
    ("EFI/BOOT/vmlinuz-virt", "'vmlinuz-virt' is not an 8.3 FAT name"),
    ("EFI/BOOT/a.b.c", "'a.b.c' is not an 8.3 FAT name"),
])
def test_long_names_are_refused(path: str, message: str) -> None:
    with pytest.raises(OutputError) as info:
        fat_image([FatFile(path, b"x")], serial=1, mtime=MTIME)
    assert str(info.value) == f"EFI image: {path!r}: {message}"


def test_same_name_twice_is_refused() -> None:
    with pytest.raises(OutputError, match="is given twice"):
        fat_image([FatFile("a.efi", b"1"), FatFile("A.EFI", b"2")], serial=1, mtime=MTIME)
