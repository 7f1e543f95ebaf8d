"""Reading and verifying APK v2 packages (``.apk`` files).

A package is three gzip members: signature, control (``.PKGINFO`` + scripts)
and data (the file tree). :func:`verify_apk` walks the file once with bounded
memory: it keeps the small signature and control members, streams the data
member through SHA-256 for ``datahash``, and records where the data member
sits. :func:`composer.apk.datatar.load_package_data` then loads the data into a
:class:`~composer.tree.FileTree`, re-hashing the bytes it reads so a file changed
after verification is never trusted; for a cached copy the data hash may be left
to that pass alone (``hash_data=False``).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from composer.apk.keys import TrustedKeys
from composer.apk.signing import (
    GzipMemberReader,
    SignatureCheck,
    SignatureEntry,
    new_digests,
    read_small_tar,
    signature_entries,
    verify_signature,
)
from composer.errors import ArchiveError, VerificationError
from composer.numbers import parse_decimal, shorten
from composer.tarread import TarFile, TarLimits

CONTENT_SLACK = 1024 * 1024
TAR_OVERHEAD = 16 * 1024 * 1024
MAX_CONTROL_MEMBER = 4 * 1024 * 1024
"""Signature and control members are inflated before the signature check: keep them small."""

SCRIPT_NAMES = (".pre-install", ".post-install", ".pre-upgrade", ".post-upgrade",
                ".pre-deinstall", ".post-deinstall", ".trigger")
PAX_SHA1 = "APK-TOOLS.checksum.SHA1"

_LIST_KEYS = ("depend", "provides", "install_if", "replaces", "triggers")
_INT_KEYS = {"size", "builddate", "provider_priority", "replaces_priority"}
_TEXT_KEYS = {"pkgname", "pkgver", "pkgdesc", "url", "packager", "arch", "origin", "commit",
              "maintainer", "license", "datahash"}

ApkInput = str | os.PathLike[str] | bytes | BinaryIO


# --- .PKGINFO ------------------------------------------------------------------------


@dataclass(frozen=True)
class PkgInfo:
    """The parsed ``.PKGINFO``; list keys may repeat and are split at whitespace."""

    pkgname: str
    pkgver: str
    pkgdesc: str = ""
    url: str = ""
    builddate: int | None = None
    packager: str = ""
    size: int = 0
    arch: str = ""
    origin: str = ""
    commit: str = ""
    maintainer: str = ""
    license: str = ""
    depends: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    install_if: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    provider_priority: int | None = None
    replaces_priority: int | None = None
    datahash: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    """Every ``key = value`` line in file order, unknown keys included."""

    @property
    def name_version(self) -> str:
        return f"{self.pkgname}-{self.pkgver}"


def parse_pkginfo(text: bytes, *, source: str) -> PkgInfo:
    """Parse ``.PKGINFO`` bytes; a missing pkgname/pkgver or a bad number is an ArchiveError."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{source}: .PKGINFO is not UTF-8 ({exc.reason} at byte "
                           f"{exc.start})") from None
    pairs: list[tuple[str, str]] = []
    texts: dict[str, str] = {}
    ints: dict[str, int] = {}
    lists: dict[str, list[str]] = {key: [] for key in _LIST_KEYS}
    for number, line in enumerate(decoded.split("\n"), 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition(" = ")
        if not sep and line.endswith(" ="):
            key, sep, value = line[:-2], " = ", ""
        if not sep:
            raise ArchiveError(f"{source}: .PKGINFO line {number} is not 'key = value': "
                               f"{shorten(line)}")
        pairs.append((key, value))
        if key in _LIST_KEYS:
            lists[key].extend(value.split())
        elif key in _INT_KEYS:
            parsed = parse_decimal(value)
            if parsed is None:
                raise ArchiveError(f"{source}: .PKGINFO {key} = {shorten(value)} is not an "
                                   "integer")
            ints[key] = parsed
        elif key in _TEXT_KEYS:
            texts[key] = value
    for required in ("pkgname", "pkgver"):
        if not texts.get(required):
            raise ArchiveError(f"{source}: .PKGINFO has no {required}")
    datahash = texts.get("datahash")
    if datahash is not None and (
            len(datahash) != 64 or any(c not in "0123456789abcdef" for c in datahash)):
        raise ArchiveError(f"{source}: .PKGINFO datahash {shorten(datahash)} is not a sha256 hex "
                           "digest")
    return PkgInfo(
        pkgname=texts["pkgname"], pkgver=texts["pkgver"], pkgdesc=texts.get("pkgdesc", ""),
        url=texts.get("url", ""), builddate=ints.get("builddate"),
        packager=texts.get("packager", ""), size=ints.get("size", 0),
        arch=texts.get("arch", ""), origin=texts.get("origin", ""),
        commit=texts.get("commit", ""), maintainer=texts.get("maintainer", ""),
        license=texts.get("license", ""), depends=tuple(lists["depend"]),
        provides=tuple(lists["provides"]), install_if=tuple(lists["install_if"]),
        replaces=tuple(lists["replaces"]), triggers=tuple(lists["triggers"]),
        provider_priority=ints.get("provider_priority"),
        replaces_priority=ints.get("replaces_priority"), datahash=datahash, fields=tuple(pairs))


# --- checksums -----------------------------------------------------------------------


def q1_checksum(digest: bytes) -> str:
    """``Q1`` + base64 of a SHA-1 digest: the form of index ``C:`` and installed-db ``Z:``."""
    return "Q1" + base64.b64encode(digest).decode("ascii")


def control_checksum(control_member: bytes) -> str:
    """The package identity (index ``C:``): Q1 + base64(SHA-1(raw control member))."""
    return q1_checksum(hashlib.sha1(control_member).digest())


def parse_checksum(value: str, *, source: str) -> tuple[str, bytes]:
    """(hashlib name, digest) of a ``Q1``/``Q2``/``X1``/``X2`` checksum string."""
    prefix, body = value[:2], value[2:]
    try:
        if prefix in ("Q1", "Q2"):
            digest = base64.b64decode(body, validate=True)
        elif prefix in ("X1", "X2"):
            digest = bytes.fromhex(body)
        else:
            raise ValueError("unknown prefix")
    except (ValueError, binascii.Error):
        raise VerificationError(f"{source}: {value!r} is not an APK checksum") from None
    if len(digest) == 20:
        return "sha1", digest
    if len(digest) == 32:
        return "sha256", digest
    raise VerificationError(f"{source}: {value!r} is not an APK checksum")


# --- the verified package ------------------------------------------------------------


ControlScript = TarFile
"""An install script from the control member (name without ``./``), with its tar metadata."""


@dataclass(frozen=True)
class DataContents:
    """What :func:`composer.apk.datatar.load_package_data` put into the tree.

    ``sha1`` holds the raw SHA-1 digest apk records as the installed-db ``Z:``
    line: of the content for regular files, of the target for symlinks. Hard
    links and directories have none.
    """

    paths: tuple[str, ...]
    sha1: Mapping[str, bytes]

    def z_checksum(self, path: str) -> str | None:
        digest = self.sha1.get(path)
        return None if digest is None else q1_checksum(digest)


@dataclass(frozen=True)
class VerifiedPackage:
    """A package whose checksum, signature and datahash were checked."""

    label: str
    source: str
    info: PkgInfo
    checksum: str
    control_member: bytes
    pkginfo: bytes
    scripts: tuple[ControlScript, ...]
    signer: str | None
    signature_algorithm: str | None
    file_size: int
    data_offset: int
    data_size: int
    data_sha256: str
    _opener: Callable[[], BinaryIO] = field(repr=False, compare=False)
    data_checked: bool = True
    """False when :func:`verify_apk` left the data hash to the loader (``hash_data=False``):
    ``data_sha256`` is then the signed ``datahash`` the data must still be shown to match."""

    @property
    def name(self) -> str:
        return self.info.pkgname

    @property
    def version(self) -> str:
        return self.info.pkgver

    def script(self, name: str) -> ControlScript | None:
        for s in self.scripts:
            if s.name == name:
                return s
        return None

    def open_data_raw(self) -> BinaryIO:
        """The data member's compressed bytes, exactly as stored."""
        fh = self._opener()
        fh.seek(self.data_offset)
        return _SliceReader(fh, self.data_size)  # type: ignore[return-value]

    def open_data(self) -> BinaryIO:
        """The data member inflated: a plain tar stream (not re-hashed; prefer load_package_data)."""
        return gzip.GzipFile(fileobj=self.open_data_raw(), mode="rb")  # type: ignore[return-value]


# --- verification --------------------------------------------------------------------


def verify_apk(apk: ApkInput, keys: TrustedKeys, *, source: str,
               expected_checksum: str | None = None, package: str | None = None,
               require_signature: bool = True, hash_data: bool = True) -> VerifiedPackage:
    """Verify a ``.apk`` (path, bytes or seekable stream) and describe its contents.

    ``expected_checksum`` is the index ``C:`` value; ``package`` (``NAME-VER`` from the
    index) names the package in errors raised before ``.PKGINFO`` is read. With
    ``require_signature=False`` an unsigned package or one signed by an unknown key is
    accepted (trust then comes from the index checksum alone), but a bad signature by a
    trusted key is still an error.

    ``hash_data=False`` skips hashing the data member of a package whose signed
    ``.PKGINFO`` carries a ``datahash``: for a cached copy that is about to be loaded
    anyway, where :func:`composer.apk.datatar.load_package_data` hashes the same bytes
    and compares them to ``datahash`` before any file is used (``data_checked`` is then
    False). A package without ``datahash`` is always hashed in full here.
    """
    opener, base = _opener_for(apk)
    label = f"package {package} ({source})" if package else f"package {source}"
    with opener() as fh:
        fh.seek(base)
        reader = GzipMemberReader(fh, source=label)

        first = reader.read_member(what="signature", max_size=MAX_CONTROL_MEMBER)
        first_files = read_small_tar(first.content, source=label, what="first gzip member")
        entries: list[SignatureEntry] = []
        if first_files and all(f.name.startswith(".SIGN.") for f in first_files):
            entries = signature_entries(first_files, source=label)
            control = reader.read_member(what="control", max_size=MAX_CONTROL_MEMBER)
            control_files = read_small_tar(control.content, source=label, what="control member")
        else:
            control, control_files = first, first_files
        pkginfo_bytes, scripts = _split_control(control_files, source=label)
        info = parse_pkginfo(pkginfo_bytes, source=label)
        label = f"package {info.name_version} ({source})"
        reader.source = label
        if package is not None and package != info.name_version:
            raise VerificationError(f"{label}: expected {package}")

        checksum = control_checksum(control.raw)
        if expected_checksum is not None:
            algorithm, wanted = parse_checksum(expected_checksum, source=label)
            if hashlib.new(algorithm, control.raw).digest() != wanted:
                raise VerificationError(
                    f"{label}: control checksum mismatch (index has {expected_checksum}, "
                    f"file has {checksum})")

        check: SignatureCheck | None = None
        must_check = require_signature or any(e.key_name in keys and e.algorithm
                                              for e in entries)
        if info.datahash is not None and must_check:
            check = verify_signature(entries, keys, source=label, message=control.raw)

        legacy = new_digests() if info.datahash is None else None
        if legacy is not None:
            for h in legacy.values():
                h.update(control.raw)
        data_sha256 = hashlib.sha256()

        def on_raw(chunk: bytes) -> None:
            data_sha256.update(chunk)
            if legacy is not None:
                for h in legacy.values():
                    h.update(chunk)

        if reader.at_end():
            raise ArchiveError(f"{label}: data gzip member is missing")
        data_offset = reader.offset
        data_checked = True
        if legacy is None and not hash_data:
            data_size = reader.skip_rest()
            data_checked = False
        elif legacy is None:
            # The data member is the last one and datahash pins its exact bytes, so hashing
            # the raw tail is enough here: trailing bytes or truncation change the hash, and
            # the inflate at install time (load_package_data) still rejects a corrupt stream.
            data_size = reader.hash_rest(on_raw)
        else:
            data_size = reader.stream_member(on_raw, _capped(info.size, label), what="data")
            if not reader.at_end():
                raise ArchiveError(
                    f"{label}: {reader.remaining_bytes()} unexpected bytes after the data member")

        if info.datahash is not None:
            if data_checked and data_sha256.hexdigest() != info.datahash:
                if legacy is None:
                    _diagnose_data_member(fh, base + data_offset, label, info.size)
                raise VerificationError(
                    f"{label}: data hash mismatch (.PKGINFO datahash {info.datahash}, "
                    f"data member sha256 {data_sha256.hexdigest()})")
        elif must_check:
            assert legacy is not None
            check = verify_signature(entries, keys, source=label,
                                     digests={n: h.digest() for n, h in legacy.items()})
        if check is None and expected_checksum is None:
            raise VerificationError(f"{label}: neither signed by a trusted key nor checked "
                                    "against an index checksum")

    return VerifiedPackage(
        label=label, source=source, info=info, checksum=checksum, control_member=control.raw,
        pkginfo=pkginfo_bytes, scripts=scripts,
        signer=check.signer if check else None,
        signature_algorithm=check.algorithm if check else None,
        file_size=data_offset + data_size, data_offset=data_offset + base, data_size=data_size,
        data_sha256=data_sha256.hexdigest() if data_checked else str(info.datahash),
        _opener=opener, data_checked=data_checked)


def data_limits(installed_size: int) -> tuple[TarLimits, int]:
    """Bounds for a data tar from the installed size its signed ``.PKGINFO`` declares.

    abuild counts every regular file's blocks once, so file contents never add up
    to more than that; headers and padding get a fixed allowance on top.
    Returns the tar limits and the most bytes the member may inflate to.
    """
    content = 2 * installed_size + CONTENT_SLACK
    return TarLimits(max_member=content, max_content=content), 2 * content + TAR_OVERHEAD


def _capped(installed_size: int, label: str) -> Callable[[bytes], None]:
    """An output sink that refuses a data member inflating past :func:`data_limits`."""
    limit = data_limits(installed_size)[1]
    total = 0

    def count(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)
        if total > limit:
            raise ArchiveError(f"{label}: data gzip member inflates to more than {limit} bytes, "
                               "beyond what the installed size in .PKGINFO allows")

    return count


def _diagnose_data_member(fh: BinaryIO, offset: int, label: str, installed_size: int) -> None:
    """After a data hash mismatch, name a structural fault (truncation, trailing bytes) if any."""
    fh.seek(offset)
    reader = GzipMemberReader(fh, source=label)
    reader.stream_member(lambda _chunk: None, _capped(installed_size, label), what="data")
    if not reader.at_end():
        raise ArchiveError(
            f"{label}: {reader.remaining_bytes()} unexpected bytes after the data member")


def _split_control(files: list[TarFile], *, source: str) -> tuple[bytes, tuple[ControlScript, ...]]:
    pkginfo: bytes | None = None
    scripts: list[ControlScript] = []
    for f in files:
        name = f.name.removeprefix("./")
        if name == ".PKGINFO":
            if pkginfo is not None:
                raise ArchiveError(f"{source}: control member holds .PKGINFO twice")
            pkginfo = f.data
        elif name == ".INSTALL":
            raise ArchiveError(f"{source}: control member holds the obsolete .INSTALL script")
        elif name in SCRIPT_NAMES:
            if any(s.name == name for s in scripts):
                raise ArchiveError(f"{source}: control member holds {name} twice")
            scripts.append(replace(f, name=name))
        elif not name.startswith(".") or "/" in name:
            raise ArchiveError(f"{source}: control member holds {f.name!r}, which is not a "
                               "control file")
    if pkginfo is None:
        raise ArchiveError(f"{source}: control member has no .PKGINFO")
    return pkginfo, tuple(scripts)


def _opener_for(apk: ApkInput) -> tuple[Callable[[], BinaryIO], int]:
    """A function opening a fresh reader over the package, and where the package starts."""
    if isinstance(apk, (bytes, bytearray, memoryview)):
        data = bytes(apk)
        return (lambda: io.BytesIO(data)), 0
    if isinstance(apk, (str, os.PathLike)):
        path = os.fspath(apk)
        return (lambda: open(path, "rb")), 0
    stream = apk
    if not stream.seekable():
        raise ArchiveError("verify_apk needs a path, bytes or a seekable stream")
    base = stream.tell()
    return (lambda: _Borrowed(stream)), base  # type: ignore[return-value]


class _Borrowed(io.RawIOBase):
    """A caller's stream handed out so that closing it leaves the caller's object open."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class _SliceReader(io.RawIOBase):
    """At most ``size`` bytes of a stream from its current position; closes the stream."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        super().__init__()
        self._stream = stream
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._left:
            size = self._left
        data = self._stream.read(size) if size else b""
        self._left -= len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), self._left)
        if not size:
            return 0
        count = self._stream.readinto(memoryview(buffer)[:size])  # type: ignore[attr-defined]
        self._left -= count
        return int(count)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()
