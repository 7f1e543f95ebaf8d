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
    if hardlink:
        typeflag, size, target = tarfile.LNKTYPE, 0, linkname
    else:
        typeflag = _TYPEFLAG[entry.type]
        size = entry.size if entry.type == EntryType.FILE else 0
        target = entry.target if entry.type == EntryType.SYMLINK else ""
    device = not hardlink and entry.type in (EntryType.CHAR, EntryType.BLOCK)
    if not entry.xattrs:
        header = _ustar_header(name, entry, typeflag, size, mtime, target, device)
        if header is not None:
            return header
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.mode = entry.mode
    info.uid = entry.uid
    info.gid = entry.gid
    info.uname = ""
    info.gname = ""
    info.type = typeflag
    info.size = size
    info.linkname = target
    if device:
        info.devmajor = entry.devmajor
        info.devminor = entry.devminor
    if entry.xattrs:
        info.pax_headers = {
            "SCHILY.xattr." + key: value.decode("utf-8", "surrogateescape")
            for key, value in entry.xattrs
        }
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_SMALL = 8 ** 7  # what 7 octal digits hold (mode, ids, device numbers)
_LARGE = 8 ** 11  # what 11 octal digits hold (size, mtime)


def _ustar_header(name: str, entry: Entry, typeflag: bytes, size: int, mtime: int,
                  linkname: str, device: bool) -> bytes | None:
    """The one plain ustar block tarfile's PAX format writes when no PAX record is needed
    (ASCII names of at most 100 bytes, numbers that fit), byte for byte, without building a
    TarInfo: most of a root filesystem's members. None: let tarfile write it."""
    if typeflag == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    if not (name.isascii() and linkname.isascii() and len(name) <= 100 and len(linkname) <= 100
            and 0 <= entry.uid < _SMALL and 0 <= entry.gid < _SMALL and 0 <= size < _LARGE
            and 0 <= mtime < _LARGE):
        return None
    if device:
        if not (0 <= entry.devmajor < _SMALL and 0 <= entry.devminor < _SMALL):
            return None
        devices = b"%07o\0%07o\0" % (entry.devmajor, entry.devminor)
    else:
        devices = bytes(16)
    block = b"".join((
        name.encode("ascii").ljust(100, b"\0"), b"%07o\0" % (entry.mode & 0o7777),
        b"%07o\0%07o\0" % (entry.uid, entry.gid), b"%011o\0%011o\0" % (size, mtime),
        b"        ", typeflag, linkname.encode("ascii").ljust(100, b"\0"), tarfile.POSIX_MAGIC,
        bytes(64), devices, bytes(167)))
    # The checksum counts its own field as eight spaces, as it is above.
    return block[:148] + b"%06o\0" % sum(block) + block[155:]


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
