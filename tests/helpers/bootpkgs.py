"""Test-signed APKs with Alpine's names and paths around Debian's boot binaries.

Alpine's ``linux-virt``/``linux-lts``, ``syslinux`` and ``gummiboot`` cannot be
downloaded here, so the tests wrap the same kinds of files from Debian: a cloud
kernel (``apt-get download linux-image-*-cloud-amd64-unsigned``, unpacked with
``dpkg-deb``, no install hooks), ISOLINUX/SYSLINUX from ``isolinux``,
``syslinux-common`` and ``syslinux-efi``, and the UKI stub from ``systemd-boot-efi``.
Nothing Debian ships is committed: the kernel is fetched at test time into a cache
folder, the rest is read from the installed Debian packages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.apkrepo import FileLike, FileSpec, PackageSpec

# Debian path → path in Alpine's package, and the Debian package that ships it.
SYSLINUX_FILES = {
    "/usr/lib/ISOLINUX/isolinux.bin": ("usr/share/syslinux/isolinux.bin", "isolinux"),
    "/usr/lib/ISOLINUX/isohdpfx.bin": ("usr/share/syslinux/isohdpfx.bin", "isolinux"),
    "/usr/lib/syslinux/modules/bios/ldlinux.c32": ("usr/share/syslinux/ldlinux.c32",
                                                   "syslinux-common"),
    "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi": ("usr/share/syslinux/efi64/syslinux.efi",
                                                 "syslinux-efi"),
    "/usr/lib/syslinux/modules/efi64/ldlinux.e64": ("usr/share/syslinux/efi64/ldlinux.e64",
                                                    "syslinux-common"),
}
STUB_FILE = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
STUB_PATH = "usr/lib/gummiboot/linuxx64.efi.stub"
BOOT_MARKER = "COMPOSER-BOOT-OK"
FAKE_ISOLINUX = b"\xfa" * 0x40 + b"\xfb\xc0\x78\x70" + b"\0" * (4096 - 0x44)
"""Enough of isolinux.bin for tests that never boot it: the isohybrid signature at 0x40."""
FAKE_ISOHDPFX = b"\x33\xed" + b"\x90" * 30 + b"\xf4" * 400
"""432 bytes standing in for isohdpfx.bin (the isohybrid MBR code) in tests that never boot."""
ALPINE_SYSLINUX = "iso-standard-3.19.1-x86_64/boot/syslinux"
"""Alpine's own ISOLINUX 6.04 files (isolinux.bin, ldlinux.c32, isohdpfx.bin, ...), below
the real fixtures (``tests.conftest.FIXTURES``)."""


class Unavailable(Exception):
    """A Debian package or tool the boot fixtures need is absent (the message says which)."""


@dataclass(frozen=True)
class DebianKernel:
    version: str
    vmlinuz: bytes
    files: tuple[tuple[str, bytes], ...] = ()
    """``boot/config-<version>`` and the modules a disk image's initramfs loads (with what
    they depend on), as the .deb installs them."""


def _deb_members(deb: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Regular files of a .deb's data whose path ``wanted`` accepts, unpacked with dpkg-deb
    (no maintainer scripts run)."""
    import io

    if shutil.which("dpkg-deb") is None:
        raise Unavailable("dpkg-deb is not installed")
    fsys = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                          check=True).stdout
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(fsys)) as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if member.isfile() and wanted(name):
                handle = archive.extractfile(member)
                assert handle is not None
                found[name] = handle.read()
    return found


def _newest_kernel_package(debian_arch: str) -> str:
    """The newest ``linux-image-<version>-cloud-<arch>-unsigned`` apt knows."""
    if shutil.which("apt-cache") is None or shutil.which("apt-get") is None:
        raise Unavailable("apt-get is not available to download a Debian kernel")
    pattern = re.compile(rf"^linux-image-(\d+\.\d+\.\d+-\d+)-cloud-{debian_arch}-unsigned$")
    found = subprocess.run(["apt-cache", "search", "--names-only",
                            rf"^linux-image-.*-cloud-{debian_arch}-unsigned$"],
                           capture_output=True, text=True, check=False).stdout
    names = [line.split(" - ")[0] for line in found.splitlines()]
    versions = [(tuple(int(x) for x in re.split(r"[.-]", m.group(1))), name)
                for name in names if (m := pattern.match(name))]
    if not versions:
        hint = "" if debian_arch == "amd64" else f"dpkg --add-architecture {debian_arch} && "
        raise Unavailable(f"no linux-image-*-cloud-{debian_arch}-unsigned package is known to "
                          f"apt (run {hint}apt-get update)")
    return max(versions)[1]


