"""Find a file of an ISO 9660 image by its Rock Ridge path: where it starts and how long it is.

The ``boot`` command reads an ISO someone hands it to size the VM's memory, so this is
a parser of hostile input: every offset and length is checked against the image and the
sector it came from, directories are read at most :data:`MAX_DIRECTORY` bytes, paths at
most :data:`MAX_DEPTH` deep. It reads the primary volume descriptor and directory records
only (ECMA-119 §8.4, §9.1), with the names of Rock Ridge ``NM`` entries (IEEE P1282,
SUSP §5) where present and the ISO 9660 name (``;1`` and a trailing dot cut, lower case)
otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from composer.errors import ComposerError

SECTOR = 2048
PVD_SECTOR = 16
MAX_DIRECTORY = 1 << 20
MAX_DEPTH = 8


class IsoReadError(ComposerError):
    """Not an ISO 9660 image, or one whose directories do not hold together."""

    exit_code = 5


@dataclass(frozen=True)
class IsoEntry:
    """One directory record: its name, where its data starts and how long it is."""

    name: str
    offset: int
    size: int
    is_dir: bool


def _read(stream: BinaryIO, offset: int, size: int, image_size: int, what: str) -> bytes:
    if offset < 0 or size < 0 or offset + size > image_size:
        raise IsoReadError(f"{what} lies outside the image (bytes {offset}..{offset + size} of "
                           f"{image_size})")
    stream.seek(offset)
    data = stream.read(size)
    if len(data) != size:
        raise IsoReadError(f"{what}: the image ends early")
    return data


def _both_endian(data: bytes, at: int) -> int:
    little = int.from_bytes(data[at:at + 4], "little")
    if data[at + 4:at + 8] != little.to_bytes(4, "big"):
        raise IsoReadError(f"directory record field at {at}: the little- and big-endian copies "
                           "differ")
    return little


def _rock_ridge_name(system_use: bytes) -> str | None:
    """The concatenated ``NM`` components of a record's system use area, if any."""
    name = b""
    at = 0
    while at + 4 <= len(system_use):
        signature, length = system_use[at:at + 2], system_use[at + 2]
        if length < 4 or at + length > len(system_use):
            break
        if signature == b"NM" and length >= 5:
            name += system_use[at + 5:at + length]
        at += length
    return name.decode("utf-8", "replace") if name else None


def _records(data: bytes, image_size: int) -> list[IsoEntry]:
    entries = []
    at = 0
    while at < len(data):
        length = data[at]
        if length == 0:
            at = (at // SECTOR + 1) * SECTOR  # records never cross a sector: skip the padding
            continue
        if length < 34 or at + length > len(data):
            raise IsoReadError(f"directory record at byte {at}: length {length} does not fit")
        record = data[at:at + length]
        extent, size = _both_endian(record, 2), _both_endian(record, 10)
        name_length = record[32]
        if 33 + name_length > length:
            raise IsoReadError(f"directory record at byte {at}: name runs past the record")
        raw_name = record[33:33 + name_length]
        at += length
        if raw_name in (b"\x00", b"\x01"):
            continue
        system_use = record[33 + name_length + (1 - name_length % 2):]
        name = _rock_ridge_name(system_use) or \
            raw_name.decode("ascii", "replace").split(";")[0].rstrip(".").lower()
        offset = extent * SECTOR
        if offset + size > image_size:
            raise IsoReadError(f"{name}: its data lies outside the image")
        entries.append(IsoEntry(name=name, offset=offset, size=size, is_dir=bool(record[25] & 2)))
    return entries


def _root(stream: BinaryIO, image_size: int) -> IsoEntry:
    pvd = _read(stream, PVD_SECTOR * SECTOR, SECTOR, image_size, "primary volume descriptor")
    if pvd[:6] != b"\x01CD001":
        raise IsoReadError("no ISO 9660 primary volume descriptor at sector 16")
    root = pvd[156:190]
    return IsoEntry(name="", offset=_both_endian(root, 2) * SECTOR, size=_both_endian(root, 10),
                    is_dir=True)


def _children(stream: BinaryIO, folder: IsoEntry, image_size: int) -> list[IsoEntry]:
    if folder.size > MAX_DIRECTORY:
        raise IsoReadError(f"folder {folder.name or '/'} is larger than {MAX_DIRECTORY} bytes")
    data = _read(stream, folder.offset, folder.size, image_size, f"folder {folder.name or '/'}")
    return _records(data, image_size)


def find_file(stream: BinaryIO, path: str, *, image_size: int) -> IsoEntry | None:
    """The record of ``path`` (``boot/initramfs-virt``), or None when the image lacks it."""
    parts = [p for p in path.split("/") if p]
    if len(parts) > MAX_DEPTH:
        raise IsoReadError(f"{path}: deeper than {MAX_DEPTH} folders")
    current = _root(stream, image_size)
    for part in parts:
        if not current.is_dir:
            return None
        found = next((e for e in _children(stream, current, image_size) if e.name == part), None)
        if found is None:
            return None
        current = found
    return current


def list_folder(stream: BinaryIO, path: str, *, image_size: int) -> list[IsoEntry]:
    """The records of the folder ``path`` (empty when the image has no such folder)."""
    folder = find_file(stream, path, image_size=image_size)
    if folder is None or not folder.is_dir:
        return []
    return _children(stream, folder, image_size)
