"""``alpine-composer vendor``: every locked input copied into a folder laid out as an Alpine
mirror, so that ``--mirror DIR`` rebuilds offline, byte for byte, with an empty cache.

The layout is Alpine's: ``<branch>/releases/<arch>/`` holds the minirootfs with its
``.sha256``, ``.sha512`` and ``.asc`` and a ``latest-releases.yaml`` naming it; each
repository holds ``<arch>/APKINDEX.tar.gz`` (the original signed index, never re-signed)
and the exact ``.apk`` files. Keys a profile names by URL go to ``keys/<name>``. An index
that differs from the one already there (another lock, made on another day) is kept
beside it as ``APKINDEX.<sha256>.tar.gz``; a locked build looks for it there.

A vendored mirror only grows: a second run adds what is missing and refuses to replace
a file with other bytes. Everything new is fetched (from the cache first), written into a
staging folder and hashed again before the first file is moved into place, so a failed
run leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from composer.context import BuildContext
from composer.errors import OutputError, UsageError, VerificationError
from composer.hashing import hash_file
from composer.leftovers import pid_tag, sweep_dead
from composer.lockfile import LockFile, lock_path_for, package_path
from composer.manifest import InputRole
from composer.sources.fetch import Fetcher
from composer.sources.releases import (
    ReleaseImage,
    parse_checksum_file,
    parse_latest_releases,
)
from composer.stages.base import VENDORED_KEYS
from composer.stages.lock import check_profile, read_lock
from composer.stages.locked import vendored_index_name
from composer.urls import is_url, mirror_file

MINIROOTFS_FLAVOR = "alpine-minirootfs"
RELEASES_YAML = "latest-releases.yaml"


@dataclass(frozen=True)
class VendorReport:
    """The vendored folder, the files this run added and those already there."""

    folder: Path
    added: tuple[str, ...]
    present: tuple[str, ...]


@dataclass(frozen=True)
class _Wanted:
    """One file the vendored mirror must hold: where, its digest, and where to get it."""

    path: str
    sha256: str
    size: int | None
    urls: tuple[str, ...]
    what: str
    index: bool = False


def vendor(ctx: BuildContext, dest: Path, explicit: Path | None) -> VendorReport:
    """Copy what the profile's lock pins into ``dest`` (see the module docstring)."""
    from composer.stages.pipeline import open_fetcher

    lock_path = explicit or lock_path_for(ctx.loaded.path)
    if not lock_path.is_file():
        raise UsageError(f"{lock_path}: no lock to vendor; run `alpine-composer lock "
                         f"{ctx.loaded.path}` first")
    lock = read_lock(lock_path)
    check_profile(ctx, lock, str(lock_path))
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest}: exists and is not a folder")
    wanted = _wanted_files(ctx, lock)
    fetcher = open_fetcher(ctx)
    with _staging(dest) as stage:
        plan = _place(dest, wanted)
        added: list[str] = []
        present = [w.path for w, target in plan if target is None]
        for item, target in plan:
            if target is not None:
                _copy_in(fetcher, item, stage / target)
                added.append(target)
        added += _release_metadata(dest, stage, lock)
        for name in added:
            _check_written(stage / name, wanted, name)
        _commit(stage, dest, added)
    return VendorReport(folder=dest, added=tuple(added), present=tuple(sorted(present)))


