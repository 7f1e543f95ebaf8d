"""The boot stage: a composed tree and ISO settings → a plain :class:`IsoSpec` to master.

What boots is the composed tree itself: the whole rootfs becomes the initramfs (cpio
newc, gzip with the fixed settings), and the kernel runs the image's own
``/sbin/init`` (busybox init reading ``/etc/inittab``) as PID 1, as Alpine does. The
kernel file itself stays out of the initramfs (it is on the boot medium; the booted
system never reads it), and out of the installed database copied into it.

BIOS: ISOLINUX from the image's ``syslinux`` package, reading ``/boot/syslinux/syslinux.cfg``
on the ISO, and the package's ``isohdpfx.bin`` as MBR code for booting as a disk. UEFI: a
unified kernel image (kernel, initramfs and command line in one PE file on
``gummiboot``'s EFI stub) as ``EFI/BOOT/BOOT<ARCH>.EFI`` in a FAT image. The UKI needs no
loader configuration and no ISO 9660 driver, and the same stub exists for x86_64 and
aarch64 (Alpine has no syslinux for aarch64). With UEFI, ``/boot/vmlinuz-<flavor>`` and
``/boot/initramfs-<flavor>`` on the ISO are the UKI's own ``.linux`` and ``.initrd``
bytes inside the FAT image (:class:`IsoAlias`), so each is stored once.

``efi_loader: syslinux`` is refused: syslinux.efi faults under UEFI firmware when the ISO
is started from a CD drive, so such an ISO would not boot everywhere it claims to.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from composer.apk import db
from composer.errors import InstallError, OutputError, ProfileError
from composer.profile.model import EfiLoader, Firmware
from composer.tree import Entry, EntryType, FileTree, sort_key
from composer.writers.compress import ParallelGzipWriter
from composer.writers.cpio import write_cpio
from composer.writers.fat import FatFile, build_fat
from composer.writers.iso import MBR_CODE, SECTOR, IsoAlias, IsoFile, IsoSpec, check_volume_id
from composer.writers.uki import build_uki, pe_sections, stub_arch

SYSLINUX = "usr/share/syslinux"
BIOS_FILES = ("isolinux.bin", "ldlinux.c32")
ISOHYBRID_MBR = f"{SYSLINUX}/isohdpfx.bin"
EFI_STUBS = {"x86_64": "usr/lib/gummiboot/linuxx64.efi.stub",
             "aarch64": "usr/lib/gummiboot/linuxaa64.efi.stub"}
EFI_BOOT_FILES = {"x86_64": "BOOTX64.EFI", "aarch64": "BOOTAA64.EFI"}
BIOS_ARCHES = ("x86_64", "x86")
ISO_BOOT = "boot"
ISO_SYSLINUX = "boot/syslinux"
EFI_IMAGE = "boot/efi.img"
BOOT_CATALOG = "boot/syslinux/boot.cat"
CONSOLE = (5, 1)


@dataclass(frozen=True)
class BootSettings:
    """An ISO output as the profile resolved it (defaults already filled in)."""

    arch: str
    kernel: str
    firmware: tuple[Firmware, ...]
    cmdline: str
    label: str
    timeout: int = 1
    efi_loader: EfiLoader = EfiLoader.UKI
    release: str = ""
    variant: str = ""


KERNEL_FLAVORS = ("lts", "virt", "edge", "stable", "rpi")
"""Alpine's kernel packages are ``linux-<flavor>``; a flavor close to one of these is a typo."""
PANIC = "panic=10"
"""Added to a command line that sets no ``panic=``: after a kernel panic the machine reboots
in 10 s (a VM started with ``-no-reboot``, as ``boot`` does, stops) instead of hanging, and a
person at a screen still has time to read the message. A negative value would reboot at once
and lose it."""


def default_firmware(arch: str) -> tuple[Firmware, ...]:
    """What an ISO boots on when the output names nothing: BIOS and UEFI on x86, else UEFI."""
    return (Firmware.BIOS, Firmware.UEFI) if arch in BIOS_ARCHES else (Firmware.UEFI,)


def with_panic(cmdline: str) -> str:
    """``cmdline`` with :data:`PANIC` appended unless it sets ``panic=`` itself."""
    if any(word.startswith("panic=") for word in cmdline.split()):
        return cmdline
    return f"{cmdline} {PANIC}".strip()


