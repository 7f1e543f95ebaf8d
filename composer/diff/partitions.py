"""MBR and GPT partition tables (UEFI specification, chapter 5) as fields.

Works on a hybrid ISO (a protective or isohybrid MBR and a GPT in its first 32 KiB,
the backup GPT after the ISO 9660 volume) and on a plain GPT disk alike; 512- and
4096-byte sectors are both tried. Counts and sizes are checked before anything they
announce is read; CRCs are recomputed and reported, not trusted.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
import zlib

from composer.diff.report import Scalar
from composer.diff.source import Bytes

MAX_ENTRIES = 1024
MAX_ENTRY_SIZE = 4096
BOOT_CODE = 440
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")


def mbr_fields(image: Bytes) -> dict[str, dict[str, Scalar]]:
    """The MBR's boot code (by digest, and the isohybrid boot-file LBA), disk signature and
    its four entries; nothing when sector 0 has no 0x55AA signature."""
    if image.size < 512:
        return {}
    sector = image.read_at(0, 512)
    if sector[510:512] != b"\x55\xaa":
        return {}
    code = sector[:432]
    found: dict[str, dict[str, Scalar]] = {"MBR": {
        "boot code": "none" if not code.strip(b"\0") else
        "sha256:" + hashlib.sha256(code).hexdigest()[:16],
        "bytes 432-439": sector[432:440].hex(),
        "disk signature": f"0x{struct.unpack_from('<I', sector, 440)[0]:08x}",
        "bytes 444-445": sector[444:446].hex()}}
    for n in range(4):
        raw = sector[446 + 16 * n:462 + 16 * n]
        if not raw.strip(b"\0"):
            continue
        status, chs_first, kind, chs_last, first, count = struct.unpack("<B3sB3sII", raw)
        found[f"MBR partition {n + 1}"] = {
            "status": f"0x{status:02x}", "type": f"0x{kind:02x}", "first LBA": first,
            "sectors": count, "CHS first": chs_first.hex(), "CHS last": chs_last.hex()}
    return found


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw)).upper()


def _header(image: Bytes, offset: int, sector: int, title: str
            ) -> tuple[dict[str, dict[str, Scalar]], int | None]:
    """The GPT header at ``offset`` and its partition array; and the backup header's LBA."""
    raw = image.read_at(offset, sector)
    (signature, revision, size, crc, _reserved, current, backup, first_usable, last_usable,
     disk_guid, entries_lba, count, entry_size, array_crc) = _HEADER.unpack_from(raw)
    if signature != b"EFI PART":
        return {title: {"signature": "missing"}}, None
    header_ok = 92 <= size <= sector
    if header_ok:
        check = bytearray(raw[:size])
        check[16:20] = b"\0\0\0\0"
        header_ok = zlib.crc32(check) == crc
    fields: dict[str, Scalar] = {
        "revision": f"0x{revision:08x}", "header size": size, "header CRC32": f"0x{crc:08x}",
        "header CRC32 valid": "yes" if header_ok else "no", "current LBA": current,
        "backup LBA": backup, "first usable LBA": first_usable, "last usable LBA": last_usable,
        "disk GUID": _guid(disk_guid), "entries LBA": entries_lba, "entries": count,
        "entry size": entry_size, "entries CRC32": f"0x{array_crc:08x}"}
    found = {title: fields}
    if not (count <= MAX_ENTRIES and 128 <= entry_size <= MAX_ENTRY_SIZE and entry_size % 8 == 0):
        fields["entries valid"] = "no (count or entry size out of range)"
        return found, backup
    array_at = entries_lba * sector
    if array_at + count * entry_size > image.size:
        fields["entries valid"] = "no (array past the end of the image)"
        return found, backup
    array = image.read_at(array_at, count * entry_size)
    fields["entries CRC32 valid"] = "yes" if zlib.crc32(array) == array_crc else "no"
    for n in range(count):
        entry = array[n * entry_size:(n + 1) * entry_size]
        if not entry[:16].strip(b"\0"):
            continue
        first, last, attributes = struct.unpack_from("<QQQ", entry, 32)
        found[f"{title.removesuffix(' header')} partition {n + 1}"] = {
            "type GUID": _guid(entry[:16]), "unique GUID": _guid(entry[16:32]),
            "first LBA": first, "last LBA": last, "attributes": f"0x{attributes:016x}",
            "name": entry[56:128].decode("utf-16-le", "replace").rstrip("\0")}
    return found, backup


def gpt_fields(image: Bytes) -> dict[str, dict[str, Scalar]]:
    """Primary and backup GPT headers and their partitions; nothing without a GPT."""
    for sector in (512, 4096):
        if image.size < 2 * sector or image.read_at(sector, 8) != b"EFI PART":
            continue
        found, backup = _header(image, sector, sector, "GPT header")
        if backup is not None and 1 < backup and (backup + 1) * sector <= image.size:
            more, _ = _header(image, backup * sector, sector, "GPT backup header")
            found.update(more)
        elif backup is not None:
            found["GPT backup header"] = {"signature": "not inside the image"}
        if sector != 512:
            found["GPT header"]["sector size"] = sector
        return found
    return {}