def _wanted_files(ctx: BuildContext, lock: LockFile) -> list[_Wanted]:
    mirror = ctx.profile.mirror
    files: list[_Wanted] = []

    def add(path: str, sha256: str, size: int | None, what: str, *, index: bool = False,
            urls: tuple[str, ...] | None = None) -> None:
        if is_url(path):
            raise UsageError(f"{what}: {path} is not under the mirror {mirror}; vendor copies "
                             "what lives under the profile's mirror (put the repository there, "
                             "or keep a copy of it yourself)")
        files.append(_Wanted(path, sha256, size, urls or (mirror_file(mirror, path),), what, index))

    def key(name: str, sha256: str, source: str | None, what: str) -> None:
        if source is not None and is_url(source):
            add(f"{VENDORED_KEYS}/{name}", sha256, None, what,
                urls=(mirror_file(mirror, f"{VENDORED_KEYS}/{name}"), source))

    if lock.release_key is not None:
        key(lock.release_key.name, lock.release_key.sha256, lock.release_key.source,
            "release signing key")
    for arch in lock.arches:
        mini = arch.minirootfs
        if mini is not None:
            add(mini.path, mini.sha256, mini.size, f"minirootfs {mini.release} ({arch.arch})")
            if mini.signature is not None:
                add(mini.signature.path, mini.signature.sha256, mini.signature.size,
                    f"minirootfs {mini.release} signature ({arch.arch})")
        for k in arch.keys:
            key(k.name, k.sha256, k.source, f"package signing key {k.name}")
        for repo in arch.repositories:
            add(repo.path, repo.sha256, repo.size, f"repository {repo.repository} index "
                f"({arch.arch})", index=True)
        for package in arch.packages:
            if package.sha256 is not None and package.repository is not None:
                add(package_path(arch.arch, package), package.sha256, package.size,
                    f"package {package.label} ({arch.arch})")
    unique: dict[tuple[str, str], _Wanted] = {}
    for item in files:
        unique.setdefault((item.path, item.sha256), item)
    return list(unique.values())


def _place(dest: Path, wanted: list[_Wanted]) -> list[tuple[_Wanted, str | None]]:
    """Where each file goes (None: the folder already holds those bytes). A path holding other
    bytes is refused, except an index, which then goes beside it under its digest."""
    placed: list[tuple[_Wanted, str | None]] = []
    claimed: dict[str, str] = {}
    for item in wanted:
        target = item.path
        if claimed.get(target, item.sha256) != item.sha256 or _holds_other(dest / target,
                                                                            item.sha256):
            if not item.index:
                raise VerificationError(f"{dest / target}: holds other bytes than the "
                                        f"sha256 {item.sha256} the lock pins for {item.what}; "
                                        "a vendored mirror is never overwritten (vendor into "
                                        "another folder)")
            target = target.rsplit("/", 1)[0] + "/" + vendored_index_name(item.sha256)
            if _holds_other(dest / target, item.sha256):
                raise VerificationError(f"{dest / target}: damaged (its sha256 is not in its name)")
        claimed.setdefault(target, item.sha256)
        placed.append((item, None if (dest / target).is_file() else target))
    return placed


def _holds_other(path: Path, sha256: str) -> bool:
    return path.is_file() and hash_file(path)[0] != sha256


def _copy_in(fetcher: Fetcher, item: _Wanted, target: Path) -> None:
    """Fetch (the cache first) and copy one file into the staging folder."""
    source = fetcher.fetch_pinned(list(item.urls), sha256=item.sha256, size=item.size,
                                  what=item.what, role=InputRole.METADATA)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None


def _check_written(path: Path, wanted: list[_Wanted], name: str) -> None:
    """Hash a staged file again: what lands in the mirror is what the lock pins."""
    expected = {w.sha256 for w in wanted
                if w.path == name or name == w.path.rsplit("/", 1)[0] + "/"
                + vendored_index_name(w.sha256)}
    if not expected:
        return  # checksum files and latest-releases.yaml, checked as they are written
    actual, _ = hash_file(path)
    if actual not in expected:
        raise VerificationError(f"vendor: {name} was written with sha256 {actual}, not the "
                                f"locked {', '.join(sorted(expected))}")


