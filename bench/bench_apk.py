"""Benchmark: installing packages with composer vs the real apk-tools 2.14, into a tar.

Not a test. Whole processes in alternating rounds (bench/harness.py):

(a) the 15-package world of the real Alpine 3.19.1 ISO repository, warm cache:
    ``alpine-composer build`` of a ``base: packages`` profile (index signature, resolve,
    every package's signature and hashes checked, install with script effects, tar, SBOMs,
    SHA256SUMS, manifest) against apk-tools ``add --initdb --no-scripts --no-cache`` from
    the repository folder, then ``tar -cf``. Target ≤ 2.5×.
(b) the same with an empty cache over HTTP on 127.0.0.1, against apk-tools
    ``--no-cache --update-cache`` from the same server, then ``tar -cf``. Target ≤ 3×.
(c) a synthetic signed repository (tests/helpers/apkrepo.py) of 320 packages, ~330 MB of
    incompressible content, warm cache. Target ≤ 1.0× and composer's peak RSS ≤ 150 MB.

apk-tools comes from the ISO's own packages (apk-tools, musl, libcrypto3, libssl3, zlib),
run through their musl loader.

    .venv/bin/python bench/bench_apk.py
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import HEADER, compile_source, composer_command, composer_env, paired, ratio_row  # noqa: E402, I001

SHARED = ROOT.parent / "shared" / "fixtures" / "alpine-real"
ISO_REPO = SHARED / "iso-3.19.1-x86_64" / "apks"
ISO_KEYS = SHARED / "apk-keys"
ISO_WORLD = ["alpine-baselayout", "alpine-keys", "apk-tools", "busybox", "libc-utils"]
APK_RUNTIME = ("musl-1", "apk-tools-2", "libcrypto3-", "libssl3-", "zlib-")
SYNTH_PACKAGES = 320
SYNTH_FILES = 4
SYNTH_FILE_SIZE = 256 * 1024
EPOCH = 1700000000


def apk_tools(base: Path) -> list[str]:
    for prefix in APK_RUNTIME:
        (apk,) = sorted((ISO_REPO / "x86_64").glob(prefix + "*.apk"))
        with tarfile.open(apk, "r:gz") as archive:
            members = [m for m in archive if not m.name.startswith(".")]
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4+; Debian 12 ships 3.11.2
                archive.extractall(base, members=members, filter="tar")
            else:
                archive.extractall(base, members=members)
    return [f"{base}/lib/ld-musl-x86_64.so.1", "--library-path",
            f"{base}/lib:{base}/usr/lib", f"{base}/sbin/apk"]


def apk_then_tar(apk: list[str], repository: str, keys: Path, world: list[str], work: Path,
                 *options: str) -> list[str]:
    """apk-tools into an empty root, then ``tar -cf`` of it: one shell process."""
    script = (
        'set -e; rm -rf "$1"; mkdir "$1"; shift; root="$1"; tar_out="$2"; shift 2; '
        '"$@" >/dev/null; tar -cf "$tar_out" -C "$root" .')
    root, out = work / "apk-root", work / "apk.tar"
    args = [*apk, "--root", str(root), "--initdb", "--arch", "x86_64", "--keys-dir", str(keys),
            "--repository", repository, "--repositories-file", "/dev/null", "--no-scripts",
            *options, "--quiet", "add", *world]
    return ["sh", "-c", script, "sh", str(root), str(root), str(out), *args]


def write_profile(path: Path, repository: str, keys: Path, world: list[str]) -> Path:
    """A ``base: packages`` profile writing an uncompressed tar (as apk + tar -cf does),
    with its SBOMs and manifest."""
    path.write_text(json.dumps({
        "name": "bench", "base": "packages", "branch": "edge", "packages": world,
        "repositories": [repository], "keys": [str(k) for k in sorted(keys.iterdir())],
        "source_date_epoch": EPOCH, "outputs": [{"format": "tar", "compression": "none"}]}))
    return path


def synthetic_repo(base: Path) -> tuple[Path, Path, list[str]]:
    """Built in a child so this process stays small."""
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
    from tests.helpers.httpserver import serve_directory

    compile_source()
    env = composer_env()
    rows = [HEADER]
    with tempfile.TemporaryDirectory(prefix="bench-apk-") as tmp:
        work = Path(tmp)
        apk = apk_tools(work / "apk-tools")
        out = ["--output-dir", work / "out"]

        local = ISO_REPO.resolve().as_uri()
        profile = write_profile(work / "iso.json", local, ISO_KEYS, ISO_WORLD)
        result = paired(composer_command("build", profile, *out, "--cache-dir", work / "cache"),
                        apk_then_tar(apk, str(ISO_REPO), ISO_KEYS, ISO_WORLD, work, "--no-cache"),
                        ours_env=env)
        rows.append(ratio_row("`base: packages`, 15-package world of the 3.19.1 repository, "
                              "warm cache", result, "apk-tools 2.14 add + tar -cf", 2.5))

        with serve_directory(ISO_REPO) as server:
            profile = write_profile(work / "http.json", server.url, ISO_KEYS, ISO_WORLD)
            cold = work / "cold-cache"
            result = paired(
                composer_command("build", profile, *out, "--cache-dir", cold),
                apk_then_tar(apk, server.url, ISO_KEYS, ISO_WORLD, work, "--no-cache",
                             "--update-cache"),
                ours_env=env, before_ours=lambda: shutil.rmtree(cold, ignore_errors=True))
        rows.append(ratio_row("the same, empty cache, over HTTP on 127.0.0.1", result,
                              "apk-tools --no-cache --update-cache + tar -cf", 3.0))

        started = time.perf_counter()
        repo, keys, names = synthetic_repo(work / "synthetic")
        made = time.perf_counter() - started
        total = sum(p.stat().st_size for p in (repo / "x86_64").glob("*.apk")) / 1e6
        profile = write_profile(work / "synthetic.json", repo.resolve().as_uri(), keys, names)
        result = paired(composer_command("build", profile, *out, "--cache-dir", work / "cache"),
                        apk_then_tar(apk, str(repo), keys, names, work, "--no-cache"),
                        ours_env=env)
        rows.append(ratio_row(f"{len(names)}-package synthetic set ({total:.0f} MB of .apk), "
                              "warm cache", result, "apk-tools add + tar -cf", 1.0,
                              rss_limit=150))
        shutil.rmtree(work / "apk-root", ignore_errors=True)
    print("\n".join(rows))
    print(f"\nsynthetic repository built in {made:.0f} s (not timed)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-repo":
        make_synthetic_repo(Path(sys.argv[2]))
        raise SystemExit(0)
    raise SystemExit(main())
