"""GPT disk images, raw or qcow2, as fields and files: the partition table, then each
partition by what it holds (a FAT ESP with its UKI, a squashfs root with every member, a
dm-verity hash partition's superblock, or a digest).

A qcow2 image is read through :class:`Qcow2Bytes`, which presents the guest's disk bytes
(QEMU's qcow2 specification, versions 2 and 3): unallocated and zero clusters read as
zeros, compressed clusters are inflated (raw deflate, at most one cluster). Nothing in the
header or the tables is trusted: every offset is checked against the file, every table's
size against a bound, and backing files, encryption, external data files and extended L2
entries are refused with one line, since composer never writes them.
"""

from __future__ import annotations

import hashlib
import io
import struct
import uuid
from collections.abc import Callable

from composer.diff.fat import looks_like_fat
from composer.diff.model import FileEntry, Snapshot, join
from composer.diff.partitions import gpt_fields, mbr_fields
from composer.diff.report import Scalar
from composer.diff.source import Bytes
from composer.errors import ArchiveError
from composer.inflate import InflateError, raw_inflater
from composer.squashfsread import SquashEntry, SquashLimits, read_squashfs

QCOW2_MAGIC = b"QFI\xfb"
MAX_L1_ENTRIES = 1 << 22
"""4 Mi L1 entries: 2 PiB of guest disk at 64 KiB clusters."""
MAX_VIRTUAL_SIZE = 1 << 44
_QCOW2_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")
_OFFSET_MASK = 0x00FFFFFFFFFFFE00
_COMPRESSED = 1 << 62
_ZERO = 1
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
SQUASHFS_MAGIC = b"hsqs"
VERITY_MAGIC = b"verity\0\0"
_VERITY = struct.Struct("<8sII16s32sIIQH6x256s")


def looks_like_disk(head: bytes) -> bool:
    """A qcow2 image, or a GPT disk (``EFI PART`` at byte 512 or 4096)."""
    return head[:4] == QCOW2_MAGIC or head[512:520] == b"EFI PART" \
        or head[4096:4104] == b"EFI PART"


