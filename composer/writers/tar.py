"""Deterministic tar writer: one sorted walk of a FileTree into POSIX (PAX) tar bytes.

Every entry gets the same mtime, numeric owners and empty user/group names; PAX
records appear only where ustar cannot express a value (long names, xattrs), and
tarfile names them with the fixed ``././@PaxHeader``. The archive ends with two
zero blocks padded to the 10240-byte record, like GNU tar and Python's tarfile.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from composer.tree import Entry, EntryType, FileTree

BLOCK = 512
RECORD = 10240

_TYPEFLAG = {
    EntryType.FILE: tarfile.REGTYPE,
    EntryType.DIR: tarfile.DIRTYPE,
    EntryType.SYMLINK: tarfile.SYMTYPE,
    EntryType.CHAR: tarfile.CHRTYPE,
    EntryType.BLOCK: tarfile.BLKTYPE,
    EntryType.FIFO: tarfile.FIFOTYPE,
}


@dataclass(frozen=True)
class TarStyle:
    """How member names look: Alpine's minirootfs uses ``./`` and a root entry; OCI layers neither."""

    prefix: str = "./"
    include_root: bool = True


ROOTFS_STYLE = TarStyle(prefix="./", include_root=True)
LAYER_STYLE = TarStyle(prefix="", include_root=False)


def _member_name(path: str, style: TarStyle) -> str:
    if path == "":
        return style.prefix or "."
    return style.prefix + path


def tar_header(entry: Entry, *, name: str, mtime: int, linkname: str = "",
               hardlink: bool = False) -> bytes:
    """The header block(s) for one entry, PAX records included."""
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.mode = entry.mode
    info.uid = entry.uid
    info.gid = entry.gid
    info.uname = ""
    info.gname = ""
    if hardlink:
        info.type = tarfile.LNKTYPE
        info.linkname = linkname
        info.size = 0
    else:
        info.type = _TYPEFLAG[entry.type]
        info.size = entry.size if entry.type == EntryType.FILE else 0
        if entry.type == EntryType.SYMLINK:
            info.linkname = entry.target
        if entry.type in (EntryType.CHAR, EntryType.BLOCK):
            info.devmajor = entry.devmajor
            info.devminor = entry.devminor
    if entry.xattrs:
        info.pax_headers = {
            "SCHILY.xattr." + key: value.decode("utf-8", "surrogateescape")
            for key, value in entry.xattrs
        }
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def write_tar(tree: FileTree, out: BinaryIO, *, mtime: int, style: TarStyle = ROOTFS_STYLE,
              exclude: Callable[[Entry], bool] | None = None,
              on_entry: Callable[[Entry], None] | None = None) -> int:
    """Write the whole tree as a tar stream; return the number of members written."""
    first_of_link: dict[int, str] = {}
    written = 0
    total = 0
    for entry in tree.walk():
        if entry.path == "" and not style.include_root:
            continue
        if exclude is not None and exclude(entry):
            continue
        if on_entry is not None:
            on_entry(entry)
        name = _member_name(entry.path, style)
        if entry.type == EntryType.FILE and entry.link_id:
            first = first_of_link.get(entry.link_id)
            if first is not None:
                header = tar_header(entry, name=name, mtime=mtime, linkname=first, hardlink=True)
                out.write(header)
                total += len(header)
                written += 1
                continue
            first_of_link[entry.link_id] = name
        header = tar_header(entry, name=name, mtime=mtime)
        out.write(header)
        total += len(header)
        if entry.type == EntryType.FILE and entry.blob is not None and entry.blob.size:
            total += _copy_blob(entry, out)
        written += 1
    end = 2 * BLOCK
    total += end
    padding = (RECORD - total % RECORD) % RECORD
    out.write(b"\0" * (end + padding))
    return written


def _copy_blob(entry: Entry, out: BinaryIO) -> int:
    assert entry.blob is not None
    size = entry.blob.size
    copied = 0
    for chunk in entry.blob.chunks():
        copied += len(chunk)
        if copied > size:
            raise OSError(f"content of {entry.path!r} grew while writing")
        out.write(chunk)
    if copied != size:
        raise OSError(f"content of {entry.path!r} shrank while writing")
    pad = (BLOCK - size % BLOCK) % BLOCK
    if pad:
        out.write(b"\0" * pad)
    return size + pad
