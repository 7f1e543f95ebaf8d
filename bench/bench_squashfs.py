"""Benchmark: the pure squashfs writer against ``mksquashfs -tar`` on the same tar.

Not a test. Whole processes in alternating rounds (bench/harness.py), both reading the same
uncompressed tar and writing a gzip squashfs with 128 KiB blocks:

* ours: a ``python`` that loads the tar into a FileTree (composer.archive) and writes it
  with composer.writers.squashfs;
* baseline: ``mksquashfs - IMG -tar -comp gzip -b 131072 -noappend`` (squashfs-tools).

Rows: the real 3.20.3 minirootfs (target ≤ 1.5×), and the same plus 150–180 MB of the
host's shared libraries (target ≤ 1.5×). The image sizes follow the table.

    .venv/bin/python bench/bench_squashfs.py
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_tar import EPOCH, MINIROOTFS, shared_libraries  # noqa: E402
from bench.harness import HEADER, compile_source, composer_env, paired, ratio_row  # noqa: E402

WRITE = """\
import sys
from composer.archive import load_tar
from composer.tree import FileTree
from composer.writers.squashfs import write_squashfs

with FileTree() as tree:
    with open(sys.argv[1], "rb") as tar:
        load_tar(tar, tree, source="bench")
    with open(sys.argv[2], "wb") as out:
        write_squashfs(tree, out, mtime=int(sys.argv[3]))
"""


def main() -> int:
    if not MINIROOTFS.exists():
        print(f"skipped: {MINIROOTFS} not found (../shared is absent)")
        return 0
    if shutil.which("mksquashfs") is None:
        print("skipped: mksquashfs is not installed (apt-get install squashfs-tools)")
        return 0
    compile_source()
    rows = [HEADER]
    sizes = []
    with tempfile.TemporaryDirectory(prefix="bench-squashfs-") as tmp:
        work = Path(tmp)
        mini = work / "mini.tar"
        mini.write_bytes(gzip.decompress(MINIROOTFS.read_bytes()))
        rootfs = work / "rootfs"
        rootfs.mkdir()
        subprocess.run(["tar", "-xf", mini, "--numeric-owner", "-C", rootfs], check=True)
        size = shared_libraries(rootfs)
        big = work / "big.tar"
        subprocess.run(["tar", "--sort=name", f"--mtime=@{EPOCH}", "--owner=0", "--group=0",
                        "--numeric-owner", "-C", rootfs, "-cf", big, "."], check=True)
        for label, tar in (("3.20.3 minirootfs", mini),
                           (f"minirootfs + {size / 1e6:.0f} MB of shared libraries", big)):
            ours_img, theirs_img = work / "ours.img", work / "theirs.img"
            ours = [sys.executable, "-c", WRITE, str(tar), str(ours_img), str(EPOCH)]
            theirs = ["bash", "-c", f"mksquashfs - {theirs_img} -tar -comp gzip -b 131072 "
                      f"-noappend -quiet -no-progress < {tar}"]
            result = paired(ours, theirs, ours_env=composer_env())
            rows.append(ratio_row(f"{label} → squashfs (gzip, 128 KiB blocks)", result,
                                  "mksquashfs -tar", 1.5))
            sizes.append(f"- {label}: alpine-composer {ours_img.stat().st_size:,} bytes, "
                         f"mksquashfs {theirs_img.stat().st_size:,} bytes")
    print("\n".join(rows))
    print("\nImage sizes:\n" + "\n".join(sizes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
