"""A composed tree and disk settings → a GPT disk image with a verified, read-only root.

The partitions, in order: the EFI system partition (FAT, the project's writer) holding the
unified kernel image at the default boot path; the root, the whole tree as squashfs; with
verity, the root's dm-verity hash partition; with ``data``, an empty partition that the
first boot formats. The UKI's command line carries the verity root hash, so a signed UKI
vouches for every block of the root: firmware checks the UKI's signature, the UKI's
initramfs opens the root with that hash, and the kernel checks each block as it is read.

Everything that could vary is derived from the content: the verity salt and UUID from the
squashfs image's digest, the root and verity partitions' GUIDs from the root hash (the first
and last 128 bits, as systemd-repart sets them), the other GUIDs and the FAT serial from the
digests of the partitions' contents. Partition types follow the Discoverable Partitions
Specification; partition names are what /init finds the partitions by.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from composer.errors import InstallError, ProfileError
from composer.hashing import hash_file
from composer.stages.boot import (
    EFI_BOOT_FILES,
    EFI_STUBS,
    check_cmdline,
    check_kernel,
    check_stub,
    os_release,
    read_file,
    with_panic,
)
from composer.tree import EntryType, FileTree
from composer.writers.disk import (
    ESP_TYPE,
    LINUX_DATA_TYPE,
    READ_ONLY,
    ROOT_TYPES,
    ROOT_VERITY_TYPES,
    DiskLayout,
    DiskPartition,
    write_gpt_disk,
)
from composer.writers.fat import FatFile, build_fat
from composer.writers.squashfs import write_squashfs
from composer.writers.uki import build_uki
from composer.writers.verity import VerityTree, verity_salt_and_uuid, write_verity

DPS_ARCH = {"x86_64": "x86-64", "aarch64": "arm64"}
VERITY_TOOL = ("dmsetup", "device-mapper")
"""The program /init opens the verified root with, and Alpine's package that ships it."""
DATA_TOOL = ("mkfs.ext4", "e2fsprogs")
RESERVED_ARGUMENTS = ("roothash=", "composer.root=", "composer.verity=", "composer.data=",
                      "root=")
DATA_PARTITION = "data"


@dataclass(frozen=True)
class DiskSettings:
    """A disk output for one architecture, defaults filled in."""

    arch: str
    kernel: str
    cmdline: str
    image: str = "raw"
    size: int | None = None
    verity: bool = True
    data_mount: str | None = None
    data_size: int = 0
    release: str = ""


def disk_packages(settings: DiskSettings) -> list[str]:
    """What the image needs installed to boot this way: the kernel, the EFI stub, the verity
    tool and, for a data partition, mkfs.ext4."""
    packages = {f"linux-{settings.kernel}", "gummiboot"}
    if settings.verity:
        packages.add(VERITY_TOOL[1])
    if settings.data_mount:
        packages.add(DATA_TOOL[1])
    return sorted(packages)


def check_disk_settings(settings: DiskSettings, *, where: str) -> None:
    """Refuse settings no tree can satisfy, before anything is downloaded: exit 2."""
    if settings.arch not in EFI_STUBS:
        raise ProfileError(f"{where}: format disk boots with UEFI, which alpine-composer "
                           f"supports on {', '.join(sorted(EFI_STUBS))}, not {settings.arch}")
    problem = check_kernel(settings.kernel) or check_cmdline(settings.cmdline)
    if problem is not None:
        raise ProfileError(f"{where}: {problem}")
    reserved = [w for w in settings.cmdline.split() if w.startswith(RESERVED_ARGUMENTS)]
    if reserved:
        raise ProfileError(f"{where}: cmdline sets {reserved[0]!r}; the disk image sets the "
                           "root and verity arguments itself")
    if settings.data_mount and settings.data_mount.rstrip("/") in ("", "/usr", "/etc", "/proc",
                                                                     "/sys", "/dev", "/run"):
        raise ProfileError(f"{where}: data.mount {settings.data_mount!r} would hide a system "
                           "folder; use a folder of its own such as /data or /srv")
    if settings.size is not None and settings.size % 512:
        raise ProfileError(f"{where}: size {settings.size} is not a multiple of 512 bytes")


def check_disk_tree(tree: FileTree, settings: DiskSettings) -> None:
    """Refuse a tree that lacks what the disk boots with (exit 6), naming the package."""
    from composer.stages.disk_initramfs import find_program

    missing: dict[str, list[str]] = {}
    needed = [(f"boot/vmlinuz-{settings.kernel}", f"linux-{settings.kernel}"),
              (EFI_STUBS[settings.arch], "gummiboot"), ("bin/busybox", "busybox")]
    for path, package in needed:
        found = tree.follow(path)
        if found is None or found.type != EntryType.FILE:
            missing.setdefault(package, []).append("/" + path)
    tools = [VERITY_TOOL] if settings.verity else []
    if settings.data_mount:
        tools.append(DATA_TOOL)
    for program, package in tools:
        if find_program(tree, program) is None:
            missing.setdefault(package, []).append(program)
    if missing:
        parts = [f"{', '.join(paths)} (add package {package})"
                 for package, paths in sorted(missing.items())]
        raise InstallError(f"disk image boot files missing from the image: {'; '.join(parts)}")
    check_stub(tree, settings.arch)


