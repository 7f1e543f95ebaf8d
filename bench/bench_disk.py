"""Benchmark: a whole virt disk image build against squashfs-tools + cryptsetup + qemu-img.

Not a test. Whole processes in alternating rounds (bench/harness.py), on Alpine's real signed
3.19.1 packages and linux-virt 6.18 kernel (tests/helpers/alpine_virt.py, with Debian's
dmsetup as ``device-mapper``):

* ours: ``alpine-composer build`` of a profile extending profiles/virt-disk.yaml (qcow2,
  verity), warm cache: signatures and hashes checked, packages installed, the squashfs root,
  the dm-verity tree, the initramfs with its modules, the UKI, the ESP, the GPT disk, the
  qcow2 conversion, SBOMs and manifest;
* baseline, over the same tree as an uncompressed tar: ``mksquashfs - root -tar -comp gzip``,
  ``veritysetup format`` and ``qemu-img convert -O qcow2`` of the squashfs (no ESP, no
  initramfs, no packages: the floor of the three tools' work).

The issue names no target for this row; it is reported so that a change that slows the disk
path shows up.

    .venv/bin/python bench/bench_disk.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import HEADER, compile_source, composer_command, composer_env, paired, spread  # noqa: E402
from tests.helpers.alpine_virt import alpine_virt_repositories  # noqa: E402
from tests.helpers.apkrepo import signing_key  # noqa: E402
from tests.helpers.bootpkgs import Unavailable, host_dmsetup_package  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "alpine-real"


def baseline(tar: Path, work: Path) -> list[str]:
    root, hashes, qcow2 = work / "root.sqfs", work / "root.verity", work / "root.qcow2"
    script = (f"set -e; rm -f {root} {hashes} {qcow2}; mksquashfs - {root} -tar -comp gzip "
              f"-b 131072 -noappend -quiet < {tar}; veritysetup format {root} {hashes} "
              f"> /dev/null; qemu-img convert -O qcow2 {root} {qcow2}")
    return ["bash", "-c", script]


def main() -> int:
    missing = [t for t in ("mksquashfs", "veritysetup", "qemu-img") if not shutil.which(t)]
    if not FIXTURES.exists() or missing:
        print(f"skipped: needs ../shared and {', '.join(missing) or 'the fixtures'}")
        return 0
    compile_source()
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as tmp:
        work = Path(tmp)
        try:
            dmsetup = host_dmsetup_package()
        except Unavailable as exc:
            print(f"skipped: {exc}")
            return 0
        repos = alpine_virt_repositories(FIXTURES, work / "boot-repo", signing_key("boot"),
                                         extra=[dmsetup])
        profiles = {}
        disk = {"format": "disk", "image": "qcow2"}
        # The tree profile writes the disk too, so that the plan installs the same packages.
        for name, outputs in (("disk", [disk]),
                              ("tree", [disk, {"format": "tar", "compression": "none"}])):
            folder = work / name
            fields = repos.profile_fields(folder)
            profiles[name] = folder / f"{name}.yaml"
            profiles[name].write_text(json.dumps({
                "name": name, "extends": os.fspath(ROOT / "profiles" / "virt-disk.yaml"),
                **fields, "outputs": outputs}))
        env = composer_env()
        cache = work / "cache"
        for name in ("tree", "disk"):
            subprocess.run(composer_command("build", profiles[name], "--output-dir",
                                            work / "out", "--cache-dir", cache),
                           env=env, check=True, capture_output=True)
        tar = next((work / "out" / "tree").glob("*.tar"))
        image = next((work / "out" / "disk").glob("*.qcow2"))
        ours = composer_command("build", profiles["disk"], "--output-dir", work / "out",
                                "--cache-dir", cache)
        scratch = work / "baseline"
        scratch.mkdir()
        result = paired(ours, baseline(tar, scratch), ours_env=env)
        tree_mb = tar.stat().st_size / 1e6
        image_mb = image.stat().st_size / 1e6
    print(HEADER)
    print(f"| virt disk image (qcow2, verity), whole build, warm cache ({tree_mb:.0f} MB tree, "
          f"{image_mb:.0f} MB image) | {result.median('ours'):.3f} s | "
          f"{result.median('theirs'):.3f} s (mksquashfs -tar, veritysetup format, qemu-img "
          f"convert) | {spread(result.ratios)} | reported | median "
          f"{statistics.median(result.ratios):.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
