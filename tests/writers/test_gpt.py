"""GPT writer: sgdisk finds no problem and reads back every field; the CRCs cover what the
specification says; bad layouts are refused with the partition named."""

from __future__ import annotations

import struct
import uuid
import zlib
from pathlib import Path

import pytest

from composer.errors import OutputError
from composer.writers.gpt import (
    ARRAY_SECTORS,
    ESP_TYPE,
    SECTOR,
    GptPartition,
    MbrPartition,
    content_guid,
    partition_tables,
    protective_entry,
)
from tests.helpers.tools import run_tool

ROOT_X86_64 = uuid.UUID("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")
VERITY_X86_64 = uuid.UUID("2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5")
DISK = 20480  # 10 MiB
DISK_GUID = content_guid(b"disk")
PARTITIONS = [
    GptPartition(ESP_TYPE, content_guid(b"esp"), 2048, 4095, "ESP"),
    GptPartition(ROOT_X86_64, content_guid(b"root"), 4096, 16383, "root-x86-64",
                 attributes=1 << 60),
    GptPartition(VERITY_X86_64, content_guid(b"verity"), 16384, 18431, "root-x86-64-verity"),
]


def _image(tmp_path: Path, partitions: list[GptPartition] = PARTITIONS, **options: object) -> Path:
    tables = partition_tables(partitions, disk_sectors=DISK, disk_guid=DISK_GUID,
                              **options)  # type: ignore[arg-type]
    image = bytearray(DISK * SECTOR)
    image[:len(tables.head)] = tables.head
    image[tables.tail_offset:tables.tail_offset + len(tables.tail)] = tables.tail
    assert tables.tail_offset + len(tables.tail) == len(image)
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(image))
    return path


def _sgdisk(*args: str) -> str:
    return run_tool("sgdisk", "gdisk", *args).stdout


def test_sgdisk_finds_no_problem_and_reads_every_field(tmp_path: Path) -> None:
    path = _image(tmp_path)
    verify = _sgdisk("-v", str(path))
    assert "No problems found" in verify and "Creating new GPT" not in verify, verify
    listing = _sgdisk("-p", str(path))
    assert f"Disk identifier (GUID): {str(DISK_GUID).upper()}" in listing
    assert "Partition table holds up to 128 entries" in listing
    assert "First usable sector is 34, last usable sector is 20446" in listing
    rows = [line.split() for line in listing.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[1], r[2], r[6]) for r in rows] == [
        ("1", "2048", "4095", "ESP"), ("2", "4096", "16383", "root-x86-64"),
        ("3", "16384", "18431", "root-x86-64-verity")]
    for number, part in enumerate(PARTITIONS, 1):
        info = _sgdisk("-i", str(number), str(path))
        assert f"Partition GUID code: {str(part.type_guid).upper()}" in info
        assert f"Partition unique GUID: {str(part.unique_guid).upper()}" in info
        assert f"Attribute flags: {part.attributes:016x}" in info
        assert f"Partition name: '{part.name}'" in info


def test_crcs_cover_the_whole_array_and_both_headers_agree(tmp_path: Path) -> None:
    data = _image(tmp_path).read_bytes()
    primary = data[SECTOR:2 * SECTOR]
    backup = data[-SECTOR:]
    array = data[2 * SECTOR:(2 + ARRAY_SECTORS) * SECTOR]
    assert data[-(1 + ARRAY_SECTORS) * SECTOR:-SECTOR] == array
    # The CRC is over all 128 entries, not only the three used ones (pycdlib's mistake).
    assert struct.unpack_from("<I", primary, 88)[0] == zlib.crc32(array)
    assert zlib.crc32(array) != zlib.crc32(array[:3 * 128])
    for header in (primary, backup):
        zeroed = header[:16] + b"\0\0\0\0" + header[20:92]
        assert struct.unpack_from("<I", header, 16)[0] == zlib.crc32(zeroed)
    assert primary[56:72] == backup[56:72] == DISK_GUID.bytes_le
    assert struct.unpack_from("<QQ", primary, 24) == (1, DISK - 1)
    assert struct.unpack_from("<QQ", backup, 24) == (DISK - 1, 1)
    assert struct.unpack_from("<Q", backup, 72)[0] == DISK - 1 - ARRAY_SECTORS


