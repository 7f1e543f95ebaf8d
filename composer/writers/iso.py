"""Bootable hybrid ISO 9660 images, mastered with pycdlib (the only module that imports it).

The ISO carries Rock Ridge (real names, modes) and Joliet; ISO 9660 names are
derived 8.3 names. Boot: an El Torito no-emulation entry for ISOLINUX (load size 4,
boot info table) and a second entry, platform 0xEF, for the FAT EFI image; the
isohybrid MBR (and, with EFI, a GPT) make the same bytes boot as a disk.

pycdlib reads the wall clock, the local time zone and random numbers (volume and
record dates, GPT GUIDs, the MBR id). For the length of a write, :func:`pinned`
swaps those names inside pycdlib's own modules for stand-ins driven by the build
timestamp and a seed from the content. The global ``time``, ``random`` and ``uuid``
modules are never touched, because other threads (gzip, hashing) keep using them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import posixpath
import re
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

SECTOR = 2048
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
class IsoSpec:
    """Everything the ISO holds, decided before writing (by the boot stage)."""

    volume_id: str
    files: tuple[IsoFile, ...]
    epoch: int
    bios_boot: str | None = None
    """Path of isolinux.bin, or None for a UEFI-only ISO."""
    efi_image: str | None = None
    """Path of the FAT EFI image, or None for a BIOS-only ISO."""
    boot_catalog: str = "boot/boot.cat"
    hybrid: bool = True
    system_id: str = "LINUX"


def check_volume_id(label: str) -> str | None:
    """Why ``label`` cannot be a volume id, or None when it can."""
    if not label or len(label) > VOLUME_ID_MAX:
        return f"must be 1 to {VOLUME_ID_MAX} characters (got {len(label)})"
    if not _VOLUME_ID.match(label):
        return "may hold only letters, digits, space, '_', '.' and '-'"
    return None


def _seed(spec: IsoSpec) -> bytes:
    digest = hashlib.sha256(f"{spec.volume_id}\0{spec.epoch}".encode())
    for file in spec.files:
        digest.update(file.path.encode() + b"\0" + hashlib.sha256(file.data).digest())
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


def write_iso(spec: IsoSpec, out: BinaryIO) -> None:
    """Master ``spec`` into ``out`` (a seekable binary file: pycdlib writes out of order)."""
    problem = check_volume_id(spec.volume_id)
    if problem is not None:
        raise OutputError(f"ISO volume id {spec.volume_id!r} {problem}")
    files = sorted(spec.files, key=lambda f: f.path.encode())
    by_path = {f.path: f for f in files}
    if len(by_path) != len(files):
        raise OutputError("ISO: a path is given twice")
    for needed in (spec.bios_boot, spec.efi_image):
        if needed is not None and needed not in by_path:
            raise OutputError(f"ISO: boot file {needed!r} is not among the files")
    names = _Names()
    with pinned(spec.epoch, _seed(spec)):
        iso = pycdlib.PyCdlib()
        try:
            # Joliet stores the volume id in UCS-2 and has room for 16 characters only;
            # the primary descriptor keeps the whole id (as xorriso does).
            iso.new(interchange_level=3, sys_ident=spec.system_id,
                    vol_ident=spec.volume_id[:JOLIET_VOLUME_ID_MAX], joliet=3,
                    rock_ridge="1.09")
            iso.pvd.volume_identifier = spec.volume_id.encode("ascii").ljust(VOLUME_ID_MAX)
            for directory in _directories([f.path for f in files]
                                          + [spec.boot_catalog]):
                iso.add_directory(iso_path=names.get(directory, is_dir=True),
                                  rr_name=posixpath.basename(directory),
                                  joliet_path="/" + directory, file_mode=0o40555)
            for file in files:
                iso.add_fp(io.BytesIO(file.data), len(file.data),
                           iso_path=names.get(file.path, is_dir=False) + ";1",
                           rr_name=posixpath.basename(file.path), joliet_path="/" + file.path,
                           file_mode=0o100000 | file.mode)
            catalog = names.get(spec.boot_catalog, is_dir=False) + ";1"
            efi_sectors = 0
            if spec.bios_boot is not None:
                iso.add_eltorito(names.get(spec.bios_boot, is_dir=False) + ";1",
                                 bootcatfile=catalog,
                                 rr_bootcatname=posixpath.basename(spec.boot_catalog),
                                 joliet_bootcatfile="/" + spec.boot_catalog, boot_load_size=4,
                                 boot_info_table=True)
            if spec.efi_image is not None:
                efi_sectors = _sectors_512(len(by_path[spec.efi_image].data))
                # A count that does not fit 16 bits is written as 1, which firmware (edk2)
                # reads as "up to the end of the medium"; the partition tables get the real size.
                iso.add_eltorito(names.get(spec.efi_image, is_dir=False) + ";1",
                                 bootcatfile=catalog,
                                 rr_bootcatname=posixpath.basename(spec.boot_catalog),
                                 joliet_bootcatfile="/" + spec.boot_catalog,
                                 boot_load_size=efi_sectors if efi_sectors <= ELTORITO_MAX_SECTORS
                                 else 1,
                                 efi=spec.bios_boot is not None, platform_id=0xEF)
            if spec.hybrid and spec.bios_boot is not None:
                iso.add_isohybrid(mbr_id=int.from_bytes(_seed(spec)[:4], "little"),
                                  efi=spec.efi_image is not None)
            iso.write_fp(out)
            if spec.hybrid and efi_sectors > ELTORITO_MAX_SECTORS and spec.bios_boot is not None:
                _widen_efi_partition(iso, out, efi_sectors)
        except pycdlib.pycdlibexception.PyCdlibException as exc:
            raise OutputError(f"ISO: {exc}") from exc
        finally:
            iso.close()


def _widen_efi_partition(iso: Any, out: BinaryIO, sectors: int) -> None:
    """Give the MBR and GPT EFI partitions the image's real size after pycdlib wrote them
    with the El Torito count (which cannot hold it)."""
    hybrid = iso.isohybrid_mbr
    hybrid.efi_count = sectors
    for gpt in (hybrid.primary_gpt, hybrid.secondary_gpt):
        part = gpt.parts[1]
        part.last_lba = part.first_lba + sectors - 1
    size = iso.pvd.space_size * iso.logical_block_size
    out.seek(0)
    out.write(hybrid.record(size))
    header = hybrid.secondary_gpt.header
    out.seek(header.current_lba * 512 - header.num_parts * 128)
    out.write(hybrid.secondary_gpt.record())
    out.seek(0, 2)