def check_kernel(kernel: str) -> str | None:
    """Why ``kernel`` is not a flavor name, or None (a flavor of a private repository is
    fine, unless it is one letter or two away from Alpine's own)."""
    import difflib

    if not kernel or "/" in kernel:
        return f"kernel {kernel!r} is not a kernel flavor name"
    if kernel.startswith("linux-"):
        flavor = kernel.removeprefix("linux-")
        return (f"kernel {kernel!r} is a package name; write the flavor, kernel: {flavor} (the "
                f"ISO boots /boot/vmlinuz-{flavor} from package {kernel})")
    if kernel not in KERNEL_FLAVORS:
        close = difflib.get_close_matches(kernel, KERNEL_FLAVORS, n=1, cutoff=0.6)
        if close:
            return (f"kernel {kernel!r} is not one of Alpine's flavors (did you mean "
                    f"{close[0]!r}?)")
    return None


def check_cmdline(cmdline: str) -> str | None:
    """Why ``cmdline`` cannot be a kernel command line, or None."""
    if "\n" in cmdline or "\r" in cmdline:
        return "cmdline must be one line (the boot loaders read one line)"
    bad = next((c for c in cmdline if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        return f"cmdline holds the control character {bad!r}"
    if not cmdline.strip():
        return ("cmdline is empty; the kernel needs at least its console, e.g. "
                "'console=ttyS0,115200'")
    return None


def boot_packages(settings: BootSettings) -> list[str]:
    """The packages that ship the files the boot chain reads, for this architecture."""
    return sorted({package for _, package in _needed_files(settings)})


def default_label(variant: str, release: str, arch: str) -> str:
    """Alpine's volume id, ``alpine-<variant> <release> <arch>``, cut to the allowed length."""
    return f"alpine-{variant} {release} {arch}"[:32].rstrip()


def check_settings(settings: BootSettings, *, where: str) -> None:
    """Refuse settings no tree can satisfy (before anything is downloaded): exit 2."""
    problem = check_volume_id(settings.label)
    if problem is not None:
        raise ProfileError(f"{where}: label {settings.label!r} {problem}")
    if not settings.firmware:
        raise ProfileError(f"{where}: boot: name at least one of bios, uefi")
    if Firmware.BIOS in settings.firmware and settings.arch not in BIOS_ARCHES:
        raise ProfileError(f"{where}: boot: bios is not possible on {settings.arch} "
                           "(BIOS boot exists on x86 only); use boot: [uefi]")
    if Firmware.UEFI in settings.firmware:
        if settings.efi_loader == EfiLoader.SYSLINUX:
            raise ProfileError(f"{where}: efi_loader: syslinux is refused: syslinux.efi faults "
                               "under UEFI firmware when the ISO starts from a CD drive; use "
                               "efi_loader: uki (the default)")
        if settings.arch not in EFI_STUBS:
            raise ProfileError(f"{where}: boot: uefi has no {settings.efi_loader} loader for "
                               f"{settings.arch} (available for {', '.join(sorted(EFI_STUBS))})")
    if settings.timeout < 0:
        raise ProfileError(f"{where}: timeout must be 0 or more seconds")
    problem = check_kernel(settings.kernel) or check_cmdline(settings.cmdline)
    if problem is not None:
        raise ProfileError(f"{where}: {problem}")


def kernel_path(settings: BootSettings) -> str:
    return f"boot/vmlinuz-{settings.kernel}"


def _needed_files(settings: BootSettings) -> list[tuple[str, str]]:
    """(path in the tree, package that ships it) for every file the boot chain reads."""
    needed = [(kernel_path(settings), f"linux-{settings.kernel}")]
    if Firmware.BIOS in settings.firmware:
        needed += [(f"{SYSLINUX}/{name}", "syslinux") for name in BIOS_FILES]
        needed.append((ISOHYBRID_MBR, "syslinux"))
    if Firmware.UEFI in settings.firmware:
        needed.append((EFI_STUBS[settings.arch], "gummiboot"))
    return needed


def _resolve(tree: FileTree, path: str) -> Entry | None:
    """The regular file at ``path``, following symlinks inside the tree."""
    entry = tree.follow(path)
    return entry if entry is not None and entry.type == EntryType.FILE else None


def check_tree(tree: FileTree, settings: BootSettings) -> None:
    """Refuse a composed tree that lacks a file the boot chain needs: exit 6, naming them
    and the package to add."""
    missing: dict[str, list[str]] = {}
    for path, package in _needed_files(settings):
        if _resolve(tree, path) is None:
            missing.setdefault(package, []).append("/" + path)
    if missing:
        parts = [f"{', '.join(paths)} (add package {package})"
                 for package, paths in sorted(missing.items())]
        raise InstallError(f"ISO boot files missing from the image: {'; '.join(parts)}")
    if Firmware.BIOS in settings.firmware:
        size = len(read_file(tree, ISOHYBRID_MBR))
        if size < MBR_CODE:
            raise InstallError(f"/{ISOHYBRID_MBR} is {size} bytes, not the {MBR_CODE}-byte "
                               "isohybrid MBR code (package syslinux)")
    if Firmware.UEFI in settings.firmware:
        check_stub(tree, settings.arch)


def check_stub(tree: FileTree, arch: str) -> None:
    """Refuse an EFI stub that is not a PE image for ``arch`` (exit 6)."""
    stub_path = EFI_STUBS[arch]
    try:
        found = stub_arch(read_file(tree, stub_path), source="/" + stub_path)
    except OutputError as exc:
        raise InstallError(exc.message) from exc
    if found != arch:
        raise InstallError(f"/{stub_path} is an EFI stub for {found}, not {arch}")


def read_file(tree: FileTree, path: str) -> bytes:
    """The bytes of the regular file at ``path``, symlinks followed (the tree was checked to
    have it)."""
    entry = _resolve(tree, path)
    assert entry is not None and entry.blob is not None
    return entry.blob.read()


def initramfs_entries(tree: FileTree, *, leave_out: Collection[str] = ()) -> list[Entry]:
    """The tree's entries plus what the kernel needs to start its init from a cpio:
    ``dev/console`` (stdio of PID 1) and ``/init`` pointing at ``/sbin/init``. The files in
    ``leave_out`` are left out, and out of the installed database's file lists, so that
    ``apk`` inside the booted system sees no file missing."""
    extra: list[Entry] = []
    if "dev" not in tree:
        extra.append(Entry(path="dev", type=EntryType.DIR, mode=0o755))
    if "dev/console" not in tree:
        extra.append(Entry(path="dev/console", type=EntryType.CHAR, mode=0o600,
                           devmajor=CONSOLE[0], devminor=CONSOLE[1]))
    if "init" not in tree:
        extra.append(Entry(path="init", type=EntryType.SYMLINK, mode=0o777, target="/sbin/init"))
    entries = [e for e in tree.walk() if e.path not in leave_out]
    database = tree.get(db.INSTALLED_PATH)
    if leave_out and database is not None and database.blob is not None:
        packages = db.parse_installed(database.blob.read(), source="/" + db.INSTALLED_PATH)
        listed = sum(len(d.files) for p in packages for d in p.dirs)
        for package in packages:
            for directory in package.dirs:
                prefix = directory.path + "/" if directory.path else ""
                directory.files = [f for f in directory.files
                                   if prefix + f.name not in leave_out]
        if sum(len(d.files) for p in packages for d in p.dirs) != listed:
            blob = tree.store.from_bytes(db.format_installed(packages))
            entries = [replace(e, blob=blob) if e.path == db.INSTALLED_PATH else e
                       for e in entries]
    return sorted([*entries, *extra], key=lambda e: sort_key(e.path))


def make_initramfs(tree: FileTree, *, epoch: int, workers: int | None = None,
                   leave_out: Collection[str] = ()) -> bytes:
    """The whole tree (but ``leave_out``) as a gzip-compressed newc cpio with fixed settings."""
    buffer = io.BytesIO()
    gz = ParallelGzipWriter(buffer, workers=workers)
    with gz:
        write_cpio(initramfs_entries(tree, leave_out=leave_out), gz, mtime=epoch)
    return buffer.getvalue()


def syslinux_config(settings: BootSettings, *, kernel: str, initrd: str) -> bytes:
    """An ISOLINUX/SYSLINUX configuration in Alpine's shape, on the serial port as well."""
    # SYSLINUX counts TIMEOUT in tenths of a second; PROMPT 0 boots the default at once.
    prompt = f"PROMPT 1\nTIMEOUT {settings.timeout * 10}\n" if settings.timeout \
        else "PROMPT 0\n"
    append = f"\tAPPEND {settings.cmdline}\n" if settings.cmdline else ""
    return (f"SERIAL 0 115200\n{prompt}DEFAULT {settings.kernel}\n\n"
            f"LABEL {settings.kernel}\n\tMENU LABEL Linux {settings.kernel}\n"
            f"\tKERNEL {kernel}\n\tINITRD {initrd}\n{append}").encode()


def os_release(tree: FileTree) -> bytes:
    entry = _resolve(tree, "etc/os-release") or _resolve(tree, "usr/lib/os-release")
    return entry.blob.read() if entry is not None and entry.blob is not None else b""


def _release_line(settings: BootSettings, epoch: int) -> bytes:
    stamp = time.strftime("%y%m%d", time.gmtime(epoch))
    return f"alpine-{settings.variant}-{settings.release} {stamp}\n".encode()


def _kernel_files(tree: FileTree, settings: BootSettings) -> set[str]:
    """The kernel's path and, when it is a symlink, the file it resolves to."""
    entry = _resolve(tree, kernel_path(settings))
    return {kernel_path(settings)} | ({entry.path} if entry is not None else set())


def _uki(tree: FileTree, settings: BootSettings, kernel: bytes, initramfs: bytes) -> bytes:
    stub_path = EFI_STUBS[settings.arch]
    sections = [(".osrel", os_release(tree)), (".cmdline", settings.cmdline.encode()),
                (".initrd", initramfs), (".linux", kernel)]
    # Sections start at ISO block boundaries so that ISO 9660 can name them as files.
    return build_uki(read_file(tree, stub_path), [s for s in sections if s[1]], align=SECTOR,
                     source="/" + stub_path)


def boot_media(tree: FileTree, settings: BootSettings, *, epoch: int,
               workers: int | None = None) -> IsoSpec:
    """Everything the ISO holds, for :func:`composer.writers.iso.write_iso`."""
    check_tree(tree, settings)
    kernel = read_file(tree, kernel_path(settings))
    initramfs = make_initramfs(tree, epoch=epoch, workers=workers,
                               leave_out=_kernel_files(tree, settings))
    boot_kernel = f"{ISO_BOOT}/vmlinuz-{settings.kernel}"
    boot_initrd = f"{ISO_BOOT}/initramfs-{settings.kernel}"
    files: list[IsoFile] = []
    aliases: tuple[IsoAlias, ...] = ()
    if settings.release:
        files.append(IsoFile(".alpine-release", _release_line(settings, epoch)))
    bios_boot = efi_image = None
    mbr_code = b""
    if Firmware.BIOS in settings.firmware:
        for name in BIOS_FILES:
            files.append(IsoFile(f"{ISO_SYSLINUX}/{name}", read_file(tree, f"{SYSLINUX}/{name}")))
        config = syslinux_config(settings, kernel="/" + boot_kernel, initrd="/" + boot_initrd)
        files.append(IsoFile(f"{ISO_SYSLINUX}/syslinux.cfg", config))
        bios_boot = f"{ISO_SYSLINUX}/isolinux.bin"
        mbr_code = read_file(tree, ISOHYBRID_MBR)[:MBR_CODE]
    if Firmware.UEFI in settings.firmware:
        boot_file = "EFI/BOOT/" + EFI_BOOT_FILES[settings.arch]
        uki = _uki(tree, settings, kernel, initramfs)
        fat_files = [FatFile(boot_file, uki)]
        serial = int.from_bytes(_digest(fat_files, epoch)[:4], "little")
        image = build_fat(fat_files, serial=serial, mtime=epoch, align=SECTOR)
        files.append(IsoFile(EFI_IMAGE, image.data))
        efi_image = EFI_IMAGE
        where = {s.name: image.offsets[boot_file] + s.raw_offset for s in pe_sections(uki)}
        aliases = (IsoAlias(boot_kernel, EFI_IMAGE, where[".linux"], len(kernel)),
                   IsoAlias(boot_initrd, EFI_IMAGE, where[".initrd"], len(initramfs)))
    else:
        files += [IsoFile(boot_kernel, kernel), IsoFile(boot_initrd, initramfs)]
    return IsoSpec(volume_id=settings.label, files=tuple(files), epoch=epoch,
                   bios_boot=bios_boot, mbr_code=mbr_code, efi_image=efi_image,
                   boot_catalog=BOOT_CATALOG, aliases=aliases)


def _digest(files: Sequence[FatFile], epoch: int) -> bytes:
    digest = hashlib.sha256(b"%d" % epoch)
    for file in files:
        digest.update(file.path.encode() + b"\0" + hashlib.sha256(file.data).digest())
    return digest.digest()
