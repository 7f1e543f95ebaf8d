"""Bytes a diff reads, and the bounds on reading them.

Every reader of the diff takes a :class:`Bytes` (random access to a range of a file,
of several ranges, or of memory) or a sequential stream made from one, so that one
image can hold another (a FAT image inside an ISO, a PE file inside the FAT image, a
layer inside an oci-archive) without copying or extracting anything. Every byte that
is read, inflated or hashed is charged to one :class:`Budget` per side; a reader that
would pass a bound raises :class:`ArchiveError` naming what was exceeded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from composer.decompress import BoundedDecoder
from composer.errors import ArchiveError

PIECE = 1 << 20


@dataclass(frozen=True)
class DiffLimits:
    """What one side of a diff may cost. Real artifacts stay far below each bound."""

    max_bytes: int = 8 << 30
    """Bytes inflated and hashed, in total, per side."""
    ratio: int = 100
    """A compressed stream may inflate to this many times its size …"""
    ratio_floor: int = 64 << 20
    """… plus this much (small streams of zeros are legitimate)."""
    max_entries: int = 300_000
    """Files, members, directory records and blobs, in total, per side."""
    max_name: int = 4096
    """Bytes of one path or link target."""
    max_metadata: int = 64 << 20
    """Bytes of paths, link targets and header values kept, in total, per side."""
    max_json: int = 4 << 20
    """Bytes of one JSON document (OCI index, manifest, config; manifest.json)."""
    max_db: int = 64 << 20
    """Bytes of one installed database (/lib/apk/db/installed)."""
    max_nesting: int = 8
    """Containers inside containers (index → index → …, ISO → FAT → PE)."""


MB = 1 << 20


def _size(n: int) -> str:
    return f"{n // MB} MiB" if n >= MB and n % MB == 0 else f"{n} bytes"


class Budget:
    """The running cost of one side, checked against its :class:`DiffLimits`."""

    def __init__(self, limits: DiffLimits, side: str) -> None:
        self.limits = limits
        self.side = side
        self.bytes = 0
        self.entries = 0
        self.metadata = 0

    def charge_bytes(self, count: int, what: str) -> None:
        self.bytes += count
        if self.bytes > self.limits.max_bytes:
            raise ArchiveError(f"{what}: reading {self.side} passes the diff's limit of "
                               f"{_size(self.limits.max_bytes)} read, inflated and hashed")

    def charge_entry(self, what: str, text: int = 0) -> None:
        self.entries += 1
        self.metadata += text
        if self.entries > self.limits.max_entries:
            raise ArchiveError(f"{what}: {self.side} has more than the "
                               f"{self.limits.max_entries} files, members and records a diff "
                               "reads")
        if self.metadata > self.limits.max_metadata:
            raise ArchiveError(f"{what}: {self.side} has more than "
                               f"{_size(self.limits.max_metadata)} of names and header values")

    def name(self, raw: str, what: str) -> str:
        if len(raw) > self.limits.max_name:
            raise ArchiveError(f"{what}: a name or link target of {len(raw)} characters, more "
                               f"than the {self.limits.max_name} allowed")
        return raw

    def inflate_limit(self, compressed: int) -> tuple[int, str]:
        """How far a stream of ``compressed`` bytes may inflate, and why that far."""
        by_ratio = self.limits.ratio * compressed + self.limits.ratio_floor
        left = max(0, self.limits.max_bytes - self.bytes)
        if by_ratio <= left:
            return by_ratio, (f"{self.limits.ratio} times its {compressed} compressed bytes "
                              f"plus {_size(self.limits.ratio_floor)}")
        return left, f"the diff's limit of {_size(self.limits.max_bytes)} per side"


class Bytes:
    """Random access to ``size`` bytes; ``what`` names them in errors."""

    size: int
    what: str

    def _read(self, pos: int, length: int) -> bytes:
        raise NotImplementedError

    def read_at(self, pos: int, length: int) -> bytes:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise ArchiveError(f"{self.what}: bytes {pos}..{pos + length} lie past its end "
                               f"({self.size} bytes)")
        if length == 0:
            return b""
        data = self._read(pos, length)
        if len(data) != length:
            raise ArchiveError(f"{self.what}: ends before byte {pos + length}")
        return data

    def sub(self, pos: int, length: int, what: str) -> Bytes:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise ArchiveError(f"{what}: bytes {pos}..{pos + length} lie outside {self.what} "
                               f"({self.size} bytes)")
        return _Slice(self, pos, length, what)

    def chunks(self, piece: int = PIECE) -> Iterator[bytes]:
        pos = 0
        while pos < self.size:
            n = min(piece, self.size - pos)
            yield self.read_at(pos, n)
            pos += n

    def stream(self) -> Sequential:
        return Sequential(self)


class FileBytes(Bytes):
    """A range of an open, seekable binary file."""

    def __init__(self, fh: BinaryIO, start: int, size: int, what: str) -> None:
        self.fh = fh
        self.start = start
        self.size = size
        self.what = what

    def _read(self, pos: int, length: int) -> bytes:
        self.fh.seek(self.start + pos)
        return self.fh.read(length)


class MemoryBytes(Bytes):
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.size = len(data)
        self.what = what

    def _read(self, pos: int, length: int) -> bytes:
        return self.data[pos:pos + length]


class _Slice(Bytes):
    def __init__(self, parent: Bytes, start: int, size: int, what: str) -> None:
        self.parent = parent
        self.start = start
        self.size = size
        self.what = what

    def _read(self, pos: int, length: int) -> bytes:
        return self.parent.read_at(self.start + pos, length)


class Joined(Bytes):
    """Several ranges read as one (a file in FAT clusters that are not contiguous)."""

    def __init__(self, parts: list[Bytes], size: int, what: str) -> None:
        self.parts = parts
        self.size = size
        self.what = what
        if sum(p.size for p in parts) < size:
            raise ArchiveError(f"{what}: its clusters hold fewer than its {size} bytes")

    def _read(self, pos: int, length: int) -> bytes:
        out = []
        base = 0
        for part in self.parts:
            if length <= 0:
                break
            if pos < base + part.size:
                take = min(length, base + part.size - pos)
                out.append(part.read_at(pos - base, take))
                pos += take
                length -= take
            base += part.size
        return b"".join(out)


class Sequential:
    """``read(size)`` over a :class:`Bytes`, for the tar and cpio readers."""

    def __init__(self, source: Bytes) -> None:
        self.source = source
        self.pos = 0

    def read(self, size: int = -1, /) -> bytes:
        left = self.source.size - self.pos
        n = left if size < 0 else min(size, left)
        data = self.source.read_at(self.pos, n)
        self.pos += n
        return data


def compression_of(head: bytes) -> str:
    """``gzip``, ``zstd``, ``xz`` or ``none``, from a stream's first bytes."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return "none"


