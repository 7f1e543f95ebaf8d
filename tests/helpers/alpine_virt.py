"""Alpine's own kernel and boot loader, test-signed, beside Alpine's real signed repository.

Alpine publishes no signed ``.apk`` of its kernels or of syslinux that these tests can
reach, but ``../shared/fixtures/alpine-real`` holds their files (SOURCES.md sections 7
and 8): the 909 files of ``linux-virt`` 6.18.56-r0 and the ISOLINUX 6.04 files of
Alpine's standard 3.19.1 ISO. This helper wraps them into test-signed packages named
as Alpine names them (``linux-virt``, ``syslinux``), adds Debian's systemd-boot stub as
``gummiboot`` (Alpine's UKI stub is not among the fixtures), and writes them into a
small repository. Everything else is installed from the real signed 3.19.1 repository
(``iso-standard-3.19.1-x86_64/apks``) with Alpine's real key.

Used by the real-Alpine boot tests (issue 14) and by the disk-image tests (issue 17).
"""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.apkrepo import (
    DirSpec,
    FileLike,
    FileSpec,
    PackageSpec,
    SigningKey,
    SymlinkSpec,
    build_repository,
)
from tests.helpers.bootpkgs import gummiboot_package

ALPINE_KEY_NAME = "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"
ALPINE_KEY_SHA256 = "207e4696d3c05f7cb05966aee557307151f1f00217af4143c1bcaf33b8df733f"
REPOSITORY = "iso-standard-3.19.1-x86_64/apks"
KERNEL_FILES = "linux-virt-3.23/linux-virt-6.18.56-r0.files.tar.gz"
KERNEL_VERSION = "6.18.56-r0"
KERNEL_RELEASE = "6.18.56-0-virt"
KERNEL_BUILD_TIME = 1791809658
"""The ``t:`` of the package's record in ``installed-db-entry.txt``."""
ISOLINUX_FOLDER = "iso-standard-3.19.1-x86_64/boot/syslinux"
ISOLINUX_FILES = ("isolinux.bin", "ldlinux.c32", "libcom32.c32", "libutil.c32", "mboot.c32",
                  "isohdpfx.bin")
"""What Alpine's ``syslinux`` package puts in /usr/share/syslinux that its ISOs use
(``isohdpfx.bin`` is the isohybrid MBR code that matches this ``isolinux.bin``)."""


def linux_virt_package(fixtures: Path) -> PackageSpec:
    """``linux-virt`` 6.18.56-r0: every file of Alpine's package, owners, modes and
    symlinks as installed, at the package's build time."""
    files: dict[str, FileLike] = {}
    with tarfile.open(fixtures / KERNEL_FILES) as archive:
        for member in archive:
            name = member.name.removeprefix("./").rstrip("/")
            if member.isdir():
                files[name] = DirSpec(mode=member.mode)
            elif member.issym():
                files[name] = SymlinkSpec(member.linkname)
            elif member.isfile():
                handle = archive.extractfile(member)
                assert handle is not None
                files[name] = FileSpec(handle.read(), mode=member.mode)
            else:
                raise AssertionError(f"{name}: unexpected member type {member.type!r}")
    return PackageSpec(name="linux-virt", version=KERNEL_VERSION, origin="linux-lts",
                       description="Linux lts kernel", url="https://www.kernel.org",
                       license="GPL-2.0-only", builddate=KERNEL_BUILD_TIME, files=files)


def alpine_syslinux_package(fixtures: Path) -> PackageSpec:
    """``syslinux`` with the ISOLINUX files Alpine's ISOs boot from."""
    folder = fixtures / ISOLINUX_FOLDER
    files: dict[str, FileLike] = {f"usr/share/syslinux/{name}": FileSpec((folder / name).read_bytes())
                                  for name in ISOLINUX_FILES}
    return PackageSpec(name="syslinux", version="6.04_pre1-r15", license="GPL-2.0-or-later",
                       description="Boot loaders (Alpine's ISOLINUX files)",
                       url="https://syslinux.org", files=files)


@dataclass(frozen=True)
class AlpineVirtRepositories:
    """The two repositories an Alpine virt image installs from, and their keys."""

    real: Path
    """Alpine's signed 3.19.1 repository (a folder with ``x86_64/APKINDEX.tar.gz``)."""
    boot: Path
    """The test-signed ``linux-virt``, ``syslinux`` and ``gummiboot``."""
    alpine_key: Path
    test_key: SigningKey

    def profile_fields(self, folder: Path) -> dict[str, object]:
        """Profile keys that install from these repositories: ``base: packages``, both
        repositories, and both keys (copied into ``folder`` beside the profile; Alpine's
        pinned by its sha256)."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.alpine_key, folder / ALPINE_KEY_NAME)
        (folder / self.test_key.name).write_bytes(self.test_key.public_pem)
        return {"base": "packages", "branch": "v3.19",
                "mirror": self.real.as_uri(),
                "repositories": [self.real.as_uri(), self.boot.as_uri()],
                "keys": [{"file": ALPINE_KEY_NAME, "sha256": ALPINE_KEY_SHA256},
                         self.test_key.name]}


def alpine_virt_repositories(fixtures: Path, folder: Path, key: SigningKey,
                             extra: Sequence[PackageSpec] = ()) -> AlpineVirtRepositories:
    """Write the boot repository (and ``extra`` packages) into ``folder`` (about 45 MB); the
    real one is used in place."""
    specs = [linux_virt_package(fixtures), alpine_syslinux_package(fixtures), gummiboot_package(),
             *extra]
    boot = build_repository(folder, specs, key)
    return AlpineVirtRepositories(real=fixtures / REPOSITORY, boot=boot,
                                  alpine_key=fixtures / "apk-keys" / ALPINE_KEY_NAME,
                                  test_key=key)


def kernel_config(fixtures: Path) -> str:
    """The kernel's build configuration, to look up what is built in and what is a module."""
    with tarfile.open(fixtures / KERNEL_FILES) as archive:
        handle = archive.extractfile(f"boot/config-{KERNEL_RELEASE}")
        assert handle is not None
        return io.TextIOWrapper(handle).read()

