"""APK v2 signatures, the gzip-member framing they rely on, and signed indexes.

A signed APK file (package or index) is a byte concatenation of gzip members;
the first holds ``.SIGN.<ALGO>.<keyname>`` tar entries whose RSA PKCS#1 v1.5
signature covers the *raw compressed bytes* of the next member. So the framing
must keep every member's bytes exactly as stored, which is why members are
split here by hand instead of letting ``gzip`` concatenate them.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from composer.apk.keys import TrustedKeys
from composer.errors import ArchiveError, VerificationError
from composer.inflate import InflateError, gzip_inflater
from composer.numbers import shorten
from composer.tarread import TarFile, TarLimits, TarReader, read_tar_bytes

READ_CHUNK = 1024 * 1024
SMALL_READ = 64 * 1024
"""Read step for the small leading members: a package's first read need not pull in its data."""
OUTPUT_STEP = 4 * 1024 * 1024
MAX_SIGNATURE_SIZE = 65536
SIGN_PREFIX = ".SIGN."

ALGORITHMS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "RSA512": hashes.SHA512,
    "RSA256": hashes.SHA256,
    "RSA": hashes.SHA1,
}
"""Signature algorithm token → digest, in the order apk-tools tries the prefixes."""

HASHLIB_NAMES = {"RSA512": "sha512", "RSA256": "sha256", "RSA": "sha1"}


# --- gzip member framing -------------------------------------------------------------


@dataclass(frozen=True)
class GzipMember:
    """One gzip member: its raw bytes as stored, where it starts, and what it inflates to."""

    offset: int
    raw: bytes
    content: bytes


class GzipMemberReader:
    """Reads consecutive gzip members from a binary stream, keeping each member's raw bytes.

    Small members (signature, control, index) are read whole; a large data member
    is streamed with :meth:`stream_member` so memory stays bounded.
    """

    def __init__(self, stream: BinaryIO, *, source: str, start_offset: int = 0) -> None:
        self._stream = stream
        self._pending = b""
        self.source = source
        self.offset = start_offset

    def _fill(self) -> bytes:
        if not self._pending:
            self._pending = self._stream.read(SMALL_READ)
        return self._pending

    def at_end(self) -> bool:
        return not self._fill()

    def remaining_bytes(self) -> int:
        """Drain the stream and count what is left (used to reject trailing garbage)."""
        count = len(self._pending)
        self._pending = b""
        while chunk := self._stream.read(READ_CHUNK):
            count += len(chunk)
        return count

    def hash_rest(self, on_raw: Callable[[bytes], None]) -> int:
        """Feed every remaining raw byte to ``on_raw`` without inflating; return the count."""
        count = 0
        chunk = self._pending
        self._pending = b""
        while chunk:
            on_raw(chunk)
            count += len(chunk)
            chunk = self._stream.read(READ_CHUNK)
        self.offset += count
        return count

    def skip_rest(self) -> int:
        """Count the remaining raw bytes without reading them (the stream must be seekable)."""
        count = len(self._pending)
        self._pending = b""
        here = self._stream.tell()
        count += self._stream.seek(0, 2) - here
        self.offset += count
        return count

    def read_member(self, *, what: str, max_size: int) -> GzipMember:
        """Read one whole member; its inflated size may not exceed ``max_size``."""
        raw_parts: list[bytes] = []
        out_parts: list[bytes] = []
        start = self.offset
        total = 0

        def take_output(chunk: bytes) -> None:
            nonlocal total
            total += len(chunk)
            if total > max_size:
                raise ArchiveError(
                    f"{self.source}: {what} gzip member inflates to more than {max_size} bytes")
            out_parts.append(chunk)

        self._inflate(raw_parts.append, take_output, what=what,
                      limit=min(max_size + 1, OUTPUT_STEP), read_size=SMALL_READ)
        return GzipMember(offset=start, raw=b"".join(raw_parts), content=b"".join(out_parts))

    def stream_member(self, on_raw: Callable[[bytes], None], on_output: Callable[[bytes], None],
                      *, what: str) -> int:
        """Inflate one member chunk by chunk, handing raw and inflated bytes to callbacks.

        Returns the member's raw size.
        """
        start = self.offset
        self._inflate(on_raw, on_output, what=what, limit=OUTPUT_STEP, read_size=READ_CHUNK)
        return self.offset - start

    def _inflate(self, on_raw: Callable[[bytes], None], on_output: Callable[[bytes], None], *,
                 what: str, limit: int, read_size: int) -> None:
        decomp = gzip_inflater()
        pending = self._fill()
        if not pending:
            raise ArchiveError(f"{self.source}: {what} gzip member is missing (file ends early)")
        while True:
            if not pending:
                pending = self._stream.read(read_size)
                if not pending:
                    out = decomp.flush() if not decomp.eof else b""
                    if out:
                        on_output(out)
                    if not decomp.eof:
                        raise ArchiveError(f"{self.source}: {what} gzip member is truncated")
                    self._pending = decomp.unused_data
                    return
            try:
                out = decomp.decompress(pending, limit)
            except InflateError as exc:
                raise ArchiveError(
                    f"{self.source}: {what} gzip member is corrupt ({exc})") from exc
            if decomp.eof:
                rest = decomp.unused_data
            else:
                rest = decomp.unconsumed_tail
            used = pending[:len(pending) - len(rest)]
            self.offset += len(used)
            on_raw(used)
            if out:
                on_output(out)
            if decomp.eof:
                self._pending = rest
                return
            pending = rest


