"""Whole GPT disk images: partitions laid out on 1 MiB boundaries, their contents copied in,
the protective MBR and both GPTs (:mod:`composer.writers.gpt`) around them.

Every partition starts on a 1 MiB boundary and spans its size rounded up to 1 MiB; the disk
ends 1 MiB after the last partition unless the caller asks for more (the backup GPT takes the
last 33 sectors). The disk GUID and each partition's unique GUID derive from ``seed`` and
the partition's index and name, so equal inputs give equal disks; a caller may set a
partition's GUID itself (systemd-repart, for instance, uses halves of the verity root hash).

Partition type GUIDs follow the UAPI Group's Discoverable Partitions Specification
(https://uapi-group.org/specifications/specs/discoverable_partitions_specification/), so
systemd-gpt-auto-generator and similar tools find the partitions by type.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from composer.errors import OutputError
from composer.writers.gpt import (
    ESP_TYPE,
    SECTOR,
    TAIL_SECTORS,
    GptPartition,
    content_guid,
    partition_tables,
)

__all__ = ["ESP_TYPE", "LINUX_DATA_TYPE", "ROOT_TYPES", "ROOT_VERITY_TYPES", "VAR_TYPE",
           "DiskLayout", "DiskPartition", "DiskSizeError", "PlacedPartition", "disk_layout",
           "write_gpt_disk"]

MIB = 1 << 20
ALIGNMENT = MIB
_CHUNK = MIB
_ZEROS = bytes(_CHUNK)

ROOT_TYPES = {
    "x86_64": uuid.UUID("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
    "aarch64": uuid.UUID("B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
}
"""Root partition, by Alpine architecture name (DPS: "Root Partition (x86-64)", "(64-bit ARM/
AArch64)")."""
ROOT_VERITY_TYPES = {
    "x86_64": uuid.UUID("2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5"),
    "aarch64": uuid.UUID("DF3300CE-D69F-4C92-978C-9BFB0F38D820"),
}
"""Root verity partition (the dm-verity hash device of the root), by architecture."""
VAR_TYPE = uuid.UUID("4D21B016-B534-45C2-A9FB-5C16E091FD2D")
"""Variable data partition, mounted at /var."""
LINUX_DATA_TYPE = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
"""Generic Linux data partition, for data mounted where the profile says."""
READ_ONLY = 1 << 60
"""DPS partition attribute: mount read-only (root, /usr, /var and their verity partitions)."""


class DiskSizeError(OutputError):
    """The disk size asked for cannot hold the partitions."""


@dataclass(frozen=True)
class DiskPartition:
    """One partition to lay out: ``size`` bytes (rounded up to 1 MiB), filled from ``source``
    (at most ``size`` bytes, the rest reads as zeros) or left zero when it is None."""

    name: str
    type_guid: uuid.UUID
    size: int
    source: BinaryIO | None
    uuid: uuid.UUID | None = None
    """The partition's unique GUID; derived from the seed when None."""
    attributes: int = 0


@dataclass(frozen=True)
class PlacedPartition:
    """Where a partition landed: ``offset`` and ``size`` in bytes from the disk's start."""

    name: str
    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    offset: int
    size: int


@dataclass(frozen=True)
class DiskLayout:
    disk_size: int
    disk_guid: uuid.UUID
    partitions: tuple[PlacedPartition, ...]

    def partition(self, name: str) -> PlacedPartition:
        for placed in self.partitions:
            if placed.name == name:
                return placed
        raise KeyError(name)


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def disk_layout(partitions: Sequence[DiskPartition], *, disk_size: int | None = None,
                seed: bytes) -> DiskLayout:
    """Where each partition goes and how large the disk is, without writing anything: the
    check a build runs before it writes."""
    placed = []
    offset = ALIGNMENT
    for index, part in enumerate(partitions):
        if part.size <= 0:
            raise OutputError(f"disk: partition {part.name!r} has size {part.size}; it must be "
                              "positive")
        size = _round_up(part.size, ALIGNMENT)
        unique = part.uuid or content_guid(seed, b"partition", index.to_bytes(4, "little"),
                                           part.name.encode())
        placed.append(PlacedPartition(part.name, part.type_guid, unique, offset, size))
        offset += size
    needed = _round_up(offset + TAIL_SECTORS * SECTOR, ALIGNMENT)
    if disk_size is None:
        disk_size = needed
    elif disk_size % SECTOR:
        raise DiskSizeError(f"disk: size {disk_size} is not a multiple of {SECTOR} bytes")
    elif disk_size < needed:
        raise DiskSizeError(f"disk: size {disk_size} bytes is too small for the partitions; "
                            f"it needs at least {needed} bytes ({needed // MIB} MiB)")
    return DiskLayout(disk_size, content_guid(seed, b"disk"), tuple(placed))


def _skip(out: BinaryIO, count: int) -> None:
    """Leave ``count`` zero bytes: a hole where ``out`` can seek, written zeros otherwise."""
    if count <= 0:
        return
    if out.seekable():
        out.seek(count, io.SEEK_CUR)
        return
    while count > 0:
        step = min(count, _CHUNK)
        out.write(_ZEROS[:step])
        count -= step


def _copy(part: DiskPartition, out: BinaryIO, size: int) -> None:
    """The partition's bytes; zero runs of the source become holes as well."""
    written = 0
    if part.source is not None:
        while True:
            chunk = part.source.read(_CHUNK)
            if not chunk:
                break
            if written + len(chunk) > size:
                raise OutputError(f"disk: the contents of partition {part.name!r} are larger "
                                  f"than its {size} bytes")
            if len(chunk) == _CHUNK and chunk == _ZEROS:
                _skip(out, len(chunk))
            else:
                out.write(chunk)
            written += len(chunk)
    _skip(out, size - written)


def write_gpt_disk(partitions: Sequence[DiskPartition], out: BinaryIO, *,
                   disk_size: int | None = None, seed: bytes) -> DiskLayout:
    """Write the whole disk to ``out`` (a new, empty file or a stream) and say where each
    partition is. On a seekable ``out`` zero runs are left as holes (a sparse file)."""
    layout = disk_layout(partitions, disk_size=disk_size, seed=seed)
    tables = partition_tables(
        [GptPartition(placed.type_guid, placed.unique_guid, placed.offset // SECTOR,
                      (placed.offset + placed.size) // SECTOR - 1, placed.name, part.attributes)
         for placed, part in zip(layout.partitions, partitions, strict=True)],
        disk_sectors=layout.disk_size // SECTOR, disk_guid=layout.disk_guid)
    out.write(tables.head)
    position = len(tables.head)
    for placed, part in zip(layout.partitions, partitions, strict=True):
        _skip(out, placed.offset - position)
        _copy(part, out, placed.size)
        position = placed.offset + placed.size
    _skip(out, tables.tail_offset - position)
    out.write(tables.tail)
    return layout
