"""Explain how two outputs differ: the first differing tar member and field, or byte offset."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from composer.hashing import hash_stream

_FIELDS = ("type", "mode", "uid", "gid", "uname", "gname", "mtime", "linkname", "size",
           "devmajor", "devminor")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst")


def _open_decompressed(path: Path) -> BinaryIO:
    fh = open(path, "rb")
    if path.name.endswith(".zst"):
        import zstandard

        reader: BinaryIO = zstandard.ZstdDecompressor().stream_reader(fh, closefd=True)
        return reader
    return fh


def _members(path: Path) -> Iterator[tuple[tarfile.TarInfo, str]]:
    with _open_decompressed(path) as raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
        for member in archive:
            digest = ""
            if member.isfile():
                fh = archive.extractfile(member)
                assert fh is not None
                digest, _ = hash_stream(fh)
            yield member, digest


def first_difference(expected: Path, actual: Path) -> str:
    """A one-line description of the first difference, or '' when the files are identical."""
    if expected.read_bytes() == actual.read_bytes():
        return ""
    if expected.name.endswith(_TAR_SUFFIXES):
        try:
            found = _first_tar_difference(expected, actual)
        except (tarfile.TarError, OSError, EOFError) as exc:
            found = f"cannot read as tar ({exc})"
        if found:
            return found
    return _first_byte_difference(expected, actual)


def _first_tar_difference(expected: Path, actual: Path) -> str:
    left = _members(expected)
    right = _members(actual)
    index = 0
    while True:
        a = next(left, None)
        b = next(right, None)
        if a is None and b is None:
            return ""
        if a is None:
            return f"member #{index} {b[0].name!r} is extra in the rebuild"  # type: ignore[index]
        if b is None:
            return f"member #{index} {a[0].name!r} is missing from the rebuild"
        (ma, da), (mb, db) = a, b
        if ma.name != mb.name:
            return f"member #{index}: name {ma.name!r} != {mb.name!r}"
        for name in _FIELDS:
            va, vb = getattr(ma, name), getattr(mb, name)
            if va != vb:
                return f"member {ma.name!r}: field {name} {va!r} != {vb!r}"
        if ma.pax_headers != mb.pax_headers:
            return f"member {ma.name!r}: field pax_headers {ma.pax_headers!r} != {mb.pax_headers!r}"
        if da != db:
            return f"member {ma.name!r}: content sha256 {da[:16]}… != {db[:16]}…"
        index += 1


def _first_byte_difference(expected: Path, actual: Path) -> str:
    with open(expected, "rb") as fa, open(actual, "rb") as fb:
        offset = 0
        while True:
            ca = fa.read(1 << 16)
            cb = fb.read(1 << 16)
            if ca != cb:
                for i, (x, y) in enumerate(zip(ca, cb, strict=False)):
                    if x != y:
                        return f"byte {offset + i}: 0x{x:02x} != 0x{y:02x}"
                return f"sizes differ at byte {offset + min(len(ca), len(cb))}"
            if not ca:
                return ""
            offset += len(ca)


