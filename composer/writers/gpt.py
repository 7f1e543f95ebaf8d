"""GUID partition tables (UEFI specification, chapter 5) with their MBR, for 512-byte sectors.

:func:`partition_tables` takes the partitions and the disk size and returns the bytes of
LBA 0..33 (the MBR, the primary header and a full 128-entry array) and of the last 33
sectors (the backup array and the backup header), ready to be written over a disk image.
Both headers carry the same disk GUID; each array CRC covers the whole array, as the
specification and every disk tool (``sgdisk -v``) require. Nothing here reads a clock or a
random source: GUIDs come from the caller, :func:`content_guid` derives them from bytes.

The MBR is protective by default (one 0xEE entry from LBA 1 over the rest of the disk);
a caller may give its own entries, for example a protective entry plus the bootable
placeholder some BIOSes insist on before they run the boot code.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from composer.errors import OutputError

SECTOR = 512
ENTRY_SIZE = 128
ENTRY_COUNT = 128
ARRAY_SECTORS = ENTRY_SIZE * ENTRY_COUNT // SECTOR
HEAD_SECTORS = 2 + ARRAY_SECTORS
"""MBR, primary header, primary array: LBA 0..33."""
TAIL_SECTORS = ARRAY_SECTORS + 1
"""Backup array and backup header: the last 33 sectors."""
FIRST_USABLE_LBA = HEAD_SECTORS
BOOT_CODE_MAX = 440
"""MBR bytes before the disk signature (boot code, and for isohybrid the boot file's LBA)."""
MBR_PROTECTIVE = 0xEE
NAME_UNITS = 36

ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
"""EFI system partition."""
BASIC_DATA_TYPE = uuid.UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")

_SIGNATURE = b"EFI PART"
_REVISION = 0x00010000
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")
_MBR_ENTRY = struct.Struct("<B3sB3sII")


@dataclass(frozen=True)
class GptPartition:
    """One entry of the partition array; LBAs are inclusive, in 512-byte sectors."""

    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int
    name: str = ""
    attributes: int = 0


@dataclass(frozen=True)
class MbrPartition:
    """One of the four MBR entries."""

    type: int
    first_lba: int
    sectors: int
    bootable: bool = False


@dataclass(frozen=True)
class PartitionTables:
    """What to write over a disk image of ``disk_sectors`` sectors: ``head`` at byte 0,
    ``tail`` at byte ``tail_offset`` (its last sector is the disk's last)."""

    head: bytes
    tail: bytes
    tail_offset: int


def content_guid(*parts: bytes) -> uuid.UUID:
    """A GUID derived from ``parts`` (SHA-256), shaped as an RFC 4122 version 4 GUID the way
    systemd-repart shapes its hashed ones: stable for equal inputs, distinct otherwise."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little") + part)
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(raw))


def protective_entry(disk_sectors: int) -> MbrPartition:
    """The 0xEE entry from LBA 1 over the rest of the disk (capped at 2^32 - 1 sectors)."""
    return MbrPartition(type=MBR_PROTECTIVE, first_lba=1,
                        sectors=min(disk_sectors - 1, 0xFFFFFFFF))


def last_usable_lba(disk_sectors: int) -> int:
    return disk_sectors - TAIL_SECTORS - 1


def _chs(lba: int) -> bytes:
    """CHS of ``lba`` in the usual 255-head, 63-sector geometry; 0xFFFFFF beyond cylinder
    1023, as the UEFI specification asks for values CHS cannot express."""
    cylinder, rest = divmod(lba, 255 * 63)
    if cylinder > 1023:
        return b"\xff\xff\xff"
    head, sector = divmod(rest, 63)
    return bytes((head, (sector + 1) | ((cylinder >> 2) & 0xC0), cylinder & 0xFF))


def _mbr(entries: Sequence[MbrPartition], *, boot_code: bytes, disk_signature: int) -> bytes:
    if len(entries) > 4:
        raise OutputError(f"MBR: {len(entries)} partitions given; an MBR holds 4")
    if len(boot_code) > BOOT_CODE_MAX:
        raise OutputError(f"MBR: boot code of {len(boot_code)} bytes; at most {BOOT_CODE_MAX} "
                          "fit before the disk signature")
    sector = bytearray(SECTOR)
    sector[:len(boot_code)] = boot_code
    struct.pack_into("<I", sector, 440, disk_signature)
    for index, entry in enumerate(entries):
        if not (0 <= entry.type <= 0xFF and 0 <= entry.first_lba <= 0xFFFFFFFF
                and 0 < entry.sectors <= 0xFFFFFFFF):
            raise OutputError(f"MBR: partition {index + 1} does not fit the MBR's 32-bit fields")
        last = entry.first_lba + entry.sectors - 1
        _MBR_ENTRY.pack_into(sector, 446 + 16 * index, 0x80 if entry.bootable else 0,
                             _chs(entry.first_lba), entry.type, _chs(last), entry.first_lba,
                             entry.sectors)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _array(partitions: Sequence[GptPartition]) -> bytes:
    array = bytearray(ENTRY_SIZE * ENTRY_COUNT)
    for index, part in enumerate(partitions):
        name = part.name.encode("utf-16-le")
        _ENTRY.pack_into(array, ENTRY_SIZE * index, part.type_guid.bytes_le,
                         part.unique_guid.bytes_le, part.first_lba, part.last_lba,
                         part.attributes, name)
    return bytes(array)


def _header(*, current: int, backup: int, entries_lba: int, disk_sectors: int,
            disk_guid: uuid.UUID, array_crc: int) -> bytes:
    header = bytearray(_HEADER.pack(_SIGNATURE, _REVISION, _HEADER.size, 0, 0, current, backup,
                                    FIRST_USABLE_LBA, last_usable_lba(disk_sectors),
                                    disk_guid.bytes_le, entries_lba, ENTRY_COUNT, ENTRY_SIZE,
                                    array_crc))
    struct.pack_into("<I", header, 16, zlib.crc32(header))
    return bytes(header).ljust(SECTOR, b"\0")


def _check(partitions: Sequence[GptPartition], disk_sectors: int) -> None:
    if disk_sectors < HEAD_SECTORS + TAIL_SECTORS + 1:
        raise OutputError(f"GPT: a disk of {disk_sectors} sectors has no room for the tables")
    if len(partitions) > ENTRY_COUNT:
        raise OutputError(f"GPT: {len(partitions)} partitions given; the array holds "
                          f"{ENTRY_COUNT}")
    last_usable = last_usable_lba(disk_sectors)
    spans = []
    for index, part in enumerate(partitions, 1):
        if len(part.name.encode("utf-16-le")) > 2 * NAME_UNITS:
            raise OutputError(f"GPT: partition {index} name {part.name!r} is longer than "
                              f"{NAME_UNITS} UTF-16 units")
        if not 0 <= part.attributes < 1 << 64:
            raise OutputError(f"GPT: partition {index} attributes do not fit 64 bits")
        if not FIRST_USABLE_LBA <= part.first_lba <= part.last_lba <= last_usable:
            raise OutputError(f"GPT: partition {index} (LBA {part.first_lba}..{part.last_lba}) "
                              f"is outside the usable LBAs {FIRST_USABLE_LBA}..{last_usable}")
        spans.append((part.first_lba, part.last_lba, index))
    spans.sort()
    for (_, last, one), (first, _, other) in zip(spans, spans[1:], strict=False):
        if first <= last:
            raise OutputError(f"GPT: partitions {one} and {other} overlap")


def partition_tables(partitions: Sequence[GptPartition], *, disk_sectors: int,
                     disk_guid: uuid.UUID, mbr: Sequence[MbrPartition] | None = None,
                     boot_code: bytes = b"", disk_signature: int = 0) -> PartitionTables:
    """The MBR and both GPTs of a disk of ``disk_sectors`` 512-byte sectors.

    ``mbr`` defaults to the protective entry alone; ``boot_code`` fills the MBR from byte 0
    (at most 440 bytes) and ``disk_signature`` is the MBR's 32-bit disk id.
    """
    _check(partitions, disk_sectors)
    entries = [protective_entry(disk_sectors)] if mbr is None else list(mbr)
    array = _array(partitions)
    array_crc = zlib.crc32(array)
    last = disk_sectors - 1
    backup_array_lba = last - ARRAY_SECTORS
    primary = _header(current=1, backup=last, entries_lba=2, disk_sectors=disk_sectors,
                      disk_guid=disk_guid, array_crc=array_crc)
    backup = _header(current=last, backup=1, entries_lba=backup_array_lba,
                     disk_sectors=disk_sectors, disk_guid=disk_guid, array_crc=array_crc)
    head = _mbr(entries, boot_code=boot_code, disk_signature=disk_signature) + primary + array
    return PartitionTables(head=head, tail=array + backup, tail_offset=backup_array_lba * SECTOR)
