"""The El Torito boot catalog (El Torito 1.0, section 2): validation entry, initial entry,
section headers and section entries, as fields. One catalog sector holds 64 entries,
which is as far as this reader looks."""

from __future__ import annotations

import struct

from composer.diff.report import Scalar
from composer.diff.source import Bytes

SECTOR = 2048
ENTRY = 32
_PLATFORMS = {0: "x86", 1: "PowerPC", 2: "Mac", 0xEF: "EFI"}
_MEDIA = {0: "no emulation", 1: "1.2M diskette", 2: "1.44M diskette", 3: "2.88M diskette",
          4: "hard disk"}


def _boot_entry(raw: bytes, files: dict[int, str]) -> dict[str, Scalar]:
    rba = struct.unpack_from("<I", raw, 8)[0]
    return {"boot indicator": f"0x{raw[0]:02x}",
            "media type": _MEDIA.get(raw[1] & 0x0F, f"type {raw[1] & 0x0F}"),
            "load segment": f"0x{struct.unpack_from('<H', raw, 2)[0]:04x}",
            "system type": raw[4], "sector count": struct.unpack_from("<H", raw, 6)[0],
            "load RBA": rba, "boot image": files.get(rba, "(no file starts there)")}


def catalog_fields(image: Bytes, lba: int, files: dict[int, str]) -> dict[str, dict[str, Scalar]]:
    """``where`` → fields of each catalog entry; ``files`` maps extents to ISO paths so that
    an entry names the boot image it loads."""
    data = image.read_at(lba * SECTOR, SECTOR)
    found: dict[str, dict[str, Scalar]] = {}
    validation = data[:ENTRY]
    words = struct.unpack("<16H", validation)
    found["El Torito validation entry"] = {
        "header id": validation[0], "platform": _PLATFORMS.get(validation[1], validation[1]),
        "id string": validation[4:28].rstrip(b"\0").decode("latin-1"),
        "checksum valid": "yes" if sum(words) & 0xFFFF == 0 else "no",
        "key bytes": validation[30:32].hex()}
    found["El Torito initial entry"] = _boot_entry(data[ENTRY:2 * ENTRY], files)
    pos = 2 * ENTRY
    section = 0
    while pos + ENTRY <= SECTOR:
        head = data[pos:pos + ENTRY]
        if head[0] not in (0x90, 0x91):
            break
        section += 1
        count = struct.unpack_from("<H", head, 2)[0]
        found[f"El Torito section {section} header"] = {
            "header indicator": f"0x{head[0]:02x}",
            "platform": _PLATFORMS.get(head[1], head[1]), "entries": count,
            "id string": head[4:32].rstrip(b"\0").decode("latin-1")}
        pos += ENTRY
        for n in range(1, count + 1):
            if pos + ENTRY > SECTOR:
                break
            entry = data[pos:pos + ENTRY]
            fields = _boot_entry(entry, files)
            fields["selection criteria"] = entry[12]
            found[f"El Torito section {section} entry {n}"] = fields
            pos += ENTRY
        if head[0] == 0x91:
            break
    return found
