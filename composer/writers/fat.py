"""A deterministic FAT12/FAT16 image writer for EFI system partitions.

UEFI firmware reads its boot loader from a FAT file system: on a CD through the
El Torito EFI entry, on a disk through the EFI partition. mkfs.fat and mtools
stamp the clock and a random serial into the image; this writer takes the
volume serial and the timestamp from the caller and lays files out in sorted
order, so equal inputs give equal bytes. Names must be 8.3 (what an ESP needs:
``EFI/BOOT/BOOTX64.EFI``); they are stored upper-case, as FAT compares them
without case. Each file's clusters are contiguous, and :func:`build_fat` says where
each file's bytes start, so that a container (an ISO) can point into them.

Timestamps: FAT stores the years 1980 to 2107 only; a build timestamp outside that range
is clamped to its nearest end (the file times in an ESP inform, nothing reads them).
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from composer.errors import OutputError

SECTOR = 512
RESERVED_SECTORS = 1
FATS = 2
ROOT_ENTRIES = 512
MEDIA = 0xF8
FAT12_LIMIT = 4085
FAT16_LIMIT = 65525
GUARD = 16
"""Cluster counts this close to a FAT type boundary are moved away from it: drivers disagree
about the exact limit."""
DOS_EPOCH = 315532800  # 1980-01-01T00:00:00Z: FAT cannot store anything earlier.
DOS_END = 4354819198  # 2107-12-31T23:59:58Z: nor anything later.
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_VOLUME_ID = 0x08
OEM_NAME = b"COMPOSER"

_NAME = re.compile(r"^[A-Z0-9_~!#$%&'()@^`{}-]{1,8}(\.[A-Z0-9_~!#$%&'()@^`{}-]{1,3})?$")


@dataclass(frozen=True)
class FatFile:
    """A file for the image: its path (``EFI/BOOT/BOOTX64.EFI``) and its bytes."""

    path: str
    data: bytes


@dataclass
class _Dir:
    name: str
    children: dict[str, _Dir | FatFile]
    cluster: int = 0


def _short_name(part: str, path: str) -> bytes:
    upper = part.upper()
    if not _NAME.fullmatch(upper):
        raise OutputError(f"EFI image: {path!r}: {part!r} is not an 8.3 FAT name")
    base, _, ext = upper.partition(".")
    return base.ljust(8).encode() + ext.ljust(3).encode()


def _dos_datetime(epoch: int) -> tuple[int, int]:
    t = time.gmtime(min(max(epoch, DOS_EPOCH), DOS_END))
    date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    clock = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    return date, clock


def _tree(files: Sequence[FatFile]) -> _Dir:
    root = _Dir("", {})
    for file in files:
        parts = [p for p in file.path.split("/") if p]
        if not parts:
            raise OutputError(f"EFI image: empty path {file.path!r}")
        for part in parts:
            _short_name(part, file.path)
        node = root
        for part in parts[:-1]:
            key = part.upper()
            child = node.children.setdefault(key, _Dir(part, {}))
            if not isinstance(child, _Dir):
                raise OutputError(f"EFI image: {file.path!r} is below a file")
            node = child
        key = parts[-1].upper()
        if key in node.children:
            raise OutputError(f"EFI image: {file.path!r} is given twice")
        node.children[key] = FatFile(file.path, file.data)
    return root


def _dirs(node: _Dir) -> list[_Dir]:
    found = [node]
    for key in sorted(node.children):
        child = node.children[key]
        if isinstance(child, _Dir):
            found.extend(_dirs(child))
    return found


@dataclass(frozen=True)
class FatImage:
    """An image and, for each file given, the byte offset of its (contiguous) data."""

    data: bytes
    offsets: dict[str, int]


@dataclass(frozen=True)
class _Geometry:
    sectors_per_cluster: int
    clusters: int
    fat_sectors: int
    fat16: bool
    reserved: int = RESERVED_SECTORS

    @property
    def cluster_bytes(self) -> int:
        return self.sectors_per_cluster * SECTOR

    @property
    def data_start(self) -> int:
        return self.reserved + FATS * self.fat_sectors + ROOT_ENTRIES * 32 // SECTOR

    @property
    def total_sectors(self) -> int:
        return self.data_start + self.clusters * self.sectors_per_cluster


def _clusters_for(size: int, cluster_bytes: int) -> int:
    return max(1, -(-size // cluster_bytes)) if size else 0


def _geometry(root: _Dir, min_bytes: int, align: int) -> _Geometry:
    for spc in (1, 2, 4, 8, 16, 32, 64):
        cluster_bytes = spc * SECTOR
        if cluster_bytes % align:
            continue
        needed = 0
        for node in _dirs(root):
            entries = len(node.children) + (2 if node is not root else 0)
            if node is not root:
                needed += _clusters_for(entries * 32, cluster_bytes)
            needed += sum(_clusters_for(len(c.data), cluster_bytes)
                          for c in node.children.values() if isinstance(c, FatFile))
        # One cluster at least: a FAT without a data cluster is no file system to fsck.fat.
        clusters = max(needed, -(-min_bytes // cluster_bytes), 1)
        if abs(clusters - FAT12_LIMIT) < GUARD:
            clusters = FAT12_LIMIT + GUARD
        if clusters >= FAT16_LIMIT - GUARD:
            continue
        fat16 = clusters >= FAT12_LIMIT
        fat_bytes = (clusters + 2) * 2 if fat16 else -(-(clusters + 2) * 3 // 2)
        geometry = _Geometry(spc, clusters, -(-fat_bytes // SECTOR), fat16)
        # Reserved sectors pad the data area to the alignment (every cluster then starts on it).
        pad = -geometry.data_start % (align // SECTOR)
        return _Geometry(spc, clusters, geometry.fat_sectors, fat16, RESERVED_SECTORS + pad)
    raise OutputError("EFI image: the files do not fit in a FAT16 file system (2 GiB)")


def _boot_sector(geo: _Geometry, *, serial: int, label: bytes) -> bytes:
    total = geo.total_sectors
    small, large = (total, 0) if total < 0x10000 else (0, total)
    sector = bytearray(SECTOR)
    sector[0:3] = b"\xeb\x3c\x90"
    sector[3:11] = OEM_NAME
    struct.pack_into("<HBHBHHBHHHII", sector, 11, SECTOR, geo.sectors_per_cluster,
                     geo.reserved, FATS, ROOT_ENTRIES, small, MEDIA, geo.fat_sectors,
                     32, 64, 0, large)
    struct.pack_into("<BBBI11s8s", sector, 36, 0x80, 0, 0x29, serial, label,
                     b"FAT16   " if geo.fat16 else b"FAT12   ")
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _entry(name: bytes, attr: int, cluster: int, size: int, stamp: tuple[int, int]) -> bytes:
    date, clock = stamp
    return struct.pack("<11sBBBHHHHHHHI", name, attr, 0, 0, clock, date, date, 0, clock, date,
                       cluster, size)


def fat_image(files: Sequence[FatFile], *, serial: int, mtime: int, label: str = "EFIBOOT",
              min_bytes: int = 0) -> bytes:
    """A FAT image holding ``files``; ``min_bytes`` makes the data area at least that large."""
    return build_fat(files, serial=serial, mtime=mtime, label=label, min_bytes=min_bytes).data


def build_fat(files: Sequence[FatFile], *, serial: int, mtime: int, label: str = "EFIBOOT",
              min_bytes: int = 0, align: int = SECTOR) -> FatImage:
    """:func:`fat_image`, with every file's data starting at a multiple of ``align`` bytes
    (a power of two from 512 to 32768), and where each file's data starts."""
    if align < SECTOR or align > 64 * SECTOR or align & (align - 1):
        raise OutputError(f"EFI image: alignment {align} is not a power of two from 512 to 32768")
    root = _tree(files)
    geo = _geometry(root, min_bytes, align)
    stamp = _dos_datetime(mtime)
    cluster_bytes = geo.cluster_bytes
    chains: list[tuple[int, int]] = []  # (first cluster, number of clusters)
    data = bytearray(geo.clusters * cluster_bytes)
    next_cluster = 2

    def allocate(size: int) -> int:
        nonlocal next_cluster
        count = _clusters_for(size, cluster_bytes)
        if count == 0:
            return 0
        first = next_cluster
        next_cluster += count
        chains.append((first, count))
        return first

    def place(cluster: int, payload: bytes) -> None:
        offset = (cluster - 2) * cluster_bytes
        data[offset:offset + len(payload)] = payload

    offsets: dict[str, int] = {}
    directories = _dirs(root)
    for node in directories[1:]:
        node.cluster = allocate((len(node.children) + 2) * 32)
    root_table = bytearray(ROOT_ENTRIES * 32)
    label_bytes = label.upper().encode("ascii")[:11].ljust(11)
    parents: dict[int, int] = {}
    for node in directories:
        for child in node.children.values():
            if isinstance(child, _Dir):
                parents[id(child)] = node.cluster
    for node in directories:
        records = []
        if node is root:
            records.append(_entry(label_bytes, ATTR_VOLUME_ID, 0, 0, stamp))
        else:
            records.append(_entry(b".          ", ATTR_DIRECTORY, node.cluster, 0, stamp))
            records.append(_entry(b"..         ", ATTR_DIRECTORY, parents[id(node)], 0, stamp))
        for key in sorted(node.children):
            child = node.children[key]
            name = _short_name(key, child.path if isinstance(child, FatFile) else key)
            if isinstance(child, _Dir):
                records.append(_entry(name, ATTR_DIRECTORY, child.cluster, 0, stamp))
            else:
                first = allocate(len(child.data))
                if first:
                    place(first, child.data)
                offsets[child.path] = geo.data_start * SECTOR + (first - 2) * cluster_bytes \
                    if first else 0
                records.append(_entry(name, ATTR_ARCHIVE, first, len(child.data), stamp))
        table = b"".join(records)
        if node is root:
            if len(records) > ROOT_ENTRIES:
                raise OutputError(f"EFI image: more than {ROOT_ENTRIES - 1} files in the root")
            root_table[:len(table)] = table
        else:
            place(node.cluster, table)
    fat = _fat_table(geo, chains)
    image = bytearray(_boot_sector(geo, serial=serial, label=label_bytes))
    image.extend(b"\0" * (geo.reserved * SECTOR - len(image)))
    for _ in range(FATS):
        image.extend(fat)
    image.extend(root_table)
    image.extend(data)
    assert len(image) == geo.total_sectors * SECTOR
    return FatImage(bytes(image), offsets)


def _fat_table(geo: _Geometry, chains: list[tuple[int, int]]) -> bytes:
    values = [0] * (geo.clusters + 2)
    end = 0xFFFF if geo.fat16 else 0xFFF
    values[0] = (end & ~0xFF) | MEDIA
    values[1] = end
    for first, count in chains:
        for cluster in range(first, first + count - 1):
            values[cluster] = cluster + 1
        values[first + count - 1] = end
    if geo.fat16:
        table = struct.pack(f"<{len(values)}H", *values)
    else:
        packed = bytearray()
        padded = values + [0] * (len(values) % 2)
        for low, high in zip(padded[0::2], padded[1::2], strict=True):
            packed.extend(struct.pack("<I", low | (high << 12))[:3])
        table = bytes(packed)
    return table + b"\0" * (geo.fat_sectors * SECTOR - len(table))
