"""A bootable ISO, read for a diff from the outside in.

Volume descriptors, the ISO 9660 tree (Rock Ridge names, modes, owners, links, times;
files by content digest, and the extent each record names), the Joliet tree's
records, the El Torito catalog (each entry naming the file it boots), the MBR and
GPT, then inside: each ``initramfs*`` file's cpio members (the booted system's files
and its apk database) and each ``*.img`` FAT image's files, with the PE header and
sections of every ``.EFI`` file in it. Records may share bytes (the kernel and
initramfs records point into the UKI inside ``efi.img``); a byte range is hashed once.
"""

from __future__ import annotations

import hashlib
import stat

from composer.diff.compression import HEAD, stream_fields
from composer.diff.cpio import read_cpio
from composer.diff.eltorito import catalog_fields
from composer.diff.fat import FatVolume, looks_like_fat
from composer.diff.iso9660 import BLOCK, Descriptor, Record, descriptor_fields, descriptors, walk
from composer.diff.model import FileEntry, Snapshot, join
from composer.diff.packages import INSTALLED, installed_versions
from composer.diff.partitions import gpt_fields, mbr_fields
from composer.diff.pe import pe_fields
from composer.diff.report import Scalar
from composer.diff.source import Budget, Bytes, open_stream
from composer.errors import ArchiveError

ISO_MAGIC_AT = 16 * BLOCK + 1


def looks_like_iso(head: bytes) -> bool:
    return head[ISO_MAGIC_AT:ISO_MAGIC_AT + 5] == b"CD001"


class _Digests:
    """Content digests by byte range, so that shared extents are read once."""

    def __init__(self, image: Bytes, budget: Budget) -> None:
        self.image = image
        self.budget = budget
        self.known: dict[tuple[int, int], str] = {}

    def of(self, start: int, size: int, what: str) -> str:
        key = (start, size)
        if key not in self.known:
            hasher = hashlib.sha256()
            for chunk in self.image.sub(start, size, what).chunks():
                self.budget.charge_bytes(len(chunk), what)
                hasher.update(chunk)
            self.known[key] = hasher.hexdigest()
        return self.known[key]


def _kind(record: Record) -> str:
    if record.is_dir:
        return "dir"
    if record.mode is not None and stat.S_ISLNK(record.mode):
        return "symlink"
    return "file"


def _entry(record: Record, digests: _Digests) -> FileEntry:
    kind = _kind(record)
    digest = digests.of(record.extent * BLOCK, record.size, record.path) if kind == "file" else ""
    header: list[tuple[str, Scalar]] = [("extent", record.extent), ("record date", record.date)]
    if record.nlink is not None:
        header.append(("nlink", record.nlink))
    return FileEntry(path=record.path, kind=kind,
                     mode=stat.S_IMODE(record.mode) if record.mode is not None else None,
                     uid=record.uid, gid=record.gid, mtime=record.rr_mtime or record.date,
                     size=record.size if kind == "file" else 0, sha256=digest, link=record.link,
                     header=tuple(header))