def _downloaded(cache: Path, packages: dict[str, str | Callable[[], str]]) -> dict[str, Path]:
    """``apt-get download`` into ``cache`` once: glob → .deb for each ``{glob: apt name}``
    (a name is looked up only when its .deb is missing)."""
    cache.mkdir(parents=True, exist_ok=True)
    have = {glob: sorted(cache.glob(glob)) for glob in packages}
    missing = [name() if callable(name) else name
               for glob, name in packages.items() if not have[glob]]
    if missing:
        result = subprocess.run(["apt-get", "download", *missing], cwd=cache,
                                capture_output=True, text=True, check=False)
        have = {glob: sorted(cache.glob(glob)) for glob in packages}
        if result.returncode != 0 or not all(have.values()):
            raise Unavailable(f"apt-get download {' '.join(missing)} failed: "
                              f"{result.stderr.strip()[-300:]}")
    return {glob: debs[-1] for glob, debs in have.items()}


DISK_MODULES = ("virtio_pci", "virtio_blk", "squashfs", "overlay", "dm_verity", "ext4")


def _kernel_of(deb: Path) -> DebianKernel:
    from composer.stages.disk_initramfs import modinfo_depends

    members = _deb_members(deb, lambda name: name.startswith(("boot/vmlinuz-", "boot/config-"))
                           or (name.startswith("lib/modules/") and name.endswith(".ko")))
    kernels = [name for name in members if name.startswith("boot/vmlinuz-")]
    if len(kernels) != 1:
        raise Unavailable(f"{deb.name} holds no single boot/vmlinuz-*")
    modules = {name.rsplit("/", 1)[-1].removesuffix(".ko").replace("-", "_"): name
               for name in members if name.endswith(".ko")}
    wanted: dict[str, bytes] = {}
    queue = [m for m in DISK_MODULES if m in modules]
    while queue:
        path = modules[queue.pop()]
        if path not in wanted:
            wanted[path] = members[path]
            queue += [d.replace("-", "_") for d in modinfo_depends(members[path], source=path)
                      if d.replace("-", "_") in modules]
    config = {name: data for name, data in members.items() if name.startswith("boot/config-")}
    return DebianKernel(version=kernels[0].removeprefix("boot/vmlinuz-"),
                        vmlinuz=members[kernels[0]],
                        files=tuple(sorted({**config, **wanted}.items())))


AMD64_KERNEL_DEB = "linux-image-*-cloud-amd64-unsigned_*.deb"
ARM64_KERNEL_DEB = "linux-image-*-cloud-arm64-unsigned_*.deb"
ARM64_STUB_DEB = "systemd-boot-efi_*_arm64.deb"
ARM64_STUB = "usr/lib/systemd/boot/efi/linuxaa64.efi.stub"


def debian_kernel(cache: Path) -> DebianKernel:
    """Debian's cloud kernel, downloaded into ``cache`` once and reused from there."""
    debs = _downloaded(cache, {AMD64_KERNEL_DEB: lambda: _newest_kernel_package("amd64")})
    return _kernel_of(debs[AMD64_KERNEL_DEB])


@dataclass(frozen=True)
class DebianArm64Boot:
    kernel: DebianKernel
    stub: bytes


def debian_arm64_boot(cache: Path) -> DebianArm64Boot:
    """Debian's arm64 cloud kernel (its ``vmlinuz`` is a gzip of the EFI-bootable Image,
    unpacked here: a UKI carries the Image itself) and systemd-boot's arm64 stub, fetched
    with ``apt-get download`` once (dpkg must know the arm64 architecture:
    ``dpkg --add-architecture arm64 && apt-get update``)."""
    import gzip

    debs = _downloaded(cache, {ARM64_KERNEL_DEB: lambda: f"{_newest_kernel_package('arm64')}:arm64",
                               ARM64_STUB_DEB: "systemd-boot-efi:arm64"})
    kernel = _kernel_of(debs[ARM64_KERNEL_DEB])
    stub = _deb_members(debs[ARM64_STUB_DEB], lambda name: name == ARM64_STUB)
    if ARM64_STUB not in stub:
        raise Unavailable(f"{debs[ARM64_STUB_DEB].name} holds no {ARM64_STUB}")
    if kernel.vmlinuz[:2] == b"\x1f\x8b":
        kernel = DebianKernel(kernel.version, gzip.decompress(kernel.vmlinuz), kernel.files)
    return DebianArm64Boot(kernel, stub[ARM64_STUB])


