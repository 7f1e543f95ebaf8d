"""Deterministic cpio ``newc`` archives: the initramfs format the Linux kernel unpacks.

Entries come in sorted order (parents before children, as the kernel creates no
missing directories). Inode numbers are assigned in emission order, never taken
from a host; every mtime is the build timestamp; owners and modes are the tree's.
Hard links share an inode number and carry their link count: the first path (in
sorted order) holds the data, the others are empty, which the kernel turns into
links (init/initramfs.c ``maybe_link``). Extended attributes have no place in newc
and are dropped.

Every header field is eight hex digits: a size, mtime, owner or device number of 2^32 or
more cannot be written, and is refused rather than cut (the kernel would read a wrong
value and lose its place in the archive).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from composer.errors import OutputError
from composer.tree import Entry, EntryType

TRAILER = "TRAILER!!!"
FIELD_MAX = 0xFFFFFFFF
_FIELDS = ("inode", "mode", "uid", "gid", "link count", "mtime", "size", "", "",
           "device major", "device minor", "name size", "")
FIRST_INODE = 721
"""Where the kernel's own gen_init_cpio starts counting."""


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...


def _header(*, ino: int, mode: int, uid: int, gid: int, nlink: int, mtime: int, size: int,
            rdev: tuple[int, int], name: bytes) -> bytes:
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    for label, value in zip(_FIELDS, fields, strict=True):
        if not 0 <= value <= FIELD_MAX:
            path = name.decode("utf-8", "replace")
            raise OutputError(f"cpio: {path!r}: {label} {value} does not fit the newc format's "
                              "32-bit field")
    head = b"070701" + b"".join(b"%08X" % value for value in fields) + name + b"\0"
    return head + b"\0" * (-len(head) % 4)


def write_cpio(entries: Iterable[Entry], out: Sink, *, mtime: int) -> int:
    """Write ``entries`` (sorted, parents first; the root is skipped) and the trailer.

    Returns the number of bytes written.
    """
    if not 0 <= mtime <= FIELD_MAX:
        raise OutputError(f"cpio: timestamp {mtime} is outside the newc format's 32-bit mtime "
                          "(1970 to 2106)")
    listed = [e for e in entries if e.path]
    links: dict[int, list[Entry]] = {}
    for entry in listed:
        if entry.type == EntryType.FILE and entry.link_id:
            links.setdefault(entry.link_id, []).append(entry)
    link_inode: dict[int, int] = {}
    total = 0
    ino = FIRST_INODE
    for entry in listed:
        name = entry.path.encode("utf-8", "surrogateescape")
        group = links.get(entry.link_id, []) if entry.type == EntryType.FILE and entry.link_id \
            else []
        first_of_group = bool(group) and group[0] is entry
        if group and not first_of_group:
            number = link_inode[entry.link_id]
        else:
            number = ino
            ino += 1
            if group:
                link_inode[entry.link_id] = number
        data: Iterable[bytes] = ()
        size = 0
        if entry.type == EntryType.SYMLINK:
            target = entry.target.encode("utf-8", "surrogateescape")
            data, size = (target,), len(target)
        elif entry.type == EntryType.FILE and entry.blob is not None and (first_of_group
                                                                          or not group):
            data, size = entry.blob.chunks(), entry.blob.size
        nlink = 2 if entry.type == EntryType.DIR else max(1, len(group))
        rdev = (entry.devmajor, entry.devminor) if entry.type in (EntryType.CHAR,
                                                                  EntryType.BLOCK) else (0, 0)
        header = _header(ino=number, mode=entry.st_mode, uid=entry.uid, gid=entry.gid,
                         nlink=nlink, mtime=mtime, size=size, rdev=rdev, name=name)
        out.write(header)
        total += len(header)
        written = 0
        for chunk in data:
            out.write(chunk)
            written += len(chunk)
        if written != size:
            raise OSError(f"content of {entry.path!r} changed size while writing")
        pad = -size % 4
        if pad:
            out.write(b"\0" * pad)
        total += size + pad
    trailer = _header(ino=0, mode=0, uid=0, gid=0, nlink=1, mtime=0, size=0, rdev=(0, 0),
                      name=TRAILER.encode())
    out.write(trailer)
    return total + len(trailer)