def read_iso(snap: Snapshot, image: Bytes, *, prefix: str = "") -> None:
    budget = snap.budget

    def at(where: str) -> str:
        return join(prefix, where)

    found = descriptors(image)
    primary: Descriptor | None = None
    joliet: Descriptor | None = None
    catalog: int | None = None
    for d in found:
        fields = descriptor_fields(d)
        snap.group(at(d.title), fields)
        if d.kind == 1 and primary is None:
            primary = d
        elif d.joliet and joliet is None:
            joliet = d
        elif d.kind == 0 and d.block[7:30].startswith(b"EL TORITO SPECIFICATION"):
            value = fields["boot catalog LBA"]
            catalog = value if isinstance(value, int) else None
    if primary is None:
        snap.field(at("ISO"), "primary volume descriptor", "missing")
        return
    digests = _Digests(image, budget)
    records = walk(image, *_root(primary), joliet=False, budget=budget)
    snap.add_files(prefix, [_entry(r, digests) for r in records])
    if joliet is not None:
        snap.group(at("ISO Joliet tree"), {
            r.path: f"extent {r.extent}, {r.size} bytes"
            for r in walk(image, *_root(joliet), joliet=True, budget=budget)})
    starts: dict[int, str] = {}
    for r in records:
        starts.setdefault(r.extent, r.path)
    if catalog is not None:
        for where, fields in catalog_fields(image, catalog, starts).items():
            snap.group(at(where), fields)
    for where, fields in [*mbr_fields(image).items(), *gpt_fields(image).items()]:
        snap.group(at(where), fields)
    for record in records:
        if record.is_dir or _kind(record) != "file" or not record.size:
            continue
        name = record.path.rsplit("/", 1)[-1]
        content = image.sub(record.extent * BLOCK, record.size, f"{image.what}!{record.path}")
        if name.startswith("initramfs"):
            read_initramfs(snap, content, join(prefix, record.path))
        elif name.endswith(".img") and looks_like_fat(content.read_at(0, min(512, content.size))):
            read_fat(snap, content, join(prefix, record.path))


def iso_records(image: Bytes, budget: Budget) -> list[Record]:
    """Every record of the primary (Rock Ridge) tree, parents first: what ``boot`` reads to
    find the kernel and initramfs of an ISO someone hands it."""
    primary = next((d for d in descriptors(image) if d.kind == 1), None)
    if primary is None:
        raise ArchiveError(f"{image.what}: no ISO 9660 primary volume descriptor")
    return walk(image, *_root(primary), joliet=False, budget=budget)


def _root(d: Descriptor) -> tuple[int, int]:
    fields = descriptor_fields(d)
    extent, size = fields["root directory extent"], fields["root directory size"]
    assert isinstance(extent, int) and isinstance(size, int)
    return extent, size


def read_initramfs(snap: Snapshot, content: Bytes, scope: str) -> None:
    """An initramfs: a cpio archive, compressed or not; its files and apk database."""
    budget = snap.budget
    kind, stream = open_stream(content, budget)
    snap.group(f"{scope} compression", stream_fields(
        kind, content.read_at(0, min(HEAD, content.size)), content.size))
    contents = read_cpio(stream, source=content.what, budget=budget,
                         keep=lambda path: budget.limits.max_db if path == INSTALLED else 0)
    snap.add_files(scope, contents.entries)
    if INSTALLED in contents.kept:
        snap.packages[scope] = installed_versions(contents.kept[INSTALLED],
                                                  source=f"{scope}!{INSTALLED}")


def read_fat(snap: Snapshot, content: Bytes, scope: str) -> None:
    """A FAT image: its boot sector fields, its files, and the PE layout of ``.EFI`` files."""
    volume = FatVolume(content, snap.budget)
    snap.group(f"{scope} FAT boot sector", volume.fields())
    entries = []
    for item in volume.items():
        digest = ""
        if item.data is not None:
            hasher = hashlib.sha256()
            for chunk in item.data.chunks():
                snap.budget.charge_bytes(len(chunk), item.data.what)
                hasher.update(chunk)
            digest = hasher.hexdigest()
        elif not item.is_dir:
            digest = hashlib.sha256(b"").hexdigest()
        entries.append(FileEntry(path=item.path, kind="dir" if item.is_dir else "file",
                                 mtime=item.mtime, size=item.size, sha256=digest,
                                 header=(("attributes", f"0x{item.attributes:02x}"),
                                         ("first cluster", item.first_cluster))))
        if item.data is not None and item.path.upper().endswith(".EFI"):
            for where, fields in pe_fields(item.data, snap.budget,
                                           f"{scope}!{item.path} PE header").items():
                snap.group(where, fields)
    snap.add_files(scope, entries)