def split_gzip_members(data: bytes, *, source: str = "data",
                       max_member_size: int = 1 << 30) -> list[bytes]:
    """The raw bytes of each concatenated gzip member, exactly as stored in ``data``."""
    reader = GzipMemberReader(io.BytesIO(data), source=source)
    members: list[bytes] = []
    while not reader.at_end():
        members.append(reader.read_member(what=f"#{len(members) + 1}",
                                          max_size=max_member_size).raw)
    return members


# --- signature entries ---------------------------------------------------------------


@dataclass(frozen=True)
class SignatureEntry:
    """One ``.SIGN.<ALGO>.<keyname>`` entry; ``algorithm`` is None for unknown/unsupported ones."""

    name: str
    algorithm: str | None
    key_name: str
    signature: bytes


def parse_signature_name(name: str) -> tuple[str | None, str] | None:
    """(algorithm, key name) of a ``.SIGN.`` entry name; None if it is not one."""
    if not name.startswith(SIGN_PREFIX):
        return None
    rest = name[len(SIGN_PREFIX):]
    for algorithm in (*ALGORITHMS, "DSA"):
        if rest.startswith(algorithm + "."):
            key_name = rest[len(algorithm) + 1:]
            return (algorithm if algorithm in ALGORITHMS else None), key_name
    algorithm, _, key_name = rest.partition(".")
    return None, key_name


def read_small_tar(content: bytes, *, source: str, what: str) -> list[TarFile]:
    """Every regular file of an inflated tar member; the end-of-archive blocks may be cut."""
    if len(content) % 512:
        raise ArchiveError(f"{source}: {what} is not a tar archive ({len(content)} bytes "
                           "is not a multiple of 512)")
    if not content:
        raise ArchiveError(f"{source}: {what} is not a readable tar archive (empty file)")
    return read_tar_bytes(content, source=f"{source}: {what}",
                          limits=TarLimits(max_extended=64 * 1024, max_content=len(content)))


def signature_entries(files: Sequence[TarFile], *, source: str) -> list[SignatureEntry]:
    """The ``.SIGN.*`` entries of a signature member (oversized ones ignored, as apk does)."""
    entries = []
    for f in files:
        parsed = parse_signature_name(f.name)
        if parsed is None:
            raise ArchiveError(f"{source}: signature member holds {f.name!r}, not a .SIGN.* entry")
        algorithm, key_name = parsed
        if len(f.data) > MAX_SIGNATURE_SIZE:
            continue
        entries.append(SignatureEntry(name=f.name, algorithm=algorithm, key_name=key_name,
                                      signature=f.data))
    return entries


# --- verification --------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureCheck:
    """Which trusted key signed, with which algorithm token (``RSA``, ``RSA256``, ``RSA512``)."""

    signer: str
    algorithm: str


