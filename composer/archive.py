"""Load tar archives into a :class:`FileTree` without touching the host filesystem.

Format code: takes a binary stream, never a path. Unsafe members (absolute
names, ``..``, paths through symlinks, hard links to nothing, conflicting
duplicates) are refused with an error naming the member.
"""

from __future__ import annotations

import bz2
import lzma
from collections.abc import Callable
from dataclasses import replace
from typing import Any, BinaryIO

from composer.errors import ArchiveError
from composer.inflate import InflateError, gzip_inflater
from composer.numbers import shorten
from composer.tarread import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR_TYPES,
    SYMLINK,
    TarLimits,
    TarMember,
    TarReader,
)
from composer.tree import Entry, EntryType, FileTree, normalize_path, resolve_symlink_target

_TYPES = {
    **dict.fromkeys(REGULAR_TYPES, EntryType.FILE),
    DIRECTORY: EntryType.DIR,
    SYMLINK: EntryType.SYMLINK,
    CHARDEV: EntryType.CHAR,
    BLOCKDEV: EntryType.BLOCK,
    FIFO: EntryType.FIFO,
}

XATTR_PREFIX = "SCHILY.xattr."
CHUNK = 1024 * 1024
INFLATE_FLOOR = 64 * 1024 * 1024
INFLATE_RATIO = 100
"""A compressed tar may inflate to this many times its size (plus the floor), no more:
Alpine's tarballs inflate about 2.5 times; a zero-filled bomb a thousand times."""

MemberFilter = Callable[[TarMember], bool]


def xattrs_of(member: TarMember) -> tuple[tuple[str, bytes], ...]:
    """The member's extended attributes from its PAX ``SCHILY.xattr.*`` records."""
    found = []
    for key, value in member.pax_headers.items():
        if key.startswith(XATTR_PREFIX):
            raw = value.encode("utf-8", "surrogateescape")
            found.append((key[len(XATTR_PREFIX):], raw))
    return tuple(sorted(found))


