"""A deterministic squashfs 4.0 writer: one walk of a FileTree into the image a read-only root
partition holds.

Written here rather than by ``mksquashfs`` so that the bytes depend on nothing but the tree:
not on squashfs-tools' version (4.5.1 gives the root directory to whoever runs it), not on
the host's zlib (blocks are compressed by the pinned zlib-ng, :func:`zlib_block`, which
squashfs's "gzip" compressor id stores as zlib streams), not on the clock (every inode and
the superblock carry the caller's ``mtime``), and not on thread timing (blocks are compressed
in parallel but written in a fixed order).

Layout, as mksquashfs lays it out and as the kernel's mount-time checks require: superblock;
file data in sorted path order (full blocks, each compressed or stored raw when compression
does not help, all-zero blocks as holes; every file's tail packed with other tails into
fragment blocks); inode table; directory table; fragment table; inode lookup (export) table;
id table; xattr tables; zeros to the next 4 KiB. Identical contents are stored once.
File data is streamed from each blob; only the metadata is held in memory.
"""

from __future__ import annotations

import os
import struct
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from composer.errors import OutputError
from composer.tree import Blob, Entry, EntryType, FileTree, parent_of
from composer.writers.compress import zlib_block
from composer.writers.squashfs_meta import (
    FLAG_ALWAYS_FRAGMENTS,
    FLAG_DUPLICATES,
    FLAG_EXPORTABLE,
    FLAG_UNCOMPRESSED_DATA,
    FLAG_UNCOMPRESSED_FRAGMENTS,
    FLAG_UNCOMPRESSED_IDS,
    FLAG_UNCOMPRESSED_INODES,
    FLAG_UNCOMPRESSED_XATTRS,
    METADATA_SIZE,
    NO_TABLE,
    NO_XATTR,
    SUPERBLOCK_SIZE,
    MetadataWriter,
    Packer,
    Superblock,
    XattrTables,
    inode_ref,
    lookup_table,
    pack_u32s,
    split_xattr_name,
)

GZIP_ID = 1
PAD = 4096
UNCOMPRESSED_BLOCK = 1 << 24
NO_FRAGMENT = 0xFFFFFFFF
NAME_MAX = 256
SYMLINK_MAX = 4096
"""The kernel refuses a symlink inode whose target is longer than a page."""
DIR_COUNT = 256
EXTENDED = 7
"""An extended inode's type is its basic type plus 7."""
MAX_IDS = 0xFFFF

_TYPE = {EntryType.DIR: 1, EntryType.FILE: 2, EntryType.SYMLINK: 3, EntryType.BLOCK: 4,
         EntryType.CHAR: 5, EntryType.FIFO: 6}
_U32 = 1 << 32


def write_squashfs(tree: FileTree, out: BinaryIO, *, mtime: int,
                   compression: Literal["gzip", "none"] = "gzip",
                   block_size: int = 131072) -> int:
    """Writes the image at out's current position; returns its size, padded to 4096 bytes.

    ``out`` must be seekable (the superblock, written last, goes first). Everything the
    format cannot hold is refused before the first byte is written.
    """
    if compression not in ("gzip", "none"):
        raise OutputError(f"squashfs: unknown compression {compression!r} (gzip or none)")
    if not (4096 <= block_size <= 1 << 20) or block_size & (block_size - 1):
        raise OutputError(f"squashfs: block size {block_size} is not a power of two from "
                          "4096 to 1048576")
    if not 0 <= mtime < _U32:
        raise OutputError(f"squashfs: time {mtime} does not fit 32 bits")
    plan = _plan(tree)
    compress = compression == "gzip"
    pack = _metadata_packer(compress)
    base = out.tell()
    out.write(bytes(SUPERBLOCK_SIZE))
    data = _DataWriter(out, block_size, compress)
    try:
        files = data.write_files(plan)
    finally:
        data.close()
    meta = _Metadata(plan, files, mtime, pack)
    root = meta.write_tree()
    tail = _Tail(data.position, pack)
    inode_table = tail.place(meta.inodes.finish())
    directory_table = tail.place(meta.dirs.finish())
    fragment_table = tail.table(b"".join(
        struct.pack("<QII", start, size, 0) for start, size in data.fragments))
    lookup = tail.table(b"".join(struct.pack("<Q", ref) for ref in meta.export))
    id_table = tail.table(pack_u32s(meta.ids))
    xattr_table = NO_TABLE
    if len(meta.xattrs):
        chunk, xattr_table = meta.xattrs.tables(tail.position)
        tail.place(chunk)
    bytes_used = tail.position
    padding = -bytes_used % PAD
    out.write(b"".join(tail.parts) + bytes(padding))
    flags = FLAG_ALWAYS_FRAGMENTS | FLAG_DUPLICATES | FLAG_EXPORTABLE
    if not compress:
        flags |= (FLAG_UNCOMPRESSED_INODES | FLAG_UNCOMPRESSED_DATA | FLAG_UNCOMPRESSED_FRAGMENTS
                  | FLAG_UNCOMPRESSED_XATTRS | FLAG_UNCOMPRESSED_IDS)
    superblock = Superblock(
        inodes=plan.inode_count, mtime=mtime, block_size=block_size,
        fragments=len(data.fragments), compression=GZIP_ID, flags=flags, ids=len(meta.ids),
        root_inode=root, bytes_used=bytes_used, id_table=id_table, xattr_id_table=xattr_table,
        inode_table=inode_table, directory_table=directory_table,
        fragment_table=fragment_table, lookup_table=lookup)
    out.seek(base)
    out.write(superblock.pack())
    out.seek(base + bytes_used + padding)
    return bytes_used + padding


