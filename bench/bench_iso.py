"""Benchmark: mastering a virt-sized bootable ISO, against ``xorriso -as mkisofs``.

Not a test. The tree: the real Alpine 3.20.3 minirootfs plus Debian's cloud kernel
and modules up to about 60 MB, with the boot loaders a virt image carries. The boot
stage turns it into the ISO's files once (kernel, initramfs, ISOLINUX, the EFI image
with the UKI). Then, taking turns in each round, median of 5 after a warm-up:

* ours: ``write_iso`` (pycdlib, pinned clock, Rock Ridge + Joliet, both El Torito
  entries, isohybrid MBR + GPT) into a file, plus the sha256 of the result;
* baseline: ``xorriso -as mkisofs`` with the same files and the same boot options
  (Alpine's mkimage options), SOURCE_DATE_EPOCH set, plus ``sha256sum``.

A second row times the whole boot stage (initramfs cpio + gzip, UKI, FAT image) and
the write together, against the same baseline (which starts from finished files).

    .venv/bin/python bench/bench_iso.py
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_tar import median_times  # noqa: E402
from composer.archive import load_tar  # noqa: E402
from composer.profile.model import Firmware  # noqa: E402
from composer.stages.boot import BootSettings, boot_media  # noqa: E402
from composer.tree import EntryType, FileTree  # noqa: E402
from composer.writers.iso import IsoSpec, write_iso  # noqa: E402
from tests.helpers.bootpkgs import (  # noqa: E402
    STUB_FILE,
    STUB_PATH,
    SYSLINUX_FILES,
    Unavailable,
    _newest_kernel_package,
)

MINIROOTFS = (ROOT.parent / "shared" / "fixtures" / "alpine-real" / "minirootfs"
              / "alpine-minirootfs-3.20.3-x86_64.tar.gz")
ISOHDPFX = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
TREE_BYTES = 60 * 1024 * 1024
EPOCH = 1725622440
SETTINGS = BootSettings(arch="x86_64", kernel="virt", firmware=(Firmware.BIOS, Firmware.UEFI),
                        cmdline="console=ttyS0,115200 quiet", label="alpine-virt 3.20.3 x86_64",
                        timeout=1, release="3.20.3", variant="virt")


def virt_tree(work: Path) -> FileTree:
    """minirootfs + a Debian kernel and its modules (until ~60 MB) + boot loaders."""
    name = _newest_kernel_package()
    subprocess.run(["apt-get", "download", name], cwd=work, check=True, capture_output=True)
    deb = next(work.glob("*.deb"))
    unpacked = work / "deb"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    tree = FileTree()
    with MINIROOTFS.open("rb") as fh:
        load_tar(fh, tree, source=MINIROOTFS.name)
    total = sum(e.size for e in tree.walk())
    vmlinuz = next((unpacked / "boot").glob("vmlinuz-*"))
    tree.add_file("boot/vmlinuz-virt", vmlinuz.read_bytes())
    total += vmlinuz.stat().st_size
    for path in sorted((unpacked / "lib" / "modules").rglob("*")):
        if total >= TREE_BYTES:
            break
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            tree.add_file(path.relative_to(unpacked).as_posix(), data)
            total += len(data)
    for src, (dest, _package) in SYSLINUX_FILES.items():
        tree.add_file(dest, Path(src).read_bytes())
    tree.add_file(STUB_PATH, Path(STUB_FILE).read_bytes())
    return tree


def extract(tree: FileTree, root: Path) -> None:
    """The tree on disk for the baseline's cpio (files, directories and symlinks)."""
    for entry in tree.walk():
        target = root / entry.path
        if entry.type == EntryType.DIR:
            target.mkdir(parents=True, exist_ok=True)
        elif entry.type == EntryType.SYMLINK:
            target.symlink_to(entry.target)
        elif entry.type == EntryType.FILE and entry.blob is not None:
            target.write_bytes(entry.blob.read())


def xorriso_command(spec: IsoSpec, files: Path, out: Path) -> list[str]:
    """Alpine's mkimage options for the same boot layout."""
    assert spec.bios_boot is not None and spec.efi_image is not None
    return ["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), "-full-iso9660-filenames",
            "-joliet", "-rational-rock", "-sysid", "LINUX", "-volid", spec.volume_id,
            "-isohybrid-mbr", str(ISOHDPFX), "-eltorito-boot", spec.bios_boot,
            "-eltorito-catalog", spec.boot_catalog, "-no-emul-boot", "-boot-load-size", "4",
            "-boot-info-table", "-eltorito-alt-boot", "-e", spec.efi_image, "-no-emul-boot",
            "-isohybrid-gpt-basdat", str(files)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    missing = [tool for tool in ("xorriso", "apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if not MINIROOTFS.exists() or missing or not ISOHDPFX.exists() or not Path(STUB_FILE).exists():
        print(f"skipped: needs ../shared, {', '.join(missing) or 'xorriso'}, isolinux and "
              "systemd-boot-efi")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-iso-") as tmp:
        work = Path(tmp)
        try:
            tree = virt_tree(work)
        except Unavailable as exc:
            print(f"skipped: {exc}")
            return 0
        tree_bytes = sum(e.size for e in tree.walk())
        spec = boot_media(tree, SETTINGS, epoch=EPOCH)
        files = work / "files"
        by_path = {file.path: file.data for file in spec.files}
        for alias in spec.aliases:  # xorriso stores these a second time
            by_path[alias.path] = by_path[alias.source][alias.offset:alias.offset + alias.length]
        for path, data in by_path.items():
            target = files / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        rootfs = work / "rootfs"
        extract(tree, rootfs)
        ours_out, theirs_out = work / "ours.iso", work / "xorriso.iso"
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))

        def ours() -> None:
            with ours_out.open("w+b") as out:
                write_iso(spec, out)
            sha256_file(ours_out)

        def whole() -> None:
            with ours_out.open("w+b") as out:
                write_iso(boot_media(tree, SETTINGS, epoch=EPOCH), out)
            sha256_file(ours_out)

        def baseline() -> None:
            theirs_out.unlink(missing_ok=True)
            subprocess.run(xorriso_command(spec, files, theirs_out), check=True, env=env,
                           capture_output=True)
            subprocess.run(["sha256sum", str(theirs_out)], check=True, capture_output=True)

        initramfs = (f"cd {rootfs} && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc "
                     f"--reproducible --quiet | gzip -n -6 > {work / 'initramfs.gz'}")

        def baseline_stage() -> None:
            subprocess.run(["bash", "-c", initramfs], check=True)
            baseline()

        writer, stage, base, base_stage = median_times(ours, whole, baseline, baseline_stage)
        size = ours_out.stat().st_size / 1e6
    print("| job | alpine-composer | baseline | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| virt ISO ({tree_bytes / 1e6:.0f} MB tree, {size:.0f} MB ISO), write + sha256 | "
          f"{writer:.3f} s | {base:.3f} s (xorriso -as mkisofs + sha256sum) | "
          f"{writer / base:.2f} |")
    print(f"| same, with the boot stage (initramfs cpio + gzip, UKI, FAT image) | {stage:.3f} s | "
          f"{base_stage:.3f} s (find | cpio -H newc | gzip -n -6, then the above) | "
          f"{stage / base_stage:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
