"""Load a verified package's data tar into a private tree in one pass over its bytes.

Same checks as :meth:`VerifiedPackage.load_data` (the raw member must still
hash to ``datahash``, every ``APK-TOOLS.checksum.SHA1`` record must match,
unsafe members are refused by :func:`composer.archive.load_tar`), but each byte
is inflated once, in 1 MiB steps, file contents go from the inflated chunks
straight into their blobs, and every file's SHA-1 is computed while its content
is stored rather than by reading the blob back. Hashing and inflating release
the GIL, so packages can load on several threads.

For a package whose data :func:`~composer.apk.package.verify_apk` did not hash
(``data_checked`` False), this pass is the data hash check: a mismatch is
reported as one, even when the damage first shows up as a broken gzip or tar
stream, and the caller merges nothing before it returns.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from composer.apk.package import PAX_SHA1, DataContents, VerifiedPackage, data_limits
from composer.archive import load_tar
from composer.errors import ArchiveError, VerificationError
from composer.inflate import InflateError, gzip_inflater
from composer.numbers import shorten
from composer.tarread import TarMember, TarReader
from composer.tree import Blob, BlobStore, EntryType, FileTree, normalize_path

CHUNK = 1024 * 1024


class _InflatedStream:
    """Raw gzip member in, tar bytes out, hashing the raw bytes on the way.

    File contents come out as views of the inflated chunks (:meth:`read_view`) so a
    file's bytes are copied only into their blob; more than ``limit`` inflated bytes
    is an error.
    """

    def __init__(self, raw: BinaryIO, *, where: str, limit: int) -> None:
        self.raw = raw
        self.where = where
        self.limit = limit
        self.sha256 = hashlib.sha256()
        self.inflater = gzip_inflater()
        self.chunk = b""
        self.view = memoryview(self.chunk)
        self.pos = 0
        self.base = 0
        self.done = False
        # One raw buffer per package, refilled in place: a fresh 1 MiB object per read
        # costs more in page faults than the copy itself.
        self.buffer = bytearray(CHUNK)

    def read(self, size: int = -1) -> bytes:
        if 0 <= size <= len(self.chunk) - self.pos:
            data = self.chunk[self.pos:self.pos + size]
            self.pos += size
            return data
        parts = []
        while size < 0 or size > 0:
            view = self.read_view(size if size >= 0 else CHUNK)
            if not view:
                break
            parts.append(view)
            if size > 0:
                size -= len(view)
        return b"".join(parts)

    def read_view(self, size: int) -> memoryview:
        """Up to ``size`` bytes (fewer at a chunk's end; empty only at the end of the data)."""
        while self.pos >= len(self.chunk):
            if not self._next_chunk():
                return memoryview(b"")
        end = min(self.pos + size, len(self.chunk))
        view = self.view[self.pos:end]
        self.pos = end
        return view

    def _next_chunk(self) -> bool:
        self.base += len(self.chunk)
        self.chunk = b""
        self.pos = 0
        while not self.chunk and not self.done:
            self.chunk = self._inflate()
        self.view = memoryview(self.chunk)
        return bool(self.chunk)

    def _inflate(self) -> bytes:
        out: bytes
        try:
            if self.inflater.unconsumed_tail:
                out = self.inflater.decompress(self.inflater.unconsumed_tail, CHUNK)
            elif self.inflater.eof:
                self.done = True
                return b""
            else:
                count = self.raw.readinto(self.buffer)  # type: ignore[attr-defined]
                if not count:
                    raise ArchiveError(f"{self.where}: gzip stream is truncated")
                chunk = memoryview(self.buffer)[:count]
                self.sha256.update(chunk)
                out = self.inflater.decompress(chunk, CHUNK)
        except InflateError as exc:
            raise ArchiveError(f"{self.where}: damaged gzip stream ({exc})") from exc
        if self.inflater.eof and self.inflater.unused_data:
            raise ArchiveError(f"{self.where}: unexpected bytes after the data member")
        if self.base + len(out) > self.limit:
            raise ArchiveError(f"{self.where}: inflates to more than {self.limit} bytes, beyond "
                               "what the installed size in .PKGINFO allows")
        return out

    def drain(self) -> None:
        """Inflate to the end of the member and check that nothing follows it."""
        while self._next_chunk():
            pass
        if self.raw.read(1):
            raise ArchiveError(f"{self.where}: unexpected bytes after the data member")

    def hash_rest(self) -> str:
        """The raw member's sha256 after reading what is left unread (to judge a failure)."""
        while chunk := self.raw.read(CHUNK):
            self.sha256.update(chunk)
        return self.sha256.hexdigest()


class _Sha1Tee:
    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.sha1 = hashlib.sha1()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.sha1.update(data)
        return data


class _DigestingStore(BlobStore):
    """Makes blobs in ``inner`` and remembers each one's SHA-1."""

    def __init__(self, inner: BlobStore) -> None:
        super().__init__()
        self.inner = inner
        self.sha1: dict[int, bytes] = {}

    def from_bytes(self, data: bytes) -> Blob:
        blob = self.inner.from_bytes(data)
        self.sha1[id(blob)] = hashlib.sha1(data).digest()
        return blob

    def from_stream(self, stream: BinaryIO, size: int | None = None) -> Blob:
        tee = _Sha1Tee(stream)
        blob = self.inner.from_stream(tee, size)  # type: ignore[arg-type]
        self.sha1[id(blob)] = tee.sha1.digest()
        return blob

    def close(self) -> None:
        """Blobs belong to ``inner``; nothing to clean here."""


def _mismatch(pkg: VerifiedPackage, actual: str) -> VerificationError:
    return VerificationError(f"{pkg.label}: data hash mismatch (.PKGINFO datahash "
                             f"{pkg.data_sha256}, data member sha256 {actual})")


def is_control_name(name: str) -> bool:
    """Top-level dotfiles (``.PKGINFO``, ``.SIGN.*``, scripts) are apk control data, not files.

    Anything else that starts with a dot, such as ``../x`` or ``./x``, is a path and goes
    through the usual safety checks.
    """
    return name.startswith(".") and "/" not in name and name not in (".", "..")


def load_package_data(pkg: VerifiedPackage, store: BlobStore) -> tuple[FileTree, DataContents]:
    """The package's files in a new tree whose blobs live in ``store``.

    Top-level dotfiles are skipped as apk control data (see :func:`is_control_name`).
    """
    where = f"{pkg.label}: data"
    digesting = _DigestingStore(store)
    scratch = FileTree(store=digesting)
    pax_sha1: dict[str, bytes] = {}
    hardlinks: set[str] = set()

    def accept(member: TarMember) -> bool:
        if is_control_name(member.name):
            return False
        path = normalize_path(member.name, what=f"{where}: member")
        if member.islnk():
            hardlinks.add(path)
            return True
        hardlinks.discard(path)
        value = member.pax_headers.get(PAX_SHA1)
        if value is not None:
            try:
                digest = bytes.fromhex(value)
            except ValueError:
                digest = b""
            if len(digest) != 20:
                raise ArchiveError(f"{where}: member {shorten(member.name)} has a malformed "
                                   f"{PAX_SHA1} record {shorten(value)}")
            pax_sha1[path] = digest
        return True

    limits, inflate_limit = data_limits(pkg.info.size)
    raw = pkg.open_data_raw()
    try:
        reader = _InflatedStream(raw, where=where, limit=inflate_limit)
        try:
            archive = TarReader(reader, source=where, limits=limits)
            added = load_tar(archive, scratch, source=where, accept=accept)
            reader.drain()
        except ArchiveError as exc:
            if not pkg.data_checked:
                raw_sha256 = reader.hash_rest()
                if raw_sha256 != pkg.data_sha256:
                    raise _mismatch(pkg, raw_sha256) from exc
            raise
    finally:
        raw.close()
    raw_sha256 = reader.sha256.hexdigest()
    if raw_sha256 != pkg.data_sha256:
        if not pkg.data_checked:
            raise _mismatch(pkg, raw_sha256)
        raise VerificationError(f"{where} changed after it was verified")

    sha1: dict[str, bytes] = {}
    for path in added:
        entry = scratch.entries[path]
        if path in hardlinks:
            continue
        if entry.type == EntryType.SYMLINK:
            actual = hashlib.sha1(entry.target.encode("utf-8", "surrogateescape")).digest()
        elif entry.type == EntryType.FILE and entry.blob is not None:
            actual = digesting.sha1[id(entry.blob)]
        else:
            continue
        expected = pax_sha1.get(path)
        if expected is not None and expected != actual:
            raise VerificationError(
                f"{where}: {path} does not match its {PAX_SHA1} record "
                f"({expected.hex()} recorded, {actual.hex()} found)")
        sha1[path] = actual
    scratch.store = store
    return scratch, DataContents(paths=tuple(added), sha1=sha1)