class Decoded:
    """The inflated bytes of ``source``, read sequentially within the side's budget."""

    def __init__(self, source: Bytes, kind: str, budget: Budget) -> None:
        limit, reason = budget.inflate_limit(source.size)
        self.decoder = BoundedDecoder(kind, what=source.what, limit=limit, limit_reason=reason)
        self.pieces = self._pieces(source)
        self.buffer = b""
        self.offset = 0
        self.budget = budget
        self.what = source.what

    def _pieces(self, source: Bytes) -> Iterator[bytes]:
        for chunk in source.chunks():
            yield from self.decoder.feed(chunk)
        yield from self.decoder.finish()

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; each piece is sliced, never copied whole per call."""
        want = size if size >= 0 else 1 << 62
        parts: list[bytes] = []
        while want > 0:
            if self.offset >= len(self.buffer):
                piece = next(self.pieces, None)
                if piece is None:
                    break
                self.budget.charge_bytes(len(piece), self.what)
                self.buffer, self.offset = piece, 0
                continue
            take = self.buffer[self.offset:self.offset + want]
            self.offset += len(take)
            want -= len(take)
            parts.append(take)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def open_stream(source: Bytes, budget: Budget) -> tuple[str, Sequential | Decoded]:
    """``source`` as a sequential stream, inflated when its magic says it is compressed."""
    kind = compression_of(source.read_at(0, min(6, source.size)))
    if kind == "none":
        return kind, source.stream()
    return kind, Decoded(source, kind, budget)
