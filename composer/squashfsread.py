"""A bounded reader of squashfs 4.0 images, so that ``diff`` and ``verify`` can look inside a
disk image's root partition without mounting or extracting it.

It reads what composer's writer and ``mksquashfs`` write with the gzip compressor (blocks
are zlib streams, or stored raw): the superblock, the id, fragment and xattr tables, then
every directory from the root down, each regular file's bytes hashed as they are inflated.
Nothing in the image is trusted: every offset and length is checked against the table it
must lie in before it is read, every block inflates to at most the size the format allows,
a directory may be reached once only, and the work done is bounded by
:class:`SquashLimits`; a damaged or hostile image is an :class:`ArchiveError` naming the
byte or entry at fault.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO

from composer.errors import ArchiveError
from composer.inflate import InflateError, zlib_inflater

MAGIC = 0x73717368
SUPERBLOCK = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")
METADATA_SIZE = 8192
UNCOMPRESSED_METADATA = 1 << 15
UNCOMPRESSED_BLOCK = 1 << 24
NO_FRAGMENT = 0xFFFFFFFF
NO_XATTR = 0xFFFFFFFF
NO_TABLE = 0xFFFFFFFFFFFFFFFF
NAME_MAX = 256
CACHED_BLOCKS = 256

_KINDS = {1: "dir", 2: "file", 3: "symlink", 4: "block", 5: "char", 6: "fifo", 7: "socket"}
_XATTR_PREFIX = {0: "user.", 1: "trusted.", 2: "security."}


@dataclass(frozen=True)
class SquashLimits:
    """What reading one image may cost. Real root file systems stay far below each bound."""

    max_entries: int = 300_000
    max_bytes: int = 8 << 30
    """Bytes inflated and hashed, in total."""
    max_depth: int = 256
    max_path: int = 4096
    max_listing: int = 64 << 20
    """Bytes of one directory's listing."""


@dataclass(frozen=True)
class SquashEntry:
    """One object of the file system; ``path`` is ``/`` for the root, ``/etc/motd`` below."""

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    sha256: str
    target: str
    rdev: tuple[int, int] | None
    nlink: int
    mtime: int
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class SquashImage:
    compression: str
    block_size: int
    mtime: int
    inodes: int
    bytes_used: int
    entries: tuple[SquashEntry, ...]


@dataclass(frozen=True)
class _Inode:
    kind: int
    mode: int
    uid: int
    gid: int
    mtime: int
    nlink: int
    size: int
    start: int = 0
    blocks: tuple[int, ...] = ()
    fragment: int = NO_FRAGMENT
    offset: int = 0
    target: str = ""
    rdev: tuple[int, int] | None = None
    xattr: int = NO_XATTR


def read_squashfs(image: BinaryIO, *, source: str, offset: int = 0, size: int | None = None,
                  limits: SquashLimits | None = None) -> SquashImage:
    """Every entry of the squashfs image that starts at ``offset`` of the seekable ``image``
    (``size`` bytes long; by default up to the end of the file), root first, each
    directory's entries in their stored (sorted) order."""
    if size is None:
        size = image.seek(0, 2) - offset
    return _Reader(image, offset, size, source, limits or SquashLimits()).read()


