"""Bootable hybrid ISO 9660 images, mastered with pycdlib (the only module that imports it).

The ISO carries Rock Ridge (real names, modes) and Joliet; ISO 9660 names are
derived 8.3 names. Boot: an El Torito no-emulation entry for ISOLINUX (load size 4,
boot info table) and a second entry, platform 0xEF, for the FAT EFI image.

The system area (the first 32 KiB) is ours, not pycdlib's isohybrid code: a protective
MBR and a GPT (:mod:`composer.writers.gpt`) whose EFI system partition covers the EFI
image, so UEFI firmware boots the same bytes as a disk. With BIOS boot the MBR carries
the syslinux package's own ``isohdpfx.bin`` code and the LBA of ``isolinux.bin``, plus a
one-sector bootable placeholder entry for BIOSes that look for an active partition (as
xorriso's ``--mbr-force-bootable`` writes it). The backup GPT follows the ISO 9660 volume.

A file may be an :class:`IsoAlias`: its directory records point at bytes inside another
file (the kernel and initramfs inside the UKI inside the EFI image), so they are stored
once. pycdlib records it as an empty file; the writer re-points its records afterwards.

pycdlib reads the wall clock, the local time zone and random numbers (volume and
record dates). For the length of a write, :func:`pinned` swaps those names inside
pycdlib's own modules for stand-ins driven by the build timestamp and a seed from the
content. The global ``time``, ``random`` and ``uuid`` modules are never touched, because
other threads (gzip, hashing) keep using them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import posixpath
import re
import struct
import threading
import time
import types
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import pycdlib
import pycdlib.dates
import pycdlib.headervd
import pycdlib.isohybrid
import pycdlib.pycdlib
import pycdlib.utils

from composer.errors import OutputError
from composer.writers import gpt, iso_records

SECTOR = 2048
SYSTEM_AREA = 16 * SECTOR
MBR_CODE = 432
"""Bytes of isohybrid MBR code before the boot file's LBA (isohdpfx.bin's size)."""
ELTORITO_MAX_SECTORS = 0xFFFF
"""The El Torito sector count is 16 bits of 512-byte sectors (32 MiB)."""

CLOCK_MODULES = (pycdlib.dates, pycdlib.headervd, pycdlib.pycdlib, pycdlib.utils)
"""pycdlib modules that call ``time.time()``/``time.localtime()`` (pycdlib 1.22)."""
RANDOM_MODULES = (pycdlib.isohybrid,)
"""pycdlib modules that draw ``uuid.uuid4()`` and ``random.getrandbits()`` (pycdlib 1.22)."""

VOLUME_ID_MAX = 32
JOLIET_VOLUME_ID_MAX = 16
_VOLUME_ID = re.compile(r"^[A-Za-z0-9_ .-]+$")
_PIN_LOCK = threading.Lock()


@dataclass(frozen=True)
class IsoFile:
    """One file on the ISO: its path (``boot/vmlinuz-virt``), bytes and permission bits."""

    path: str
    data: bytes
    mode: int = 0o444


@dataclass(frozen=True)
class IsoAlias:
    """A file whose bytes are ``length`` bytes of file ``source`` from ``offset`` (a multiple
    of 2048, so that an ISO 9660 extent can start there)."""

    path: str
    source: str
    offset: int
    length: int
    mode: int = 0o444


@dataclass(frozen=True)
class IsoSpec:
    """Everything the ISO holds, decided before writing (by the boot stage)."""

    volume_id: str
    files: tuple[IsoFile, ...]
    epoch: int
    bios_boot: str | None = None
    """Path of isolinux.bin, or None for a UEFI-only ISO."""
    mbr_code: bytes = b""
    """The isohybrid MBR boot code (syslinux's ``isohdpfx.bin``, 432 bytes) for BIOS boot."""
    efi_image: str | None = None
    """Path of the FAT EFI image, or None for a BIOS-only ISO."""
    boot_catalog: str = "boot/boot.cat"
    aliases: tuple[IsoAlias, ...] = ()
    system_id: str = "LINUX"


def check_volume_id(label: str) -> str | None:
    """Why ``label`` cannot be a volume id, or None when it can."""
    if not label or len(label) > VOLUME_ID_MAX:
        return f"must be 1 to {VOLUME_ID_MAX} characters (got {len(label)})"
    if not _VOLUME_ID.fullmatch(label):
        return "may hold only letters, digits, space, '_', '.' and '-'"
    return None


def _seed(spec: IsoSpec) -> bytes:
    digest = hashlib.sha256(f"{spec.volume_id}\0{spec.epoch}".encode())
    for file in spec.files:
        digest.update(file.path.encode() + b"\0" + hashlib.sha256(file.data).digest())
    for alias in spec.aliases:
        digest.update(f"{alias.path}\0{alias.source}\0{alias.offset}\0{alias.length}".encode())
    digest.update(hashlib.sha256(spec.mbr_code).digest())
    return digest.digest()


@contextlib.contextmanager
def pinned(epoch: int, seed: bytes) -> Iterator[None]:
    """Make pycdlib's clock read ``epoch`` in UTC and its randomness derive from ``seed``."""
    counter = iter(range(1, 1 << 30))

    def uuid4() -> uuid.UUID:
        return uuid.UUID(bytes=hashlib.sha256(seed + b"%d" % next(counter)).digest()[:16],
                         version=4)

    def getrandbits(bits: int) -> int:
        digest = hashlib.sha256(seed + b"r%d" % next(counter)).digest()
        return int.from_bytes(digest, "big") >> (256 - bits)

    # localtime() is UTC: the dates must not depend on the machine's time zone.
    clock = types.SimpleNamespace(time=lambda: float(epoch), localtime=time.gmtime,
                                  gmtime=time.gmtime, strftime=time.strftime,
                                  strptime=time.strptime, struct_time=time.struct_time)
    chance = types.SimpleNamespace(uuid4=uuid4, UUID=uuid.UUID)
    rng = types.SimpleNamespace(getrandbits=getrandbits)
    with _PIN_LOCK:
        stand_ins = [(module, "time", clock) for module in CLOCK_MODULES] + [
            (module, name, value) for module in RANDOM_MODULES
            for name, value in (("uuid", chance), ("random", rng))]
        saved: list[tuple[Any, str, Any]] = []
        try:
            for module, name, value in stand_ins:
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, value)
            yield
        finally:
            for module, name, value in reversed(saved):
                setattr(module, name, value)


