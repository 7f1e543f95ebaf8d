"""Directory records of an ISO 9660 image already written: find them and re-point them.

The ISO writer reads back what pycdlib wrote with this independent reader (the volume
descriptors, then each directory's records, ECMA-119 section 9.1) to learn where files
landed and to point a file's records, in the ISO 9660 tree and in the Joliet tree, at
bytes that lie inside another file (see :class:`composer.writers.iso.IsoAlias`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from composer.errors import OutputError

BLOCK = 2048
FIRST_DESCRIPTOR = 16
_TERMINATOR = 255
_PRIMARY = 1
_SUPPLEMENTARY = 2
_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")
_ROOT_RECORD = 156
_DIRECTORY_FLAG = 0x02
_MAX_DESCRIPTORS = 64


@dataclass(frozen=True)
class Record:
    """One directory record: where it sits in the image, and the extent it names."""

    offset: int
    extent: int
    size: int
    is_dir: bool


def _read(image: BinaryIO, offset: int, length: int) -> bytes:
    image.seek(offset)
    data = image.read(length)
    if len(data) != length:
        raise OutputError(f"ISO: image ends before byte {offset + length}")
    return data


def _record(data: bytes, offset: int, base: int) -> Record:
    extent, size = struct.unpack_from("<I4xI", data, offset + 2)
    return Record(base + offset, extent, size, bool(data[offset + 25] & _DIRECTORY_FLAG))


def roots(image: BinaryIO) -> tuple[Record, Record | None]:
    """The root directory records of the primary volume descriptor and of the Joliet one."""
    primary = joliet = None
    for index in range(FIRST_DESCRIPTOR, FIRST_DESCRIPTOR + _MAX_DESCRIPTORS):
        descriptor = _read(image, index * BLOCK, BLOCK)
        if descriptor[1:6] != b"CD001":
            raise OutputError(f"ISO: no volume descriptor at block {index}")
        kind = descriptor[0]
        if kind == _TERMINATOR:
            break
        if kind == _PRIMARY and primary is None:
            primary = _record(descriptor, _ROOT_RECORD, index * BLOCK)
        elif kind == _SUPPLEMENTARY and descriptor[88:91] in _JOLIET_ESCAPES:
            joliet = _record(descriptor, _ROOT_RECORD, index * BLOCK)
    if primary is None:
        raise OutputError("ISO: no primary volume descriptor")
    return primary, joliet


def _name(identifier: bytes, joliet: bool) -> str:
    text = identifier.decode("utf-16-be" if joliet else "ascii", "replace")
    return text.split(";", 1)[0].rstrip(".")


def _children(image: BinaryIO, directory: Record, joliet: bool) -> dict[str, Record]:
    data = _read(image, directory.extent * BLOCK, directory.size)
    found: dict[str, Record] = {}
    offset = 0
    while offset < len(data):
        length = data[offset]
        if length == 0:
            offset = (offset // BLOCK + 1) * BLOCK
            continue
        if length < 34 or offset + length > len(data):
            raise OutputError(f"ISO: damaged directory record at byte "
                              f"{directory.extent * BLOCK + offset}")
        identifier = data[offset + 33:offset + 33 + data[offset + 32]]
        if identifier not in (b"\0", b"\1"):
            found[_name(identifier, joliet)] = _record(data, offset, directory.extent * BLOCK)
        offset += length
    return found


def find(image: BinaryIO, root: Record, path: str, *, joliet: bool = False) -> Record:
    """The record of ``path`` (``/``-separated; ISO 9660 names without ``;1``, or Joliet
    names) below ``root``."""
    record = root
    for part in path.strip("/").split("/"):
        if not record.is_dir:
            raise OutputError(f"ISO: {path!r}: {part!r} is below a file")
        children = _children(image, record, joliet)
        key = part if joliet else part.upper()
        if key not in children:
            raise OutputError(f"ISO: {path!r} is not in the {'Joliet' if joliet else 'ISO 9660'} "
                              "tree")
        record = children[key]
    return record


def repoint(image: BinaryIO, record: Record, *, extent: int, size: int) -> None:
    """Make ``record`` name ``size`` bytes from block ``extent`` (both byte orders)."""
    image.seek(record.offset + 2)
    image.write(struct.pack("<I", extent) + struct.pack(">I", extent) + struct.pack("<I", size)
                + struct.pack(">I", size))
