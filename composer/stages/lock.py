"""The lock: the plan written down, checked against the profile before a locked build.

``lock_from_plan`` turns a :class:`BuildPlan` (and the inputs its fetcher recorded) into a
:class:`LockFile`; every build records one beside its manifest, and ``alpine-composer lock``
writes one beside the profile. ``check_profile`` refuses a lock whose profile has changed,
naming what changed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from composer.context import BuildContext
from composer.errors import OutputError, UsageError, VerificationError
from composer.jsonsafe import read_regular_file
from composer.lockfile import (
    MAX_LOCK_BYTES,
    LockedArch,
    LockedFile,
    LockedKey,
    LockedMinirootfs,
    LockedPackage,
    LockedRepository,
    LockFile,
    ProfileState,
    lock_path_for,
    parse_lock,
    profile_changes,
    profile_state,
)
from composer.manifest import InputRole
from composer.overlay import OverlayInput, read_overlay_inputs
from composer.profile.model import PinnedKey
from composer.stages.plan import ArchPlan, BuildPlan
from composer.urls import mirror_relative, repository_file_url

if TYPE_CHECKING:
    from composer.sources.fetch import FetchedInput



def current_state(ctx: BuildContext, overlay: Sequence[OverlayInput] | None = None) -> ProfileState:
    """The profile's state now: its key digests and its overlay host files (read from disk
    unless the overlay stage already read them)."""
    if overlay is None:
        roots = None if ctx.allow_host_paths else [f.parent for f in ctx.loaded.files]
        overlay = read_overlay_inputs(ctx.profile.overlay, base_dir=ctx.loaded.base_dir,
                                      allowed_roots=roots)
    return profile_state(ctx.profile.name, ctx.loaded.parts,
                         ((i.path, i.sha256, i.mode) for i in overlay))


def check_profile(ctx: BuildContext, lock: LockFile, where: str, *, strict: bool = True) -> None:
    """A lock applies only to the profile it was made from: say what changed otherwise (a
    warning when not ``strict``)."""
    changed = profile_changes(lock.profile, current_state(ctx))
    if changed and not strict:
        ctx.log(f"warning: {ctx.loaded.path}: changed since {where} was written "
                f"({', '.join(changed)}); rebuilding with its packages all the same")
    elif changed:
        raise VerificationError(f"{ctx.loaded.path}: changed since {where} was locked "
                                f"({', '.join(changed)}); run `alpine-composer lock --update "
                                f"{ctx.loaded.path}`")


def read_lock(path: Path) -> LockFile:
    """A lock file from disk, read as hostile input (a regular file of bounded size)."""
    try:
        data = read_regular_file(path, what=str(path), max_bytes=MAX_LOCK_BYTES,
                                 error=VerificationError)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such lock file") from None
    return parse_lock(data, what=str(path))


def find_lock(profile: Path, explicit: Path | None) -> Path | None:
    """The lock a build uses: ``--lock FILE``, else ``<profile>.lock.json`` when it exists."""
    if explicit is not None:
        return explicit
    beside = lock_path_for(profile)
    return beside if beside.is_file() else None


def write_lock_file(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically (a reader sees the old lock or the new one)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the lock ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class _Seen:
    """The inputs a fetcher recorded, by URL."""

    by_url: dict[str, FetchedInput]

    def get(self, url: str | None) -> FetchedInput | None:
        return self.by_url.get(url) if url else None


def lock_from_plan(ctx: BuildContext, plan: BuildPlan, fetched: Sequence[FetchedInput],
                   state: ProfileState, *, with_files: bool = True) -> LockFile:
    """The plan as a lock. ``with_files=False`` (for ``lock --check``) leaves out the
    packages' file digests, which only a download can tell."""
    seen = _Seen({i.url: i for i in fetched})
    arches = tuple(_locked_arch(ctx, a, seen, with_files=with_files) for a in plan.arches)
    epochs = [a.epoch for a in plan.arches if a.epoch is not None]
    epoch = max(epochs, key=lambda e: e.value) if epochs else None
    release_key = None
    if plan.release_key is not None:
        trust = ctx.profile.trust
        key_input = next((i for i in fetched if i.role == InputRole.RELEASE_KEY), None)
        if key_input is None:
            raise VerificationError("lock: the release key was used but not recorded as an input")
        release_key = LockedKey(name=trust.key.rsplit("/", 1)[-1], sha256=key_input.sha256,
                                source=trust.key, fingerprint=plan.release_key.fingerprint.upper())
    return LockFile(profile=state, branch=ctx.profile.branch,
                    source_date_epoch=epoch.value if epoch else 0,
                    epoch_source=epoch.source if epoch else "inputs",
                    arches=arches, release_key=release_key)


