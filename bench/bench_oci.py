"""Benchmark: OCI layout of the real Alpine 3.20.3 minirootfs vs the `tar | gzip` floor.

Not a test. Prints a table and exits 0 unless something crashes:

    .venv/bin/python bench/bench_oci.py

Ours: write_oci_layout() of a FileTree loaded beforehand (warm, one run discarded).
Floor: GNU tar over the same tree extracted on disk, hashing the tar (DiffID) and
the gzip -n -6 stream (blob digest) in one pipeline, as the layout writer does.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from composer.archive import load_tar  # noqa: E402
from composer.tree import FileTree  # noqa: E402
from composer.writers.oci import OciImageSpec, write_oci_layout  # noqa: E402

MINIROOTFS = (ROOT.parent / "shared" / "fixtures" / "alpine-real" / "minirootfs"
              / "alpine-minirootfs-3.20.3-x86_64.tar.gz")
EPOCH = 1725622440
RUNS = 5


def time_ours(tree: FileTree, work: Path) -> list[float]:
    spec = OciImageSpec(tree=tree, arch="x86_64", created=EPOCH, tool_version="bench")
    times = []
    for run in range(RUNS + 1):
        out = work / f"layout-{run}"
        start = time.perf_counter()
        write_oci_layout(out, [spec], tag="bench")
        elapsed = time.perf_counter() - start
        shutil.rmtree(out)
        if run:
            times.append(elapsed)
    return times


def time_floor(rootfs: Path) -> list[float]:
    pipeline = (f"tar --sort=name --mtime=@{EPOCH} --owner=0 --group=0 --numeric-owner "
                f"-C {rootfs} -cf - . | tee >(sha256sum >/dev/null) | gzip -n -6 | sha256sum "
                ">/dev/null")
    times = []
    for run in range(RUNS + 1):
        start = time.perf_counter()
        subprocess.run(["bash", "-c", pipeline], check=True)
        elapsed = time.perf_counter() - start
        if run:
            times.append(elapsed)
    return times


def main() -> int:
    if not MINIROOTFS.is_file():
        print(f"skipped: {MINIROOTFS} not found (needs the shared fixtures)")
        return 0
    tree = FileTree()
    with MINIROOTFS.open("rb") as fh:
        load_tar(fh, tree, source=MINIROOTFS.name)
    with tempfile.TemporaryDirectory(prefix="bench-oci-") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        rootfs.mkdir()
        subprocess.run(["tar", "-xzf", str(MINIROOTFS), "-C", str(rootfs), "--numeric-owner"],
                       check=True)
        ours = statistics.median(time_ours(tree, work))
        floor = statistics.median(time_floor(rootfs))
    size = sum(e.size for e in tree.entries.values())
    print(f"tree: {len(tree)} entries, {size / 1e6:.1f} MB of file content; median of {RUNS} runs")
    print(f"{'job':<62} {'seconds':>8}")
    print(f"{'write_oci_layout (tar+sha256+gzip-6+sha256, JSON)':<62} {ours:>8.3f}")
    print(f"{'tar --sort=name | tee >(sha256sum) | gzip -n -6 | sha256sum':<62} {floor:>8.3f}")
    ratio = ours / floor if floor else float("inf")
    verdict = "OK" if ratio <= 1.0 else "SLOWER than the floor"
    print(f"{'ratio ours / floor (target <= 1.0)':<62} {ratio:>8.2f}  {verdict}")
    tree.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