class Qcow2Bytes(Bytes):
    """The guest bytes of a qcow2 image (see the module docstring)."""

    def __init__(self, image: Bytes, charge: Callable[[int, str], None]) -> None:
        self.image = image
        self.what = f"{image.what} (qcow2)"
        self._charge = charge
        if image.size < _QCOW2_HEADER.size:
            raise ArchiveError(f"{image.what}: a qcow2 header needs {_QCOW2_HEADER.size} bytes")
        (magic, version, backing, backing_size, cluster_bits, size, crypt, l1_size, l1_at,
         _refcount_at, _refcount_clusters, _snapshots, _snapshots_at) = _QCOW2_HEADER.unpack(
            image.read_at(0, _QCOW2_HEADER.size))
        if magic != QCOW2_MAGIC or version not in (2, 3):
            raise self.fail(f"version {version} (2 and 3 are read)")
        if backing or backing_size:
            raise self.fail("image with a backing file (composer writes self-contained images)")
        if crypt:
            raise self.fail(f"encryption method {crypt} (encrypted images are not read)")
        if not 9 <= cluster_bits <= 21:
            raise self.fail(f"cluster size 2^{cluster_bits} (2^9 to 2^21 allowed)")
        if version == 3:
            incompatible = struct.unpack(">Q", image.read_at(72, 8))[0]
            if incompatible & ~1:
                raise self.fail(f"incompatible features 0x{incompatible:x} (external data "
                                "file, compression type or extended L2 entries)")
        if size > MAX_VIRTUAL_SIZE:
            raise self.fail(f"virtual size {size} bytes (more than {MAX_VIRTUAL_SIZE})")
        self.cluster = 1 << cluster_bits
        self.l2_entries = self.cluster // 8
        needed = -(-size // (self.cluster * self.l2_entries))
        if l1_size > MAX_L1_ENTRIES or l1_size < needed:
            raise self.fail(f"L1 table of {l1_size} entries for {size} bytes (needs {needed})")
        if l1_at % self.cluster or l1_at + 8 * l1_size > image.size:
            raise self.fail(f"L1 table at byte {l1_at} lies outside the file")
        self.l1 = struct.unpack(f">{l1_size}Q", image.read_at(l1_at, 8 * l1_size))
        self.size = size
        self.version = version
        self.cluster_bits = cluster_bits
        self._l2: dict[int, tuple[int, ...]] = {}

    def fail(self, why: str) -> ArchiveError:
        return ArchiveError(f"{self.image.what}: qcow2 {why}")

    def fields(self) -> dict[str, Scalar]:
        return {"version": self.version, "cluster size": self.cluster,
                "virtual size": self.size, "L1 entries": len(self.l1)}

    def _table(self, index: int) -> tuple[int, ...] | None:
        at = self.l1[index] & _OFFSET_MASK
        if not at:
            return None
        if index not in self._l2:
            if at % self.cluster or at + self.cluster > self.image.size:
                raise self.fail(f"L2 table {index} at byte {at} lies outside the file")
            if len(self._l2) > 64:
                self._l2.clear()
            self._l2[index] = struct.unpack(f">{self.l2_entries}Q",
                                            self.image.read_at(at, self.cluster))
        return self._l2[index]

    def _cluster(self, number: int) -> bytes:
        table = self._table(number // self.l2_entries)
        entry = table[number % self.l2_entries] if table is not None else 0
        if entry & _COMPRESSED:
            bits = 62 - (self.cluster_bits - 8)
            at = entry & ((1 << bits) - 1)
            length = (((entry >> bits) & ((1 << (self.cluster_bits - 8)) - 1)) + 1) * 512 \
                - (at & 511)
            length = min(length, self.image.size - at)
            if at >= self.image.size or length <= 0:
                raise self.fail(f"compressed cluster {number} at byte {at} lies outside the file")
            try:
                data = raw_inflater().decompress(self.image.read_at(at, length), self.cluster)
            except InflateError as exc:
                raise self.fail(f"compressed cluster {number} does not inflate ({exc})") from None
            if len(data) != self.cluster:
                raise self.fail(f"compressed cluster {number} inflates to {len(data)} bytes, "
                                f"not {self.cluster}")
            return data
        at = entry & _OFFSET_MASK
        if entry & _ZERO or not at:
            return bytes(self.cluster)
        if at % self.cluster or at + self.cluster > self.image.size:
            raise self.fail(f"cluster {number} at byte {at} lies outside the file")
        return self.image.read_at(at, self.cluster)

    def _read(self, pos: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            number, skip = divmod(pos, self.cluster)
            piece = self._cluster(number)[skip:skip + length]
            self._charge(len(piece), self.what)
            out += piece
            pos += len(piece)
            length -= len(piece)
        return bytes(out)


class _File(io.RawIOBase):
    """``Bytes`` as a seekable binary file, for the squashfs reader."""

    def __init__(self, source: Bytes) -> None:
        self.source = source
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 \
            else self.source.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        end = min(self.source.size, self.pos + len(buffer))
        data = self.source.read_at(self.pos, max(0, end - self.pos))
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _squash_entry(entry: SquashEntry) -> FileEntry:
    return FileEntry(path=entry.path, kind=entry.type, mode=entry.mode & 0o7777, uid=entry.uid,
                     gid=entry.gid, mtime=entry.mtime, size=entry.size, sha256=entry.sha256,
                     link=entry.target,
                     device=f"{entry.rdev[0]},{entry.rdev[1]}" if entry.rdev else "",
                     xattrs=tuple((k, v.hex()) for k, v in entry.xattrs),
                     header=(("links", entry.nlink),))


def _verity_fields(content: Bytes) -> dict[str, Scalar]:
    (_, version, hash_type, raw_uuid, algorithm, data_block, hash_block, data_blocks,
     salt_size, salt) = _VERITY.unpack(content.read_at(0, _VERITY.size))
    rest = hashlib.sha256()
    for chunk in content.sub(512, content.size - 512, content.what).chunks():
        rest.update(chunk)
    return {"version": version, "hash type": hash_type, "UUID": str(uuid.UUID(bytes=raw_uuid)),
            "algorithm": algorithm.rstrip(b"\0").decode("ascii", "replace"),
            "data block size": data_block, "hash block size": hash_block,
            "data blocks": data_blocks, "salt": salt[:min(salt_size, 256)].hex(),
            "hash tree sha256": rest.hexdigest()}


def read_disk(snap: Snapshot, image: Bytes, *, prefix: str = "") -> None:
    """The partition table and every partition of a raw or qcow2 GPT disk image."""
    budget = snap.budget

    def at(where: str) -> str:
        return join(prefix, where)

    if image.read_at(0, 4) == QCOW2_MAGIC:
        image = Qcow2Bytes(image, budget.charge_bytes)
        snap.group(at("qcow2"), image.fields())
    snap.field(at("disk"), "size", image.size)
    tables = gpt_fields(image)
    if not tables:
        snap.field(at("disk"), "partition table", "no GPT")
    for where, fields in [*mbr_fields(image).items(), *tables.items()]:
        snap.group(at(where), fields)
    for where, fields in tables.items():
        if not where.startswith("GPT partition "):
            continue
        first, last, name = fields["first LBA"], fields["last LBA"], str(fields["name"])
        assert isinstance(first, int) and isinstance(last, int)
        scope = at(f"partition {name or where.removeprefix('GPT partition ')}")
        if last < first or (last + 1) * 512 > image.size:
            snap.field(scope, "contents", "not read (outside the disk)")
            continue
        content = image.sub(first * 512, (last - first + 1) * 512, f"{image.what}!{scope}")
        _read_partition(snap, content, scope, str(fields["type GUID"]))


def _read_partition(snap: Snapshot, content: Bytes, scope: str, type_guid: str) -> None:
    from composer.diff.iso import read_fat

    head = content.read_at(0, min(content.size, 4096))
    if type_guid == ESP_TYPE or looks_like_fat(head[:512]):
        snap.field(scope, "contents", "FAT")
        read_fat(snap, content, scope)
    elif head[:4] == SQUASHFS_MAGIC:
        limits = snap.budget.limits
        squash = read_squashfs(io.BufferedReader(_File(content), 1 << 16), source=content.what,
                               limits=SquashLimits(max_bytes=limits.max_bytes))
        snap.group(scope, {"contents": "squashfs", "compression": squash.compression,
                           "block size": squash.block_size, "mtime": squash.mtime,
                           "inodes": squash.inodes, "bytes used": squash.bytes_used})
        snap.add_files(scope, [_squash_entry(e) for e in squash.entries if e.path != "/"])
    elif head[:8] == VERITY_MAGIC:
        snap.field(scope, "contents", "dm-verity hash tree")
        snap.group(scope, _verity_fields(content))
    else:
        digest = hashlib.sha256()
        zeros = True
        for chunk in content.chunks():
            snap.budget.charge_bytes(len(chunk), content.what)
            digest.update(chunk)
            zeros = zeros and not chunk.strip(b"\0")
        snap.group(scope, {"contents": "zeros" if zeros else "data",
                           "sha256": digest.hexdigest()})
