"""Benchmark: building the real Alpine 3.20.3 minirootfs into tar.gz, warm cache.

Not a test. Ours: ``pipeline.build()`` in-process from a warm cache (signature check,
tar load, overlay, deterministic tar + parallel gzip, SHA256SUMS, manifest), median of
5 after one warm-up run, taking turns with the baseline. Baseline, over the same tree
extracted on disk: ``tar --sort=name --mtime=@N --owner=0 --group=0 --numeric-owner
-cf - DIR | gzip -n -6``. Also shows the whole CLI (process start included).

    .venv/bin/python bench/bench_tar.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from composer.context import BuildContext  # noqa: E402
from composer.profile import load_profile  # noqa: E402
from composer.stages.pipeline import build  # noqa: E402
from tests.conftest import write_profile  # noqa: E402
from tests.helpers.gpg import make_signing_key  # noqa: E402
from tests.helpers.mirror import build_mirror  # noqa: E402

MINIROOTFS = (ROOT.parent / "shared" / "fixtures" / "alpine-real" / "minirootfs"
              / "alpine-minirootfs-3.20.3-x86_64.tar.gz")
RUNS = 5


def median_times(*actions, runs: int = RUNS) -> list[float]:  # type: ignore[no-untyped-def]
    """Median wall time of each action after one warm-up each; the actions take turns in
    every round, so a machine that speeds up or slows down mid-run skews none of them."""
    for action in actions:
        action()
    times: list[list[float]] = [[] for _ in actions]
    for _ in range(runs):
        for action, seen in zip(actions, times, strict=True):
            start = time.perf_counter()
            action()
            seen.append(time.perf_counter() - start)
    return [statistics.median(seen) for seen in times]


def main() -> int:
    if not MINIROOTFS.exists():
        print(f"skipped: {MINIROOTFS} not found (../shared is absent)")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-tar-") as tmp:
        work = Path(tmp)
        (work / "gpg").mkdir()
        key = make_signing_key(work / "gpg")
        mirror = build_mirror(work / "mirror", key=key, tarball=MINIROOTFS.read_bytes())
        profile = write_profile(work / "p", mirror_url=mirror.file_url, key=key, name="bench")
        loaded = load_profile(profile)
        ctx = BuildContext.from_environment(loaded, env={}, output_dir=work / "out",
                                            cache_dir=work / "cache", progress=False,
                                            log=lambda _m: None)
        rootfs = work / "rootfs"
        rootfs.mkdir()
        subprocess.run(["tar", "-xzf", MINIROOTFS, "--numeric-owner", "-C", rootfs], check=True)
        epoch = 1725622445
        pipeline = (f"tar --sort=name --mtime=@{epoch} --owner=0 --group=0 --numeric-owner "
                    f"-C {rootfs} -cf - . | gzip -n -6 > /dev/null")

        # Compiled bytecode, as an installed package has it (see bench_apk.py).
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "composer")],
                       check=True, stdout=subprocess.DEVNULL)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cli = [sys.executable, "-m", "composer", "build", str(profile), "--output-dir",
               str(work / "out-cli"), "--cache-dir", str(work / "cache")]
        ours, baseline, whole = median_times(
            lambda: build(ctx),
            lambda: subprocess.run(["bash", "-c", pipeline], check=True),
            lambda: subprocess.run(cli, check=True, env=env, capture_output=True))
    print("| job | alpine-composer | baseline | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| 3.20.3 minirootfs → tar.gz, warm cache (build()) | {ours:.3f} s | "
          f"{baseline:.3f} s (tar --sort=name | gzip -n -6) | {ours / baseline:.2f} |")
    print(f"| same, whole CLI process incl. Python start-up | {whole:.3f} s | "
          f"{baseline:.3f} s | {whole / baseline:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
