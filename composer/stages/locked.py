"""The plan loaded from a lock instead of resolved: the same :class:`PackagePlan`, built from
the packages the lock names and the signed indexes it pinned.

Nothing is resolved. Each locked package's record comes from a signed index, matched by
name, version and ``C:`` checksum (the checksum covers the control section the record is
made from, so the installed database comes out byte for byte the same). The index is the
locked one when it can be had (the cache, the mirror, or a vendored mirror's copy named by
its digest); when the mirror has moved on to a newer signed index, the locked packages are
taken from it with a warning, and one it no longer lists is an error naming the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from composer.apk.index import PackageInfo
from composer.context import BuildContext
from composer.errors import NotFoundError, ProfileError, VerificationError
from composer.lockfile import LockedArch, LockedPackage, LockedRepository
from composer.manifest import InputRole
from composer.profile.model import Base
from composer.stages.base import VENDORED_KEYS, BaseFacts
from composer.stages.plan import ArchPlan, PackagePlan, plan_epoch
from composer.stages.repositories import (
    LoadedIndex,
    RepositorySource,
    fetch_package_keys,
    read_index,
    repository_branch,
    repository_sources,
    world_constraints,
)
from composer.urls import mirror_file, mirror_relative

if TYPE_CHECKING:
    from composer.apk.keys import TrustedKeys
    from composer.sources.fetch import Fetcher
    from composer.sources.minirootfs import VerifiedMinirootfs

VENDOR_HINT = ("build from a vendored mirror: `alpine-composer vendor PROFILE DIR` copies the "
               "locked inputs from the cache (or a mirror that still has them), then build with "
               "`--mirror DIR`; or move on with `alpine-composer lock --update`")


def vendored_index_name(sha256: str) -> str:
    """The name a vendored mirror gives an index that is not the repository's current one
    (several locks sharing one vendored mirror may pin different indexes of a repository)."""
    return f"APKINDEX.{sha256}.tar.gz"


def plan_locked_arch(ctx: BuildContext, fetcher: Fetcher, arch: str,
                     mini: VerifiedMinirootfs | None, base: BaseFacts | None,
                     base_mtime: int) -> ArchPlan:
    """One architecture's plan from the lock (``ctx.lock``), in place of :func:`plan_arch`."""
    assert ctx.lock is not None
    locked = ctx.lock.arch(arch)
    if locked is None:
        raise ProfileError(f"{ctx.loaded.path}: arch {arch} is not in the lock "
                           f"{ctx.lock_path or ''} (run `alpine-composer lock --update`)")
    if mini is not None and mini.version != locked.release:
        raise VerificationError(f"minirootfs {mini.version} ({arch}) is not the locked "
                                f"release {locked.release}")
    profile = ctx.profile
    packages = None
    if profile.packages:
        assert base is not None
        release = locked.release if mini is not None else profile.release
        branch = repository_branch(profile, release)
        packages = plan_locked_packages(ctx, fetcher, locked, branch, base)
    elif locked.packages:
        raise ProfileError(f"{ctx.loaded.path}: packages: the lock names packages, the profile "
                           "none (run `alpine-composer lock --update`)")
    return ArchPlan(arch=arch, release=locked.release, minirootfs=mini, packages=packages,
                    epoch=plan_epoch(ctx, packages, base_mtime))


def plan_locked_packages(ctx: BuildContext, fetcher: Fetcher, locked: LockedArch, branch: str,
                         base: BaseFacts) -> PackagePlan:
    """The arch's package plan from its lock entry; downloads nothing but keys and indexes."""
    profile = ctx.profile
    mirror = profile.mirror
    sources = repository_sources(profile, branch)
    _check_repositories(ctx, sources, locked.repositories)
    keys = fetch_package_keys(
        ctx.loaded, fetcher, base.keys,
        pinned={k.name: k.sha256 for k in locked.keys if k.source is not None},
        mirror_copy=lambda name: mirror_file(mirror, f"{VENDORED_KEYS}/{name}"))
    for key in locked.keys:
        if key.name not in keys.files:
            raise VerificationError(f"package signing key {key.name} is in the lock but not among "
                                    "the keys this build trusts (the minirootfs or the profile "
                                    "changed since locking)")
        actual = keys.trusted.key(key.name).sha256
        if actual != key.sha256:
            raise VerificationError(f"package signing key {key.name}: sha256 {actual}, but the lock "
                                    f"pins {key.sha256}")
    ctx.log(f"==> {profile.name} ({locked.arch}): reading {len(sources)} locked repository "
            "index(es)")
    indexes = [_locked_index(ctx, fetcher, source, repo, locked, keys.trusted)
               for source, repo in zip(sources, locked.repositories, strict=True)]
    by_repo = {mirror_relative(i.source.url, mirror): i for i in indexes}
    installed = {(p.name, p.checksum): p for p in base.installed_index}
    packages: list[PackageInfo] = []
    wanted: list[PackageInfo] = []
    have = {r.name: r.checksum for r in base.installed}
    for package in locked.packages:
        info = _locked_info(package, by_repo, installed, locked.arch)
        packages.append(info)
        if not package.from_minirootfs:
            if have.get(info.name) == info.checksum:
                raise VerificationError(f"lock: {package.label} is marked as a download, but the "
                                        "minirootfs already holds it")
            wanted.append(info)
    world = world_constraints(profile.packages, base.world)
    newest = max((p.build_time or 0 for p in packages), default=0)
    from composer.stages.epoch import choose_epoch

    return PackagePlan(
        repositories=tuple(sources), keys=keys.trusted, key_files=dict(keys.files),
        world=tuple(d.format() for d in world), packages=tuple(packages), wanted=tuple(wanted),
        write_repositories=profile.repositories is not None or profile.base == Base.PACKAGES,
        epoch=choose_epoch(ctx, max(newest, base.newest_mtime)).value, indexes=tuple(indexes),
        pinned={p.name: p.sha256 for p in locked.packages if p.sha256 is not None})