class _Reader:
    def __init__(self, image: BinaryIO, base: int, size: int, source: str,
                 limits: SquashLimits) -> None:
        self._image = image
        self._base = base
        self._size = size
        self._source = source
        self._limits = limits
        self._work = 0
        self._entries = 0
        self._cache: OrderedDict[int, tuple[bytes, int]] = OrderedDict()
        self._hashes: dict[int, str] = {}
        self._fragments: dict[int, bytes] = {}

    def fail(self, message: str) -> ArchiveError:
        return ArchiveError(f"{self._source}: squashfs: {message}")

    def _charge(self, count: int) -> None:
        self._work += count
        if self._work > self._limits.max_bytes:
            raise self.fail(f"more than {self._limits.max_bytes} bytes to inflate and hash")

    def _raw(self, at: int, length: int, lo: int, hi: int, what: str) -> bytes:
        if not (lo <= at and length >= 0 and at + length <= hi):
            raise self.fail(f"{what} at byte {at} ({length} bytes) lies outside bytes {lo}..{hi}")
        self._image.seek(self._base + at)
        data = self._image.read(length)
        if len(data) != length:
            raise self.fail(f"{what} at byte {at}: the image ends early")
        return data

    def _inflate(self, data: bytes, limit: int, what: str) -> bytes:
        inflater = zlib_inflater()
        try:
            out = inflater.decompress(data, limit + 1)
        except InflateError as exc:
            raise self.fail(f"{what} is not a valid zlib stream ({exc})") from exc
        if len(out) > limit or not inflater.eof or inflater.unused_data:
            raise self.fail(f"{what} does not inflate to at most {limit} bytes exactly")
        self._charge(len(out))
        return out

    # -- superblock and tables ------------------------------------------------------------

    def read(self) -> SquashImage:
        if self._size < SUPERBLOCK.size:
            raise self.fail(f"{self._size} bytes are too few for a superblock")
        (magic, inodes, mtime, block_size, fragments, compression, block_log, _flags, ids,
         major, minor, root, used, id_table, xattr_table, inode_table, dir_table,
         fragment_table, _lookup) = SUPERBLOCK.unpack(
            self._raw(0, SUPERBLOCK.size, 0, self._size, "the superblock"))
        if magic != MAGIC:
            raise self.fail("no squashfs superblock (bad magic)")
        if (major, minor) != (4, 0):
            raise self.fail(f"version {major}.{minor} (only 4.0 is read)")
        if compression != 1:
            raise self.fail(f"compressor id {compression} (only gzip, id 1, is read)")
        if not 4096 <= block_size <= 1 << 20 or block_size != 1 << block_log:
            raise self.fail(f"block size {block_size} with log {block_log}")
        if not SUPERBLOCK.size <= inode_table < dir_table <= used <= self._size:
            raise self.fail(f"tables out of order or past the end (inodes {inode_table}, "
                            f"directories {dir_table}, used {used}, image {self._size})")
        self.block_size, self.used = block_size, used
        self.inode_table, self.dir_table = inode_table, dir_table
        firsts = [used]
        self.ids, first = self._table(id_table, ids, 4, "id")
        firsts.append(first)
        if not ids:
            raise self.fail("no ids")
        self.fragment_count = fragments
        self.fragment_index: list[int] = []
        if fragments:
            self.fragment_index = self._index(fragment_table, fragments * 16, "fragment")
            self.fragment_table = fragment_table
            firsts.append(self.fragment_index[0])
        self.xattr_index: list[int] = []
        if xattr_table != NO_TABLE:
            header = self._raw(xattr_table, 16, dir_table, used, "the xattr id table")
            self.xattr_values, self.xattr_count, _ = struct.unpack("<QII", header)
            self.xattr_index = self._index(xattr_table + 16, self.xattr_count * 16, "xattr id",
                                           header=16)
            self.xattr_ids_end = xattr_table
            if not dir_table <= self.xattr_values <= self.xattr_index[0]:
                raise self.fail(f"xattr values at byte {self.xattr_values} out of place")
            firsts.append(self.xattr_values)
        if _lookup != NO_TABLE:
            firsts.append(self._index(_lookup, inodes * 8, "inode lookup")[0])
        self.dir_end = min(firsts)
        if self.dir_end < dir_table:
            raise self.fail("the directory table overlaps the tables after it")
        root_inode = self._inode(root)
        if _KINDS[root_inode.kind] != "dir":
            raise self.fail("the root inode is not a directory")
        return SquashImage("gzip", block_size, mtime, inodes, used,
                           tuple(self._walk(root, root_inode)))

    def _index(self, start: int, nbytes: int, what: str, header: int = 0) -> list[int]:
        """A lookup table's index: the positions of the metadata blocks holding ``nbytes``."""
        count = -(-nbytes // METADATA_SIZE)
        if not count:
            raise self.fail(f"the {what} table is empty")
        raw = self._raw(start, 8 * count, self.dir_table, self.used, f"the {what} table index")
        index = list(struct.unpack(f"<{count}Q", raw))
        lowest = start - header
        for block in reversed(index):
            if not self.dir_table <= block < lowest:
                raise self.fail(f"{what} table block at byte {block} out of place")
            lowest = block
        return index

    def _table(self, start: int, count: int, width: int, what: str) -> tuple[list[int], int]:
        """A whole small table (the ids) and the position of its first block."""
        if not count:
            return [], self.used
        index = self._index(start, count * width, what)
        data = _Cursor(self, index[0], start, index[0], 0).read(count * width, f"the {what} table")
        return list(struct.unpack(f"<{count}I", data)), index[0]

    def metadata(self, at: int, lo: int, hi: int) -> tuple[bytes, int]:
        """The metadata block at ``at`` (inside ``lo..hi``) and the position of the next one."""
        cached = self._cache.get(at)
        if cached is not None:
            self._cache.move_to_end(at)
            return cached
        (head,) = struct.unpack("<H", self._raw(at, 2, lo, hi, "a metadata block header"))
        length = head & ~UNCOMPRESSED_METADATA
        if not 0 < length <= METADATA_SIZE:
            raise self.fail(f"metadata block at byte {at} claims {length} bytes")
        payload = self._raw(at + 2, length, lo, hi, "a metadata block")
        data = payload if head & UNCOMPRESSED_METADATA else self._inflate(
            payload, METADATA_SIZE, f"the metadata block at byte {at}")
        found = self._cache[at] = (data, at + 2 + length)
        if len(self._cache) > CACHED_BLOCKS:
            self._cache.popitem(last=False)
        return found

    # -- inodes ---------------------------------------------------------------------------

    def _inode(self, ref: int) -> _Inode:
        block, offset = ref >> 16, ref & 0xFFFF
        cursor = _Cursor(self, self.inode_table, self.dir_table, self.inode_table + block, offset)
        kind, mode, uid, gid, mtime, _number = struct.unpack("<HHHHII", cursor.read(16, "inode"))
        if not 1 <= kind <= 14:
            raise self.fail(f"inode {ref:#x} has type {kind}")
        if uid >= len(self.ids) or gid >= len(self.ids):
            raise self.fail(f"inode {ref:#x} names id {max(uid, gid)} of {len(self.ids)}")
        base = (kind - 1) % 7 + 1
        extended = kind > 7
        common = {"kind": base, "mode": mode & 0o7777, "uid": self.ids[uid],
                  "gid": self.ids[gid], "mtime": mtime}
        if base == 1:
            if extended:
                nlink, size, start, _parent, _count, dir_offset, xattr = struct.unpack(
                    "<IIIIHHI", cursor.read(24, "directory inode"))
            else:
                start, nlink, size, dir_offset, _parent = struct.unpack(
                    "<IIHHI", cursor.read(16, "directory inode"))
                xattr = NO_XATTR
            if not 3 <= size <= self._limits.max_listing or dir_offset >= METADATA_SIZE:
                raise self.fail(f"directory inode {ref:#x}: listing of {size} bytes at "
                                f"offset {dir_offset}")
            return _Inode(**common, nlink=nlink, size=size, start=start, offset=dir_offset,
                          xattr=xattr)
        if base == 2:
            if extended:
                start, size, _sparse, nlink, fragment, frag_offset, xattr = struct.unpack(
                    "<QQQIIII", cursor.read(40, "file inode"))
            else:
                start, fragment, frag_offset, size = struct.unpack(
                    "<IIII", cursor.read(16, "file inode"))
                nlink, xattr = 1, NO_XATTR
            if size > self._limits.max_bytes:
                raise self.fail(f"file inode {ref:#x} of {size} bytes")
            count = size // self.block_size
            if fragment == NO_FRAGMENT and size % self.block_size:
                count += 1
            blocks = struct.unpack(f"<{count}I", cursor.read(4 * count, "block list"))
            return _Inode(**common, nlink=nlink, size=size, start=start, blocks=blocks,
                          fragment=fragment, offset=frag_offset, xattr=xattr)
        if base == 3:
            nlink, length = struct.unpack("<II", cursor.read(8, "symlink inode"))
            if not 0 < length <= self._limits.max_path:
                raise self.fail(f"symlink inode {ref:#x} with a target of {length} bytes")
            target = cursor.read(length, "symlink target").decode("utf-8", "surrogateescape")
            xattr = struct.unpack("<I", cursor.read(4, "xattr id"))[0] if extended else NO_XATTR
            return _Inode(**common, nlink=nlink, size=length, target=target, xattr=xattr)
        if base in (4, 5):
            nlink, rdev = struct.unpack("<II", cursor.read(8, "device inode"))
            xattr = struct.unpack("<I", cursor.read(4, "xattr id"))[0] if extended else NO_XATTR
            device = ((rdev >> 8) & 0xFFF, (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00))
            return _Inode(**common, nlink=nlink, size=0, rdev=device, xattr=xattr)
        (nlink,) = struct.unpack("<I", cursor.read(4, "inode"))
        xattr = struct.unpack("<I", cursor.read(4, "xattr id"))[0] if extended else NO_XATTR
        return _Inode(**common, nlink=nlink, size=0, xattr=xattr)

    # -- directories ----------------------------------------------------------------------

    def _listing(self, inode: _Inode, path: str) -> list[tuple[str, int, int]]:
        """(name, inode reference, basic type) of each entry."""
        cursor = _Cursor(self, self.dir_table, self.dir_end, self.dir_table + inode.start,
                         inode.offset)
        left = inode.size - 3
        found: list[tuple[str, int, int]] = []
        names: set[str] = set()
        while left > 0:
            if left < 12:
                raise self.fail(f"directory {path}: listing ends inside a header")
            count, start, _number = struct.unpack("<III", cursor.read(12, "directory header"))
            left -= 12
            if count >= 256:
                raise self.fail(f"directory {path}: a header of {count + 1} entries")
            for _ in range(count + 1):
                if left < 8:
                    raise self.fail(f"directory {path}: listing ends inside an entry")
                offset, _delta, kind, size = struct.unpack(
                    "<HhHH", cursor.read(8, "directory entry"))
                if size + 1 > NAME_MAX or not 1 <= kind <= 7 or offset >= METADATA_SIZE:
                    raise self.fail(f"directory {path}: an entry of type {kind} with a name of "
                                    f"{size + 1} bytes")
                raw = cursor.read(size + 1, "entry name")
                left -= 9 + size
                name = raw.decode("utf-8", "surrogateescape")
                if "/" in name or "\0" in name or name in (".", "..") or name in names:
                    raise self.fail(f"directory {path}: bad or repeated name {name!r}")
                names.add(name)
                found.append((name, start << 16 | offset, kind))
        if left:
            raise self.fail(f"directory {path}: listing overruns its size")
        return found

    def _walk(self, root_ref: int, root: _Inode) -> list[SquashEntry]:
        entries: list[SquashEntry] = []
        seen = {root_ref}
        stack: list[tuple[str, int, _Inode, int]] = [("/", root_ref, root, 0)]
        while stack:
            path, ref, inode, depth = stack.pop()
            entries.append(self._entry(path, ref, inode))
            if inode.kind != 1:
                continue
            children = []
            for name, child_ref, kind in self._listing(inode, path):
                child = self._inode(child_ref)
                child_path = path.rstrip("/") + "/" + name
                if child.kind != kind:
                    raise self.fail(f"{child_path}: listed as {_KINDS[kind]}, inode is "
                                    f"{_KINDS[child.kind]}")
                if len(child_path.encode("utf-8", "surrogateescape")) > self._limits.max_path:
                    raise self.fail(f"a path longer than {self._limits.max_path} bytes")
                if kind == 1:
                    if depth + 1 > self._limits.max_depth:
                        raise self.fail(f"directory {child_path} is deeper than "
                                        f"{self._limits.max_depth}")
                    if child_ref in seen:
                        raise self.fail(f"{child_path}: a directory reached twice")
                    seen.add(child_ref)
                children.append((child_path, child_ref, child, depth + 1))
            stack.extend(reversed(children))
        return entries

    def _entry(self, path: str, ref: int, inode: _Inode) -> SquashEntry:
        self._entries += 1
        if self._entries > self._limits.max_entries:
            raise self.fail(f"more than {self._limits.max_entries} entries")
        kind = _KINDS[inode.kind]
        digest = ""
        if kind == "file":
            digest = self._hashes.get(ref) or self._hash(inode, path)
            self._hashes[ref] = digest
        return SquashEntry(path=path, type=kind, mode=inode.mode, uid=inode.uid, gid=inode.gid,
                           size=inode.size if kind in ("file", "symlink") else 0,
                           sha256=digest, target=inode.target, rdev=inode.rdev,
                           nlink=inode.nlink, mtime=inode.mtime, xattrs=self._xattrs(inode.xattr))

    # -- file data and xattrs -------------------------------------------------------------

    def _hash(self, inode: _Inode, path: str) -> str:
        hasher = hashlib.sha256()
        left, at = inode.size, inode.start
        for field in inode.blocks:
            want = min(self.block_size, left)
            length = field & ~UNCOMPRESSED_BLOCK
            if field >> 25 or length > self.block_size:
                raise self.fail(f"{path}: block size field {field:#x}")
            if not length:
                self._charge(want)
                hasher.update(bytes(want))
            else:
                data = self._raw(at, length, SUPERBLOCK.size, self.inode_table, f"{path}: a block")
                if not field & UNCOMPRESSED_BLOCK:
                    data = self._inflate(data, self.block_size, f"{path}: the block at byte {at}")
                else:
                    self._charge(len(data))
                if len(data) != want:
                    raise self.fail(f"{path}: a block of {len(data)} bytes where {want} belong")
                hasher.update(data)
                at += length
            left -= want
        if inode.fragment != NO_FRAGMENT:
            block = self._fragment(inode.fragment, path)
            tail = block[inode.offset:inode.offset + left]
            if len(tail) != left or not left:
                raise self.fail(f"{path}: its tail lies outside fragment {inode.fragment}")
            self._charge(left)
            hasher.update(tail)
        elif left:
            raise self.fail(f"{path}: {left} bytes have no block")
        return hasher.hexdigest()

    def _fragment(self, number: int, path: str) -> bytes:
        cached = self._fragments.get(number)
        if cached is not None:
            return cached
        if number >= self.fragment_count:
            raise self.fail(f"{path}: fragment {number} of {self.fragment_count}")
        block = self.fragment_index[number * 16 // METADATA_SIZE]
        cursor = _Cursor(self, self.fragment_index[0], self.fragment_table, block,
                         number * 16 % METADATA_SIZE)
        start, field, _ = struct.unpack("<QII", cursor.read(16, "fragment entry"))
        length = field & ~UNCOMPRESSED_BLOCK
        if field >> 25 or not 0 < length <= self.block_size:
            raise self.fail(f"fragment {number}: size field {field:#x}")
        data = self._raw(start, length, SUPERBLOCK.size, self.inode_table, f"fragment {number}")
        if not field & UNCOMPRESSED_BLOCK:
            data = self._inflate(data, self.block_size, f"fragment {number}")
        self._fragments.clear()
        self._fragments[number] = data
        return data

    def _xattrs(self, number: int) -> tuple[tuple[str, bytes], ...]:
        if number == NO_XATTR:
            return ()
        if not self.xattr_index or number >= self.xattr_count:
            raise self.fail(f"xattr id {number} is not in the image")
        cursor = _Cursor(self, self.xattr_index[0], self.xattr_ids_end,
                         self.xattr_index[number * 16 // METADATA_SIZE],
                         number * 16 % METADATA_SIZE)
        ref, count, _ = struct.unpack("<QII", cursor.read(16, "xattr id entry"))
        lo, hi = self.xattr_values, self.xattr_index[0]
        values = _Cursor(self, lo, hi, lo + (ref >> 16), ref & 0xFFFF)
        found = []
        for _ in range(count):
            kind, size = struct.unpack("<HH", values.read(4, "xattr entry"))
            prefix = _XATTR_PREFIX.get(kind & 0xFF)
            if prefix is None or kind & ~0x1FF:
                raise self.fail(f"xattr of type {kind}")
            name = prefix + values.read(size, "xattr name").decode("utf-8", "surrogateescape")
            (vsize,) = struct.unpack("<I", values.read(4, "xattr value size"))
            if kind & 0x100:
                (out_of_line,) = struct.unpack("<Q", values.read(8, "xattr value reference"))
                elsewhere = _Cursor(self, lo, hi, lo + (out_of_line >> 16), out_of_line & 0xFFFF)
                (vsize,) = struct.unpack("<I", elsewhere.read(4, "xattr value size"))
                value = elsewhere.read(_bounded(vsize, self), "xattr value")
            else:
                value = values.read(_bounded(vsize, self), "xattr value")
            found.append((name, value))
        return tuple(found)


def _bounded(size: int, reader: _Reader) -> int:
    if size > 1 << 16:
        raise reader.fail(f"an xattr value of {size} bytes")
    return size


class _Cursor:
    """Reads a metadata stream from (block, offset) on, inside the table ``lo..hi``."""

    def __init__(self, reader: _Reader, lo: int, hi: int, block: int, offset: int) -> None:
        self._reader = reader
        self._lo, self._hi = lo, hi
        self._block, self._offset = block, offset

    def read(self, size: int, what: str) -> bytes:
        out = bytearray()
        while size > 0:
            data, after = self._reader.metadata(self._block, self._lo, self._hi)
            if self._offset >= len(data):
                if self._offset > len(data) or len(data) < METADATA_SIZE:
                    raise self._reader.fail(f"{what} reads past the end of its table")
                self._block, self._offset = after, 0
                continue
            piece = data[self._offset:self._offset + size]
            out += piece
            self._offset += len(piece)
            size -= len(piece)
        return bytes(out)