class _Tail:
    """The tables after the data, in the order the kernel's mount checks expect."""

    def __init__(self, position: int, pack: Packer) -> None:
        self.position = position
        self.parts: list[bytes] = []
        self._pack = pack

    def place(self, chunk: bytes) -> int:
        start = self.position
        self.parts.append(chunk)
        self.position += len(chunk)
        return start

    def table(self, entries: bytes) -> int:
        """A lookup table's blocks and index; return the index's position."""
        blocks, index = lookup_table(entries, self.position, self._pack)
        self.place(blocks)
        return self.place(index)


def _metadata_packer(compress: bool) -> Packer:
    def pack(raw: bytes) -> bytes | None:
        if not compress:
            return None
        packed = zlib_block(raw)
        return packed if len(packed) < len(raw) else None
    return pack


def _pack_block(raw: bytes, compress: bool) -> tuple[bytes, int]:
    """A data or fragment block as stored, and its size field (bit 24: stored raw)."""
    if compress:
        packed = zlib_block(raw)
        if len(packed) < len(raw):
            return packed, len(packed)
    return raw, len(raw) | UNCOMPRESSED_BLOCK


# -- the plan: checks, children, inode numbers ------------------------------------------------

@dataclass
class _Plan:
    entries: list[Entry]
    children: dict[str, list[Entry]]
    numbers: dict[str, int]
    nlinks: Counter[int]
    inode_count: int


def _name(path: str) -> bytes:
    return path.rsplit("/", 1)[-1].encode("utf-8", "surrogateescape")


def _plan(tree: FileTree) -> _Plan:
    """Refuse what squashfs cannot store, then number the inodes: a directory's children get
    consecutive numbers, so its listing needs few headers; hard links share one."""
    entries = tree.walk()
    children: dict[str, list[Entry]] = {}
    nlinks: Counter[int] = Counter()
    for entry in entries:
        _check(entry)
        if entry.path:
            children.setdefault(parent_of(entry.path), []).append(entry)
        if entry.type == EntryType.FILE and entry.link_id:
            nlinks[entry.link_id] += 1
    numbers = {"": 1}
    by_link: dict[int, int] = {}
    count = 1
    for entry in entries:
        for child in children.get(entry.path, ()) if entry.type == EntryType.DIR else ():
            if child.type == EntryType.FILE and child.link_id in by_link:
                numbers[child.path] = by_link[child.link_id]
                continue
            count += 1
            numbers[child.path] = count
            if child.type == EntryType.FILE and child.link_id:
                by_link[child.link_id] = count
    return _Plan(entries, children, numbers, nlinks, count)