def verify_signature(entries: Sequence[SignatureEntry], keys: TrustedKeys, *, source: str,
                     message: bytes | None = None,
                     digests: Mapping[str, bytes] | None = None) -> SignatureCheck:
    """Check the first signature made by a trusted key, as apk-tools does.

    Give either the signed ``message`` or ``digests`` (hashlib name → digest of the
    message) when the message was streamed.
    """
    usable = [e for e in entries if e.algorithm is not None]
    if not usable:
        raise VerificationError(f"{source}: not signed")
    trusted = [e for e in usable if e.key_name in keys]
    if not trusted:
        names = ", ".join(dict.fromkeys(e.key_name for e in usable))
        raise VerificationError(f"{source}: signed by unknown key {names}")
    entry = trusted[0]
    assert entry.algorithm is not None
    algorithm = ALGORITHMS[entry.algorithm]()
    try:
        if message is not None:
            keys[entry.key_name].verify(entry.signature, message, padding.PKCS1v15(), algorithm)
        else:
            assert digests is not None
            keys[entry.key_name].verify(entry.signature, digests[HASHLIB_NAMES[entry.algorithm]],
                                        padding.PKCS1v15(), Prehashed(algorithm))
    except InvalidSignature:
        raise VerificationError(f"{source}: bad signature by {entry.key_name}") from None
    return SignatureCheck(signer=entry.key_name, algorithm=entry.algorithm)


def new_digests() -> dict[str, hashlib._Hash]:
    """One running hash per supported signature digest, for streamed messages."""
    return {name: hashlib.new(name) for name in HASHLIB_NAMES.values()}


# --- signed APKINDEX.tar.gz ----------------------------------------------------------
#
# Two gzip members: a signature tar and the index tar (DESCRIPTION + APKINDEX).
# The signature covers the raw compressed bytes of the second member; nothing of
# the index is handed out before it has been checked.

MAX_INDEX_SIGNATURE_MEMBER = 1024 * 1024
"""The only part of an index inflated before its signature is checked."""
MAX_INDEX_MEMBER = 128 * 1024 * 1024
"""Inflated size of a signed index tar: Alpine's largest index (v3.19 community, 17,587
packages) is 7.6 MB; 200,000 records of that kind fit."""
MAX_DESCRIPTION = 160
DIAGNOSE_LIMIT = 64 * 1024 * 1024
TEXT_PIECE = 1024 * 1024


@dataclass(frozen=True)
class VerifiedIndex:
    """A signed index whose signature and structure were checked.

    Its ``APKINDEX`` text is not kept: :meth:`chunks` inflates it again from the signed
    member, a piece at a time, so a parser never needs the whole text in memory."""

    member: bytes
    description: str | None
    signer: str
    algorithm: str
    index_member_sha256: str
    source: str
    max_index_size: int = MAX_INDEX_MEMBER

    def chunks(self) -> Iterator[bytes]:
        """The ``APKINDEX`` text in pieces of at most 1 MiB."""
        return _index_text(self.member, source=self.source, limit=self.max_index_size, found=[])

    @property
    def text(self) -> bytes:
        """The whole ``APKINDEX`` text (for small indexes and tests)."""
        return b"".join(self.chunks())


def verify_apkindex(data: bytes, keys: TrustedKeys, *, source: str,
                    max_index_size: int = MAX_INDEX_MEMBER) -> VerifiedIndex:
    """Check an ``APKINDEX.tar.gz`` against trusted keys, then its index tar's structure.

    Only the small signature member is inflated before the check: the signature
    covers the raw bytes of the index member, which run to the end of the file, so
    they are verified as stored and inflated (to at most ``max_index_size`` bytes,
    streaming, nothing kept) only once a trusted key has signed them.
    """
    reader = GzipMemberReader(io.BytesIO(data), source=source)
    if reader.at_end():
        raise ArchiveError(f"{source}: empty index file")
    first = reader.read_member(what="signature", max_size=MAX_INDEX_SIGNATURE_MEMBER)
    first_files = read_small_tar(first.content, source=source, what="first gzip member")
    if first_files and not any(f.name.startswith(".SIGN.") for f in first_files):
        raise VerificationError(f"{source}: not signed")
    if reader.at_end():
        raise ArchiveError(f"{source}: index gzip member is missing after the signature")
    entries = signature_entries(first_files, source=source)
    signed = data[reader.offset:]
    try:
        check = verify_signature(entries, keys, source=source, message=signed)
    except VerificationError:
        _diagnose_index_member(signed, source=source)
        raise
    found: list[str | None] = []
    for _piece in _index_text(signed, source=source, limit=max_index_size, found=found):
        pass
    description = found[0]
    return VerifiedIndex(member=signed, description=description, signer=check.signer,
                         algorithm=check.algorithm,
                         index_member_sha256=hashlib.sha256(signed).hexdigest(),
                         source=source, max_index_size=max_index_size)