_ISO_CHARS = re.compile(r"[^A-Z0-9_]")


def _iso_component(name: str, taken: set[str], *, is_dir: bool) -> str:
    """A unique ISO 9660 level-1 name (8.3, ``A-Z0-9_``) for one path component."""
    upper = name.upper()
    base, dot, ext = upper.rpartition(".") if "." in upper[1:] and not is_dir else (upper, "", "")
    base = _ISO_CHARS.sub("_", base)[:8] or "_"
    ext = _ISO_CHARS.sub("_", ext)[:3]
    for n in range(10000):
        stem = base if n == 0 else base[:8 - len(str(n))] + str(n)
        candidate = stem + ("." + ext if ext else "")
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    raise OutputError(f"ISO: too many files named like {name!r} in one directory")


class _Names:
    """ISO 9660 names for the tree's paths, unique per directory, in a fixed order."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {"": ""}
        self._taken: dict[str, set[str]] = {}

    def get(self, path: str, *, is_dir: bool) -> str:
        if path not in self._map:
            parent = posixpath.dirname(path)
            component = _iso_component(posixpath.basename(path),
                                       self._taken.setdefault(parent, set()), is_dir=is_dir)
            self._map[path] = self.get(parent, is_dir=True) + "/" + component
        return self._map[path]


def _directories(paths: Sequence[str]) -> list[str]:
    found: set[str] = set()
    for path in paths:
        parent = posixpath.dirname(path)
        while parent:
            found.add(parent)
            parent = posixpath.dirname(parent)
    return sorted(found)


def _sectors_512(length: int) -> int:
    return -(-length // 512)


def _check(spec: IsoSpec) -> dict[str, IsoFile]:
    problem = check_volume_id(spec.volume_id)
    if problem is not None:
        raise OutputError(f"ISO volume id {spec.volume_id!r} {problem}")
    by_path = {f.path: f for f in spec.files}
    paths = [*by_path, *(a.path for a in spec.aliases)]
    if len(set(paths)) != len(spec.files) + len(spec.aliases):
        raise OutputError("ISO: a path is given twice")
    for needed in (spec.bios_boot, spec.efi_image):
        if needed is not None and needed not in by_path:
            raise OutputError(f"ISO: boot file {needed!r} is not among the files")
    if spec.bios_boot is not None and len(spec.mbr_code) != MBR_CODE:
        raise OutputError(f"ISO: BIOS boot needs the {MBR_CODE}-byte isohybrid MBR code "
                          f"(isohdpfx.bin), got {len(spec.mbr_code)} bytes")
    for alias in spec.aliases:
        source = by_path.get(alias.source)
        if source is None or alias.offset % SECTOR or alias.length < 0 \
                or alias.offset + alias.length > len(source.data):
            raise OutputError(f"ISO: {alias.path!r} is not {alias.length} bytes at a 2048-byte "
                              f"boundary of {alias.source!r}")
    return by_path


def write_iso(spec: IsoSpec, out: BinaryIO) -> None:
    """Master ``spec`` into ``out``, a seekable binary file open for reading and writing
    (pycdlib writes out of order, and the writer reads back what it wrote)."""
    by_path = _check(spec)
    if not out.readable():
        raise OutputError("ISO: the output must be open for reading and writing")
    files = sorted(spec.files, key=lambda f: f.path.encode())
    aliases = sorted(spec.aliases, key=lambda a: a.path.encode())
    names = _Names()
    seed = _seed(spec)
    with pinned(spec.epoch, seed):
        iso = pycdlib.PyCdlib()
        try:
            # Joliet stores the volume id in UCS-2 and has room for 16 characters only;
            # the primary descriptor keeps the whole id (as xorriso does).
            iso.new(interchange_level=3, sys_ident=spec.system_id,
                    vol_ident=spec.volume_id[:JOLIET_VOLUME_ID_MAX], joliet=3,
                    rock_ridge="1.09")
            iso.pvd.volume_identifier = spec.volume_id.encode("ascii").ljust(VOLUME_ID_MAX)
            for directory in _directories([*by_path, *(a.path for a in aliases),
                                           spec.boot_catalog]):
                iso.add_directory(iso_path=names.get(directory, is_dir=True),
                                  rr_name=posixpath.basename(directory),
                                  joliet_path="/" + directory, file_mode=0o40555)
            entries = [(f.path, f.data, f.mode) for f in files] + [
                (a.path, b"", a.mode) for a in aliases]
            for path, data, mode in entries:
                iso.add_fp(io.BytesIO(data), len(data),
                           iso_path=names.get(path, is_dir=False) + ";1",
                           rr_name=posixpath.basename(path), joliet_path="/" + path,
                           file_mode=0o100000 | mode)
            _add_boot_entries(iso, spec, names, by_path)
            iso.write_fp(out)
        except pycdlib.pycdlibexception.PyCdlibException as exc:
            raise OutputError(f"ISO: {exc}") from exc
        finally:
            iso.close()
    _finish(out, spec, names, by_path, seed)


def _add_boot_entries(iso: Any, spec: IsoSpec, names: _Names,
                      by_path: dict[str, IsoFile]) -> None:
    catalog = names.get(spec.boot_catalog, is_dir=False) + ";1"
    where = dict(bootcatfile=catalog, rr_bootcatname=posixpath.basename(spec.boot_catalog),
                 joliet_bootcatfile="/" + spec.boot_catalog)
    if spec.bios_boot is not None:
        iso.add_eltorito(names.get(spec.bios_boot, is_dir=False) + ";1", boot_load_size=4,
                         boot_info_table=True, **where)
    if spec.efi_image is not None:
        sectors = _sectors_512(len(by_path[spec.efi_image].data))
        # A count that does not fit 16 bits is written as 1, which firmware (edk2) reads
        # as "up to the end of the medium"; the GPT gives the EFI partition its real size.
        iso.add_eltorito(names.get(spec.efi_image, is_dir=False) + ";1",
                         boot_load_size=sectors if sectors <= ELTORITO_MAX_SECTORS else 1,
                         efi=spec.bios_boot is not None, platform_id=0xEF, **where)


def _finish(out: BinaryIO, spec: IsoSpec, names: _Names, by_path: dict[str, IsoFile],
            seed: bytes) -> None:
    """Re-point the aliases' records and write the system area and the backup GPT."""
    primary, joliet = iso_records.roots(out)

    def extent(path: str) -> int:
        return iso_records.find(out, primary, names.get(path, is_dir=False)).extent

    for alias in spec.aliases:
        start = extent(alias.source) + alias.offset // SECTOR
        for root, path, is_joliet in ((primary, names.get(alias.path, is_dir=False), False),
                                      (joliet, alias.path, True)):
            if root is not None:
                record = iso_records.find(out, root, path, joliet=is_joliet)
                iso_records.repoint(out, record, extent=start, size=alias.length)
    size = out.seek(0, io.SEEK_END)
    efi = None
    if spec.efi_image is not None:
        efi = (extent(spec.efi_image), len(by_path[spec.efi_image].data))
    bios = extent(spec.bios_boot) if spec.bios_boot is not None else None
    tables = _partition_tables(spec, size, bios_extent=bios, efi=efi, seed=seed)
    out.seek(0)
    out.write(tables.head.ljust(SYSTEM_AREA, b"\0"))
    out.seek(size)
    out.write(bytes(tables.tail_offset - size))
    out.write(tables.tail)