def _check(entry: Entry) -> None:
    where = f"squashfs: {entry.path or '/'}"
    if entry.type not in _TYPE:
        raise OutputError(f"{where}: entry type {entry.type} cannot be stored")
    if entry.path and len(_name(entry.path)) > NAME_MAX:
        raise OutputError(f"{where}: name longer than {NAME_MAX} bytes")
    if not (0 <= entry.uid < _U32 and 0 <= entry.gid < _U32):
        raise OutputError(f"{where}: owner {entry.uid}:{entry.gid} does not fit 32 bits")
    if entry.type == EntryType.SYMLINK:
        size = len(entry.target.encode("utf-8", "surrogateescape"))
        if not 0 < size <= SYMLINK_MAX:
            raise OutputError(f"{where}: symlink target of {size} bytes (1 to {SYMLINK_MAX})")
    if entry.type in (EntryType.CHAR, EntryType.BLOCK) and not (
            0 <= entry.devmajor <= 0xFFF and 0 <= entry.devminor <= 0xFFFFF):
        raise OutputError(f"{where}: device {entry.devmajor}:{entry.devminor} does not fit "
                          "(major up to 4095, minor up to 1048575)")
    for name, _ in entry.xattrs:
        split_xattr_name(name, entry.path)


# -- file data ----------------------------------------------------------------------------------

@dataclass
class _Data:
    """Where one file content's bytes went."""

    size: int
    start: int = -1
    sizes: list[int] = field(default_factory=list)
    sparse: int = 0
    fragment: int = NO_FRAGMENT
    offset: int = 0


_Pending = tuple["Future[tuple[bytes, int]] | tuple[bytes, int] | None", "_Data | None"]


class _DataWriter:
    """Streams file blocks and fragment blocks to ``out`` in a fixed order while a thread pool
    compresses ahead (zlib-ng releases the GIL)."""

    def __init__(self, out: BinaryIO, block_size: int, compress: bool) -> None:
        self._out = out
        self._block_size = block_size
        self._compress = compress
        self._zero = bytes(block_size)
        workers = max(1, min(4, len(os.sched_getaffinity(0)))) if compress else 1
        self._pool = ThreadPoolExecutor(workers, "squashfs") if workers > 1 else None
        self._limit = 2 * workers + 2
        self._pending: deque[_Pending] = deque()
        self._fragment = bytearray()
        self._fragment_count = 0
        self.fragments: list[tuple[int, int]] = []
        self.position = SUPERBLOCK_SIZE

    def write_files(self, plan: _Plan) -> dict[str, _Data]:
        """Every regular file's data, each distinct content once; path → where it went."""
        sizes = Counter(e.size for e in plan.entries if e.type == EntryType.FILE)
        files: dict[str, _Data] = {}
        by_link: dict[int, _Data] = {}
        by_blob: dict[int, _Data] = {}
        by_content: dict[tuple[int, str], _Data] = {}
        for entry in plan.entries:
            if entry.type != EntryType.FILE:
                continue
            data = by_link.get(entry.link_id) if entry.link_id else None
            if data is None and entry.blob is not None and entry.size:
                blob = entry.blob
                data = by_blob.get(id(blob))
                key = (blob.size, blob.sha256) if data is None and sizes[blob.size] > 1 else None
                if key is not None:
                    data = by_content.get(key)
                if data is None:
                    data = _Data(blob.size)
                    self._add(blob, data, entry.path)
                    if key is not None:
                        by_content[key] = data
                by_blob[id(blob)] = data
            if data is None:
                data = _Data(0, start=0)
            files[entry.path] = data
            if entry.link_id:
                by_link[entry.link_id] = data
        if self._fragment:
            self._seal_fragment()
        while self._pending:
            self._drain()
        for data in files.values():
            data.start = max(data.start, 0)
        return files

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _add(self, blob: Blob, data: _Data, path: str) -> None:
        for block in _pieces(blob, self._block_size, path):
            if len(block) < self._block_size:
                if len(self._fragment) + len(block) > self._block_size:
                    self._seal_fragment()
                data.fragment = self._fragment_count
                data.offset = len(self._fragment)
                self._fragment += block
            elif block == self._zero:
                self._queue(None, data)
            else:
                self._queue(self._submit(block), data)

    def _seal_fragment(self) -> None:
        self._queue(self._submit(bytes(self._fragment)), None)
        self._fragment.clear()
        self._fragment_count += 1

    def _submit(self, raw: bytes) -> Future[tuple[bytes, int]] | tuple[bytes, int]:
        if self._pool is None:
            return _pack_block(raw, self._compress)
        return self._pool.submit(_pack_block, raw, self._compress)

    def _queue(self, packed: Future[tuple[bytes, int]] | tuple[bytes, int] | None,
               data: _Data | None) -> None:
        self._pending.append((packed, data))
        while len(self._pending) > self._limit:
            self._drain()

    def _drain(self) -> None:
        packed, data = self._pending.popleft()
        if data is not None and data.start < 0:
            data.start = self.position
        if packed is None:
            assert data is not None
            data.sizes.append(0)
            data.sparse += self._block_size
            return
        payload, size = packed.result() if isinstance(packed, Future) else packed
        if data is None:
            self.fragments.append((self.position, size))
        else:
            data.sizes.append(size)
        self._out.write(payload)
        self.position += len(payload)


