"""FAT12/16/32 file systems (an EFI system partition) as fields and :class:`FileEntry` values.

The boot sector's BPB is checked before it is used (sector size, cluster size, counts,
sizes inside the image); the FAT type follows from the cluster count as the
specification says. Cluster chains are followed with a visited set and a length
bound, directories to a depth bound, and long names (VFAT) are put together from
their entries. Each file's bytes are returned as :class:`Bytes` over its clusters, so
a PE file inside can be read in place.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from composer.diff.report import Scalar
from composer.diff.source import Budget, Bytes, Joined
from composer.errors import ArchiveError

MAX_FAT = 16 << 20
MAX_DEPTH = 16
MAX_DIRECTORY = 4 << 20
ATTR_LFN = 0x0F
ATTR_DIRECTORY = 0x10
ATTR_VOLUME = 0x08


@dataclass(frozen=True)
class FatItem:
    path: str
    is_dir: bool
    size: int
    attributes: int
    mtime: str
    first_cluster: int
    data: Bytes | None


def looks_like_fat(head: bytes) -> bool:
    return (len(head) >= 512 and head[510:512] == b"\x55\xaa" and head[0] in (0xEB, 0xE9)
            and struct.unpack_from("<H", head, 11)[0] in (512, 1024, 2048, 4096))


def _date(date: int, time: int) -> str:
    return (f"{1980 + (date >> 9):04d}-{(date >> 5) & 15:02d}-{date & 31:02d} "
            f"{time >> 11:02d}:{(time >> 5) & 63:02d}:{(time & 31) * 2:02d}")


class FatVolume:
    """One FAT file system over ``image``."""

    def __init__(self, image: Bytes, budget: Budget) -> None:
        self.image = image
        self.budget = budget
        boot = image.read_at(0, 512)
        self.boot = boot
        if not looks_like_fat(boot):
            raise ArchiveError(f"{image.what}: not a FAT file system")
        self.sector = struct.unpack_from("<H", boot, 11)[0]
        self.per_cluster = boot[13]
        reserved = struct.unpack_from("<H", boot, 14)[0]
        self.fats = boot[16]
        self.root_entries = struct.unpack_from("<H", boot, 17)[0]
        total = struct.unpack_from("<H", boot, 19)[0] or struct.unpack_from("<I", boot, 32)[0]
        fat_sectors = struct.unpack_from("<H", boot, 22)[0] or struct.unpack_from("<I", boot, 36)[0]
        if self.per_cluster == 0 or self.per_cluster & (self.per_cluster - 1) or not reserved \
                or not 1 <= self.fats <= 4 or not fat_sectors:
            raise ArchiveError(f"{image.what}: FAT boot sector has impossible values")
        if total * self.sector > image.size:
            raise ArchiveError(f"{image.what}: FAT file system of {total * self.sector} bytes "
                               f"is larger than its {image.size}-byte image")
        root_sectors = (self.root_entries * 32 + self.sector - 1) // self.sector
        self.root_at = (reserved + self.fats * fat_sectors) * self.sector
        self.data_at = self.root_at + root_sectors * self.sector
        if self.data_at > total * self.sector:
            raise ArchiveError(f"{image.what}: FAT areas are larger than the file system")
        self.clusters = (total * self.sector - self.data_at) // (self.per_cluster * self.sector)
        self.bits = 12 if self.clusters < 4085 else 16 if self.clusters < 65525 else 32
        fat_bytes = fat_sectors * self.sector
        if fat_bytes > MAX_FAT:
            raise ArchiveError(f"{image.what}: a FAT of {fat_bytes} bytes, more than {MAX_FAT}")
        self.fat = image.read_at(reserved * self.sector, fat_bytes)
        budget.charge_bytes(fat_bytes, image.what)
        self.fat_sectors = fat_sectors
        self.total = total

    def fields(self) -> dict[str, Scalar]:
        b = self.boot
        ext = 64 if self.bits == 32 else 36
        found: dict[str, Scalar] = {
            "FAT type": f"FAT{self.bits}", "OEM name": b[3:11].decode("latin-1"),
            "bytes per sector": self.sector, "sectors per cluster": self.per_cluster,
            "reserved sectors": struct.unpack_from("<H", b, 14)[0], "FATs": self.fats,
            "root entries": self.root_entries, "total sectors": self.total,
            "media": f"0x{b[21]:02x}", "sectors per FAT": self.fat_sectors,
            "hidden sectors": struct.unpack_from("<I", b, 28)[0], "clusters": self.clusters}
        if b[ext + 2] == 0x29:
            found["volume serial"] = f"0x{struct.unpack_from('<I', b, ext + 3)[0]:08x}"
            found["volume label"] = b[ext + 7:ext + 18].decode("latin-1").rstrip()
            found["file system type"] = b[ext + 18:ext + 26].decode("latin-1").rstrip()
        return found

    def _next(self, cluster: int) -> int:
        if self.bits == 12:
            pos = cluster + cluster // 2
            if pos + 2 > len(self.fat):
                return -1
            value: int = struct.unpack_from("<H", self.fat, pos)[0]
            return value >> 4 if cluster & 1 else value & 0xFFF
        width = self.bits // 8
        pos = cluster * width
        if pos + width > len(self.fat):
            return -1
        value = int.from_bytes(self.fat[pos:pos + width], "little")
        return value & 0x0FFFFFFF if self.bits == 32 else value

    def chain(self, first: int, what: str) -> list[int]:
        end = {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}[self.bits]
        found: list[int] = []
        seen: set[int] = set()
        cluster = first
        while cluster < end:
            if not 2 <= cluster < self.clusters + 2:
                raise ArchiveError(f"{self.image.what}: {what}: cluster {cluster} is outside "
                                   "the file system")
            if cluster in seen:
                raise ArchiveError(f"{self.image.what}: {what}: its cluster chain loops")
            seen.add(cluster)
            found.append(cluster)
            cluster = self._next(cluster)
        return found

    def _clusters_bytes(self, clusters: list[int], size: int, what: str) -> Bytes:
        size_of = self.per_cluster * self.sector
        runs: list[tuple[int, int]] = []
        for c in clusters:
            if runs and runs[-1][0] + runs[-1][1] == c:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((c, 1))
        parts = [self.image.sub(self.data_at + (c - 2) * size_of, n * size_of, what)
                 for c, n in runs]
        return Joined(parts, size, what)

    def _directory(self, cluster: int, what: str) -> bytes:
        if cluster == 0 and self.bits != 32:
            return self.image.read_at(self.root_at, self.root_entries * 32)
        clusters = self.chain(cluster, what)
        length = len(clusters) * self.per_cluster * self.sector
        if length > MAX_DIRECTORY:
            raise ArchiveError(f"{self.image.what}: {what}: a directory of {length} bytes")
        return self._clusters_bytes(clusters, length, what).read_at(0, length)

    def items(self) -> list[FatItem]:
        root = struct.unpack_from("<I", self.boot, 44)[0] if self.bits == 32 else 0
        found: list[FatItem] = []
        seen: set[int] = set()
        stack = [("", root, 0)]
        while stack:
            parent, cluster, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise ArchiveError(f"{self.image.what}: FAT directories nested more than "
                                   f"{MAX_DEPTH} deep")
            if cluster in seen:
                raise ArchiveError(f"{self.image.what}: FAT directory {parent or '/'} is "
                                   "reached twice")
            seen.add(cluster)
            data = self._directory(cluster, parent or "/")
            self.budget.charge_bytes(len(data), self.image.what)
            long_parts: dict[int, str] = {}
            for pos in range(0, len(data) - 31, 32):
                entry = data[pos:pos + 32]
                if entry[0] == 0:
                    break
                attr = entry[11]
                if entry[0] == 0xE5:
                    long_parts = {}
                    continue
                if attr == ATTR_LFN:
                    text = (entry[1:11] + entry[14:26] + entry[28:32]).decode("utf-16-le",
                                                                              "replace")
                    long_parts[entry[0] & 0x1F] = text.split("\0", 1)[0]
                    continue
                if attr & ATTR_VOLUME:
                    long_parts = {}
                    continue
                short = entry[0:8].decode("latin-1").rstrip()
                ext = entry[8:11].decode("latin-1").rstrip()
                name = "".join(long_parts[k] for k in sorted(long_parts)) if long_parts else \
                    short + ("." + ext if ext else "")
                long_parts = {}
                if name in (".", ".."):
                    continue
                path = self.budget.name(f"{parent}/{name}", self.image.what)
                self.budget.charge_entry(self.image.what, len(path))
                first = struct.unpack_from("<H", entry, 26)[0]
                if self.bits == 32:
                    first |= struct.unpack_from("<H", entry, 20)[0] << 16
                size = struct.unpack_from("<I", entry, 28)[0]
                is_dir = bool(attr & ATTR_DIRECTORY)
                mtime = _date(struct.unpack_from("<H", entry, 24)[0],
                              struct.unpack_from("<H", entry, 22)[0])
                data_bytes = None
                if is_dir:
                    stack.append((path, first, depth + 1))
                elif size:
                    clusters = self.chain(first, path)
                    data_bytes = self._clusters_bytes(clusters, size, f"{self.image.what}!{path}")
                found.append(FatItem(path, is_dir, size if not is_dir else 0, attr, mtime,
                                     first, data_bytes))
        return found
