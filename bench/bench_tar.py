"""Benchmark: root filesystem tarballs and a profile error, as whole processes.

Not a test. Three rows (see bench/harness.py for how they are timed):

1. the real Alpine 3.20.3 minirootfs → tar.gz, warm cache: ``alpine-composer build`` (OpenPGP
   signature and sha256 checked, tar, pinned gzip, SBOMs, SHA256SUMS, manifest) against
   ``tar --sort=name … | gzip -n -6`` of the same tree extracted on disk. Target ≤ 1.0×.
2. the same plus 150–180 MB of the host's shared libraries as ``overlay.tree``, against
   the same tar | gzip of the same tree. Target ≤ 0.35×.
3. ``build`` of a profile with a typo (exit 2, "did you mean") against the floor, a
   ``python`` that imports pydantic and validates one tiny model. Target: floor + 0.05 s.

    .venv/bin/python bench/bench_tar.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    HEADER,
    compile_source,
    composer_command,
    composer_env,
    floor_row,
    paired,
    ratio_row,
)
from tests.conftest import write_profile  # noqa: E402
from tests.helpers.gpg import make_signing_key  # noqa: E402
from tests.helpers.mirror import build_mirror  # noqa: E402

MINIROOTFS = (ROOT.parent / "shared" / "fixtures" / "alpine-real" / "minirootfs"
              / "alpine-minirootfs-3.20.3-x86_64.tar.gz")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/local/lib")
LIBRARY_BYTES = 165 * 1000 * 1000
EPOCH = 1725622445  # the minirootfs's newest mtime: what the build stamps on every entry

FLOOR = """\
from pydantic import BaseModel


class Tiny(BaseModel):
    name: str


Tiny(name="floor")
"""


def shared_libraries(dest: Path) -> int:
    """Copies of the host's shared libraries under ``dest/usr/lib/bench/``, up to
    LIBRARY_BYTES: real machine code, as an application overlay ships it."""
    total = 0
    seen: set[str] = set()
    target = dest / "usr" / "lib" / "bench"
    target.mkdir(parents=True)
    for folder in LIBRARY_DIRS:
        for path in sorted(Path(folder).rglob("*.so*")):
            if total >= LIBRARY_BYTES:
                return total
            if path.is_symlink() or not path.is_file() or path.name in seen:
                continue
            size = path.stat().st_size
            if size < 64 * 1024 or total + size > LIBRARY_BYTES * 1.08:
                continue
            seen.add(path.name)
            shutil.copyfile(path, target / path.name)
            total += size
    return total


def tar_gzip(tree: Path, out: Path) -> list[str]:
    return ["bash", "-c", f"tar --sort=name --mtime=@{EPOCH} --owner=0 --group=0 "
            f"--numeric-owner -C {tree} -cf - . | gzip -n -6 > {out}"]


def main() -> int:
    if not MINIROOTFS.exists():
        print(f"skipped: {MINIROOTFS} not found (../shared is absent)")
        return 0
    compile_source()
    rows = [HEADER]
    with tempfile.TemporaryDirectory(prefix="bench-tar-") as tmp:
        work = Path(tmp)
        (work / "gpg").mkdir()
        key = make_signing_key(work / "gpg")
        mirror = build_mirror(work / "mirror", key=key, tarball=MINIROOTFS.read_bytes())
        rootfs = work / "rootfs"
        rootfs.mkdir()
        subprocess.run(["tar", "-xzf", MINIROOTFS, "--numeric-owner", "-C", rootfs], check=True)
        env = composer_env()

        profile = write_profile(work / "mini", mirror_url=mirror.file_url, key=key, name="mini")
        build = composer_command("build", profile, "--output-dir", work / "out",
                                 "--cache-dir", work / "cache")
        result = paired(build, tar_gzip(rootfs, work / "baseline.tar.gz"), ours_env=env)
        rows.append(ratio_row("3.20.3 minirootfs → tar.gz, warm cache", result,
                              "tar --sort=name \\| gzip -n -6", 1.0))

        libs = work / "libs" / "tree"
        size = shared_libraries(libs)
        profile = write_profile(work / "libs", mirror_url=mirror.file_url, key=key, name="libs",
                                overlay={"tree": "tree"})
        build = composer_command("build", profile, "--output-dir", work / "out",
                                 "--cache-dir", work / "cache")
        shutil.copytree(libs, rootfs, dirs_exist_ok=True, symlinks=True)
        result = paired(build, tar_gzip(rootfs, work / "baseline.tar.gz"), ours_env=env)
        rows.append(ratio_row(f"minirootfs + {size / 1e6:.0f} MB of shared libraries "
                              "(overlay.tree) → tar.gz", result, "the same tar \\| gzip", 0.35))

        typo = work / "typo.yaml"
        typo.write_text("name: typo\nbranch: v3.20\npackges: [curl]\n")
        floor = work / "floor.py"
        floor.write_text(FLOOR)
        result = paired(composer_command("build", typo), [sys.executable, str(floor)],
                        ours_env=env, expect=2)
        rows.append(floor_row("`build` of a profile with a typo (exit 2)", result,
                              "python: import pydantic, validate one model", 0.05))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
