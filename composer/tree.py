"""The root filesystem as a model in memory, never extracted onto the host.

Every stage that changes the rootfs (minirootfs load, package install, overlay)
edits a :class:`FileTree`; every writer reads it back in one sorted walk.
Paths are stored normalised: relative, ``/``-separated, no ``.``/``..`` parts,
no leading ``./``; the root directory is the empty path ``""``.

File contents live in :class:`Blob` objects. Small ones stay in memory; large
ones, or any once the tree's in-memory budget is used up, spill to a private
temporary folder so memory stays bounded whatever the image size.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from composer.errors import ArchiveError, ScratchError
from composer.hashing import hash_stream

SPILL_FILE_THRESHOLD = 256 * 1024
"""Files larger than this always go to disk."""

MEMORY_BUDGET = 64 * 1024 * 1024
"""Total bytes of file content a tree keeps in memory before spilling all new blobs."""

COPY_CHUNK = 1024 * 1024


class EntryType(enum.StrEnum):
    """The kinds of filesystem object a rootfs can hold."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"


_S_IFMT = {
    EntryType.FILE: stat.S_IFREG,
    EntryType.DIR: stat.S_IFDIR,
    EntryType.SYMLINK: stat.S_IFLNK,
    EntryType.CHAR: stat.S_IFCHR,
    EntryType.BLOCK: stat.S_IFBLK,
    EntryType.FIFO: stat.S_IFIFO,
}


class _Arena:
    """An append-only spill file shared by many blobs, read back with ``pread``.

    One file per writing thread instead of one per blob: creating and unlinking
    thousands of small files costs more system time than the copies themselves.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.writer = open(path, "w+b")
        self.fd = self.writer.fileno()
        self.size = 0

    def close(self) -> None:
        self.writer.close()


class _SliceReader(io.RawIOBase):
    """Reads ``size`` bytes at ``offset`` of a shared descriptor, without moving its position."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd = fd
        self._pos = offset
        self._end = offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._end - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class Blob:
    """Immutable file content with its size and sha256: in memory, in a spill arena,
    or a whole file on the host (``path``)."""

    __slots__ = ("_data", "_path", "_arena", "_offset", "size", "_sha256")

    def __init__(self, *, data: bytes | None, path: str | None, size: int,
                 sha256: str | None = None, arena: _Arena | None = None, offset: int = 0) -> None:
        self._data = data
        self._path = path
        self._arena = arena
        self._offset = offset
        self.size = size
        self._sha256 = sha256

    @property
    def sha256(self) -> str:
        """Computed on first use: most blobs are only ever copied into an output, and
        hashing every byte of a large image just in case costs a full extra pass."""
        if self._sha256 is None:
            if self._data is not None:
                self._sha256 = hashlib.sha256(self._data).hexdigest()
            else:
                with self.open() as fh:
                    self._sha256, _ = hash_stream(fh)
        return self._sha256

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    def open(self) -> BinaryIO:
        """A fresh binary reader over the content."""
        if self._data is not None:
            return io.BytesIO(self._data)
        if self._arena is not None:
            return io.BufferedReader(_SliceReader(self._arena.fd, self._offset, self.size),
                                     COPY_CHUNK)
        assert self._path is not None
        return open(self._path, "rb")

    def read(self) -> bytes:
        if self._data is not None:
            return self._data
        with self.open() as fh:
            return fh.read()

    def chunks(self, step: int = COPY_CHUNK) -> Iterator[bytes]:
        """The content in pieces of at most ``step`` bytes, read straight from where it lives
        (no buffered reader in between); a spill file that lost bytes is an OSError."""
        if self._data is not None:
            yield self._data
            return
        if self._arena is not None:
            pos, end = self._offset, self._offset + self.size
            while pos < end:
                data = os.pread(self._arena.fd, min(step, end - pos), pos)
                if not data:
                    raise OSError(f"spilled content ended {end - pos} bytes early")
                pos += len(data)
                yield data
            return
        with self.open() as fh:
            while data := fh.read(step):
                yield data

    def __repr__(self) -> str:
        return f"Blob(size={self.size}, sha256={self.sha256[:12]}…)"