def test_protective_mbr_and_boot_code(tmp_path: Path) -> None:
    code = bytes(range(256)) + bytes(176)
    mbr = [protective_entry(DISK), MbrPartition(type=0, first_lba=0, sectors=1, bootable=True)]
    path = _image(tmp_path, mbr=mbr, boot_code=code, disk_signature=0x12345678)
    data = path.read_bytes()
    assert data[:432] == code and data[440:444] == b"\x78\x56\x34\x12" and data[510:512] == b"\x55\xaa"
    # CHS of the last LBA, 20479 = 1 * 255 * 63 + 70 * 63 + 4: cylinder 1, head 70, sector 5.
    assert data[446:462] == bytes((0, 0, 2, 0, 0xEE, 70, 5, 1)) + struct.pack("<II", 1, DISK - 1)
    assert data[462:478] == bytes((0x80, 0, 1, 0, 0, 0, 1, 0)) + struct.pack("<II", 0, 1)
    verify = _sgdisk("-v", str(path))
    assert "No problems found" in verify, verify


def test_default_mbr_is_protective_only() -> None:
    tables = partition_tables([], disk_sectors=DISK, disk_guid=DISK_GUID)
    assert tables.head[446 + 4] == 0xEE and tables.head[462:510] == bytes(48)
    assert struct.unpack_from("<II", tables.head, 446 + 8) == (1, DISK - 1)
    assert tables.head[:440] == bytes(440)


def test_content_guids_are_stable_v4_shaped_and_distinct() -> None:
    guid = content_guid(b"a", b"bc")
    assert guid == content_guid(b"a", b"bc") and guid.version == 4
    assert guid.variant == uuid.RFC_4122
    assert guid != content_guid(b"ab", b"c")


@pytest.mark.parametrize(("partitions", "message"), [
    ([GptPartition(ESP_TYPE, DISK_GUID, 33, 100)],
     "GPT: partition 1 (LBA 33..100) is outside the usable LBAs 34..20446"),
    ([GptPartition(ESP_TYPE, DISK_GUID, 34, 20447)],
     "GPT: partition 1 (LBA 34..20447) is outside the usable LBAs 34..20446"),
    ([GptPartition(ESP_TYPE, DISK_GUID, 100, 50)],
     "GPT: partition 1 (LBA 100..50) is outside the usable LBAs 34..20446"),
    ([GptPartition(ESP_TYPE, DISK_GUID, 2048, 4095), GptPartition(ESP_TYPE, DISK_GUID, 100, 2048)],
     "GPT: partitions 2 and 1 overlap"),
    ([GptPartition(ESP_TYPE, DISK_GUID, 2048, 4095, "x" * 37)],
     "GPT: partition 1 name '" + "x" * 37 + "' is longer than 36 UTF-16 units"),
])
def test_bad_layouts_are_refused(partitions: list[GptPartition], message: str) -> None:
    with pytest.raises(OutputError) as info:
        partition_tables(partitions, disk_sectors=DISK, disk_guid=DISK_GUID)
    assert str(info.value) == message


def test_bad_mbrs_are_refused() -> None:
    with pytest.raises(OutputError, match="^MBR: 5 partitions given; an MBR holds 4$"):
        partition_tables([], disk_sectors=DISK, disk_guid=DISK_GUID,
                         mbr=[protective_entry(DISK)] * 5)
    with pytest.raises(OutputError, match="^MBR: boot code of 441 bytes; at most 440 fit"):
        partition_tables([], disk_sectors=DISK, disk_guid=DISK_GUID, boot_code=bytes(441))
    with pytest.raises(OutputError, match="^GPT: a disk of 67 sectors has no room"):
        partition_tables([], disk_sectors=67, disk_guid=DISK_GUID)