@dataclass(frozen=True)
class BuiltDisk:
    """What :func:`write_disk` wrote: the layout, the verity tree (None without verity) and
    the UKI's command line."""

    layout: DiskLayout
    verity: VerityTree | None
    cmdline: str


def partition_names(arch: str) -> tuple[str, str]:
    """The root's and its verity partition's GPT names (systemd-repart's default labels)."""
    return f"root-{DPS_ARCH[arch]}", f"root-{DPS_ARCH[arch]}-verity"


def disk_cmdline(settings: DiskSettings, verity: VerityTree | None) -> str:
    """The UKI's command line: the profile's, then the root, verity and data arguments."""
    root, hashes = partition_names(settings.arch)
    words = [settings.cmdline, f"composer.root={root}"]
    if verity is not None:
        words += [f"roothash={verity.root_hash.hex()}",
                  f"composer.verity={hashes}:{verity.data_blocks}:{verity.salt.hex()}"]
    if settings.data_mount:
        words.append(f"composer.data={DATA_PARTITION}:{settings.data_mount}")
    return with_panic(" ".join(w for w in words if w))


def write_disk(tree: FileTree, settings: DiskSettings, out: BinaryIO, *, epoch: int,
               scratch: Path, sign: Callable[[bytes], bytes] | None = None) -> BuiltDisk:
    """Build every partition (the large ones as files in ``scratch``) and write the raw
    disk to ``out``. ``sign`` signs the UKI once its command line holds the root hash."""
    from composer.stages.disk_initramfs import (
        disk_initramfs,
        kernel_release,
        module_closure,
        needed_modules,
    )

    check_disk_tree(tree, settings)
    release = kernel_release(tree, settings.kernel)
    modules = module_closure(tree, release, needed_modules(verity=settings.verity,
                                                           data=bool(settings.data_mount)))
    with tempfile.TemporaryDirectory(prefix="disk-", dir=scratch) as folder:
        squashfs_path = Path(folder) / "root.squashfs"
        with open(squashfs_path, "w+b") as fh:
            squashfs_size = write_squashfs(tree, fh, mtime=epoch)
        squashfs_digest, _ = hash_file(squashfs_path)
        verity: VerityTree | None = None
        verity_path = Path(folder) / "root.verity"
        if settings.verity:
            salt, verity_uuid = verity_salt_and_uuid(bytes.fromhex(squashfs_digest))
            with open(squashfs_path, "rb") as data, open(verity_path, "wb") as hashes:
                verity = write_verity(data, squashfs_size, hashes, salt=salt, uuid=verity_uuid)
        cmdline = disk_cmdline(settings, verity)
        initramfs = disk_initramfs(tree, programs=[VERITY_TOOL[0]] if settings.verity else [],
                                   modules=modules, epoch=epoch)
        stub_path = EFI_STUBS[settings.arch]
        sections = [(".osrel", os_release(tree)), (".cmdline", cmdline.encode()),
                    (".initrd", initramfs),
                    (".linux", read_file(tree, f"boot/vmlinuz-{settings.kernel}"))]
        uki = build_uki(read_file(tree, stub_path), [s for s in sections if s[1]],
                        source="/" + stub_path)
        if sign is not None:
            uki = sign(uki)
        fat_files = [FatFile("EFI/BOOT/" + EFI_BOOT_FILES[settings.arch], uki)]
        uki_digest = hashlib.sha256(uki).digest()
        fat = build_fat(fat_files, serial=int.from_bytes(uki_digest[:4], "little"), mtime=epoch,
                        label="ESP")
        seed = hashlib.sha256(b"alpine-composer disk\0" + bytes.fromhex(squashfs_digest)
                              + uki_digest + repr((settings.data_mount, settings.data_size))
                              .encode()).digest()
        root_name, verity_name = partition_names(settings.arch)
        with ExitStack() as files:
            root_fh = files.enter_context(open(squashfs_path, "rb"))
            partitions = [DiskPartition("esp", ESP_TYPE, len(fat.data), io.BytesIO(fat.data)),
                          DiskPartition(root_name, ROOT_TYPES[settings.arch], squashfs_size,
                                        root_fh, attributes=READ_ONLY,
                                        uuid=(uuid.UUID(bytes=verity.root_hash[:16])
                                              if verity is not None else None))]
            if verity is not None:
                partitions.append(DiskPartition(verity_name, ROOT_VERITY_TYPES[settings.arch],
                                                verity.hash_size,
                                                files.enter_context(open(verity_path, "rb")),
                                                attributes=READ_ONLY,
                                                uuid=uuid.UUID(bytes=verity.root_hash[16:32])))
            if settings.data_mount:
                partitions.append(DiskPartition(DATA_PARTITION, LINUX_DATA_TYPE,
                                                settings.data_size, None))
            layout = write_gpt_disk(partitions, out, disk_size=settings.size, seed=seed)
    return BuiltDisk(layout=layout, verity=verity, cmdline=cmdline)