class BlobStore:
    """Makes :class:`Blob` objects, spilling large ones into private arena files."""

    def __init__(self, *, spill_threshold: int = SPILL_FILE_THRESHOLD,
                 memory_budget: int = MEMORY_BUDGET) -> None:
        self.spill_threshold = spill_threshold
        self.memory_budget = memory_budget
        self.in_memory_bytes = 0
        self._dir: str | None = None
        self._arenas: dict[int, _Arena] = {}
        # Packages are loaded on worker threads: each thread appends to its own arena;
        # creating arenas and the memory budget are the only shared state.
        self._lock = threading.Lock()

    def _arena(self) -> _Arena:
        ident = threading.get_ident()
        arena = self._arenas.get(ident)
        if arena is None:
            with self._lock, self._spill_errors():
                if self._dir is None:
                    self._dir = tempfile.mkdtemp(prefix="composer-spill-")
                arena = _Arena(os.path.join(self._dir, f"arena-{len(self._arenas):03d}"))
                self._arenas[ident] = arena
        return arena

    @contextlib.contextmanager
    def _spill_errors(self) -> Iterator[None]:
        """A full or read-only temporary folder as one line that says what to do."""
        try:
            yield
        except OSError as exc:
            where = self._dir or tempfile.gettempdir()
            raise ScratchError(f"temporary folder {where}: cannot write spill file: "
                               f"{exc.strerror or exc} (set TMPDIR to a folder with room)") from exc

    def _reserve_memory(self, size: int) -> bool:
        """Claim ``size`` bytes of the in-memory budget, or say the blob must spill."""
        with self._lock:
            if size <= self.spill_threshold and self.in_memory_bytes + size <= self.memory_budget:
                self.in_memory_bytes += size
                return True
            return False

    def from_bytes(self, data: bytes) -> Blob:
        if self._reserve_memory(len(data)):
            return Blob(data=bytes(data), path=None, size=len(data))
        arena = self._arena()
        offset = arena.size
        with self._spill_errors():
            arena.writer.write(data)
            arena.writer.flush()
        arena.size += len(data)
        return Blob(data=None, path=None, size=len(data), arena=arena, offset=offset)

    def from_stream(self, stream: BinaryIO, size: int | None = None) -> Blob:
        """Copy a stream into a blob; ``size``, when given, must match what is read."""
        if size is not None and size <= self.spill_threshold:
            data = stream.read(size)
            if 0 < len(data) < size:
                parts = [data]
                while (got := sum(len(p) for p in parts)) < size:
                    more = stream.read(size - got)
                    if not more:
                        break
                    parts.append(more)
                data = b"".join(parts)
            if len(data) != size:
                raise ArchiveError(f"content ended after {len(data)} of {size} bytes")
            return self.from_bytes(data)
        arena = self._arena()
        offset = arena.size
        total = 0
        try:
            while True:
                want = COPY_CHUNK if size is None else min(COPY_CHUNK, size - total)
                if want == 0:
                    break
                chunk = stream.read(want)
                if not chunk:
                    break
                with self._spill_errors():
                    arena.writer.write(chunk)
                total += len(chunk)
            with self._spill_errors():
                arena.writer.flush()
        finally:
            arena.size = offset + total
        if size is not None and total != size:
            raise ArchiveError(f"content ended after {total} of {size} bytes")
        if total <= self.spill_threshold and self._reserve_memory(total):
            data = os.pread(arena.fd, total, offset)
            return Blob(data=data, path=None, size=total)
        return Blob(data=None, path=None, size=total, arena=arena, offset=offset)

    def close(self) -> None:
        with self._lock:
            for arena in self._arenas.values():
                arena.close()
            self._arenas.clear()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None


@dataclass(frozen=True)
class Entry:
    """One filesystem object. ``mode`` holds permission bits only (incl. setuid/setgid/sticky).

    Regular files that are hard links of each other share a ``blob`` and carry the
    same non-zero ``link_id``; writers store the first by sorted path as a file and
    the rest as hard links to it.
    """

    path: str
    type: EntryType
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    blob: Blob | None = None
    target: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()
    link_id: int = 0

    @property
    def size(self) -> int:
        return self.blob.size if self.blob is not None else 0

    @property
    def st_mode(self) -> int:
        """The full st_mode: type bits plus permission bits."""
        return _S_IFMT[self.type] | self.mode

    def with_changes(self, **changes: object) -> Entry:
        return replace(self, **changes)  # type: ignore[arg-type]


