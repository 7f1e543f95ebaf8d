"""Benchmark: installing packages with composer vs the real apk-tools 2.14, into a tar.

Not a test. Two cases, each run 5 times, median wall time:

(a) the 15-package world of the real Alpine 3.19.1 ISO repository;
(b) a synthetic signed repository (tests/helpers/apkrepo.py) of 320 packages,
    ~330 MB of incompressible, deterministic content.

Composer is the real command, ``alpine-composer build`` of a ``base: packages``
profile with a warm cache (index signature, resolve, verify every package,
install into a FileTree with script effects, uncompressed tar, SHA256SUMS,
manifest), process start-up included; for (a) also ``pipeline.build()`` repeated in one
warm process, which is the engine's own time without the fixed ~0.3 s of interpreter
start-up and imports. apk-tools (from the ISO, run through its own musl loader):
``apk add --initdb --no-scripts --no-cache`` into a folder, then ``tar -cf``.
Peak RSS of each child comes from ``os.wait4``. Targets: ratio <= 3 on (a),
<= 1.0 on (b), composer peak RSS <= 150 MB on (b).

    .venv/bin/python bench/bench_apk.py
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "fixtures" / "alpine-real"
ISO_REPO = SHARED / "iso-3.19.1-x86_64" / "apks"
ISO_KEYS = SHARED / "apk-keys"
ISO_WORLD = ["alpine-baselayout", "alpine-keys", "apk-tools", "busybox", "libc-utils"]
APK_RUNTIME = ("musl-1", "apk-tools-2", "libcrypto3-", "libssl3-", "zlib-")
SYNTH_PACKAGES = 320
SYNTH_FILES = 4
SYNTH_FILE_SIZE = 256 * 1024
RUNS = 5
EPOCH = 1700000000


def measure(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed: {err}")
    return elapsed, usage.ru_maxrss


def apk_tools(base: Path) -> list[str]:
    for prefix in APK_RUNTIME:
        (apk,) = sorted((ISO_REPO / "x86_64").glob(prefix + "*.apk"))
        with tarfile.open(apk, "r:gz") as archive:
            archive.extractall(base, members=[m for m in archive if not m.name.startswith(".")],
                               filter="tar")
    return [f"{base}/lib/ld-musl-x86_64.so.1", "--library-path",
            f"{base}/lib:{base}/usr/lib", f"{base}/sbin/apk"]


def apk_then_tar(apk: list[str], repo: Path, keys: Path, world: list[str], work: Path) -> str:
    script = (
        'set -e; rm -rf "$1"; mkdir "$1"; shift; root="$1"; tar_out="$2"; shift 2; '
        '"$@" >/dev/null; tar -cf "$tar_out" -C "$root" .')
    root, out = work / "apk-root", work / "apk.tar"
    args = [*apk, "--root", str(root), "--initdb", "--arch", "x86_64", "--keys-dir", str(keys),
            "--repository", str(repo), "--repositories-file", "/dev/null", "--no-scripts",
            "--no-cache", "--quiet", "add", *world]
    return json.dumps(["sh", "-c", script, "sh", str(root), str(root), str(out), *args])


def run_case(label: str, repo: Path, keys: Path, world: list[str], apk: list[str],
             work: Path, *, engine: bool = False) -> list[str]:
    """Ours is the product: ``alpine-composer build`` of a ``base: packages`` profile
    (warm cache, as apk reads the repository folder directly), writing an uncompressed tar."""
    profile = work / f"{label[:12].replace(' ', '-').replace('(', '').replace(')', '')}.json"
    profile.write_text(json.dumps({
        "name": "bench", "base": "packages", "branch": "edge", "packages": world,
        "repositories": [repo.resolve().as_uri()],
        "keys": [str(k) for k in sorted(keys.iterdir())],
        "sbom": False, "source_date_epoch": EPOCH,
        "outputs": [{"format": "tar", "compression": "none"}]}))
    out = work / "out"
    ours_argv = [sys.executable, "-m", "composer", "build", str(profile), "--output-dir",
                 str(out), "--cache-dir", str(work / "cache")]
    measure(ours_argv)  # fill the cache once
    theirs_argv = json.loads(apk_then_tar(apk, repo, keys, world, work))
    ours, theirs, rss = [], [], []
    for _ in range(RUNS):
        t, r = measure(ours_argv)
        ours.append(t)
        rss.append(r)
        theirs.append(measure(theirs_argv)[0])
    o, a = statistics.median(ours), statistics.median(theirs)
    size = sum(p.stat().st_size for p in (out / "bench").glob("*.tar")) / 1e6
    rows = [f"| {label}, `alpine-composer build` | {o:.2f} s | {a:.2f} s | {o / a:.2f} | "
            f"{max(rss) / 1024:.0f} MB | {size:.0f} MB |"]
    if engine:
        e = in_process(profile, work)
        rows.append(f"| {label}, `build()` in a warm process | {e:.2f} s | {a:.2f} s | "
                    f"{e / a:.2f} | | |")
    return rows


def in_process(profile: Path, work: Path) -> float:
    """Median seconds of ``pipeline.build()`` called in one warm process (the engine alone,
    without interpreter start-up and imports), measured in a child so this process stays small."""
    result = subprocess.run([sys.executable, __file__, "--in-process", str(profile), str(work)],
                            check=True, capture_output=True, text=True)
    return float(result.stdout)


def time_build_in_process(profile: Path, work: Path) -> float:
    from composer.context import BuildContext
    from composer.profile import load_profile
    from composer.stages.pipeline import build

    ctx = BuildContext.from_environment(load_profile(profile), env={},
                                        output_dir=work / "out-inproc",
                                        cache_dir=work / "cache", progress=False,
                                        log=lambda _m: None)
    build(ctx)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        build(ctx)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_repo(base: Path) -> tuple[Path, Path, list[str]]:
    """Built in a child so this process stays small: children forked from a big parent
    would report the parent's memory as their own peak RSS."""
    subprocess.run([sys.executable, __file__, "--make-repo", str(base)], check=True)
    names = sorted(p.name.rsplit("-", 2)[0] for p in (base / "repo" / "x86_64").glob("*.apk"))
    return base / "repo", base / "keys", names


