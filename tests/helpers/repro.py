"""Build a profile twice under deliberately different conditions and compare every byte.

    result = reproduce(profile, mirror="file:///…", work=tmp_path)
    assert result.same, result.report

The two builds differ in everything that must not matter: the time zone (UTC against
UTC+14), the locale (C against C.UTF-8), the umask (022 against 077), the working folder
and HOME, the order in which the files of the profile's folder (its overlay trees) were
created, the download cache, and the CPUs the process may use (all against one, so the
block-parallel gzip runs with one worker instead of two). Each build is a separate
``python -m composer build`` process. Every file of both output folders is compared:
artifacts, SHA256SUMS, manifest.json, lock.json and the provenance. A difference is
explained by composer's own comparison (the members and fields that differ) and, where
diffoscope is installed, by diffoscope's report.

``python -m tests.helpers.repro PROFILE… --mirror URL`` runs the same check on any
profiles against any mirror (``make repro MIRROR=…``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
DIFFOSCOPE_TIMEOUT = 300
MAX_REPORT = 20_000


@dataclass(frozen=True)
class Conditions:
    """What one of the two builds runs under."""

    name: str
    tz: str
    locale: str
    umask: int
    one_cpu: bool
    reverse_order: bool
    cwd_depth: int


FIRST = Conditions("first", tz="UTC", locale="C", umask=0o022, one_cpu=False,
                   reverse_order=False, cwd_depth=0)
SECOND = Conditions("second", tz="Pacific/Kiritimati", locale="C.UTF-8", umask=0o077,
                    one_cpu=True, reverse_order=True, cwd_depth=3)


@dataclass(frozen=True)
class ReproResult:
    """The two output folders, the files that differ and the explanation."""

    first: Path
    second: Path
    files: tuple[str, ...]
    differing: tuple[str, ...]
    report: str

    @property
    def same(self) -> bool:
        return not self.differing and bool(self.files)


def copy_in_order(source: Path, dest: Path, *, reverse: bool) -> None:
    """Copy a folder, creating the entries of each folder in sorted or reverse-sorted order
    (the order a filesystem lists them in follows the order they were made in)."""
    dest.mkdir(parents=True)
    for name in sorted(os.listdir(source), reverse=reverse):
        src, dst = source / name, dest / name
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_dir():
            copy_in_order(src, dst, reverse=reverse)
        else:
            shutil.copy2(src, dst)


def listing_keeps_order() -> Path | None:
    """A tmpfs folder (``/dev/shm``) when there is one: tmpfs lists a folder's entries in the
    order they were made, where ext4 lists them by hash and hides the variation."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def _build(conditions: Conditions, profile: Path, work: Path, mirror: str,
           extra: tuple[str, ...], profiles: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = work / conditions.name
    root.mkdir(parents=True)
    copied = profiles / conditions.name
    copy_in_order(profile.parent, copied, reverse=conditions.reverse_order)
    home = root / "home"
    home.mkdir()
    cwd = root.joinpath(*["deeper"] * conditions.cwd_depth) if conditions.cwd_depth else root
    cwd.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.fspath(REPO),
           "HOME": os.fspath(home), "TZ": conditions.tz, "LC_ALL": conditions.locale,
           "LANG": conditions.locale, "TMPDIR": os.fspath(root)}

    def prepare() -> None:
        os.umask(conditions.umask)
        if conditions.one_cpu:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    out = Path(os.path.relpath(root / "out", cwd))
    result = subprocess.run(
        [sys.executable, "-m", "composer", "build", os.fspath(copied / profile.name),
         "--output-dir", os.fspath(out), "--cache-dir", os.fspath(root / "cache"),
         "--mirror", mirror, *extra],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, preexec_fn=prepare,
        check=False)
    names = [p for p in (root / "out").iterdir() if not p.name.startswith(".")] \
        if (root / "out").is_dir() else []
    return (names[0] if len(names) == 1 else root / "out"), result


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def explain(first: Path, second: Path, differing: list[str]) -> str:
    """composer's own account of each difference, then diffoscope's where installed."""
    from composer.verify import compare_outputs

    lines = compare_outputs(first, second, {n: "first" for n in differing},
                            {n: "second" for n in differing})
    report = "\n".join(lines)
    tool = shutil.which("diffoscope")
    if tool is None:
        return report + "\n(diffoscope is not installed: apt-get install diffoscope-minimal)"
    for name in differing:
        if not (first / name).is_file() or not (second / name).is_file():
            continue
        try:
            done = subprocess.run([tool, "--no-progress", "--text", "-", os.fspath(first / name),
                                   os.fspath(second / name)], capture_output=True, text=True,
                                  timeout=DIFFOSCOPE_TIMEOUT, check=False)
            report += f"\n--- diffoscope {name}\n" + done.stdout[:MAX_REPORT]
        except subprocess.TimeoutExpired:
            report += f"\n--- diffoscope {name}: gave up after {DIFFOSCOPE_TIMEOUT} s"
    return report


def reproduce(profile: Path, *, mirror: str, work: Path,
              extra: tuple[str, ...] = ()) -> ReproResult:
    """Build ``profile`` (its folder copied twice, onto tmpfs where there is one) under
    :data:`FIRST` and :data:`SECOND`."""
    import tempfile

    profiles = Path(tempfile.mkdtemp(prefix="repro-profiles-", dir=listing_keeps_order() or work))
    try:
        builds = [_build(c, profile, work, mirror, extra, profiles) for c in (FIRST, SECOND)]
    finally:
        shutil.rmtree(profiles, ignore_errors=True)
    for (_folder, result), conditions in zip(builds, (FIRST, SECOND), strict=True):
        if result.returncode != 0:
            raise AssertionError(f"the {conditions.name} build of {profile} failed "
                                 f"(exit {result.returncode}): {result.stderr[-4000:]}")
    (first, _), (second, _) = builds
    files = sorted(_files(first) | _files(second))
    differing = [n for n in files if not (first / n).is_file() or not (second / n).is_file()
                 or (first / n).read_bytes() != (second / n).read_bytes()]
    report = explain(first, second, differing) if differing else ""
    return ReproResult(first=first, second=second, files=tuple(files),
                       differing=tuple(differing), report=report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--mirror", required=True, help="the mirror both builds read from")
    parser.add_argument("--work", type=Path, default=REPO / "out" / "repro")
    args = parser.parse_args(argv)
    failed = 0
    for profile in args.profiles:
        work = args.work / profile.stem
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        result = reproduce(profile.resolve(), mirror=args.mirror, work=work)
        if result.same:
            print(f"identical  {profile} ({len(result.files)} files)")
        else:
            failed += 1
            print(f"DIFFERENT  {profile}: {', '.join(result.differing)}\n{result.report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