def _partition_tables(spec: IsoSpec, size: int, *, bios_extent: int | None,
                      efi: tuple[int, int] | None, seed: bytes) -> gpt.PartitionTables:
    """The protective MBR (with the isohybrid boot code for BIOS) and a GPT whose EFI system
    partition covers the EFI image's blocks, for an ISO of ``size`` bytes; the disk is the
    ISO plus the backup GPT, in whole 2048-byte blocks."""
    disk_sectors = -(-(size // gpt.SECTOR + gpt.TAIL_SECTORS) // 4) * 4
    partitions = []
    if efi is not None:
        first, length = efi[0] * 4, -(-efi[1] // SECTOR) * 4
        partitions.append(gpt.GptPartition(gpt.ESP_TYPE, gpt.content_guid(seed, b"esp"), first,
                                           first + length - 1, name="EFI boot partition"))
    mbr = [gpt.protective_entry(disk_sectors)]
    boot_code = b""
    if bios_extent is not None:
        # isohdpfx.bin reads the boot file's LBA, in 512-byte sectors, from byte 432.
        boot_code = spec.mbr_code + struct.pack("<II", bios_extent * 4, 0)
        mbr.append(gpt.MbrPartition(type=0, first_lba=0, sectors=1, bootable=True))
    return gpt.partition_tables(partitions, disk_sectors=disk_sectors,
                                disk_guid=gpt.content_guid(seed, b"disk"), mbr=mbr,
                                boot_code=boot_code,
                                disk_signature=int.from_bytes(seed[:4], "little"))
