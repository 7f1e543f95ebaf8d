"""A strict reader for the tar subset Alpine ships, instead of Python's ``tarfile``.

Alpine's archives use ustar or old-GNU headers, pax ``x`` records (long names,
xattrs, ``APK-TOOLS.checksum.*``) and, in GNU archives, ``L``/``K`` long names.
That is all this reader accepts. Everything else is refused with an
:class:`ArchiveError` naming the archive and the offset: sparse members (type
``S`` or ``GNU.sparse.*`` records, which ``tarfile`` expands to whatever size
they declare), global pax headers, unknown types, bad checksums, numbers that
are not plain octal or base-256 of sane length, malformed pax records.

Pax records are split by hand in linear time, so the regular-expression
backtracking of CVE-2024-6232 cannot happen whatever the Python patch level;
every extended header, member and total content size is checked against
:class:`TarLimits` before any byte of it is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from composer.errors import ArchiveError
from composer.numbers import parse_decimal, parse_octal, shorten

BLOCK = 512
_ZERO = bytes(BLOCK)

REGULAR_TYPES = frozenset({b"0", b"\0", b"7"})
HARDLINK = b"1"
SYMLINK = b"2"
CHARDEV = b"3"
BLOCKDEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"
MEMBER_TYPES = REGULAR_TYPES | {HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO}

MAX_EXTENDED_HEADERS = 8
"""Extended headers (``x``, ``L``, ``K``) allowed before one member."""

MAX_ID = (1 << 32) - 1
_MTIME = re.compile(r"(\d{1,20})(?:\.\d{0,30})?")


@dataclass(frozen=True)
class TarLimits:
    """Bounds checked against header values before the bytes they announce are read."""

    max_extended: int = 1 << 20
    """Largest pax header or GNU long-name body."""
    max_member: int | None = None
    """Largest regular member."""
    max_content: int | None = None
    """Largest sum of regular member sizes in the archive."""


class ByteSource(Protocol):
    """What the reader reads from: any object with ``read(size)``."""

    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class TarMember:
    """One member, after its pax records and GNU long names were applied."""

    name: str
    type: bytes
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    linkname: str = ""
    uname: str = ""
    gname: str = ""
    devmajor: int = 0
    devminor: int = 0
    pax_headers: Mapping[str, str] = field(default_factory=dict)
    offset: int = 0

    def isreg(self) -> bool:
        return self.type in REGULAR_TYPES

    def islnk(self) -> bool:
        return self.type == HARDLINK

    def issym(self) -> bool:
        return self.type == SYMLINK

    def isdir(self) -> bool:
        return self.type == DIRECTORY


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


class TarReader:
    """One sequential pass over a tar stream; contents are read with :meth:`read_content`.

    The end-of-archive blocks may be missing (APK signature and control members
    are cut before them); a stream that ends inside a header or a member is an error.
    """

    def __init__(self, stream: ByteSource, *, source: str, limits: TarLimits | None = None) -> None:
        self._stream = stream
        self._view = getattr(stream, "read_view", None)
        self.source = source
        self.limits = limits or TarLimits()
        self.position = 0
        self._left = 0
        self._padding = 0
        self._current: TarMember | None = None
        self._content_total = 0

    # --- raw reading -----------------------------------------------------------------

    def _read(self, size: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < size:
            chunk = self._stream.read(min(size - got, 1 << 20))
            if not chunk:
                break
            parts.append(bytes(chunk))
            got += len(chunk)
        self.position += got
        return b"".join(parts)

    def _fail(self, offset: int, why: str) -> ArchiveError:
        if offset == 0:
            return ArchiveError(f"{self.source}: not a readable tar archive ({why})")
        return ArchiveError(f"{self.source}: {why} (tar header at byte {offset})")

    def _skip(self, size: int) -> None:
        while size > 0:
            chunk = self._read(min(size, 1 << 20))
            if not chunk:
                raise ArchiveError(f"{self.source}: tar archive is truncated")
            size -= len(chunk)

    # --- members ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[TarMember]:
        while True:
            if self._current is not None:
                self._skip(self._left + self._padding)
                self._current = None
            member = self._next_member()
            if member is None:
                return
            self._current = member
            self._left = member.size if member.isreg() else 0
            self._padding = -self._left % BLOCK
            yield member

    def read_content(self, member: TarMember, size: int = -1) -> bytes | memoryview:
        """Up to ``size`` bytes of the current member's content (all that is left when < 0)."""
        if member is not self._current:
            raise ArchiveError(f"{self.source}: member {member.name!r} is no longer readable")
        want = self._left if size < 0 else min(size, self._left)
        if want <= 0:
            return b""
        if self._view is not None and size >= 0:
            data: bytes | memoryview = self._view(want)
        else:
            data = self._read(want)
            self.position -= len(data)
        if not data:
            raise ArchiveError(f"{self.source}: member {member.name!r} is truncated")
        self.position += len(data)
        self._left -= len(data)
        return data

    def _read_block(self, *, first: bool) -> bytes | None:
        start = self.position
        block = self._read(BLOCK)
        if not block:
            if start == 0:
                raise self._fail(0, "empty file")
            if first:
                return None
            raise self._fail(start, "tar archive ends after an extended header")
        if len(block) < BLOCK:
            raise self._fail(start, "tar archive is truncated inside a header")
        return block

    def _next_member(self) -> TarMember | None:
        pax: dict[str, str] = {}
        long_name: str | None = None
        long_link: str | None = None
        for count in range(MAX_EXTENDED_HEADERS + 1):
            offset = self.position
            block = self._read_block(first=count == 0)
            if block is None:
                return None
            if block == _ZERO:
                if count:
                    raise self._fail(offset, "tar archive ends after an extended header")
                return None
            self._check_header(block, offset)
            kind = block[156:157]
            if kind in (b"x", b"L", b"K"):
                size = self._number(block[124:136], offset, "size")
                if size > self.limits.max_extended:
                    raise self._fail(offset, f"extended header of {size} bytes is larger than the "
                                             f"{self.limits.max_extended}-byte limit")
                body = self._read(size)
                if len(body) < size:
                    raise self._fail(offset, "tar archive is truncated inside an extended header")
                self._skip(-size % BLOCK)
                if kind == b"x":
                    pax.update(parse_pax(body, where=f"{self.source}: pax header at byte {offset}"))
                elif kind == b"L":
                    long_name = _text(body)
                else:
                    long_link = _text(body)
                continue
            return self._member(block, offset, kind, pax, long_name, long_link)
        raise self._fail(self.position, f"more than {MAX_EXTENDED_HEADERS} extended headers "
                                        "before one member")

    def _check_header(self, block: bytes, offset: int) -> None:
        if block[257:263] != b"ustar\0" and block[257:265] != b"ustar  \0":
            raise self._fail(offset, "not a ustar or GNU tar header")
        stored = self._number(block[148:156], offset, "checksum")
        unsigned = sum(block[:148]) + 256 + sum(block[156:])
        if stored == unsigned:
            return
        signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b >= 128)
        if stored != signed:
            raise self._fail(offset, "bad header checksum")

    def _number(self, raw: bytes, offset: int, what: str) -> int:
        if raw[:1] == b"\x80":
            return int.from_bytes(raw[1:], "big")
        if raw[:1] and raw[0] & 0x80:
            raise self._fail(offset, f"negative {what}")
        text = raw.split(b"\0", 1)[0].strip(b" ").decode("ascii", "replace")
        if not text:
            return 0
        value = parse_octal(text)
        if value is None:
            raise self._fail(offset, f"{what} field {shorten(text)} is not an octal number")
        return value

    def _member(self, block: bytes, offset: int, kind: bytes, pax: dict[str, str],
                long_name: str | None, long_link: str | None) -> TarMember:
        if kind == b"S" or any(key.startswith("GNU.sparse.") for key in pax):
            raise self._fail(offset, "sparse members are not supported")
        if kind == b"g":
            raise self._fail(offset, "global pax headers are not supported")
        if kind not in MEMBER_TYPES:
            raise self._fail(offset, f"unsupported tar member type {kind!r}")
        name = _text(block[0:100])
        if block[257:263] == b"ustar\0" and block[345] != 0:
            name = _text(block[345:500]) + "/" + name
        name = pax.get("path", long_name if long_name is not None else name)
        linkname = pax.get("linkpath", long_link if long_link is not None else _text(block[157:257]))
        if "\0" in name or "\0" in linkname:
            raise self._fail(offset, "member name contains a NUL byte")
        size = self._number(block[124:136], offset, "size")
        uid = self._number(block[108:116], offset, "uid")
        gid = self._number(block[116:124], offset, "gid")
        mtime = self._number(block[136:148], offset, "mtime")
        where = f"pax header before byte {offset}"
        if "size" in pax:
            size = _pax_number(pax["size"], self.source, where, "size")
        if "uid" in pax:
            uid = _pax_number(pax["uid"], self.source, where, "uid")
        if "gid" in pax:
            gid = _pax_number(pax["gid"], self.source, where, "gid")
        if "mtime" in pax:
            match = _MTIME.fullmatch(pax["mtime"])
            if match is None:
                raise ArchiveError(f"{self.source}: {where}: mtime {shorten(pax['mtime'])} is not "
                                   "a non-negative number")
            mtime = int(match.group(1))
        if uid > MAX_ID or gid > MAX_ID:
            raise self._fail(offset, f"owner {uid}:{gid} does not fit 32 bits")
        if kind == DIRECTORY or (kind in (b"\0", b"0") and name.endswith("/")):
            kind = DIRECTORY
            name = name.rstrip("/") or name
        if kind in REGULAR_TYPES:
            self._check_size(name, size, offset)
        else:
            size = 0
        return TarMember(
            name=name, type=kind, mode=self._number(block[100:108], offset, "mode") & 0o7777,
            uid=uid, gid=gid, mtime=mtime, size=size, linkname=linkname,
            uname=pax.get("uname", _text(block[265:297])),
            gname=pax.get("gname", _text(block[297:329])),
            devmajor=self._number(block[329:337], offset, "devmajor"),
            devminor=self._number(block[337:345], offset, "devminor"),
            pax_headers=pax, offset=offset)

    def _check_size(self, name: str, size: int, offset: int) -> None:
        limits = self.limits
        if limits.max_member is not None and size > limits.max_member:
            raise self._fail(offset, f"member {shorten(name)} declares {size} bytes, more than "
                                     f"the {limits.max_member}-byte limit")
        self._content_total += size
        if limits.max_content is not None and self._content_total > limits.max_content:
            raise self._fail(offset, f"members declare more than the {limits.max_content}-byte "
                                     "limit in total")


