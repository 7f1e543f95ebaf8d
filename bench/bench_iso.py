"""Benchmark: a whole virt ISO build against ``find | cpio | gzip`` + ``xorriso -as mkisofs``.

Not a test. Whole processes in alternating rounds (bench/harness.py). The mirror holds the
real 3.20.3 minirootfs (signed with a test OpenPGP key) and a test-signed ``main`` with what
the virt preset installs: Debian's cloud kernel with its first ~50 MB of modules as
``linux-virt``, and the host's syslinux and systemd-boot stub as ``syslinux`` and
``gummiboot`` (tests/helpers/bootpkgs.py).

* ours: ``alpine-composer build`` of a profile extending profiles/virt.yaml, warm cache:
  signatures and hashes checked, packages installed, the initramfs (cpio + pinned gzip),
  the UKI, the FAT image, the ISO, SBOMs, SHA256SUMS and manifest;
* baseline, over the same root filesystem extracted on disk and the same boot files:
  ``find . | sort | cpio -o -H newc | gzip -n -6`` into the initramfs, then
  ``xorriso -as mkisofs`` with Alpine's mkimage options. Target ≤ 0.6×.

    .venv/bin/python bench/bench_iso.py
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    HEADER,
    compile_source,
    composer_command,
    composer_env,
    paired,
    ratio_row,
)
from tests.conftest import write_profile  # noqa: E402
from tests.helpers.apkrepo import FileSpec, PackageSpec, build_repository, signing_key  # noqa: E402
from tests.helpers.bootpkgs import (  # noqa: E402
    Unavailable,
    base_packages,
    debian_kernel,
    gummiboot_package,
    syslinux_package,
)
from tests.helpers.gpg import make_signing_key  # noqa: E402
from tests.helpers.mirror import build_mirror  # noqa: E402

MINIROOTFS = (ROOT.parent / "shared" / "fixtures" / "alpine-real" / "minirootfs"
              / "alpine-minirootfs-3.20.3-x86_64.tar.gz")
ISOHDPFX = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
MODULE_BYTES = 50 * 1000 * 1000
KERNEL_CACHE = ROOT / ".pytest_cache" / "d" / "debian-kernel"


def kernel_with_modules() -> PackageSpec:
    """``linux-virt``: Debian's cloud kernel and its modules, in sorted order up to
    MODULE_BYTES, where Alpine's kernel packages put them."""
    kernel = debian_kernel(KERNEL_CACHE)
    deb = sorted(KERNEL_CACHE.glob("linux-image-*-cloud-amd64-unsigned_*.deb"))[-1]
    fsys = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                          check=True).stdout
    files: dict[str, bytes | FileSpec] = {"boot/vmlinuz-virt": FileSpec(kernel.vmlinuz)}
    total = 0
    with tarfile.open(fileobj=io.BytesIO(fsys)) as archive:
        for member in sorted(archive, key=lambda m: m.name):
            name = member.name.removeprefix("./")
            if not (name.startswith("lib/modules/") and member.isfile()) or total > MODULE_BYTES:
                continue
            handle = archive.extractfile(member)
            assert handle is not None
            files[name] = FileSpec(handle.read())
            total += member.size
    return PackageSpec(name="linux-virt", version="6.1.0-r0", license="GPL-2.0-only",
                       description="Linux kernel (Debian's cloud kernel, for the benchmark)",
                       files=files)


def baseline(rootfs: Path, files: Path, out: Path, volume_id: str) -> list[str]:
    """The initramfs by find | cpio | gzip, then the ISO by xorriso with Alpine's options."""
    initramfs = files / "boot" / "initramfs-virt"
    xorriso = ["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), "-full-iso9660-filenames",
               "-joliet", "-rational-rock", "-sysid", "LINUX", "-volid", f"'{volume_id}'",
               "-isohybrid-mbr", str(ISOHDPFX), "-eltorito-boot", "boot/syslinux/isolinux.bin",
               "-eltorito-catalog", "boot/syslinux/boot.cat", "-no-emul-boot",
               "-boot-load-size", "4", "-boot-info-table", "-eltorito-alt-boot",
               "-e", "boot/efi.img", "-no-emul-boot", "-isohybrid-gpt-basdat", str(files)]
    script = (f"set -e; cd {rootfs}; find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc "
              f"--reproducible --quiet | gzip -n -6 > {initramfs}; rm -f {out}; "
              + " ".join(xorriso))
    return ["bash", "-c", script]


def main() -> int:
    missing = [tool for tool in ("xorriso", "cpio", "apt-get", "dpkg-deb") if not shutil.which(tool)]
    if not MINIROOTFS.exists() or missing or not ISOHDPFX.exists():
        print(f"skipped: needs ../shared, {', '.join(missing) or 'xorriso'} and isolinux")
        return 0
    compile_source()
    with tempfile.TemporaryDirectory(prefix="bench-iso-") as tmp:
        work = Path(tmp)
        try:
            boot = [kernel_with_modules(), syslinux_package(), gummiboot_package()]
        except Unavailable as exc:
            print(f"skipped: {exc}")
            return 0
        (work / "gpg").mkdir()
        release_key = make_signing_key(work / "gpg")
        mirror = build_mirror(work / "mirror", key=release_key, tarball=MINIROOTFS.read_bytes())
        package_key = signing_key()
        build_repository(work / "mirror" / "v3.20" / "main", [*base_packages(), *boot],
                         package_key)
        fields = {"extends": os.fspath(ROOT / "profiles" / "virt.yaml"),
                  "repositories": ["main"], "keys": [package_key.name]}
        profiles = {}
        # The tree profile writes the ISO too, so that the plan installs the same boot
        # packages (a tar-only profile has no kernel and no modules).
        for name, outputs in (("virt", [{"format": "iso"}]),
                              ("tree", [{"format": "iso"},
                                        {"format": "tar", "compression": "none"}])):
            profiles[name] = write_profile(work / name, mirror_url=mirror.file_url,
                                           key=release_key, name=name, outputs=outputs, **fields)
            (work / name / package_key.name).write_bytes(package_key.public_pem)
        env = composer_env()
        cache = work / "cache"
        # The same root filesystem on disk, and the ISO's boot files, for the baseline.
        subprocess.run(composer_command("build", profiles["tree"], "--output-dir", work / "out",
                                        "--cache-dir", cache), env=env, check=True,
                       capture_output=True)
        rootfs = work / "rootfs"
        rootfs.mkdir()
        subprocess.run(["tar", "-xf", str(next((work / "out" / "tree").glob("*.tar"))), "-C",
                        str(rootfs), "--numeric-owner"], check=True)
        ours = composer_command("build", profiles["virt"], "--output-dir", work / "out",
                                "--cache-dir", cache)
        subprocess.run(ours, env=env, check=True, capture_output=True)
        (iso,) = (work / "out" / "virt").glob("*.iso")
        files = work / "files"
        subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/",
                        str(files)], check=True, capture_output=True)
        subprocess.run(["chmod", "-R", "u+w", str(files)], check=True)
        tree_mb = sum(p.lstat().st_size for p in rootfs.rglob("*")
                      if p.is_file() and not p.is_symlink()) / 1e6
        iso_mb = iso.stat().st_size / 1e6
        result = paired(ours, baseline(rootfs, files, work / "xorriso.iso", "alpine-virt"),
                        ours_env=env)
    print(HEADER)
    print(ratio_row(f"virt ISO, whole build, warm cache ({tree_mb:.0f} MB tree, {iso_mb:.0f} MB "
                    "ISO)", result, "find \\| cpio \\| gzip -n -6, xorriso -as mkisofs", 0.6))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
