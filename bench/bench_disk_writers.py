"""Benchmark: the disk image writers against the tools they replace, on a 64 MiB raw image of
which 40% is data (half random, half repetitive) and 60% zeros, as a disk with a small root
and empty space looks.

Not a test. Whole processes in alternating rounds (bench/harness.py):

* ``write_verity`` against ``veritysetup format`` (same salt and UUID: same bytes);
* ``write_qcow2`` against ``qemu-img convert -O qcow2``, without and with ``-c``.

Our side is a Python process that imports only the writer, so its start-up is in the figure
(~0.05 s for Python, and for qcow2 ~0.13 s more importing composer.writers.compress, which
loads the profile model and pydantic; a build has them loaded already): the uncompressed
rows therefore compare against the baseline plus an allowance.

    .venv/bin/python bench/bench_disk_writers.py
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import HEADER, composer_env, floor_row, paired, ratio_row  # noqa: E402

SIZE = 64 << 20
MIB = 1 << 20
SALT = "01" * 32
UUID = "12345678-1234-4234-8234-123456789abc"
OURS = """
import os, sys
kind, source, target = sys.argv[1:4]
size = os.path.getsize(source)
with open(source, "rb") as data, open(target, "wb") as out:
    if kind == "verity":
        from composer.writers.verity import write_verity
        write_verity(data, size, out, salt=bytes.fromhex(sys.argv[4]), uuid=sys.argv[5])
    else:
        from composer.writers.qcow2 import write_qcow2
        write_qcow2(data, size, out, compress=kind == "qcow2-compressed")
"""


def raw_image(path: Path) -> None:
    rng = random.Random(0)
    with path.open("wb") as out:
        out.truncate(SIZE)
        for mib in range(SIZE // MIB):
            if mib % 5 < 2:
                out.seek(mib * MIB)
                out.write(rng.randbytes(MIB) if mib % 2 == 0
                          else (rng.randbytes(300) * 3500)[:MIB])


def main() -> int:
    missing = [tool for tool in ("veritysetup", "qemu-img") if not shutil.which(tool)]
    if missing:
        print(f"skipped: needs {', '.join(missing)}")
        return 0
    env = composer_env()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as tmp:
        work = Path(tmp)
        raw = work / "raw.img"
        raw_image(raw)
        ours = [sys.executable, "-c", OURS]
        verity = paired([*ours, "verity", str(raw), str(work / "ours.hash"), SALT, UUID],
                        ["veritysetup", "format", "--salt", SALT, "--uuid", UUID, str(raw),
                         str(work / "theirs.hash")], ours_env=env)
        if (work / "ours.hash").read_bytes() != (work / "theirs.hash").read_bytes():
            raise SystemExit("verity: our hash device differs from veritysetup's")
        rows.append(floor_row("dm-verity hash tree of 64 MiB", verity, "veritysetup format",
                              0.3))
        plain = paired([*ours, "qcow2", str(raw), str(work / "ours.qcow2")],
                       ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                        str(work / "theirs.qcow2")], ours_env=env)
        rows.append(floor_row("qcow2 of a 64 MiB raw image (40% data)", plain,
                              "qemu-img convert -O qcow2", 0.3))
        packed = paired([*ours, "qcow2-compressed", str(raw), str(work / "ours-c.qcow2")],
                        ["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw),
                         str(work / "theirs-c.qcow2")], ours_env=env)
        sizes = (f"{(work / 'ours-c.qcow2').stat().st_size / 1e6:.1f} MB vs "
                 f"{(work / 'theirs-c.qcow2').stat().st_size / 1e6:.1f} MB")
        rows.append(ratio_row(f"compressed qcow2 of the same image ({sizes})", packed,
                              "qemu-img convert -c -O qcow2", 1.5))
    print(HEADER)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