def make_synthetic_repo(base: Path) -> None:
    from tests.helpers.apkrepo import PackageSpec, build_repository, signing_key

    key = signing_key("bench")
    rng = random.Random(20240601)
    specs = []
    for i in range(SYNTH_PACKAGES):
        files = {f"usr/share/pkg{i:03d}/data{j}.bin": rng.randbytes(SYNTH_FILE_SIZE)
                 for j in range(SYNTH_FILES)}
        files[f"usr/bin/pkg{i:03d}"] = b"#!/bin/sh\necho %d\n" % i
        specs.append(PackageSpec(name=f"pkg{i:03d}", version="1.0-r0", files=files))
    build_repository(base / "repo", specs, key)
    keys = base / "keys"
    keys.mkdir()
    (keys / key.name).write_bytes(key.public_pem)


def main() -> int:
    if platform.machine() != "x86_64" or not ISO_REPO.exists():
        print("skipped: needs x86_64 and ../shared/fixtures/alpine-real")
        return 0
    # An installed package has its bytecode compiled; an editable checkout run with
    # PYTHONDONTWRITEBYTECODE would otherwise compile every module on every start.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "composer")],
                   check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="bench-apk-") as tmp:
        work = Path(tmp)
        apk = apk_tools(work / "apk-tools")
        rows = ["| case | composer | apk-tools + tar | ratio | composer peak RSS | tar size |",
                "|---|---|---|---|---|---|"]
        rows += run_case("(a) ISO 3.19.1, 15 packages", ISO_REPO, ISO_KEYS, ISO_WORLD,
                         apk, work, engine=True)
        started = time.perf_counter()
        repo, keys, names = synthetic_repo(work / "synthetic")
        made = time.perf_counter() - started
        total = sum(p.stat().st_size for p in (repo / "x86_64").glob("*.apk")) / 1e6
        rows += run_case(f"(b) synthetic, {len(names)} packages", repo, keys, names,
                         apk, work)
        shutil.rmtree(work / "apk-root", ignore_errors=True)
    print("\n".join(rows))
    print(f"\nmedian of {RUNS}; synthetic repository: {total:.0f} MB of .apk files, "
          f"built in {made:.0f} s (not timed). Targets: (a) ratio <= 3, (b) ratio <= 1.0 "
          "and peak RSS <= 150 MB.")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--in-process":
        print(time_build_in_process(Path(sys.argv[2]), Path(sys.argv[3])))
        raise SystemExit(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--make-repo":
        make_synthetic_repo(Path(sys.argv[2]))
        raise SystemExit(0)
    raise SystemExit(main())
