"""cpio ``newc`` archives (what an initramfs is) as :class:`FileEntry` values.

Each header is 110 ASCII bytes: the magic ``070701`` (or ``070702``) and thirteen
8-digit hex fields. Every field is checked to be hex before it is used, a name must
fit the side's name bound, and contents stream past a hasher; the archive ends at
``TRAILER!!!``.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from composer.diff.model import FileEntry, normal_path
from composer.diff.source import Budget
from composer.errors import ArchiveError
from composer.numbers import shorten
from composer.tarread import ByteSource

HEADER = 110
TRAILER = "TRAILER!!!"
_HEX = frozenset(b"0123456789abcdefABCDEF")
_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
          stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
          stat.S_IFSOCK: "socket"}
_NAMES = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
          "rdevmajor", "rdevminor", "namesize", "check")


@dataclass
class CpioContents:
    entries: list[FileEntry] = field(default_factory=list)
    kept: dict[str, bytes] = field(default_factory=dict)


class _Reader:
    def __init__(self, stream: ByteSource, source: str) -> None:
        self.stream = stream
        self.source = source
        self.position = 0

    def exact(self, size: int, what: str) -> bytes:
        parts = []
        got = 0
        while got < size:
            chunk = self.stream.read(min(size - got, 1 << 20))
            if not chunk:
                raise ArchiveError(f"{self.source}: cpio archive ends inside {what} "
                                   f"(byte {self.position + got})")
            parts.append(chunk)
            got += len(chunk)
        self.position += size
        return b"".join(parts)

    def pad(self) -> None:
        self.exact(-self.position % 4, "padding")


def _fields(raw: bytes, source: str, offset: int) -> dict[str, int]:
    if raw[:6] not in (b"070701", b"070702"):
        raise ArchiveError(f"{source}: not a cpio newc header at byte {offset}")
    body = raw[6:]
    if not _HEX.issuperset(body):
        raise ArchiveError(f"{source}: cpio header at byte {offset} has a field that is not hex")
    return {name: int(body[i * 8:i * 8 + 8], 16) for i, name in enumerate(_NAMES)}


def read_cpio(stream: ByteSource, *, source: str, budget: Budget,
              keep: Callable[[str], int] | None = None) -> CpioContents:
    """Every member up to the trailer; ``keep(path)`` says how many bytes of a regular
    member to keep (0: none)."""
    reader = _Reader(stream, source)
    found = CpioContents()
    while True:
        offset = reader.position
        head = _fields(reader.exact(HEADER, "a header"), source, offset)
        if not 1 <= head["namesize"] <= budget.limits.max_name + 1:
            raise ArchiveError(f"{source}: cpio name size {head['namesize']} at byte {offset} "
                               f"is outside 1..{budget.limits.max_name + 1}")
        raw_name = reader.exact(head["namesize"], "a name")
        reader.pad()
        name = raw_name.rstrip(b"\0").decode("utf-8", "surrogateescape")
        if name == TRAILER:
            return found
        size = head["filesize"]
        kind = _KINDS.get(stat.S_IFMT(head["mode"]))
        if kind is None:
            raise ArchiveError(f"{source}: cpio member {shorten(name)} has mode "
                               f"{head['mode']:o}, which is no file type")
        path = normal_path(name)
        cap = keep(path) if keep is not None and kind == "file" else 0
        if kind == "symlink" and size > budget.limits.max_name:
            raise ArchiveError(f"{source}: cpio symlink {shorten(name)} of {size} bytes")
        if cap and size > cap:
            raise ArchiveError(f"{source}: cpio member {shorten(name)} has {size} bytes, more "
                               f"than the {cap} a diff reads of it")
        hasher = hashlib.sha256()
        kept: list[bytes] = []
        left = size
        while left > 0:
            chunk = reader.exact(min(left, 1 << 20), f"member {shorten(name)}")
            budget.charge_bytes(len(chunk), source)
            hasher.update(chunk)
            if cap or kind == "symlink":
                kept.append(chunk)
            left -= len(chunk)
        reader.pad()
        data = b"".join(kept)
        if cap:
            found.kept[path] = data
        link = data.decode("utf-8", "surrogateescape") if kind == "symlink" else ""
        budget.charge_entry(source, len(path) + len(link))
        found.entries.append(FileEntry(
            path=path, kind=kind, mode=stat.S_IMODE(head["mode"]), uid=head["uid"],
            gid=head["gid"], mtime=head["mtime"], size=size if kind == "file" else 0,
            sha256=hasher.hexdigest() if kind == "file" else "", link=link,
            device=f"{head['rdevmajor']},{head['rdevminor']}" if kind in ("char", "block") else "",
            header=(("ino", head["ino"]), ("nlink", head["nlink"]),
                    ("dev", f"{head['devmajor']},{head['devminor']}"), ("check", head["check"]))))