class Decompressed:
    """A gzip, xz or bzip2 stream (or a plain one) inflated in bounded steps.

    Output beyond ``floor + ratio * compressed bytes read`` is refused, so a
    compression bomb costs bounded time and disk whatever it declares.
    """

    def __init__(self, raw: BinaryIO, *, source: str, floor: int = INFLATE_FLOOR,
                 ratio: int = INFLATE_RATIO) -> None:
        self._raw = raw
        self.source = source
        self._floor = floor
        self._ratio = ratio
        self._pending = raw.read(CHUNK)
        self.kind = _kind(self._pending)
        self._decomp = self._new()
        self._buffer = b""
        self._offset = 0
        self._in = 0
        self._out = 0
        self._done = False

    def _new(self) -> Any:
        if self.kind == "gzip":
            return gzip_inflater()
        if self.kind == "xz":
            return lzma.LZMADecompressor()
        if self.kind == "bzip2":
            return bz2.BZ2Decompressor()
        return None

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` inflated bytes (fewer only at the end)."""
        want = CHUNK if size < 0 else size
        start = self._offset
        if len(self._buffer) - start >= want:  # tar headers: 512 bytes from a 1 MiB chunk
            self._offset = start + want
            return self._buffer[start:start + want]
        parts = [self._buffer[start:]]
        got = len(parts[0])
        self._buffer, self._offset = b"", 0
        while got < want and not self._done:
            step = self._step()
            if got + len(step) > want:
                self._buffer, self._offset = step, want - got
                step = step[:want - got]
            parts.append(step)
            got += len(step)
        return b"".join(parts)

    def _step(self) -> bytes:
        if not self._pending:
            self._pending = self._raw.read(CHUNK)
        decomp = self._decomp
        if decomp is None:
            data, self._pending = self._pending, b""
            self._done = not data
            return data
        try:
            if self.kind == "gzip":
                feed = decomp.unconsumed_tail
                if not feed:
                    feed, self._pending = self._pending, b""
                    self._in += len(feed)
                out: bytes = decomp.decompress(feed, CHUNK)
            else:
                feed = b""
                if decomp.needs_input:
                    feed, self._pending = self._pending, b""
                    self._in += len(feed)
                out = decomp.decompress(feed, max_length=CHUNK)
        except (InflateError, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
            raise ArchiveError(f"{self.source}: not a readable tar archive (damaged {self.kind} "
                               f"stream: {exc})") from exc
        self._out += len(out)
        if self._out > self._floor + self._ratio * self._in:
            raise ArchiveError(f"{self.source}: inflates to more than {self._ratio} times its "
                               "compressed size; refusing it as a compression bomb")
        if decomp.eof:
            rest = decomp.unused_data + self._pending
            self._pending = rest
            if rest.strip(b"\0") or self._raw_has_more():
                self._decomp = self._new()
            else:
                self._done = True
        elif not out and not self._pending and not self._unconsumed():
            self._pending = self._raw.read(CHUNK)
            if not self._pending:
                raise ArchiveError(f"{self.source}: not a readable tar archive ({self.kind} "
                                   "stream is truncated)")
        return out

    def _unconsumed(self) -> bool:
        return self.kind == "gzip" and bool(self._decomp.unconsumed_tail)

    def _raw_has_more(self) -> bool:
        more = self._raw.read(CHUNK)
        self._pending += more
        return bool(more.strip(b"\0"))


def _kind(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"BZh"):
        return "bzip2"
    return "tar"


def open_tar_stream(stream: BinaryIO, *, source: str, limits: TarLimits | None = None) -> TarReader:
    """A reader for one sequential pass over a (possibly gzip/xz/bzip2-compressed) tar stream."""
    return TarReader(Decompressed(stream, source=source), source=source, limits=limits)


def check_symlink_target(path: str, target: str, *, source: str) -> None:
    """A relative symlink target must not climb above the root."""
    if not target:
        raise ArchiveError(f"{source}: symlink {path!r} has an empty target")
    if resolve_symlink_target(path, target) is None:
        raise ArchiveError(f"{source}: symlink {path!r} -> {target!r} escapes the root")


def load_tar(stream: BinaryIO | TarReader, tree: FileTree, *, source: str,
             accept: MemberFilter | None = None) -> list[str]:
    """Merge every member of a tar stream into ``tree``; return the paths added, in archive order.

    ``stream`` may also be a :class:`TarReader` already open for one sequential pass
    (a caller with its own stream and limits). ``accept`` may skip members
    (for example an APK's ``.PKGINFO``). Later members of the same archive may not
    contradict earlier ones.
    """
    added: list[str] = []
    seen: dict[str, Entry] = {}
    link_ids: dict[str, int] = {}
    archive = stream if isinstance(stream, TarReader) else open_tar_stream(stream, source=source)
    try:
        for member in archive:
            if accept is not None and not accept(member):
                continue
            entry = _entry_from_member(member, archive, tree, seen, link_ids, source)
            prior = seen.get(entry.path)
            if prior is not None:
                if _same(prior, entry):
                    continue
                raise ArchiveError(f"{source}: member {shorten(member.name)} appears twice with "
                                   "different contents")
            tree.put(entry, what=f"{source}: member")
            seen[entry.path] = entry
            added.append(entry.path)
    except OSError as exc:
        raise ArchiveError(f"{source}: damaged tar archive ({_short(exc)})") from exc
    return added


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


def _same(a: Entry, b: Entry) -> bool:
    return (a.type, a.mode, a.uid, a.gid, a.target, a.devmajor, a.devminor, a.xattrs,
            a.blob.sha256 if a.blob else None) == (
            b.type, b.mode, b.uid, b.gid, b.target, b.devmajor, b.devminor, b.xattrs,
            b.blob.sha256 if b.blob else None)


class _Content:
    """The current member's content as a stream, for :meth:`BlobStore.from_stream`."""

    def __init__(self, archive: TarReader, member: TarMember) -> None:
        self._archive = archive
        self._member = member

    def read(self, size: int = -1) -> bytes | memoryview:
        return self._archive.read_content(self._member, size)


def _entry_from_member(member: TarMember, archive: TarReader, tree: FileTree,
                       seen: dict[str, Entry], link_ids: dict[str, int], source: str) -> Entry:
    path = normalize_path(member.name, what=f"{source}: member")
    base = Entry(path=path, type=EntryType.FILE, mode=member.mode, uid=member.uid,
                 gid=member.gid, mtime=member.mtime, xattrs=xattrs_of(member))
    if member.type == HARDLINK:
        target_path = normalize_path(member.linkname, what=f"{source}: hard link target")
        target = seen.get(target_path)
        if target is None or target.type != EntryType.FILE:
            raise ArchiveError(
                f"{source}: hard link {shorten(member.name)} points to {shorten(member.linkname)}, "
                "which is not an earlier regular file in the archive")
        link_id = link_ids.get(target_path)
        if link_id is None:
            link_id = tree.new_link_id()
            link_ids[target_path] = link_id
            updated = target.with_changes(link_id=link_id)
            tree.entries[target_path] = updated
            seen[target_path] = updated
        link_ids[path] = link_id
        return replace(base, blob=target.blob, link_id=link_id)
    kind = _TYPES[member.type]
    if path == "" and kind != EntryType.DIR:
        raise ArchiveError(f"{source}: member {shorten(member.name)} names the root but is not a "
                           "directory")
    if kind == EntryType.FILE:
        content = _Content(archive, member)
        return replace(base, blob=tree.store.from_stream(content, member.size))  # type: ignore[arg-type]
    if kind == EntryType.SYMLINK:
        check_symlink_target(path, member.linkname, source=source)
        return replace(base, type=kind, target=member.linkname)
    if kind in (EntryType.CHAR, EntryType.BLOCK):
        return replace(base, type=kind, devmajor=member.devmajor, devminor=member.devminor)
    return replace(base, type=kind)
