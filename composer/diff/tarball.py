"""Tar members as :class:`FileEntry` values, read with composer's bounded tar reader.

Never ``tarfile``: composer's :class:`TarReader` refuses sparse members, global pax
headers and malformed numbers, and splits pax records in linear time. Contents are
hashed as they stream past; only the few members a caller asks for by name (an
installed database, an OCI ``index.json``) are kept, each within a cap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from composer.diff.model import FileEntry, normal_path
from composer.diff.report import Scalar
from composer.diff.source import Budget
from composer.errors import ArchiveError
from composer.numbers import shorten
from composer.tarread import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    SYMLINK,
    ByteSource,
    TarLimits,
    TarMember,
    TarReader,
)

XATTR = "SCHILY.xattr."
_KINDS = {HARDLINK: "hardlink", SYMLINK: "symlink", CHARDEV: "char", BLOCKDEV: "block",
          DIRECTORY: "dir", FIFO: "fifo"}
_APPLIED = frozenset({"path", "linkpath", "size", "uid", "gid", "uname", "gname"})
SHORT_VALUE = 64


@dataclass
class TarContents:
    """The members of one tar: entries in archive order, the kept contents, and where
    each regular member's data lies in the (uncompressed) stream."""

    entries: list[FileEntry] = field(default_factory=list)
    kept: dict[str, bytes] = field(default_factory=dict)
    data_at: dict[str, tuple[int, int]] = field(default_factory=dict)


def short_value(raw: str) -> str:
    """A header value as it is when short and printable, else by its digest."""
    if len(raw) <= SHORT_VALUE and raw.isprintable():
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()
    return f"sha256:{digest[:16]} ({len(raw)} bytes)"


def _header(member: TarMember) -> tuple[tuple[str, Scalar], ...]:
    fields: list[tuple[str, Scalar]] = [("uname", member.uname), ("gname", member.gname)]
    for key, value in member.pax_headers.items():
        if key not in _APPLIED and not key.startswith(XATTR):
            fields.append((f"pax {shorten(key, 80)}", short_value(value)))
    return tuple(fields)


def _entry(member: TarMember, budget: Budget, source: str, digest: str) -> FileEntry:
    path = normal_path(budget.name(member.name, source))
    link = budget.name(member.linkname, source)
    kind = "file" if member.isreg() else _KINDS[member.type]
    xattrs = tuple(sorted((key[len(XATTR):], short_value(value))
                          for key, value in member.pax_headers.items() if key.startswith(XATTR)))
    budget.charge_entry(source, len(path) + len(link) + sum(len(k) + len(v) for k, v in xattrs))
    return FileEntry(
        path=path, kind=kind, mode=member.mode, uid=member.uid, gid=member.gid,
        mtime=member.mtime, size=member.size if member.isreg() else 0, sha256=digest,
        link=normal_path(link) if kind == "hardlink" else link,
        device=f"{member.devmajor},{member.devminor}" if kind in ("char", "block") else "",
        xattrs=xattrs, header=_header(member))


def read_tar(stream: ByteSource, *, source: str, budget: Budget,
             keep: Callable[[str], int] | None = None) -> TarContents:
    """Every member of the tar on ``stream``; ``keep(path)`` returns how many bytes of a
    regular member to keep in memory (0: none; a larger member is an error)."""
    reader = TarReader(stream, source=source, limits=TarLimits(max_content=budget.limits.max_bytes))
    found = TarContents()
    for member in reader:
        digest = ""
        if member.isreg():
            path = normal_path(member.name)
            cap = keep(path) if keep is not None else 0
            if cap and member.size > cap:
                raise ArchiveError(f"{source}: member {shorten(member.name)} has {member.size} "
                                   f"bytes, more than the {cap} a diff reads of it")
            found.data_at[path] = (reader.position, member.size)
            hasher = hashlib.sha256()
            kept: list[bytes] = []
            left = member.size
            while left > 0:
                chunk = reader.read_content(member, min(left, 1 << 20))
                if not chunk:
                    raise ArchiveError(f"{source}: member {shorten(member.name)} is truncated")
                budget.charge_bytes(len(chunk), source)
                hasher.update(chunk)
                if cap:
                    kept.append(bytes(chunk))
                left -= len(chunk)
            digest = hasher.hexdigest()
            if cap:
                found.kept[path] = b"".join(kept)
        found.entries.append(_entry(member, budget, source, digest))
    return found
