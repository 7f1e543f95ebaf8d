"""The initramfs of a disk image: the image's own busybox and verity tool, the kernel modules
the root needs, and a small ``/init`` that finds the partitions by their GPT names, opens the
root under dm-verity, mounts it read-only under a tmpfs overlay and switches to it.

Package scripts never run, so Alpine's mkinitfs cannot build it; this module does what its
``overlaytmpfs=yes`` mode does, with the files of the image's own packages (the package
``busybox``, the verity tool's package and their runtime dependencies from the installed
database). Alpine's kernels ship their modules compressed and do not decompress them in the
kernel, so the modules the root needs are decompressed here, and loaded in dependency order
(read from each module's ``.modinfo``) by busybox ``insmod``.

The verity arguments come from the kernel command line inside the (signed) UKI:
``roothash=<hex> composer.root=<partition name> composer.verity=<name>:<data blocks>:<salt>``,
and ``composer.data=<name>:<mount point>`` for the data partition. The verity table asks the
kernel to panic on a corrupted block, so a changed block anywhere in the root stops the
machine (``panic=`` then reboots it) instead of handing a program wrong bytes.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from composer.apk import db
from composer.decompress import BoundedDecoder
from composer.errors import InstallError
from composer.tree import Entry, EntryType, FileTree, parent_of, sort_key
from composer.writers.compress import ParallelGzipWriter
from composer.writers.cpio import write_cpio

MODULE_SUFFIXES = (".ko", ".ko.gz", ".ko.xz", ".ko.zst")
LOAD_ORDER = "lib/modules/load-order"
MAX_MODULE = 64 << 20


@dataclass(frozen=True)
class ModuleNeed:
    """A kernel feature the boot needs: the module that provides it and its config symbol.
    ``required`` features stop the build when the kernel lacks them; the others (disk
    drivers) are loaded when present."""

    module: str
    config: str
    what: str
    required: bool = True


def needed_modules(*, verity: bool, data: bool) -> list[ModuleNeed]:
    """What a disk image's /init loads, in this order."""
    needs = [ModuleNeed("virtio_pci", "VIRTIO_PCI", "virtio PCI devices", required=False),
             ModuleNeed("virtio_mmio", "VIRTIO_MMIO", "virtio MMIO devices", required=False),
             ModuleNeed("virtio_blk", "VIRTIO_BLK", "virtio disks", required=False),
             ModuleNeed("nvme", "BLK_DEV_NVME", "NVMe disks", required=False),
             ModuleNeed("squashfs", "SQUASHFS", "squashfs, the root filesystem"),
             ModuleNeed("overlay", "OVERLAY_FS", "overlayfs, the writable tmpfs layer")]
    if verity:
        needs.append(ModuleNeed("dm-verity", "DM_VERITY", "dm-verity, the verified root"))
    if data:
        needs.append(ModuleNeed("ext4", "EXT4_FS", "ext4, the data partition"))
    return needs


def _canonical(name: str) -> str:
    return name.replace("-", "_")