def normalize_path(name: str, *, what: str = "path") -> str:
    """Normalise an archive member or overlay path, rejecting anything that leaves the root.

    Accepts ``./a/b``, ``a/b/``, ``a//b``; rejects absolute paths and any ``..`` part.
    """
    if "\x00" in name:
        raise ArchiveError(f"{what} {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise ArchiveError(f"{what} {name!r} is absolute")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArchiveError(f"{what} {name!r} contains '..'")
    return "/".join(parts)


def parent_of(path: str) -> str:
    return posixpath.dirname(path)


def sort_key(path: str) -> bytes:
    """Byte order of the full path, as the reproducible-archive rules ask."""
    return path.encode("utf-8", "surrogateescape")


def resolve_symlink_target(link_path: str, target: str) -> str | None:
    """Where a symlink points inside the root, or None when a relative target climbs above it."""
    if target.startswith("/"):
        base: list[str] = []
        rest = target
    else:
        base = [p for p in parent_of(link_path).split("/") if p]
        rest = target
    for part in rest.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not base:
                if target.startswith("/"):
                    continue
                return None
            base.pop()
        else:
            base.append(part)
    return "/".join(base)


@dataclass
class FileTree:
    """A mutable rootfs model: path → :class:`Entry`, plus the blob store it owns."""

    store: BlobStore = field(default_factory=BlobStore)
    entries: dict[str, Entry] = field(default_factory=dict)
    _next_link_id: int = 1

    def __post_init__(self) -> None:
        if "" not in self.entries:
            self.entries[""] = Entry(path="", type=EntryType.DIR, mode=0o755)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> FileTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __contains__(self, path: str) -> bool:
        return path in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, path: str) -> Entry | None:
        return self.entries.get(path)

    def new_link_id(self) -> int:
        value = self._next_link_id
        self._next_link_id += 1
        return value

    def check_parents(self, path: str, *, what: str = "entry") -> None:
        """Refuse a path whose parent is missing, not a directory, or reached through a symlink."""
        parent = parent_of(path)
        while parent not in self.entries:
            parent = parent_of(parent)
        entry = self.entries[parent]
        if entry.type == EntryType.SYMLINK:
            raise ArchiveError(
                f"{what} {path!r} passes through symlink {parent!r} -> {entry.target!r}")
        if entry.type != EntryType.DIR:
            raise ArchiveError(f"{what} {path!r} is below {parent!r}, which is not a directory")

    def ensure_parents(self, path: str, *, mode: int = 0o755, mtime: int = 0,
                       what: str = "entry") -> None:
        """Create missing parent directories (root-owned, ``mode``) for ``path``."""
        missing: list[str] = []
        parent = parent_of(path)
        while parent and parent not in self.entries:
            missing.append(parent)
            parent = parent_of(parent)
        self.check_parents(path, what=what)
        for p in reversed(missing):
            self.entries[p] = Entry(path=p, type=EntryType.DIR, mode=mode, mtime=mtime)

    def put(self, entry: Entry, *, replace_existing: bool = True, what: str = "entry") -> None:
        """Add or replace an entry, creating missing parent directories."""
        path = entry.path
        if path == "":
            if entry.type != EntryType.DIR:
                raise ArchiveError(f"{what}: the root must be a directory")
            self.entries[""] = entry
            return
        self.ensure_parents(path, mtime=entry.mtime, what=what)
        old = self.entries.get(path)
        if old is not None:
            if not replace_existing:
                raise ArchiveError(f"{what} {path!r} already exists")
            if old.type == EntryType.DIR and entry.type != EntryType.DIR:
                if any(True for _ in self.children(path)):
                    raise ArchiveError(f"{what} {path!r} would replace a non-empty directory")
        self.entries[path] = entry

    def follow(self, path: str) -> Entry | None:
        """The entry at ``path`` after following symlinks inside the root (at most 40, as
        the kernel does), or None when the chain ends nowhere or loops."""
        for _ in range(40):
            entry = self.entries.get(path)
            if entry is None or entry.type != EntryType.SYMLINK:
                return entry
            target = resolve_symlink_target(path, entry.target)
            if target is None:
                return None
            path = target
        return None

    def children(self, path: str) -> Iterator[str]:
        prefix = path + "/" if path else ""
        for p in self.entries:
            if p and p.startswith(prefix) and p != path:
                yield p

    def remove(self, path: str, *, recursive: bool = True) -> list[str]:
        """Remove ``path`` (and, for directories, everything below it); return removed paths."""
        if path not in self.entries:
            return []
        removed = [path]
        if self.entries[path].type == EntryType.DIR:
            below = list(self.children(path))
            if below and not recursive:
                raise ArchiveError(f"directory {path!r} is not empty")
            removed.extend(below)
        for p in removed:
            del self.entries[p]
        return removed

    def walk(self) -> list[Entry]:
        """All entries, root first, sorted by the path's bytes (parents precede children)."""
        return [self.entries[p] for p in sorted(self.entries, key=sort_key)]

    def add_file(self, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
                 mtime: int = 0) -> Entry:
        entry = Entry(path=path, type=EntryType.FILE, mode=mode, uid=uid, gid=gid, mtime=mtime,
                      blob=self.store.from_bytes(data))
        self.put(entry)
        return entry

    def add_dir(self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0,
                mtime: int = 0) -> Entry:
        entry = Entry(path=path, type=EntryType.DIR, mode=mode, uid=uid, gid=gid, mtime=mtime)
        self.put(entry)
        return entry

    def add_symlink(self, path: str, target: str, *, uid: int = 0, gid: int = 0,
                    mtime: int = 0) -> Entry:
        entry = Entry(path=path, type=EntryType.SYMLINK, mode=0o777, uid=uid, gid=gid,
                      mtime=mtime, target=target)
        self.put(entry)
        return entry

    def read_file(self, path: str) -> bytes:
        entry = self.entries.get(path)
        if entry is None or entry.type != EntryType.FILE or entry.blob is None:
            raise KeyError(path)
        return entry.blob.read()

    def hardlink_groups(self) -> dict[int, list[str]]:
        """link_id → sorted paths, for ids shared by two or more files."""
        groups: dict[int, list[str]] = {}
        for p, e in self.entries.items():
            if e.type == EntryType.FILE and e.link_id:
                groups.setdefault(e.link_id, []).append(p)
        return {k: sorted(v, key=sort_key) for k, v in groups.items() if len(v) > 1}


@dataclass(frozen=True)
class StageSnapshot:
    """The tree's entries as a stage left them (entries and blobs are immutable, so a
    shallow copy of the mapping is a snapshot)."""

    name: str
    entries: Mapping[str, Entry]
    comment: str