class _InflatedMember:
    """The inflated bytes of one gzip member held in memory, read on demand and bounded;
    what follows the member's end is counted, not read."""

    def __init__(self, raw: bytes, *, source: str, limit: int) -> None:
        self._raw = memoryview(raw)
        self._pos = 0
        self._inflater = gzip_inflater()
        self._pending = b""
        self.source = source
        self.limit = limit
        self.produced = 0

    def _more(self, want: int) -> bytes:
        inflater = self._inflater
        while not inflater.eof:
            data: bytes | memoryview = inflater.unconsumed_tail
            if not data:
                data = self._raw[self._pos:self._pos + READ_CHUNK]
                self._pos += len(data)
            if not data:
                raise ArchiveError(f"{self.source}: index gzip member is truncated")
            try:
                out = inflater.decompress(data, max(want, 1))
            except InflateError as exc:
                raise ArchiveError(
                    f"{self.source}: index gzip member is corrupt ({exc})") from None
            self.produced += len(out)
            if self.produced > self.limit:
                raise ArchiveError(f"{self.source}: index gzip member inflates to more than "
                                   f"{self.limit} bytes")
            if out:
                return out
        return b""

    def read(self, size: int = -1, /) -> bytes:
        want = TEXT_PIECE if size < 0 else size
        if not self._pending:
            self._pending = self._more(min(want, TEXT_PIECE))
        piece, self._pending = self._pending[:want], self._pending[want:]
        return piece

    def finish(self) -> None:
        """Inflate what the tar reader left and refuse bytes after the member's end."""
        while self._more(TEXT_PIECE):
            pass
        trailing = len(self._inflater.unused_data) + len(self._raw) - self._pos
        if trailing:
            raise ArchiveError(f"{self.source}: {trailing} unexpected bytes after the index "
                               "gzip member")
        if self.produced % 512:
            raise ArchiveError(f"{self.source}: index tar is not a tar archive ({self.produced} "
                               "bytes is not a multiple of 512)")


def _index_text(raw: bytes, *, source: str, limit: int,
                found: list[str | None]) -> Iterator[bytes]:
    """The ``APKINDEX`` text of a signed member's index tar, in pieces; once the walk is
    complete, its DESCRIPTION is appended to ``found``. Member errors are reported after
    the gzip framing's own, as when the member was inflated whole first."""
    stream = _InflatedMember(raw, source=source, limit=limit)
    what = f"{source}: index tar"
    reader = TarReader(stream, source=what, limits=TarLimits(max_extended=64 * 1024,
                                                             max_content=limit))
    seen = False
    description: str | None = None
    try:
        for member in reader:
            if not member.isreg():
                raise ArchiveError(f"{what}: member {shorten(member.name)} is not a regular file")
            name = member.name.removeprefix("./")
            if name.startswith("."):
                raise ArchiveError(f"{source}: index tar holds {member.name!r}; this is a "
                                   "package, not an index")
            if name == "APKINDEX":
                if seen:
                    raise ArchiveError(f"{source}: index tar holds APKINDEX twice")
                seen = True
                left = member.size
                while left:
                    piece = bytes(reader.read_content(member, min(left, TEXT_PIECE)))
                    left -= len(piece)
                    yield piece
            elif name == "DESCRIPTION" and not seen and member.size <= MAX_DESCRIPTION:
                text = bytes(reader.read_content(member))
                description = text.decode("utf-8", "replace").strip()
    except ArchiveError:
        stream.finish()
        raise
    stream.finish()
    if not seen:
        raise ArchiveError(f"{source}: index tar has no APKINDEX file")
    found.append(description)


def _diagnose_index_member(raw: bytes, *, source: str) -> None:
    """After a failed check, name a structural fault of the index member if it has one.

    The output is discarded and the look stops after :data:`DIAGNOSE_LIMIT` bytes, so
    an untrusted member costs bounded work and the caller's error stands.
    """
    reader = GzipMemberReader(io.BytesIO(raw), source=source)
    total = 0

    def count(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)
        if total > DIAGNOSE_LIMIT:
            raise _GiveUp

    try:
        reader.stream_member(lambda _chunk: None, count, what="index")
    except _GiveUp:
        return
    if not reader.at_end():
        raise ArchiveError(
            f"{source}: {reader.remaining_bytes()} unexpected bytes after the index gzip member")


class _GiveUp(Exception):
    """The index member is too large to be worth diagnosing."""