def kernel_config(text: str) -> dict[str, str]:
    """``CONFIG_X=y|m|...`` lines of a kernel config (``# CONFIG_X is not set`` is absence)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"CONFIG_([A-Za-z0-9_]+)=(.*)", line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


def modinfo_depends(module: bytes, *, source: str) -> list[str]:
    """The ``depends=`` list of an ELF kernel module's ``.modinfo`` section."""
    if module[:4] != b"\x7fELF" or module[4] not in (1, 2) or module[5] != 1:
        raise InstallError(f"{source}: not a little-endian ELF kernel module")
    wide = module[4] == 2
    try:
        if wide:
            shoff, = struct.unpack_from("<Q", module, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", module, 0x3A)
        else:
            shoff, = struct.unpack_from("<I", module, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", module, 0x2E)

        def section(index: int) -> tuple[int, int, int]:
            base = shoff + index * shentsize
            if wide:
                name, = struct.unpack_from("<I", module, base)
                offset, size = struct.unpack_from("<QQ", module, base + 0x18)
            else:
                name, = struct.unpack_from("<I", module, base)
                offset, size = struct.unpack_from("<II", module, base + 0x10)
            if offset + size > len(module):
                raise InstallError(f"{source}: a section runs past the end of the module")
            return name, offset, size

        _, names_at, names_size = section(shstrndx)
        names = module[names_at:names_at + names_size]
        for index in range(shnum):
            name, offset, size = section(index)
            if names[name:names.find(b"\0", name)] == b".modinfo":
                for field in module[offset:offset + size].split(b"\0"):
                    if field.startswith(b"depends="):
                        value = field[len(b"depends="):].decode("ascii", "replace")
                        return [d for d in value.split(",") if d]
                return []
    except struct.error:
        raise InstallError(f"{source}: a truncated ELF kernel module") from None
    raise InstallError(f"{source}: no .modinfo section (not a kernel module)")


def _decompress(data: bytes, path: str) -> bytes:
    """A module's ELF bytes (``.ko.gz``, ``.ko.xz`` and ``.ko.zst`` unpacked, bounded)."""
    kind = {".gz": "gzip", ".xz": "xz", ".zst": "zstd"}.get(path[path.rfind("."):], "none")
    decoder = BoundedDecoder(kind, what="/" + path, limit=MAX_MODULE,
                             limit_reason="a kernel module", error=InstallError)
    return b"".join([*decoder.feed(data), *decoder.finish()])


def _module_name(path: str) -> str | None:
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            return _canonical(base[:-len(suffix)])
    return None


def kernel_release(tree: FileTree, flavor: str) -> str:
    """The ``/lib/modules/<release>`` folder of kernel ``flavor`` (Alpine names it
    ``<version>-<flavor>``); the only one when a single kernel is installed."""
    names = sorted(path.split("/")[2] for path, entry in tree.entries.items()
                   if path.startswith("lib/modules/") and path.count("/") == 2
                   and entry.type == EntryType.DIR)
    flavored = [n for n in names if n.endswith(f"-{flavor}")]
    if len(flavored) == 1:
        return flavored[0]
    if len(names) == 1:
        return names[0]
    raise InstallError(f"/lib/modules holds {len(names)} kernel releases ({', '.join(names) or 'none'})"
                       f"; the disk image needs exactly one for kernel {flavor!r}")


@dataclass(frozen=True)
class LoadedModule:
    path: str
    """Where it goes in the initramfs (decompressed)."""
    data: bytes


def module_closure(tree: FileTree, release: str, needs: Sequence[ModuleNeed]) -> list[LoadedModule]:
    """The modules for ``needs`` and everything they depend on, dependencies first. A need the
    kernel's config builds in needs no file; a required one the kernel lacks is refused."""
    base = f"lib/modules/{release}"
    files: dict[str, Entry] = {}
    for entry in tree.walk():
        if entry.type == EntryType.FILE and entry.path.startswith(base + "/"):
            name = _module_name(entry.path)
            if name is not None:
                files.setdefault(name, entry)
    config_entry = tree.get(f"boot/config-{release}")
    config = (kernel_config(config_entry.blob.read().decode("utf-8", "replace"))
              if config_entry is not None and config_entry.blob is not None else None)
    order: list[LoadedModule] = []
    done: set[str] = set()

    def load(name: str, chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in chain:
            raise InstallError(f"kernel modules depend on each other in a cycle: "
                               f"{' -> '.join((*chain, name))}")
        entry = files[name]
        assert entry.blob is not None
        data = _decompress(entry.blob.read(), entry.path)
        for dependency in modinfo_depends(data, source="/" + entry.path):
            dependency = _canonical(dependency)
            if dependency not in files:
                raise InstallError(f"/{entry.path} needs module {dependency}, which is not in "
                                   f"/{base}")
            load(dependency, (*chain, name))
        done.add(name)
        path = entry.path
        for suffix in (".gz", ".xz", ".zst"):
            path = path.removesuffix(suffix)
        order.append(LoadedModule(path, data))

    for need in needs:
        name = _canonical(need.module)
        state = config.get(need.config) if config is not None else None
        if state == "y":
            continue
        if name in files and (config is None or state == "m"):
            load(name, ())
            continue
        if not need.required:
            continue
        if config is not None:
            state = "=m but its module is missing" if state == "m" else "not enabled"
            raise InstallError(f"kernel {release}: CONFIG_{need.config} ({need.what}) is {state}"
                               f" in /boot/config-{release}; the disk image cannot boot with it")
        raise InstallError(f"kernel {release}: no module {need.module} ({need.what}) in /{base}"
                           f" and no /boot/config-{release} saying it is built in")
    return order


def _provider_map(packages: Iterable[db.InstalledPackage]) -> dict[str, db.InstalledPackage]:
    providers: dict[str, db.InstalledPackage] = {}
    for package in packages:
        providers.setdefault(package.name, package)
        for provided in package.provides:
            providers.setdefault(re.split(r"[<>=~]", provided, maxsplit=1)[0], package)
    return providers


def package_files(tree: FileTree, names: Sequence[str], programs: Sequence[str] = ()) -> list[str]:
    """Every path installed by the packages ``names``, by the packages that own the
    ``programs`` (found on the initramfs's PATH), and by their runtime dependencies (as the
    installed database records them), so a binary gets its libraries and its loader."""
    entry = tree.get(db.INSTALLED_PATH)
    if entry is None or entry.blob is None:
        raise InstallError(f"/{db.INSTALLED_PATH} is missing: the disk image's initramfs is made "
                           "from the image's installed packages")
    packages = db.parse_installed(entry.blob.read(), source="/" + db.INSTALLED_PATH)
    providers = _provider_map(packages)
    wanted: list[db.InstalledPackage] = []
    seen: set[str] = set()
    queue = [*names, *(_owner(tree, packages, program) for program in programs)]
    while queue:
        name = queue.pop(0)
        package = providers.get(name)
        if package is None:
            raise InstallError(f"package {name} is not installed in the image; the disk image's "
                               "initramfs needs it")
        if package.name in seen:
            continue
        seen.add(package.name)
        wanted.append(package)
        for dependency in package.depends:
            if dependency.startswith("!"):
                continue
            token = re.split(r"[<>=~]", dependency, maxsplit=1)[0]
            if token in providers:
                queue.append(token)
    paths: list[str] = []
    for package in wanted:
        for directory in package.dirs:
            prefix = directory.path + "/" if directory.path else ""
            paths.extend(prefix + f.name for f in directory.files)
    return paths


def _owner(tree: FileTree, packages: Sequence[db.InstalledPackage], program: str) -> str:
    """The name of the installed package that ships ``program`` (or the file it links to)."""
    path = find_program(tree, program)
    wanted = {path, _resolve(tree, path)} if path is not None else set()
    for package in packages:
        for directory in package.dirs:
            prefix = directory.path + "/" if directory.path else ""
            if any(prefix + f.name in wanted for f in directory.files):
                return package.name
    raise InstallError(f"no installed package ships {program}; the disk image's initramfs "
                       "needs it")


INIT = r"""#!/bin/busybox sh
# alpine-composer: open the verified root and switch to it (see composer/stages/disk_initramfs.py)
/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin /proc /sys /dev /run /sysroot \
	/media/root-ro /media/root-rw
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

fail() {
	echo "alpine-composer: $*; the boot stops here"
	exit 1
}

arg() {
	for word in $(cat /proc/cmdline); do
		case "$word" in "$1="*) echo "${word#*=}"; return 0;; esac
	done
}

partition() {
	for uevent in /sys/class/block/*/uevent; do
		if grep -qx "PARTNAME=$1" "$uevent"; then
			sed -n 's/^DEVNAME=//p' "$uevent"
			return 0
		fi
	done
	return 1
}

wait_partition() {
	tries=0
	until name=$(partition "$1"); do
		tries=$((tries + 1))
		devices=$(ls /sys/class/block | tr '\n' ' ')
		[ "$tries" -gt 300 ] && fail "no partition named $1 after 30 s (block devices: $devices)"
		sleep 0.1
	done
	echo "/dev/$name"
}

while read -r module; do
	insmod "/$module" || fail "cannot load the kernel module /$module"
done < /LOAD_ORDER

root_name=$(arg composer.root)
[ -n "$root_name" ] || fail "no composer.root= on the kernel command line"
root=$(wait_partition "$root_name")
roothash=$(arg roothash)
if [ -n "$roothash" ]; then
	set -- $(arg composer.verity | tr ':' ' ')
	[ "$#" -eq 3 ] || fail "composer.verity= must be <partition>:<data blocks>:<salt>"
	hashdev=$(wait_partition "$1")
	table="0 $(($2 * 8)) verity 1 $root $hashdev 4096 4096 $2 1 sha256 $roothash $3"
	dmsetup create root --readonly --noudevsync --table "$table 1 panic_on_corruption" \
		|| fail "dm-verity refused the root partition $root with hash partition $hashdev"
	dmsetup mknodes root 2>/dev/null
	root=/dev/mapper/root
	[ -b "$root" ] || fail "dm-verity made no $root"
fi
mount -t squashfs -o ro "$root" /media/root-ro || fail "cannot mount the root filesystem from $root"
mount -t tmpfs -o mode=0755 root-tmpfs /media/root-rw || fail "cannot mount a tmpfs for the writable layer"
mkdir -p /media/root-rw/root /media/root-rw/work
layers=lowerdir=/media/root-ro,upperdir=/media/root-rw/root,workdir=/media/root-rw/work
mount -t overlay -o "$layers" overlay /sysroot || fail "cannot mount the overlay of the root"
mkdir -p /sysroot/media/root-ro /sysroot/media/root-rw
mount -o move /media/root-ro /sysroot/media/root-ro
mount -o move /media/root-rw /sysroot/media/root-rw

data=$(arg composer.data)
if [ -n "$data" ]; then
	datadev=$(wait_partition "${data%%:*}")
	where=${data#*:}
	if ! blkid "$datadev" | grep -q ' TYPE='; then
		echo "alpine-composer: formatting the data partition $datadev (ext4) for $where"
		mount -o bind /dev /sysroot/dev && mount -t proc proc /sysroot/proc \
			&& chroot /sysroot /sbin/mkfs.ext4 -q -L data "$datadev" \
			|| fail "cannot format the data partition $datadev"
		umount /sysroot/proc /sysroot/dev
	fi
	mkdir -p "/sysroot$where"
	mount -t ext4 "$datadev" "/sysroot$where" || fail "cannot mount the data partition $datadev on $where"
fi

mount -o move /dev /sysroot/dev
mount -o move /sys /sysroot/sys
mount -o move /proc /sysroot/proc
exec switch_root /sysroot /sbin/init
""".replace("LOAD_ORDER", LOAD_ORDER)


USERLAND = ("busybox",)
CONSOLE = (5, 1)


def _resolve(tree: FileTree, path: str) -> str | None:
    entry = tree.follow(path)
    return entry.path if entry is not None else None


def find_program(tree: FileTree, name: str) -> str | None:
    """The first ``name`` on the initramfs's PATH that is a file in the tree."""
    for folder in ("usr/sbin", "usr/bin", "sbin", "bin"):
        if _resolve(tree, f"{folder}/{name}") is not None:
            return f"{folder}/{name}"
    return None


def initramfs_tree_entries(tree: FileTree, *, programs: Sequence[str],
                           modules: Sequence[LoadedModule]) -> list[Entry]:
    """The initramfs's entries: the packages' files (with the symlinks' targets and every
    parent folder), the modules, their load order and /init."""
    paths = set(package_files(tree, USERLAND, programs))
    for path in list(paths):
        target = _resolve(tree, path)
        if target is not None:
            paths.add(target)
    entries: dict[str, Entry] = {}
    for path in sorted(paths):
        entry = tree.get(path)
        if entry is None or entry.type == EntryType.DIR:
            continue
        entries[path] = replace(entry, link_id=0)
    store = tree.store
    for module in modules:
        entries[module.path] = Entry(path=module.path, type=EntryType.FILE, mode=0o644,
                                     blob=store.from_bytes(module.data))
    order = "".join(m.path + "\n" for m in modules).encode()
    entries[LOAD_ORDER] = Entry(path=LOAD_ORDER, type=EntryType.FILE, mode=0o644,
                                blob=store.from_bytes(order))
    entries["init"] = Entry(path="init", type=EntryType.FILE, mode=0o755,
                            blob=store.from_bytes(INIT.encode()))
    entries["dev/console"] = Entry(path="dev/console", type=EntryType.CHAR, mode=0o600,
                                   devmajor=CONSOLE[0], devminor=CONSOLE[1])
    for path in list(entries):
        parent = parent_of(path)
        while parent and parent not in entries:
            existing = tree.get(parent)
            entries[parent] = (existing if existing is not None and existing.type == EntryType.DIR
                               else Entry(path=parent, type=EntryType.DIR, mode=0o755))
            parent = parent_of(parent)
    return sorted(entries.values(), key=lambda e: sort_key(e.path))


def disk_initramfs(tree: FileTree, *, programs: Sequence[str], modules: Sequence[LoadedModule],
                   epoch: int) -> bytes:
    """The initramfs as a gzip-compressed newc cpio with the fixed settings."""
    buffer = io.BytesIO()
    with ParallelGzipWriter(buffer) as gz:
        write_cpio(initramfs_tree_entries(tree, programs=programs, modules=modules), gz,
                   mtime=epoch)
    return buffer.getvalue()
