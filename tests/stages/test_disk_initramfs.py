"""The disk image's initramfs: modules from Alpine's real linux-virt 6.18 package (compressed,
dependencies read from .modinfo), the kernel config check, the package closure."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import pytest

from composer.apk import db
from composer.errors import InstallError
from composer.stages.disk_initramfs import (
    INIT,
    LOAD_ORDER,
    initramfs_tree_entries,
    kernel_release,
    modinfo_depends,
    module_closure,
    needed_modules,
    package_files,
)
from composer.tree import EntryType, FileTree
from tests.conftest import require_shared
from tests.helpers.alpine_virt import KERNEL_FILES, KERNEL_RELEASE

MODULES = f"lib/modules/{KERNEL_RELEASE}"


def _kernel_tree(fixtures: Path, *, config_edit: tuple[str, str] | None = None) -> FileTree:
    """The files of Alpine's linux-virt package that the initramfs reads."""
    tree = FileTree()
    with tarfile.open(fixtures / KERNEL_FILES) as archive:
        for member in archive:
            name = member.name.removeprefix("./").rstrip("/")
            if not member.isfile() or not (name.startswith(MODULES) or name.startswith("boot/config")):
                continue
            handle = archive.extractfile(member)
            assert handle is not None
            data = handle.read()
            if config_edit is not None and name.startswith("boot/config"):
                data = data.replace(config_edit[0].encode(), config_edit[1].encode())
            tree.ensure_parents(name)
            tree.add_file(name, data)
    return tree


@pytest.fixture(scope="module")
def kernel_tree() -> FileTree:
    return _kernel_tree(require_shared())


def test_modules_load_in_dependency_order_decompressed(kernel_tree: FileTree) -> None:
    release = kernel_release(kernel_tree, "virt")
    assert release == KERNEL_RELEASE
    loaded = module_closure(kernel_tree, release, needed_modules(verity=True, data=True))
    names = [m.path.rsplit("/", 1)[-1] for m in loaded]
    for module in ("virtio_blk.ko", "nvme.ko", "squashfs.ko", "overlay.ko", "dm-mod.ko",
                   "dm-bufio.ko", "dm-verity.ko", "ext4.ko", "jbd2.ko", "mbcache.ko"):
        assert module in names, names
    assert names.index("dm-mod.ko") < names.index("dm-verity.ko")
    assert names.index("dm-bufio.ko") < names.index("dm-verity.ko")
    assert names.index("jbd2.ko") < names.index("ext4.ko")
    for module in loaded:
        assert module.data[:4] == b"\x7fELF" and not module.path.endswith(".gz")
        for dependency in modinfo_depends(module.data, source=module.path):
            assert any(n.removesuffix(".ko").replace("-", "_") == dependency.replace("-", "_")
                       for n in names[:names.index(module.path.rsplit("/", 1)[-1])]), module.path
    entry = kernel_tree.get(f"{MODULES}/kernel/fs/squashfs/squashfs.ko.gz")
    assert entry is not None and entry.blob is not None
    squashfs = next(m for m in loaded if m.path.endswith("/squashfs.ko"))
    assert squashfs.data == gzip.decompress(entry.blob.read())


def test_verity_on_a_kernel_without_dm_verity_is_refused() -> None:
    tree = _kernel_tree(require_shared(), config_edit=("CONFIG_DM_VERITY=m",
                                                       "# CONFIG_DM_VERITY is not set"))
    with pytest.raises(InstallError) as caught:
        module_closure(tree, KERNEL_RELEASE, needed_modules(verity=True, data=False))
    assert caught.value.message == (
        f"kernel {KERNEL_RELEASE}: CONFIG_DM_VERITY (dm-verity, the verified root) is not "
        f"enabled in /boot/config-{KERNEL_RELEASE}; the disk image cannot boot with it")
    assert module_closure(tree, KERNEL_RELEASE, needed_modules(verity=False, data=False))


def test_a_module_the_config_builds_in_needs_no_file() -> None:
    tree = _kernel_tree(require_shared(), config_edit=("CONFIG_SQUASHFS=m", "CONFIG_SQUASHFS=y"))
    loaded = module_closure(tree, KERNEL_RELEASE, needed_modules(verity=False, data=False))
    assert not any(m.path.endswith("/squashfs.ko") for m in loaded)


def test_modinfo_of_a_non_module_is_refused() -> None:
    with pytest.raises(InstallError, match=r"^x.ko: not a little-endian ELF kernel module$"):
        modinfo_depends(b"MZ" + bytes(100), source="x.ko")
    with pytest.raises(InstallError, match=r"^x.ko: a truncated ELF kernel module$"):
        modinfo_depends(b"\x7fELF\x02\x01\x01" + bytes(20), source="x.ko")


def _installed(*packages: db.InstalledPackage) -> bytes:
    return db.format_installed(list(packages))


def _package(name: str, files: list[str], depends: list[str] = (),  # type: ignore[assignment]
             provides: list[str] = ()) -> db.InstalledPackage:  # type: ignore[assignment]
    dirs: dict[str, db.DbDir] = {}
    for path in files:
        folder, _, base = path.rpartition("/")
        dirs.setdefault(folder, db.DbDir(path=folder)).files.append(db.DbFile(name=base))
    return db.InstalledPackage(checksum="Q1" + "A" * 27 + "=", name=name, version="1-r0",
                               depends=list(depends), provides=list(provides),
                               dirs=list(dirs.values()))


def test_the_initramfs_holds_the_tools_packages_and_their_dependencies() -> None:
    tree = FileTree()
    tree.ensure_parents(db.INSTALLED_PATH)
    tree.add_file(db.INSTALLED_PATH, _installed(
        _package("musl", ["lib/ld-musl-x86_64.so.1"], provides=["so:libc.musl-x86_64.so.1=1"]),
        _package("busybox", ["bin/busybox"], depends=["so:libc.musl-x86_64.so.1"]),
        _package("device-mapper", ["sbin/dmsetup"], depends=["device-mapper-libs>=2", "!lvm1"]),
        _package("device-mapper-libs", ["lib/libdevmapper.so.1.02"],
                 depends=["so:libc.musl-x86_64.so.1"]),
        _package("openssh", ["usr/sbin/sshd"])))
    for path in ("lib/ld-musl-x86_64.so.1", "bin/busybox", "sbin/dmsetup",
                 "lib/libdevmapper.so.1.02", "usr/sbin/sshd"):
        tree.ensure_parents(path)
        tree.add_file(path, path.encode(), mode=0o755)
    tree.add_symlink("lib/libc.musl-x86_64.so.1", "ld-musl-x86_64.so.1")
    assert sorted(package_files(tree, ["busybox", "device-mapper"])) == [
        "bin/busybox", "lib/ld-musl-x86_64.so.1", "lib/libdevmapper.so.1.02", "sbin/dmsetup"]
    entries = {e.path: e for e in initramfs_tree_entries(tree, programs=["dmsetup"],
                                                         modules=[])}
    assert "usr/sbin/sshd" not in entries
    assert entries["init"].mode == 0o755 and entries["init"].blob is not None
    assert entries["init"].blob.read() == INIT.encode()
    assert entries["dev/console"].type == EntryType.CHAR
    assert entries[LOAD_ORDER].blob is not None and entries[LOAD_ORDER].blob.read() == b""
    assert {"bin", "sbin", "lib", "dev", "lib/modules"} <= set(entries)
    with pytest.raises(InstallError, match=r"^package cryptsetup is not installed in the image"):
        package_files(tree, ["cryptsetup"])