def _release_metadata(dest: Path, stage: Path, lock: LockFile) -> list[str]:
    """Per minirootfs its ``.sha256`` and ``.sha512`` and a ``latest-releases.yaml`` naming
    it (merged with what the folder lists already)."""
    written: list[str] = []
    by_dir: dict[str, list[ReleaseImage]] = {}
    for arch in lock.arches:
        mini = arch.minirootfs
        if mini is None:
            continue
        folder, _, name = mini.path.rpartition("/")
        sums = [(".sha256", mini.sha256)] + ([(".sha512", mini.sha512)] if mini.sha512 else [])
        for suffix, digest in sums:
            text = f"{digest}  {name}\n".encode()
            rel = mini.path + suffix
            if (dest / rel).is_file():
                _check_sum_file(dest / rel, name, digest, suffix)
            elif rel not in written:
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                (stage / rel).write_bytes(text)
                written.append(rel)
        by_dir.setdefault(folder, []).append(ReleaseImage(
            branch=lock.branch, arch=arch.arch, version=mini.release, flavor=MINIROOTFS_FLAVOR,
            file=name, size=mini.size, sha256=mini.sha256, sha512=mini.sha512, date=None))
    for folder, images in by_dir.items():
        rel = f"{folder}/{RELEASES_YAML}" if folder else RELEASES_YAML
        existing: list[ReleaseImage] = []
        if (dest / rel).is_file():
            existing = parse_latest_releases((dest / rel).read_bytes(), source=str(dest / rel))
        listed = {i.file for i in existing}
        new = [i for i in images if i.file not in listed]
        if new:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_bytes(format_latest_releases([*existing, *new]))
            written.append(rel)
    return written


def _check_sum_file(path: Path, name: str, digest: str, suffix: str) -> None:
    text = path.read_bytes()
    if suffix == ".sha256":
        found = parse_checksum_file(text, filename=name, source=str(path))
    else:
        fields = text.decode("utf-8", "replace").split()
        found = fields[0].lower() if fields else ""
    if found != digest:
        raise VerificationError(f"{path}: lists {found}, but the lock pins {digest} for {name}")


def format_latest_releases(images: list[ReleaseImage]) -> bytes:
    """Alpine's ``latest-releases.yaml`` shape: a list of images, newest version last."""
    lines = ["---"]
    for image in images:
        lines.append("-")
        fields: list[tuple[str, str | int | None]] = [
            ("title", '"Mini root filesystem"' if image.flavor == MINIROOTFS_FLAVOR else None),
            ("branch", image.branch or None), ("arch", image.arch or None),
            ("version", image.version), ("flavor", image.flavor), ("file", image.file),
            ("iso", image.file), ("date", image.date), ("size", image.size),
            ("sha256", image.sha256), ("sha512", image.sha512)]
        lines += [f"  {key}: {value}" for key, value in fields if value is not None]
    return ("\n".join(lines) + "\n").encode()


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A private folder the new files are written into: beside ``dest`` when it is new (then
    renamed to it), inside it otherwise; removed unless committed."""
    parent = dest if dest.is_dir() else dest.parent
    prefix = ".vendor-" if dest.is_dir() else f".{dest.name}.vendor-"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        sweep_dead(parent, prefix)
        stage = Path(tempfile.mkdtemp(prefix=prefix + pid_tag(), dir=parent))
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create a staging folder "
                          f"({exc.strerror or exc})") from None
    try:
        yield stage
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


_LAST = (".sha256", ".sha512", RELEASES_YAML, "APKINDEX.tar.gz")


def _commit(stage: Path, dest: Path, added: list[str]) -> None:
    """Move the staged files into place: a new folder at once; into an existing one file by
    file, the files that name others (indexes, checksums, release lists) last."""
    try:
        if not dest.exists():
            os.chmod(stage, 0o755)
            _open_modes(stage)
            os.replace(stage, dest)
            return
        _open_modes(stage)
        for name in sorted(added, key=lambda n: (n.endswith(_LAST), n)):
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, target)
    except OSError as exc:
        raise OutputError(f"{dest}: cannot move vendored files into place "
                          f"({exc.strerror or exc})") from None


def _open_modes(stage: Path) -> None:
    """Files 0644 and folders 0755 whatever the umask, so any user can serve the mirror."""
    for root, dirs, files in os.walk(stage):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
