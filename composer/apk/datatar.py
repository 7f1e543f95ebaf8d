"""Load a verified package's data tar into a private tree in one pass over its bytes.

Same checks as :meth:`VerifiedPackage.load_data` (the raw member must still
hash to ``datahash``, every ``APK-TOOLS.checksum.SHA1`` record must match,
unsafe members are refused by :func:`composer.archive.load_tar`), but each byte
is inflated once, in 1 MiB steps, and every file's SHA-1 is computed while its
content is stored rather than by reading the blob back. Hashing and inflating
release the GIL, so packages can load on several threads.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zlib
from typing import BinaryIO

from composer.apk.package import PAX_SHA1, DataContents, VerifiedPackage
from composer.archive import load_tar
from composer.errors import ArchiveError, VerificationError
from composer.tree import Blob, BlobStore, EntryType, FileTree, normalize_path

CHUNK = 1024 * 1024


class _InflatingReader(io.RawIOBase):
    """Raw gzip member in, tar bytes out; hashes the raw bytes on the way."""

    def __init__(self, raw: BinaryIO, *, where: str) -> None:
        self.raw = raw
        self.where = where
        self.sha256 = hashlib.sha256()
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = memoryview(b"")
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.pending and not self.done:
            self._refill()
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count

    def _refill(self) -> None:
        try:
            if self.inflater.unconsumed_tail:
                out = self.inflater.decompress(self.inflater.unconsumed_tail, 4 * CHUNK)
            elif self.inflater.eof:
                self.done = True
                return
            else:
                chunk = self.raw.read(CHUNK)
                if not chunk:
                    raise ArchiveError(f"{self.where}: gzip stream is truncated")
                self.sha256.update(chunk)
                out = self.inflater.decompress(chunk, 4 * CHUNK)
        except zlib.error as exc:
            raise ArchiveError(f"{self.where}: damaged gzip stream ({exc})") from exc
        if self.inflater.eof and self.inflater.unused_data:
            raise ArchiveError(f"{self.where}: unexpected bytes after the data member")
        self.pending = memoryview(out)

    def drain(self) -> None:
        while not self.done:
            self.pending = memoryview(b"")
            self._refill()
        if self.raw.read(1):
            raise ArchiveError(f"{self.where}: unexpected bytes after the data member")


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

    def accept(member: tarfile.TarInfo) -> bool:
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
                raise ArchiveError(f"{where}: member {member.name!r} has a malformed "
                                   f"{PAX_SHA1} record {value!r}")
            pax_sha1[path] = digest
        return True

    raw = pkg.open_data_raw()
    try:
        reader = _InflatingReader(raw, where=where)
        added = load_tar(io.BufferedReader(reader, CHUNK), scratch,
                         source=where, accept=accept)
        reader.drain()
    finally:
        raw.close()
    if reader.sha256.hexdigest() != pkg.data_sha256:
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
