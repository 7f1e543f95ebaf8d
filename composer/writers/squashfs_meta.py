"""The metadata side of squashfs 4.0: 8 KiB metadata blocks, lookup tables, xattrs, superblock.

A squashfs image keeps its inodes, directories and tables in a stream of metadata blocks:
each holds up to 8192 bytes, compressed on its own, behind a two-byte length whose top bit
says "stored uncompressed". Positions in that stream are (compressed start of the block,
offset inside the uncompressed block), so a writer must know every earlier block's
compressed size before it can name a position: :class:`MetadataWriter` compresses a block
as soon as it is full and keeps the running total.

The lookup tables (fragments, inode export, ids, xattr ids) are arrays cut into metadata
blocks followed by an index of the blocks' absolute positions; the kernel checks that each
index ends exactly where the next table starts, which :func:`lookup_table` guarantees when
the tables are written back to back in the order the kernel reads them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from composer.errors import OutputError

METADATA_SIZE = 8192
UNCOMPRESSED_METADATA = 1 << 15
MAGIC = 0x73717368
NO_TABLE = 0xFFFFFFFFFFFFFFFF
NO_XATTR = 0xFFFFFFFF

FLAG_UNCOMPRESSED_INODES = 0x0001
FLAG_UNCOMPRESSED_DATA = 0x0002
FLAG_UNCOMPRESSED_FRAGMENTS = 0x0008
FLAG_ALWAYS_FRAGMENTS = 0x0020
FLAG_DUPLICATES = 0x0040
FLAG_EXPORTABLE = 0x0080
FLAG_UNCOMPRESSED_XATTRS = 0x0100
FLAG_UNCOMPRESSED_IDS = 0x0800

_SUPERBLOCK = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")
SUPERBLOCK_SIZE = _SUPERBLOCK.size

_XATTR_PREFIXES = (("user.", 0), ("trusted.", 1), ("security.", 2))

Packer = Callable[[bytes], bytes | None]
"""Compresses one block; None when compression does not make it smaller (store it raw)."""


class MetadataWriter:
    """One metadata stream (the inode table, the directory table, a lookup table's entries)."""

    def __init__(self, pack: Packer) -> None:
        self._pack = pack
        self._blocks: list[bytes] = []
        self.block_starts: list[int] = []
        """The compressed start of each finished block, relative to the stream's start."""
        self.size = 0
        self._buffer = bytearray()

    @property
    def position(self) -> tuple[int, int]:
        """Where the next byte goes: (compressed block start, offset in the uncompressed block)."""
        return self.size, len(self._buffer)

    @property
    def uncompressed(self) -> int:
        return len(self._blocks) * METADATA_SIZE + len(self._buffer)

    def block_start(self, uncompressed_offset: int) -> int:
        """The compressed start of the block that holds ``uncompressed_offset`` (a byte already
        written or the next one)."""
        number = uncompressed_offset // METADATA_SIZE
        return self.block_starts[number] if number < len(self._blocks) else self.size

    def write(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` (it may straddle blocks); return the position of its first byte."""
        where = self.position
        self._buffer += data
        while len(self._buffer) >= METADATA_SIZE:
            self._seal(bytes(self._buffer[:METADATA_SIZE]))
            del self._buffer[:METADATA_SIZE]
        return where

    def _seal(self, raw: bytes) -> None:
        packed = self._pack(raw)
        block = (struct.pack("<H", len(packed)) + packed if packed is not None
                 else struct.pack("<H", len(raw) | UNCOMPRESSED_METADATA) + raw)
        self.block_starts.append(self.size)
        self._blocks.append(block)
        self.size += len(block)

    def finish(self) -> bytes:
        """All blocks, the last one short if need be."""
        if self._buffer:
            self._seal(bytes(self._buffer))
            self._buffer.clear()
        return b"".join(self._blocks)


def inode_ref(position: tuple[int, int]) -> int:
    block, offset = position
    if block >= 1 << 32:
        raise OutputError("squashfs: the inode table exceeds 4 GiB")
    return block << 16 | offset


def lookup_table(entries: bytes, start: int, pack: Packer) -> tuple[bytes, bytes]:
    """An array as metadata blocks to be written at absolute position ``start``, and the index
    of their positions that follows them (the superblock points at the index)."""
    writer = MetadataWriter(pack)
    writer.write(entries)
    blocks = writer.finish()
    return blocks, b"".join(struct.pack("<Q", start + offset) for offset in writer.block_starts)


def split_xattr_name(name: str, path: str) -> tuple[int, bytes]:
    """The squashfs prefix id and the rest of the name: the format stores only the user,
    trusted and security namespaces."""
    for prefix, kind in _XATTR_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            rest = name[len(prefix):].encode("utf-8", "surrogateescape")
            if len(rest) > 0xFFFF:
                break
            return kind, rest
    raise OutputError(f"squashfs: {path or '/'}: xattr {name!r} cannot be stored (squashfs "
                      "keeps user.*, trusted.* and security.* attributes only)")


@dataclass
class XattrTables:
    """Distinct xattr sets, each written once; inodes refer to a set by its id."""

    pack: Packer

    def __post_init__(self) -> None:
        self._values = MetadataWriter(self.pack)
        self._ids: dict[tuple[tuple[str, bytes], ...], int] = {}
        self._id_entries = bytearray()

    def __len__(self) -> int:
        return len(self._ids)

    def id_of(self, xattrs: tuple[tuple[str, bytes], ...], path: str) -> int:
        if not xattrs:
            return NO_XATTR
        known = self._ids.get(xattrs)
        if known is not None:
            return known
        pairs = [(*split_xattr_name(name, path), value) for name, value in xattrs]
        ref = inode_ref(self._values.position)
        size = 0
        for kind, name, value in pairs:
            self._values.write(struct.pack("<HH", kind, len(name)) + name
                               + struct.pack("<I", len(value)) + value)
            size += len(name) + len(value)
        self._id_entries += struct.pack("<QII", ref, len(pairs), size)
        number = self._ids[xattrs] = len(self._ids)
        return number

    def tables(self, start: int) -> tuple[bytes, int]:
        """The key/value blocks, the id blocks and the id table header with its index, at
        absolute ``start``; return the bytes and the header's position."""
        values = self._values.finish()
        blocks, index = lookup_table(bytes(self._id_entries), start + len(values), self.pack)
        header = struct.pack("<QII", start, len(self._ids), 0)
        return values + blocks + header + index, start + len(values) + len(blocks)


@dataclass(frozen=True)
class Superblock:
    inodes: int
    mtime: int
    block_size: int
    fragments: int
    compression: int
    flags: int
    ids: int
    root_inode: int
    bytes_used: int
    id_table: int
    xattr_id_table: int
    inode_table: int
    directory_table: int
    fragment_table: int
    lookup_table: int

    def pack(self) -> bytes:
        return _SUPERBLOCK.pack(
            MAGIC, self.inodes, self.mtime, self.block_size, self.fragments, self.compression,
            self.block_size.bit_length() - 1, self.flags, self.ids, 4, 0, self.root_inode,
            self.bytes_used, self.id_table, self.xattr_id_table, self.inode_table,
            self.directory_table, self.fragment_table, self.lookup_table)


def pack_u32s(values: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)