def _pieces(blob: Blob, step: int, path: str) -> Iterator[bytes]:
    """The content in blocks of ``step`` bytes (the last one shorter), checked against its size."""
    if blob.in_memory:
        content = blob.read()
        if len(content) != blob.size:
            raise OutputError(f"squashfs: content of {path!r} changed size while writing")
        for start in range(0, len(content), step):
            yield content[start:start + step]
        return
    buffer = bytearray()
    total = 0
    for chunk in blob.chunks(step):
        total += len(chunk)
        if total > blob.size:
            raise OutputError(f"squashfs: content of {path!r} grew while writing")
        if not buffer and len(chunk) == step:
            yield chunk
            continue
        buffer += chunk
        while len(buffer) >= step:
            yield bytes(buffer[:step])
            del buffer[:step]
    if total != blob.size:
        raise OutputError(f"squashfs: content of {path!r} shrank while writing")
    if buffer:
        yield bytes(buffer)


# -- inodes and directories ---------------------------------------------------------------------

@dataclass
class _Frame:
    entry: Entry
    children: list[Entry]
    next: int = 0
    subdirs: int = 0
    listing: list[tuple[bytes, int, int, int]] = field(default_factory=list)


class _Metadata:
    """The inode and directory tables, written children first (a listing names its entries'
    inode positions, a directory inode names its listing's position)."""

    def __init__(self, plan: _Plan, files: dict[str, _Data], mtime: int, pack: Packer) -> None:
        self._plan = plan
        self._files = files
        self._mtime = mtime
        self.inodes = MetadataWriter(pack)
        self.dirs = MetadataWriter(pack)
        self.xattrs = XattrTables(pack)
        self.ids: list[int] = []
        self._id_index: dict[int, int] = {}
        self.export = [0] * plan.inode_count
        self._link_refs: dict[int, int] = {}

    def write_tree(self) -> int:
        """Write every inode and listing; return the root inode's reference."""
        plan = self._plan
        stack = [_Frame(plan.entries[0], plan.children.get("", []))]
        while True:
            frame = stack[-1]
            if frame.next < len(frame.children):
                child = frame.children[frame.next]
                frame.next += 1
                if child.type == EntryType.DIR:
                    stack.append(_Frame(child, plan.children.get(child.path, [])))
                else:
                    frame.listing.append((_name(child.path), self._inode(child),
                                          plan.numbers[child.path], _TYPE[child.type]))
                continue
            stack.pop()
            ref = self._directory(frame)
            if not stack:
                return ref
            stack[-1].subdirs += 1
            stack[-1].listing.append((_name(frame.entry.path), ref,
                                      plan.numbers[frame.entry.path], _TYPE[EntryType.DIR]))

    def _id(self, value: int) -> int:
        index = self._id_index.get(value)
        if index is None:
            if len(self.ids) == MAX_IDS:
                raise OutputError(f"squashfs: more than {MAX_IDS} distinct owner ids")
            index = self._id_index[value] = len(self.ids)
            self.ids.append(value)
        return index

    def _emit(self, entry: Entry, kind: int, body: bytes) -> int:
        number = self._plan.numbers[entry.path]
        header = struct.pack("<HHHHII", kind, entry.mode & 0o7777, self._id(entry.uid),
                             self._id(entry.gid), self._mtime, number)
        ref = inode_ref(self.inodes.write(header + body))
        self.export[number - 1] = ref
        return ref

    def _inode(self, entry: Entry) -> int:
        if entry.type == EntryType.FILE and entry.link_id in self._link_refs:
            return self._link_refs[entry.link_id]
        xattr = self.xattrs.id_of(entry.xattrs, entry.path)
        extended = xattr != NO_XATTR
        kind = _TYPE[entry.type]
        if entry.type == EntryType.FILE:
            data = self._files[entry.path]
            nlink = self._plan.nlinks[entry.link_id] if entry.link_id else 1
            blocks = pack_u32s(data.sizes)
            if (extended or nlink > 1 or data.sparse or data.size >= _U32
                    or data.start >= _U32):
                ref = self._emit(entry, kind + EXTENDED, struct.pack(
                    "<QQQIIII", data.start, data.size, data.sparse, nlink, data.fragment,
                    data.offset, xattr) + blocks)
            else:
                ref = self._emit(entry, kind, struct.pack(
                    "<IIII", data.start, data.fragment, data.offset, data.size) + blocks)
            if entry.link_id:
                self._link_refs[entry.link_id] = ref
            return ref
        if entry.type == EntryType.SYMLINK:
            target = entry.target.encode("utf-8", "surrogateescape")
            body = struct.pack("<II", 1, len(target)) + target
        elif entry.type in (EntryType.CHAR, EntryType.BLOCK):
            major, minor = entry.devmajor, entry.devminor
            rdev = (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)
            body = struct.pack("<II", 1, rdev)
        else:
            body = struct.pack("<I", 1)
        if extended:
            return self._emit(entry, kind + EXTENDED, body + struct.pack("<I", xattr))
        return self._emit(entry, kind, body)

    def _directory(self, frame: _Frame) -> int:
        entry = frame.entry
        listing, index = _listing(frame.listing)
        first = self.dirs.uncompressed
        block, offset = self.dirs.write(listing)
        if block >= _U32:
            raise OutputError("squashfs: the directory table exceeds 4 GiB")
        size = len(listing) + 3
        nlink = 2 + frame.subdirs
        parent = (self._plan.numbers[parent_of(entry.path)] if entry.path
                  else self._plan.inode_count + 1)
        xattr = self.xattrs.id_of(entry.xattrs, entry.path)
        if not index and size <= 0xFFFF and xattr == NO_XATTR:
            return self._emit(entry, _TYPE[EntryType.DIR], struct.pack(
                "<IIHHI", block, nlink, size, offset, parent))
        body = struct.pack("<IIIIHHI", nlink, size, block, parent, len(index), offset, xattr)
        body += b"".join(struct.pack("<III", at, self.dirs.block_start(first + at),
                                     len(name) - 1) + name for at, name in index)
        return self._emit(entry, _TYPE[EntryType.DIR] + EXTENDED, body)


