"""Load tar archives into a :class:`FileTree` without touching the host filesystem.

Format code: takes a binary stream, never a path. Unsafe members (absolute
names, ``..``, paths through symlinks, hard links to nothing, conflicting
duplicates) are refused with an error naming the member.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import replace
from typing import BinaryIO

from composer.errors import ArchiveError
from composer.tree import Entry, EntryType, FileTree, normalize_path, resolve_symlink_target

_TYPES = {
    tarfile.REGTYPE: EntryType.FILE,
    tarfile.AREGTYPE: EntryType.FILE,
    tarfile.CONTTYPE: EntryType.FILE,
    tarfile.DIRTYPE: EntryType.DIR,
    tarfile.SYMTYPE: EntryType.SYMLINK,
    tarfile.CHRTYPE: EntryType.CHAR,
    tarfile.BLKTYPE: EntryType.BLOCK,
    tarfile.FIFOTYPE: EntryType.FIFO,
}

XATTR_PREFIX = "SCHILY.xattr."

MemberFilter = Callable[[tarfile.TarInfo], bool]


def xattrs_of(member: tarfile.TarInfo) -> tuple[tuple[str, bytes], ...]:
    """The member's extended attributes from its PAX ``SCHILY.xattr.*`` records."""
    found = []
    for key, value in member.pax_headers.items():
        if key.startswith(XATTR_PREFIX):
            raw = value.encode("utf-8", "surrogateescape")
            found.append((key[len(XATTR_PREFIX):], raw))
    return tuple(sorted(found))


def open_tar_stream(stream: BinaryIO, *, source: str) -> tarfile.TarFile:
    """Open a (possibly gzip/xz/bzip2-compressed) tar stream for one sequential pass."""
    try:
        return tarfile.open(fileobj=stream, mode="r|*")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"{source}: not a readable tar archive ({_short(exc)})") from exc


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


def check_symlink_target(path: str, target: str, *, source: str) -> None:
    """A relative symlink target must not climb above the root."""
    if not target:
        raise ArchiveError(f"{source}: symlink {path!r} has an empty target")
    if resolve_symlink_target(path, target) is None:
        raise ArchiveError(f"{source}: symlink {path!r} -> {target!r} escapes the root")


def load_tar(stream: BinaryIO | tarfile.TarFile, tree: FileTree, *, source: str,
             accept: MemberFilter | None = None) -> list[str]:
    """Merge every member of a tar stream into ``tree``; return the paths added, in archive order.

    ``stream`` may also be a :class:`tarfile.TarFile` already open for one sequential
    pass (a caller with its own way of reading contents). ``accept`` may skip members
    (for example an APK's ``.PKGINFO``). Later members of the same archive may not
    contradict earlier ones.
    """
    added: list[str] = []
    seen: dict[str, Entry] = {}
    link_ids: dict[str, int] = {}
    try:
        archive = stream if isinstance(stream, tarfile.TarFile) \
            else open_tar_stream(stream, source=source)
        with archive:
            for member in archive:
                if accept is not None and not accept(member):
                    continue
                entry = _entry_from_member(member, archive, tree, seen, link_ids, source)
                if entry is None:
                    continue
                prior = seen.get(entry.path)
                if prior is not None:
                    if _same(prior, entry):
                        continue
                    raise ArchiveError(
                        f"{source}: member {member.name!r} appears twice with different contents")
                tree.put(entry, what=f"{source}: member")
                seen[entry.path] = entry
                added.append(entry.path)
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ArchiveError(f"{source}: damaged tar archive ({_short(exc)})") from exc
    return added


def _same(a: Entry, b: Entry) -> bool:
    return (a.type, a.mode, a.uid, a.gid, a.target, a.devmajor, a.devminor, a.xattrs,
            a.blob.sha256 if a.blob else None) == (
            b.type, b.mode, b.uid, b.gid, b.target, b.devmajor, b.devminor, b.xattrs,
            b.blob.sha256 if b.blob else None)


def _entry_from_member(member: tarfile.TarInfo, archive: tarfile.TarFile, tree: FileTree,
                       seen: dict[str, Entry], link_ids: dict[str, int],
                       source: str) -> Entry | None:
    path = normalize_path(member.name, what=f"{source}: member")
    base = Entry(path=path, type=EntryType.FILE, mode=member.mode & 0o7777, uid=member.uid,
                 gid=member.gid, mtime=int(member.mtime), xattrs=xattrs_of(member))
    if member.type == tarfile.LNKTYPE:
        target_path = normalize_path(member.linkname, what=f"{source}: hard link target")
        target = seen.get(target_path)
        if target is None or target.type != EntryType.FILE:
            raise ArchiveError(
                f"{source}: hard link {member.name!r} points to {member.linkname!r}, "
                "which is not an earlier regular file in the archive")
        link_id = link_ids.get(target_path)
        if link_id is None:
            link_id = tree.new_link_id()
            link_ids[target_path] = link_id
            updated = target.with_changes(link_id=link_id)
            tree.entries[target_path] = updated
            seen[target_path] = updated
        link_ids[path] = link_id
        return replace(base, blob=target.blob, link_id=link_id)
    kind = _TYPES.get(member.type)
    if kind is None:
        raise ArchiveError(f"{source}: member {member.name!r} has unsupported tar type {member.type!r}")
    if path == "" and kind != EntryType.DIR:
        raise ArchiveError(f"{source}: member {member.name!r} names the root but is not a directory")
    if kind == EntryType.FILE:
        fh = archive.extractfile(member)
        assert fh is not None
        return replace(base, blob=tree.store.from_stream(fh, member.size))  # type: ignore[arg-type]
    if kind == EntryType.SYMLINK:
        check_symlink_target(path, member.linkname, source=source)
        return replace(base, type=kind, target=member.linkname)
    if kind in (EntryType.CHAR, EntryType.BLOCK):
        return replace(base, type=kind, devmajor=member.devmajor, devminor=member.devminor)
    return replace(base, type=kind)