def _locked_arch(ctx: BuildContext, plan: ArchPlan, seen: _Seen, *, with_files: bool) -> LockedArch:
    mirror = ctx.profile.mirror
    mini = None
    if plan.minirootfs is not None:
        m = plan.minirootfs
        asc = seen.get(m.signature_url)
        mini = LockedMinirootfs(
            release=m.version, path=mirror_relative(m.url, mirror), size=m.size, sha256=m.sha256,
            sha512=m.sha512, signed_by=m.signed_by.upper() if m.signed_by else None,
            signature=LockedFile(mirror_relative(asc.url, mirror), asc.size, asc.sha256)
            if asc is not None and m.signed_by else None)
    if plan.packages is None:
        return LockedArch(arch=plan.arch, release=plan.release, minirootfs=mini)
    packages = plan.packages
    profile_keys = {(ref.file if isinstance(ref, PinnedKey) else ref).rsplit("/", 1)[-1]:
                    ref.file if isinstance(ref, PinnedKey) else ref
                    for ref in ctx.profile.keys}
    keys = tuple(LockedKey(name=name, sha256=packages.keys.key(name).sha256,
                           source=profile_keys.get(name))
                 for name in sorted(packages.key_files))
    repos = tuple(LockedRepository(
        repository=mirror_relative(i.source.url, mirror), path=mirror_relative(i.url, mirror),
        size=i.size, sha256=i.sha256, signer=i.signer,
        key_sha256=packages.keys.key(i.signer).sha256, tag=i.source.tag)
        for i in packages.indexes)
    wanted = {p.name for p in packages.wanted}
    locked: list[LockedPackage] = []
    for info in packages.packages:
        checksum = info.checksum or ""
        if info.name not in wanted:
            locked.append(LockedPackage(name=info.name, version=info.version,
                                        arch=info.arch or plan.arch, checksum=checksum,
                                        from_minirootfs=True))
            continue
        url = repository_file_url(info.repository, plan.arch, info.filename)
        got = seen.get(url)
        sha256 = got.sha256 if got is not None else packages.pinned.get(info.name)
        if with_files and sha256 is None:
            raise VerificationError(f"lock: package {info.label} was planned but not downloaded")
        locked.append(LockedPackage(
            name=info.name, version=info.version, arch=info.arch or plan.arch, checksum=checksum,
            repository=mirror_relative(info.repository, mirror),
            size=info.size if info.size is not None else (got.size if got else None),
            sha256=sha256 if with_files else None))
    return LockedArch(arch=plan.arch, release=plan.release, minirootfs=mini, keys=keys,
                      repositories=repos, packages=tuple(locked))


def with_lock(ctx: BuildContext, explicit: Path | None) -> BuildContext:
    """``ctx`` with the lock a build uses (``--lock FILE``, else the one beside the profile)."""
    from dataclasses import replace

    path = find_lock(ctx.loaded.path, explicit)
    if path is None:
        return ctx
    ctx.log(f"==> {ctx.profile.name}: installing what {path} pins")
    lock = read_lock(path)
    ctx = replace(ctx, lock=lock, lock_path=path)
    if lock.epoch_source == "environment":
        # The timestamp was SOURCE_DATE_EPOCH when locking: the lock keeps it.
        if ctx.env_epoch is None:
            return replace(ctx, pinned_epoch=(lock.source_date_epoch, "lock"))
        if ctx.env_epoch != lock.source_date_epoch:
            ctx.log(f"warning: SOURCE_DATE_EPOCH={ctx.env_epoch} overrides the timestamp "
                    f"{lock.source_date_epoch} that {path} pins")
    return ctx


@dataclass(frozen=True)
class LockReport:
    """What ``alpine-composer lock`` did: the file, whether it wrote it or found it stale,
    and the changes as lines for people."""

    path: Path
    written: bool
    stale: bool
    changes: list[str]
    summary: str

    @property
    def verdict(self) -> str:
        if self.stale:
            return "stale"
        return "locked" if self.written else "up to date"