def _listing(entries: list[tuple[bytes, int, int, int]]) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A directory's entries (sorted by name) under headers, and its index: (offset of a header
    that starts a new 8 KiB stretch of the listing, that header's first name).

    A header covers at most 256 entries whose inodes share one metadata block and whose
    numbers lie within a signed 16-bit distance of the header's; the kernel's lookup reads
    the index to skip to the stretch that can hold a name.
    """
    out = bytearray()
    index: list[tuple[int, bytes]] = []
    header_at = count = block = number = stretch = 0
    for name, ref, inode_number, kind in entries:
        size = 8 + len(name)
        new_stretch = count > 0 and len(out) + size - stretch > METADATA_SIZE
        if (count == 0 or count == DIR_COUNT or ref >> 16 != block or new_stretch
                or not -0x8000 <= inode_number - number <= 0x7FFF):
            if count:
                struct.pack_into("<I", out, header_at, count - 1)
            if new_stretch:
                stretch = len(out)
                index.append((stretch, name))
            header_at, count, block, number = len(out), 0, ref >> 16, inode_number
            out += struct.pack("<III", 0, block, number)
        out += struct.pack("<HhHH", ref & 0xFFFF, inode_number - number, kind, len(name) - 1)
        out += name
        count += 1
    if count:
        struct.pack_into("<I", out, header_at, count - 1)
    return bytes(out), index