def _check_repositories(ctx: BuildContext, sources: Sequence[RepositorySource],
                        locked: Sequence[LockedRepository]) -> None:
    mirror = ctx.profile.mirror
    now = [(mirror_relative(s.url, mirror), s.tag) for s in sources]
    then = [(r.repository, r.tag) for r in locked]
    if now != then:
        shown = ", ".join(r for r, _ in then) or "none"
        raise ProfileError(f"{ctx.loaded.path}: repositories: the profile reads "
                           f"{', '.join(r for r, _ in now) or 'none'}, the lock {shown}; run "
                           "`alpine-composer lock --update`")


def _locked_index(ctx: BuildContext, fetcher: Fetcher, source: RepositorySource,
                  locked: LockedRepository, arch: LockedArch, keys: TrustedKeys) -> LoadedIndex:
    """The locked index: from the cache by digest, the mirror, or a vendored copy named by its
    digest; else the mirror's newer signed index, with a warning."""
    url = source.index_url(arch.arch)
    what = f"repository {locked.repository} index ({arch.arch})"

    def verified(path_url: str, data: bytes) -> LoadedIndex:
        return read_index(data, source, path_url, keys)

    if fetcher.cache.path_for(locked.sha256) is not None:
        path = fetcher.fetch_blob(url, sha256=locked.sha256, size=locked.size, what=what,
                                  role=InputRole.INDEX)
        return verified(url, path.read_bytes())
    read: list[LoadedIndex] = []
    try:
        data = fetcher.fetch_metadata(
            url, what=what, role=InputRole.INDEX,
            check=lambda raw: read.append(read_index(raw, source, url, keys)))
    except NotFoundError as exc:
        raise NotFoundError(f"{what} is locked, but {url} is gone from the mirror; "
                            f"{VENDOR_HINT}") from exc
    current = read[0] if read else verified(url, data)
    if current.sha256 == locked.sha256:
        return current
    side = url.rsplit("/", 1)[0] + "/" + vendored_index_name(locked.sha256)
    try:
        path = fetcher.fetch_blob(side, sha256=locked.sha256, size=locked.size, what=what,
                                  check=lambda p: None, role=InputRole.INDEX)
        return verified(side, path.read_bytes())
    except NotFoundError:
        pass
    ctx.log(f"warning: {what}: the mirror now serves sha256 {current.sha256[:12]}…, not the "
            f"locked {locked.sha256[:12]}…; taking the locked packages from it by checksum")
    return current


def _locked_info(package: LockedPackage, by_repo: dict[str, LoadedIndex],
                 installed: dict[tuple[str, str | None], PackageInfo], arch: str) -> PackageInfo:
    """The index record of a locked package (the base's record for one from the minirootfs)."""
    if package.from_minirootfs:
        info = installed.get((package.name, package.checksum))
        if info is None:
            raise VerificationError(f"lock: {package.label} ({arch}) is marked as coming with the "
                                    "minirootfs, which does not hold it")
        return info
    index = by_repo.get(package.repository or "")
    if index is None:
        raise VerificationError(f"lock: {package.label} ({arch}) names repository "
                                f"{package.repository}, which the lock does not list")
    for info in index.index.packages:
        if info.name == package.name and info.version == package.version:
            if info.checksum != package.checksum:
                raise VerificationError(
                    f"package {package.label} ({arch}): the index of {package.repository} lists "
                    f"checksum {info.checksum}, but the lock pins {package.checksum}")
            if info.size is not None and package.size is not None and info.size != package.size:
                raise VerificationError(
                    f"package {package.label} ({arch}): the index of {package.repository} says "
                    f"{info.size} bytes, but the lock pins {package.size}")
            return info
    raise NotFoundError(f"package {package.label} ({arch}) is locked, but the index of "
                        f"{package.repository} no longer lists it; {VENDOR_HINT}")