def _host_file(path: str, package: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise Unavailable(f"{path} is missing (apt-get install {package})") from None


def kernel_package(kernel: DebianKernel, flavor: str = "virt", arch: str = "x86_64") -> PackageSpec:
    """``linux-<flavor>``: the kernel at /boot/vmlinuz-<flavor>, and a modules folder where
    Alpine's kernel packages put theirs."""
    return PackageSpec(name=f"linux-{flavor}", version="6.1.0-r0", arch=arch,
                       description=f"Linux kernel ({flavor}; Debian's cloud kernel for tests)",
                       license="GPL-2.0-only",
                       files={f"boot/vmlinuz-{flavor}": FileSpec(kernel.vmlinuz, mode=0o644),
                              f"lib/modules/{kernel.version}/modules.order": b"",
                              **{path: FileSpec(data) for path, data in kernel.files}})


def syslinux_package() -> PackageSpec:
    files = {dest: FileSpec(_host_file(src, package))
             for src, (dest, package) in SYSLINUX_FILES.items()}
    return PackageSpec(name="syslinux", version="6.04_pre1-r15", license="GPL-2.0-or-later",
                       description="Boot loaders (Debian's build for tests)", files=files)


def gummiboot_package(arm64_stub: bytes | None = None) -> PackageSpec:
    """``gummiboot`` with the host's x86_64 stub, or the given arm64 one."""
    if arm64_stub is not None:
        return PackageSpec(name="gummiboot", version="48.1-r6", arch="aarch64",
                           license="LGPL-2.1-or-later",
                           description="EFI stub (systemd-boot's, for tests)",
                           files={"usr/lib/gummiboot/linuxaa64.efi.stub": FileSpec(arm64_stub)})
    return PackageSpec(name="gummiboot", version="48.1-r6", license="LGPL-2.1-or-later",
                       description="EFI stub (systemd-boot's, for tests)",
                       files={STUB_PATH: FileSpec(_host_file(STUB_FILE, "systemd-boot-efi"))})


def marker_inittab(marker: str = BOOT_MARKER, port: str = "ttyS0") -> bytes:
    """An inittab whose first lines print ``<marker>-BIOS`` or ``<marker>-UEFI`` (the
    firmware the kernel was started by) on the serial port, then power off. It writes to
    the serial ``port`` itself (ttyAMA0 on aarch64), so it shows even when /dev/console is
    the screen (``console=tty0``)."""
    return (
        "::sysinit:/bin/mount -t sysfs sysfs /sys\n"
        "::sysinit:/bin/mount -t devtmpfs devtmpfs /dev\n"
        f"::sysinit:/bin/sh -c 'if [ -d /sys/firmware/efi ]; then m={marker}-UEFI; "
        f"else m={marker}-BIOS; fi; echo $m > /dev/{port}'\n"
        "::sysinit:/sbin/poweroff -f\n").encode()


OPENRC_SERVICES = ("devfs", "dmesg", "mdev", "hwdrivers", "hwclock", "modules", "sysctl",
                   "hostname", "bootmisc", "syslog", "networking", "acpid", "crond", "mount-ro",
                   "killprocs", "savecache")


def base_packages() -> list[PackageSpec]:
    """``alpine-base`` and a stand-in ``openrc`` with the init scripts the virt and standard
    presets enable (the real ones are not in the test repository)."""
    scripts = {f"etc/init.d/{name}": FileSpec(b"#!/sbin/openrc-run\n", mode=0o755)
               for name in OPENRC_SERVICES}
    openrc = PackageSpec(name="openrc", version="0.54-r1", license="BSD-2-Clause",
                         description="OpenRC stand-in for tests",
                         files={**scripts, "sbin/openrc": FileSpec(b"#!/bin/sh\nexit 0\n",
                                                                   mode=0o755)})
    base = PackageSpec(name="alpine-base", version="3.20.3-r0", depends=("openrc",),
                       description="Meta package for minimal alpine base")
    return [base, openrc]


def boot_repository_packages(kernel: DebianKernel) -> list[PackageSpec]:
    """Everything the shipped virt and standard profiles install, test-signed."""
    return [*base_packages(), kernel_package(kernel, "virt"), kernel_package(kernel, "lts"),
            syslinux_package(), gummiboot_package()]


def host_dmsetup_package() -> PackageSpec:
    """``device-mapper``: the host's (Debian's) ``dmsetup`` with the libraries and loader it
    links against, at the paths its loader looks in. Alpine's signed 3.19.1 fixture
    repository has no device-mapper; the disk image's /init only needs a working dmsetup."""
    program = shutil.which("dmsetup")
    if program is None:
        raise Unavailable("dmsetup is not installed (apt-get install dmsetup)")
    listing = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    files: dict[str, FileLike] = {"sbin/dmsetup": FileSpec(Path(program).read_bytes(), mode=0o755)}
    for line in listing.splitlines():
        words = line.split()
        path = words[2] if len(words) >= 3 and words[1] == "=>" else words[0]
        if not path.startswith("/"):
            continue
        files[path.lstrip("/")] = FileSpec(Path(path).resolve().read_bytes(), mode=0o755)
    return PackageSpec(name="device-mapper", version="2.03.16-r0", license="GPL-2.0-only",
                       description="dmsetup (Debian's, with its glibc libraries, for the tests)",
                       files=files)