def _pax_number(value: str, source: str, where: str, what: str) -> int:
    number = parse_decimal(value)
    if number is None:
        raise ArchiveError(f"{source}: {where}: {what} {shorten(value)} is not a number")
    return number


def parse_pax(body: bytes, *, where: str) -> dict[str, str]:
    """The ``<length> <key>=<value>\\n`` records of a pax header body, in one linear pass."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        if body[pos] == 0 and not body[pos:].strip(b"\0"):
            break
        space = body.find(b" ", pos, pos + 21)
        length = parse_decimal(body[pos:space].decode("ascii", "replace")) if space > pos else None
        if length is None or length <= space - pos + 3 or pos + length > len(body):
            raise ArchiveError(f"{where}: malformed pax record at byte {pos}")
        record = body[space + 1:pos + length]
        if not record.endswith(b"\n"):
            raise ArchiveError(f"{where}: pax record at byte {pos} does not end with a newline")
        key, eq, value = record[:-1].partition(b"=")
        if not eq or not key:
            raise ArchiveError(f"{where}: pax record at byte {pos} has no key=value")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


@dataclass(frozen=True)
class TarFile:
    """A regular file read from a small in-memory tar (control, signature, index members)."""

    name: str
    data: bytes
    mode: int
    uid: int
    gid: int
    mtime: int
    uname: str
    gname: str


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1, /) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = bytes(self._data[self._pos:end])
        self._pos += len(chunk)
        return chunk


def read_tar_bytes(content: bytes, *, source: str, limits: TarLimits | None = None,
                   regular_only: bool = True) -> list[TarFile]:
    """Every regular file of a small in-memory tar, in archive order.

    With ``regular_only`` any other member is an error; otherwise other members are
    skipped.
    """
    reader = TarReader(_Bytes(content), source=source,
                       limits=limits or TarLimits(max_content=len(content)))
    files: list[TarFile] = []
    for member in reader:
        if not member.isreg():
            if regular_only:
                raise ArchiveError(f"{source}: member {shorten(member.name)} is not a regular file")
            continue
        data = bytes(reader.read_content(member))
        if len(data) != member.size:
            raise ArchiveError(f"{source}: member {shorten(member.name)} is truncated")
        files.append(TarFile(name=member.name, data=data, mode=member.mode, uid=member.uid,
                             gid=member.gid, mtime=member.mtime, uname=member.uname,
                             gname=member.gname))
    return files
